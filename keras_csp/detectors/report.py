"""``python -m keras_csp.detectors.report [NAME ...]``: each named detector's kernel weights and
BFLOPs (``keras_csp.profile``) against the published counts it is held to (docs/detectors.md)."""

from keras_csp.detectors.builders import DETECTORS, report


def main(argv=None):
    """Print measured vs published counts of the named detectors (default: all)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("names", nargs="*", help=f"detectors (default all): {', '.join(DETECTORS)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in DETECTORS]
    if unknown:
        parser.error(f"unknown detectors {unknown}; known: {', '.join(DETECTORS)}")
    print(f"{'detector':28} {'size':>4} {'BFLOPs':>8} {'target':>8} {'diff':>6} "
          f"{'weights':>11} {'target':>11} {'diff':>6}")
    for name, size, bflops, t_bflops, params, t_params in report(args.names or None):
        p_diff = f"{params / t_params - 1:+.1%}" if t_params else "-"
        t_params = f"{t_params:,.0f}" if t_params else "-"
        print(f"{name:28} {size:>4} {bflops:8.3f} {t_bflops:8.3f} {bflops / t_bflops - 1:+6.1%} "
              f"{params:11,} {t_params:>11} {p_diff:>6}")


if __name__ == "__main__":
    main()

"""The paper's Table 1 (ablation of CSPNet on PeleeNet, ImageNet, 224x224) as a BFLOPs table.

Builds every row keras_csp can build (PeleeNet; CSP fusion first and fusion last at
gamma 0.75 / 0.5 / 0.25; CSPPeleeNet at the same gammas), counts BFLOPs and kernel weights
with ``keras_csp.profile`` and prints them next to the paper's BFLOPs with the difference.
Table 1's gamma is the share of a stage's channels that skips the dense block (its BFLOPs
fall as gamma grows), so the models are built with ``partial_ratio = 1 - gamma``.

    python benchmarks/table1_ablation.py [--size 224] [--json out.json] [--only PeleeNet ...]

SPeleeNet and PeleeNeXt (sparse and grouped two-way dense layers) are listed with the
paper's numbers only: they are not CSP models and keras_csp does not build them.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (row label, builder name, fusion, gamma, paper top-1, paper BFLOPs); builder None: not built.
TABLE1 = [
    ("PeleeNet", "PeleeNet", None, None, 70.7, 1.017),
    ("SPeleeNet", None, None, None, 69.6, 0.904),
    ("PeleeNeXt", None, None, None, 68.9, 0.837),
    ("CSP (fusion first)", "CSPPeleeNet", "first", 0.75, 68.4, 0.649),
    ("CSP (fusion first)", "CSPPeleeNet", "first", 0.5, 69.2, 0.755),
    ("CSP (fusion first)", "CSPPeleeNet", "first", 0.25, 70.0, 0.861),
    ("CSP (fusion last)", "CSPPeleeNet", "last", 0.75, 69.2, 0.716),
    ("CSP (fusion last)", "CSPPeleeNet", "last", 0.5, 70.6, 0.804),
    ("CSP (fusion last)", "CSPPeleeNet", "last", 0.25, 70.8, 0.902),
    ("CSPPeleeNet", "CSPPeleeNet", "both", 0.75, 70.4, 0.800),
    ("CSPPeleeNet", "CSPPeleeNet", "both", 0.5, 70.9, 0.888),
    ("CSPPeleeNet", "CSPPeleeNet", "both", 0.25, 71.5, 0.986),
]


def measure(builder_name, fusion, gamma, size=224):
    """(kernel weights, BFLOPs) of one Table 1 row built by keras_csp."""
    import keras_csp

    builder = getattr(keras_csp, builder_name)
    kwargs = {} if fusion is None else {"fusion": fusion, "partial_ratio": 1.0 - gamma}
    prof = keras_csp.profile(builder(input_shape=(size, size, 3), **kwargs))
    return prof.params, prof.bflops


def run(size=224, only=None):
    """Every row as a dict: label, gamma, fusion, paper numbers, measured numbers, difference."""
    rows = []
    for label, builder, fusion, gamma, top1, paper in TABLE1:
        if only and label not in only:
            continue
        row = {"model": label, "gamma": gamma, "fusion": fusion, "paper_top1": top1, "paper_bflops": paper,
               "params": None, "bflops": None, "diff": None}
        if builder is not None:
            row["params"], row["bflops"] = measure(builder, fusion, gamma, size)
            row["diff"] = row["bflops"] / paper - 1.0
        rows.append(row)
    return rows


def markdown(rows, size):
    lines = [
        f"Table 1 (CSPNet paper) at {size}x{size}: BFLOPs of keras_csp's models next to the paper's.",
        "",
        "| model | gamma | top-1 (paper) | BFLOPs (paper) | BFLOPs (keras_csp) | difference | kernel weights |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gamma = "-" if r["gamma"] is None else f"{r['gamma']:.2f}"
        if r["bflops"] is None:
            ours, diff, params = "not built", "-", "-"
        else:
            ours, diff, params = f"{r['bflops']:.3f}", f"{100 * r['diff']:+.1f}%", f"{r['params'] / 1e6:.2f}M"
        lines.append(
            f"| {r['model']} | {gamma} | {r['paper_top1']:.1f} | {r['paper_bflops']:.3f} | {ours} | {diff} | {params} |"
        )
    built = [r for r in rows if r["diff"] is not None]
    if built:
        worst = max(built, key=lambda r: abs(r["diff"]))
        lines += ["", f"Largest difference: {worst['model']} (gamma {worst['gamma']}): {100 * worst['diff']:+.1f}%."]
        off = [r for r in built if abs(r["diff"]) > 0.05]
        if off:
            lines.append(
                "Rows more than 5% from the paper: "
                + ", ".join(f"{r['model']} gamma {r['gamma']} ({100 * r['diff']:+.1f}%)" for r in off)
                + ". The paper gives no layout for its fusion-first / fusion-last PeleeNets; keras_csp "
                "builds them as CSPPeleeNet without the partial transition (first) or without the "
                "fusion transition (last), which reproduces the trends, not every number."
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="input side (Table 1: 224)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--only", nargs="*", help="row labels to build, e.g. PeleeNet 'CSP (fusion last)'")
    args = parser.parse_args(argv)
    rows = run(args.size, args.only)
    print(markdown(rows, args.size))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return rows


if __name__ == "__main__":
    main()

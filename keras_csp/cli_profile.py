"""``keras-csp profile MODEL``: the paper's per-layer FLOPs / params / CIO table."""

from keras_csp import zoo
from keras_csp.backend import keras
from keras_csp.profiling import profile


def add_profile_parser(subparsers):
    p = subparsers.add_parser("profile", help="print per-layer BFLOPs, kernel weights and CIO of a model")
    p.add_argument("models", nargs="+", help="builder names (e.g. CSPDarknet53) or .keras files")
    p.add_argument("--size", type=int, default=256, help="square input size (default 256)")
    p.add_argument("--no-top", action="store_true", help="profile without the classifier")
    p.add_argument("--plot", help="write a PNG with per-layer BFLOPs and CIO bars")
    p.add_argument("--summary", action="store_true", help="print only the totals")
    p.set_defaults(handler=run_profile)


def load_any(name, size, include_top=True):
    """A model from a builder name of ``keras_csp.zoo`` or a saved ``.keras`` file."""
    if name.endswith(".keras"):
        return keras.models.load_model(name)
    return zoo.build(name, input_shape=(size, size, 3), include_top=include_top)


def run_profile(args):
    profiles = [profile(load_any(m, args.size, not args.no_top)) for m in args.models]
    for prof in profiles:
        if args.summary:
            b = prof.bottleneck
            print(f"{prof.model_name:<24} {prof.params:>12,} weights {prof.bflops:>8.3f} BFLOPs "
                  f"CIO {prof.cio / 1e6:>7.1f}M  bottleneck {b.name} {b.bflops:.3f}")
        else:
            print(prof.table())
    if args.plot:
        profiles[0].plot(args.plot, profiles[1:])
        print(f"wrote {args.plot}")

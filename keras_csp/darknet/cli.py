"""``keras-csp darknet ...``: convert a cfg + .weights to a .keras file, print summaries.

    keras-csp darknet convert CFG WEIGHTS OUT.keras [--input-size H W]
    keras-csp darknet summary CFG [--input-size H W]
    keras-csp darknet export MODEL.keras CFG OUT.weights

The main ``keras-csp`` parser adds these with :func:`add_darknet_parser`.
"""

import argparse
import functools
import os
import sys

import keras_csp.layers  # noqa: F401  (registers the custom layers for loading)
from keras_csp.backend import keras
from keras_csp.darknet.api import load, save_weights
from keras_csp.darknet.spec import infer_network
from keras_csp.darknet.summary import format_summary


def _input_size(values):
    return None if values is None else (values[0], values[1])


def _progress_callback(total, stream):
    """A per-layer progress bar on ``stream``: redrawn on a terminal, else its last state."""
    state = {"done": 0}
    width = 30
    interactive = getattr(stream, "isatty", lambda: False)()

    def update(spec):
        state["done"] += 1
        done = state["done"]
        if not interactive and done != total:
            return
        filled = width * done // total
        bar = f"building [{'#' * filled}{'.' * (width - filled)}] {done}/{total} layers"
        stream.write(f"\r{bar} (layer {spec.index} [{spec.type}])".ljust(79))
        if done == total:
            stream.write("\n")
        stream.flush()

    return update


def _clean_errors(handler):
    """Report bad input (a cfg error, a wrong weights file) as one line and exit status 1."""

    @functools.wraps(handler)
    def run(args, stdout=None, stderr=None):
        try:
            return handler(args, stdout, stderr)
        except (ValueError, FileNotFoundError) as error:
            raise SystemExit(f"keras-csp darknet {args.darknet_command}: error: {error}") from None

    return run


@_clean_errors
def convert(args, stdout=None, stderr=None):
    """Handler of ``darknet convert``: returns the process exit status."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if not args.output.endswith(".keras"):
        raise ValueError(f"OUT must end with .keras, got {args.output!r}")
    if os.path.exists(args.output) and not args.overwrite:
        raise ValueError(f"{args.output} exists (pass --overwrite to replace it)")
    network = infer_network(args.cfg, _input_size(args.input_size))
    if not args.quiet:
        stdout.write(format_summary(network) + "\n")
    progress = None if args.quiet else _progress_callback(len(network.layers), stderr)
    model = load(network, args.weights, allow_extra=args.allow_extra, progress=progress)
    model.save(args.output)
    stdout.write(
        f"wrote {args.output}: {len(network.layers)} Darknet layers, {model.count_params():,} "
        f"parameters, {network.bflops:.3f} BFLOPs at {network.width}x{network.height}\n"
    )
    return 0


@_clean_errors
def summary(args, stdout=None, stderr=None):
    """Handler of ``darknet summary``: Darknet's layer table, without building Keras layers."""
    stdout = stdout or sys.stdout
    stdout.write(format_summary(args.cfg, _input_size(args.input_size)) + "\n")
    return 0


@_clean_errors
def export(args, stdout=None, stderr=None):
    """Handler of ``darknet export``: a .keras model built from CFG back to .weights."""
    stdout = stdout or sys.stdout
    model = keras.models.load_model(args.model, compile=False)
    height, width = model.input_shape[1:3]
    out = save_weights(model, args.cfg, args.output, input_size=(height, width))
    stdout.write(f"wrote {args.output}: {out.values.size:,} floats\n")
    return 0


def add_darknet_parser(subparsers):
    """Add ``darknet`` with its ``convert``, ``summary`` and ``export`` subcommands."""
    parser = subparsers.add_parser(
        "darknet", help="Darknet interop: convert cfg + .weights to Keras, summaries"
    )
    commands = parser.add_subparsers(dest="darknet_command", metavar="COMMAND")
    commands.required = True

    size_help = "input height and width (default: the cfg's [net] size)"
    conv = commands.add_parser("convert", help="CFG + WEIGHTS -> OUT.keras")
    conv.add_argument("cfg", help="Darknet .cfg file")
    conv.add_argument("weights", help="Darknet .weights file")
    conv.add_argument("output", help="output .keras file")
    conv.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), help=size_help)
    conv.add_argument("--allow-extra", action="store_true",
                      help="accept floats left over after the last layer")
    conv.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    conv.add_argument("--quiet", action="store_true", help="no summary, no progress bar")
    conv.set_defaults(handler=convert, func=convert)

    summ = commands.add_parser("summary", help="print layers, params and BFLOPs of a cfg")
    summ.add_argument("cfg", help="Darknet .cfg file")
    summ.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"), help=size_help)
    summ.set_defaults(handler=summary, func=summary)

    exp = commands.add_parser("export", help="MODEL.keras (built from CFG) -> OUT.weights")
    exp.add_argument("model", help=".keras file made by 'darknet convert'")
    exp.add_argument("cfg", help="the Darknet .cfg the model was built from")
    exp.add_argument("output", help="output .weights file")
    exp.set_defaults(handler=export, func=export)
    return parser


def main(argv=None):
    """Standalone entry point: ``python -m keras_csp.darknet.cli convert ...``."""
    parser = argparse.ArgumentParser(prog="keras-csp")
    add_darknet_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["darknet", *(sys.argv[1:] if argv is None else argv)])
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

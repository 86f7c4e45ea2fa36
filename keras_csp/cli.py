"""The ``keras-csp`` command: one entry point, one sub-command per job."""

import argparse
import importlib
import os
import sys

from keras_csp import _quiet
from keras_csp.weights import WeightsDownloadError

# (module, function adding the sub-parser); modules are imported only when present.
SUBCOMMANDS = (
    ("keras_csp.cli_profile", "add_profile_parser"),
    ("keras_csp.darknet.cli", "add_darknet_parser"),
    ("keras_csp.data.cli", "add_data_parser"),
    ("keras_csp.export.cli", "add_export_parser"),
    ("keras_csp.export.benchmark", "add_benchmark_parser"),
    ("keras_csp.training.cli", "add_training_parsers"),
    ("keras_csp.weights.cli", "add_weights_parser"),
)


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-csp", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name, function_name in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue  # that part of the package is not installed
            raise
        getattr(module, function_name)(subparsers)
    return parser


# Wrong input our code reports: one line on stderr, exit code 2 (a traceback with --verbose 2).
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, NotADirectoryError, IsADirectoryError)


def _ours(err):
    """Whether ``err`` was raised by keras_csp code (a KeyError elsewhere is a bug to show)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}keras_csp{os.sep}" in tb.tb_frame.f_code.co_filename


def _message(err):
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]  # str(KeyError) would quote it
    return str(err) or type(err).__name__


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", None) or args.func
    try:
        with _quiet.filtered_stderr():  # TF's C++ lines of the run itself (cuInit, LiteRT) stay off the console
            return handler(args) or 0
    except (*USER_ERRORS, WeightsDownloadError) as err:
        if _quiet.verbose_requested(argv) or (isinstance(err, KeyError) and not _ours(err)):
            raise
        sys.stdout.flush()
        print(f"keras-csp {args.command}: error: {_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

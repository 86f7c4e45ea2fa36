"""The ``keras-csp`` command: one entry point, one sub-command per job."""

import argparse
import importlib
import sys

# (module, function adding the sub-parser); modules are imported only when present.
SUBCOMMANDS = (
    ("keras_csp.cli_profile", "add_profile_parser"),
    ("keras_csp.darknet.cli", "add_darknet_parser"),
    ("keras_csp.data.cli", "add_data_parser"),
    ("keras_csp.export.cli", "add_export_parser"),
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", None) or args.func
    return handler(args) or 0


if __name__ == "__main__":
    sys.exit(main())

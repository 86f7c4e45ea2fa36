"""``keras-csp data ...`` commands; the main CLI calls ``add_data_parser(subparsers)``.

``keras-csp data synth OUT_DIR --num-images N --seed S`` writes the synthetic set.
Each command's handler is stored as ``func`` on the parsed arguments and returns an exit code.
"""

import argparse
import sys

from keras_csp.data.synthetic import SHAPE_CLASSES, write_synthetic_dataset


def _synth(args):
    image_size = None if args.image_size is None else (args.image_size, args.image_size)
    paths = write_synthetic_dataset(
        args.out_dir, num_images=args.num_images, seed=args.seed, image_size=image_size,
        min_side=args.min_side, max_side=args.max_side, max_objects=args.max_objects,
        min_object=args.min_object, image_format=args.format, clutter=not args.plain,
    )  # fmt: skip
    print(f"wrote {args.num_images} images ({len(SHAPE_CLASSES)} classes) to {paths['root']}")
    print(f"  COCO JSON : {paths['coco_json']}")
    print(f"  YOLO list : {paths['yolo_list']} (names {paths['names']})")
    return 0


def _positive(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer; received {text}")
    return value


def add_data_parser(subparsers):
    """Add the ``data`` command (with its ``synth`` sub-command) to ``subparsers``."""
    data = subparsers.add_parser("data", help="datasets: write the synthetic set")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND")
    commands.required = True
    synth = commands.add_parser(
        "synth",
        help="write the seeded synthetic shapes dataset (COCO JSON + YOLO txt)",
        description="Write the synthetic detection dataset: the same seed writes the same files.",
    )
    synth.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created)")
    synth.add_argument("--num-images", type=_positive, default=64, help="number of images (default 64)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--image-size", type=_positive, default=None, help="square size; default random sides")
    synth.add_argument("--min-side", type=_positive, default=256, help="smallest random side (default 256)")
    synth.add_argument("--max-side", type=_positive, default=512, help="largest random side (default 512)")
    synth.add_argument("--max-objects", type=_positive, default=12, help="most objects per image (default 12)")
    synth.add_argument("--min-object", type=_positive, default=8, help="smallest object side in pixels (default 8)")
    synth.add_argument("--plain", action="store_true",
                       help="no distractor lines / arcs / dots, one background texture, solid shapes (the demo's set)")
    synth.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg)")
    synth.set_defaults(func=_synth)
    return data


def main(argv=None):
    """Run the data commands on their own (``python -m keras_csp.data.cli synth ...``)."""
    parser = argparse.ArgumentParser(prog="keras-csp")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Train a detector on your own images labelled in YOLO txt format.

Layout (as Darknet / Ultralytics): a list file with one image path per line, a
``classes.names`` file, and for every ``images/x.jpg`` a ``labels/x.txt`` with lines
``class x_center y_center width height`` normalised to [0, 1].

    python examples/train_yolo_txt.py --train data/train.txt --val data/val.txt \
        --names data/classes.names --model CSPPeleeNet-EFM(SAM) --image-size 416

    python examples/train_yolo_txt.py --synthetic --epochs 2      # a tiny generated set

Class ids 0..C-1 are kept as the category ids of the COCO evaluation (class 0 included).
"""

import argparse
import os
import tempfile


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", help="list file of training images")
    parser.add_argument("--val", help="list file of validation images")
    parser.add_argument("--names", help="classes.names (default: next to the list file)")
    parser.add_argument("--synthetic", action="store_true", help="generate a small YOLO txt set and use it")
    parser.add_argument("--model", default="CSPDenseNet-Ref-PRN")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", default="runs/yolo_txt")
    return parser.parse_args(argv)


def main(argv=None):
    from keras_csp.data import YoloTxtSource, write_synthetic_dataset
    from keras_csp.training import train

    args = parse(argv)
    if args.synthetic:
        root = tempfile.mkdtemp(prefix="yolo-synthetic-")
        size = (args.image_size, args.image_size)
        train_paths = write_synthetic_dataset(os.path.join(root, "train"), num_images=16, seed=1, image_size=size)
        val_paths = write_synthetic_dataset(os.path.join(root, "val"), num_images=8, seed=2, image_size=size)
        args.train, args.val, args.names = train_paths["yolo_list"], val_paths["yolo_list"], train_paths["names"]
    if not args.train:
        raise SystemExit("give --train LIST (and --names) or --synthetic")
    train_source = YoloTxtSource(args.train, names=args.names)
    val_source = YoloTxtSource(args.val, names=args.names) if args.val else None
    print(f"{train_source}: classes {train_source.class_names}")
    result = train(
        train=args.train, val=args.val, model=args.model, image_size=args.image_size, batch_size=args.batch_size,
        epochs=args.epochs, anchors="auto", optimizer="adam", learning_rate=1e-3, out=args.out,
        verbose=2 if args.synthetic else 1, train_source=train_source, val_source=val_source,
    )
    if result.evaluation is not None:
        print(result.evaluation.table())
    return result


if __name__ == "__main__":
    main()

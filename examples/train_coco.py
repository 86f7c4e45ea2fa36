"""Train a CSP detector on COCO (a COCO JSON or TFDS) with ``model.fit``, evaluating COCO mAP.

    # COCO 2017 from its JSON files (download them yourself first):
    python examples/train_coco.py --train annotations/instances_train2017.json \
        --val annotations/instances_val2017.json --model CSPResNeXt50-PANet-SPP --image-size 512

    # or through TensorFlow Datasets (tfds prepares coco/2017 once):
    python examples/train_coco.py --train tfds:coco/2017:train --val tfds:coco/2017:validation

    # try the whole path in a minute on a tiny synthetic COCO set:
    python examples/train_coco.py --synthetic --model CSPDenseNetb-Ref-PRN --image-size 128 --epochs 2

The paper's recipe (cs*-panet-spp.cfg) is SGD with momentum 0.9, decay 5e-4, learning rate
1e-3 with 1000 burn-in steps, x0.1 at 80% and 90% of the steps: the defaults below. Restart
the same command after a crash: it resumes from <out>/backup.
"""

import argparse
import os
import tempfile


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", help="COCO JSON or tfds:NAME:SPLIT")
    parser.add_argument("--val", help="COCO JSON or tfds:NAME:SPLIT for the mAP")
    parser.add_argument("--synthetic", action="store_true", help="use a tiny synthetic COCO set instead")
    parser.add_argument("--model", default="CSPDarknet53-PANet-SPP")
    parser.add_argument("--image-size", type=int, default=416)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--strategy", default="default", help="default | mirrored | multi_worker | tpu")
    parser.add_argument("--mixed-precision", default="none")
    parser.add_argument("--out", default="runs/coco")
    return parser.parse_args(argv)


def main(argv=None):
    from keras_csp.training import train

    args = parse(argv)
    train_data, val_data = args.train, args.val
    if args.synthetic:
        from keras_csp.data import ensure_synthetic_dataset

        root = tempfile.mkdtemp(prefix="coco-synthetic-")
        size = (args.image_size, args.image_size)
        train_data = ensure_synthetic_dataset(os.path.join(root, "train"), num_images=16, seed=1, image_size=size)["coco_json"]
        val_data = ensure_synthetic_dataset(os.path.join(root, "val"), num_images=8, seed=2, image_size=size)["coco_json"]
    if not train_data:
        raise SystemExit("give --train (a COCO JSON or tfds:coco/2017:train) or --synthetic")
    result = train(
        train=train_data, val=val_data, model=args.model, image_size=args.image_size, batch_size=args.batch_size,
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, optimizer="sgd", learning_rate=1e-3,
        momentum=0.9, weight_decay=5e-4, schedule="steps", strategy=args.strategy,
        mixed_precision=args.mixed_precision, out=args.out, verbose=2 if args.synthetic else 1,
    )
    if result.evaluation is not None:
        print(result.evaluation.summary)
        print(result.evaluation.table())
    return result


if __name__ == "__main__":
    main()

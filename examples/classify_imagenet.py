"""ImageNet-style classification training of a CSP backbone, as the authors' classifier cfgs:
SGD momentum 0.9, Darknet weight decay 5e-4, learning rate 0.1 with 1000 burn-in steps, then
polynomial decay with power 4; top-1 / top-5 accuracy.

    # a folder of class folders (root/<class>/<image>), e.g. ImageNet's train / val:
    python examples/classify_imagenet.py --train-dir imagenet/train --val-dir imagenet/val \
        --model CSPDarknet53 --image-size 256 --batch-size 128

    # or through TFDS:  --train-dir tfds:imagenet2012:train --val-dir tfds:imagenet2012:validation

    # offline try: crops of the synthetic shapes as an 8-class image folder
    python examples/classify_imagenet.py --synthetic --model CSPDenseNetbRef --image-size 64 --epochs 2
"""

import argparse
import os
import tempfile


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-dir")
    parser.add_argument("--val-dir")
    parser.add_argument("--synthetic", action="store_true", help="classify crops of the synthetic shapes")
    parser.add_argument("--model", default="CSPDarknet53")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--burn-in", type=int, default=1000)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--out", default="runs/classify")
    return parser.parse_args(argv)


def synthetic_folder(root, num_images=24, seed=0):
    """Crop every object of a synthetic detection set into ``root/<class>/<n>.png``."""
    from PIL import Image

    from keras_csp.data import write_synthetic_dataset
    from keras_csp.data.synthetic import SHAPE_CLASSES
    from keras_csp.data.coco import CocoSource

    paths = write_synthetic_dataset(os.path.join(root, "detection"), num_images=num_images, seed=seed,
                                    min_side=128, max_side=192, min_object=16)
    source = CocoSource(paths["coco_json"], paths["images"])
    out = os.path.join(root, "folder")
    for name in SHAPE_CLASSES:
        os.makedirs(os.path.join(out, name), exist_ok=True)
    count = 0
    for record in source.records:
        with Image.open(record.path) as image:
            w, h = image.size
            for box, cls in zip(record.boxes, record.classes):
                crop = image.crop((box[0] * w, box[1] * h, box[2] * w, box[3] * h)).convert("RGB")
                crop.save(os.path.join(out, SHAPE_CLASSES[cls], f"{count:05d}.png"))
                count += 1
    return out


def _source(spec, training):
    from keras_csp.data import ImageFolderSource, TfdsClassificationSource

    if spec.startswith("tfds:"):
        name, _, split = spec[5:].partition(":")
        return TfdsClassificationSource(name, split or ("train" if training else "validation"))
    return ImageFolderSource(spec)


def main(argv=None):
    from keras_csp import zoo
    from keras_csp.backend import keras
    from keras_csp.data import classification_dataset
    from keras_csp.evaluation import classification_metrics, evaluate_classifier
    from keras_csp.training import BackupAndResume, WeightsCheckpoint, imagenet_schedule, make_optimizer
    from keras_csp.training.callbacks import LearningRateLogger, RunLog

    args = parse(argv)
    if args.synthetic:
        args.train_dir = args.val_dir = synthetic_folder(tempfile.mkdtemp(prefix="classify-"))
    if not args.train_dir:
        raise SystemExit("give --train-dir (and --val-dir) or --synthetic")
    train_source = _source(args.train_dir, True)
    val_source = _source(args.val_dir, False) if args.val_dir else None
    classes = train_source.num_classes
    train_ds = classification_dataset(train_source, image_size=args.image_size, batch_size=args.batch_size,
                                      label_smoothing=args.label_smoothing, seed=0)
    val_ds = classification_dataset(val_source, image_size=args.image_size, batch_size=args.batch_size,
                                    training=False) if val_source else None
    steps = max(1, len(train_source.paths) // args.batch_size) if hasattr(train_source, "paths") else None
    steps = steps or 1000
    model = zoo.build(args.model, classes=classes, input_shape=(args.image_size, args.image_size, 3))
    schedule = imagenet_schedule(args.learning_rate, args.epochs * steps, burn_in=min(args.burn_in, steps))
    model.compile(optimizer=make_optimizer("sgd", schedule, momentum=0.9, weight_decay=5e-4),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
                  metrics=classification_metrics(top_k=min(5, classes)))
    os.makedirs(args.out, exist_ok=True)
    callbacks = [LearningRateLogger(), BackupAndResume(os.path.join(args.out, "backup")),
                 WeightsCheckpoint(args.out, monitor="val_top1" if val_ds is not None else "top1", mode="max"),
                 RunLog(args.out, title=f"{args.model} classification")]
    backup = callbacks[1]
    initial = backup.restore(model)
    model.fit(train_ds.repeat(), epochs=args.epochs, initial_epoch=initial, steps_per_epoch=steps, shuffle=False,
              validation_data=val_ds, callbacks=callbacks, verbose=2 if args.synthetic else 1)
    if val_ds is not None:
        accuracy = evaluate_classifier(model, val_ds, ks=(1, min(5, classes)))
        print("validation:", ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
        return accuracy
    return {}


if __name__ == "__main__":
    main()

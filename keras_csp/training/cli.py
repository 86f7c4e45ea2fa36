"""``keras-csp train | evaluate | predict | demo``: the training sub-commands."""

import argparse
import json
import os
import sys

from keras_csp.cli import main as keras_csp_main
from keras_csp.data import detection_dataset
from keras_csp.data.dataset_files import is_dataset_file, open_detection_source
from keras_csp.data.yolo_txt import find_names_file
from keras_csp.evaluation import evaluate_detector, write_pr_curves
from keras_csp.evaluation.pictures import validation_pictures
from keras_csp.training.checkpoints import atomic_write_text
from keras_csp.training.config import FIELDS, make_config
from keras_csp.training.demo import run_demo
from keras_csp.training.restore import predict_files, restore_detector
from keras_csp.training.run import train

HELP = {
    "data": "a dataset file giving both splits and the class names: a Darknet .data (classes=, train=, valid=, "
            "names=) or an Ultralytics data.yaml (path, train, val, names)",
    "train": "training data: 'synthetic', a COCO .json, a YOLO list .txt or image folder, a VOC folder or "
             "tfds:NAME[:SPLIT]",
    "val": "validation data (same forms); evaluated with COCO mAP every --eval-every epochs",
    "names": "class names file for YOLO txt data, one per line (default: classes.txt / obj.names / *.names "
             "beside the list)",
    "time": "training time budget in minutes: the run's steps are planned from the measured speed of its "
            "first steps (replaces --epochs), the schedule is stretched to them, and training stops in time",
    "save_keras": "also write best.keras / final.keras, the complete detectors (--no-save-keras: weights only)",
    "image_size": "square model input side, a multiple of 32 (default 416)",
    "batch_size": "global batch size, split over the replicas (default: the recipe's 32; --recipe darknet: 16)",
    "augment": "default (mosaic, scale, HSV, flip: YOLOv5 hyp.scratch-low; the recipe's) | light (no mosaic) | none",
    "mosaic": "mosaic probability (overrides --augment's)",
    "close_mosaic": "train the last N epochs without mosaics, as Ultralytics' close_mosaic (0: never; with "
                    "--time, the last N of the planned epochs)",
    "mixup": "mixup probability (overrides --augment's)",
    "multi_scale": "'MIN,MAX' multiples of 32: random input size every 10 batches",
    "cache": "cache decoded, resized images in memory",
    "shuffle": "shuffle the training images each epoch (--no-shuffle: a fixed data order)",
    "max_boxes": "rows of the padded box tensor (default: sized from the data, x4 with mosaic, x2 with mixup)",
    "steps_per_epoch": "batches per epoch (default: one pass over the training set)",
    "model": "a named detector (e.g. CSPDarknet53-PANet-SPP), BACKBONE+NECK (CSPResNeXt50+panet_spp) "
             "or package.module:function",
    "num_classes": "classes (default: from the training data)",
    "anchors": "'auto' (k-means on the training boxes), 'scaled' (YOLOv3's, scaled to the input) or "
               "'w,h, w,h, ...; w,h, ...' per level (default: the recipe's auto when training from scratch, "
               "else the model's)",
    "loss": "box loss for every head: mse | iou | giou | diou | ciou (default: each head's)",
    "head_options": "HeadSpec options for every head, 'key=value,...' (e.g. 'iou_loss=ciou,iou_normalizer=0.07,"
                    "iou_thresh=0.213,scale_x_y=1.05' as the YOLOv4 cfgs, plus obj_iou=1.0: the recipe's head); merged over the recipe's "
                    "head and the model's own (--recipe darknet: over the model's own only)",
    "weights": "initial weights of the whole detector: a Keras .weights.h5 or a Darknet .weights (fine-tuning)",
    "backbone_weights": "initial backbone weights: a Darknet .weights (e.g. csdarknet53.weights) or Keras file",
    "freeze_backbone_epochs": "train the neck and head only for this many epochs first (warm-up for fine-tuning)",
    "bn_momentum": "momentum of the batch-norm moving statistics (default: the recipe's 0.9; --recipe darknet: "
                   "the model's, 0.99 as Darknet); "
                   "0.9 suits short runs, whose weights move faster than 0.99 follows",
    "epochs": "epochs to train (a resumed run still ends at this epoch)",
    "optimizer": "sgd (momentum, Darknet's weight decay) | adam | adamw (default: the recipe's adam; "
                 "--recipe darknet: sgd)",
    "learning_rate": "peak learning rate after burn-in (default: the recipe's 6e-3 for adam; --recipe darknet: "
                     "0.001, the cfgs')",
    "momentum": "SGD momentum (default 0.9)",
    "weight_decay": "Darknet decay (coupled L2 on kernels) for sgd/adam; decoupled decay for adamw (default 5e-4)",
    "schedule": "steps (x0.1 at 80%% and 90%% of steps: COCO cfgs) | poly (power 4: ImageNet cfgs) | cosine | constant",
    "burn_in": "warm-up steps, Darknet's burn_in (default min(1000, 10%% of the steps))",
    "ema": "decay d of the model EMA (all weights, BN statistics included; 0: off) (default 0.998; YOLOv5's "
           "0.9999 with --ema-tau 2000 suits runs of 100k+ steps); evaluation, checkpoints and the final weights "
           "use the average",
    "ema_tau": "EMA warm-up: the decay after n steps is d * (1 - exp(-n / tau)) (default 100)",
    "mixed_precision": "auto (default: mixed_bfloat16 on CPUs with AMX / AVX512_BF16, mixed_float16 on a GPU, "
                       "else float32) | none | mixed_float16 | mixed_bfloat16",
    "clipnorm": "clip each gradient to this norm",
    "steps_per_execution": "batches per compiled call (faster on TPUs)",
    "strategy": "default | mirrored | multi_worker (TF_CONFIG) | tpu",
    "cpu_devices": "split the CPU into N logical devices (to try --strategy mirrored without GPUs)",
    "eval_every": "evaluate every N epochs (the last epoch always; default 1, with --time as often as keeps "
                  "the evaluations under 10%% of the budget)",
    "eval_batches": "evaluate only N batches (quick checks)",
    "out": "output folder (weights, history, curves, eval, backup) (default runs/train)",
    "backup": "keep a resumable backup each epoch (restart the same command to resume)",
    "tensorboard": "write TensorBoard logs",
    "seed": "seed of weights init, shuffling and augmentation (default 0)",
    "deterministic": "deterministic TensorFlow ops (slower; bitwise-reproducible runs)",
    "verbose": "0 silent, 1 progress bar, 2 one line per epoch",
    "recipe": "csp (default): options left unset take keras_csp/training/recipe.py's values (CIoU head with "
              "iou_thresh 0.213, scale_x_y 1.05 and IoU objectness targets, Adam 6e-3, batch 32, auto anchors, BN momentum 0.9, mosaic, "
              "EMA; cfg detectors with their own box loss, YOLOv4 / -tiny, keep their head) | darknet: the plain "
              "defaults (SGD 0.001, batch 16, the model's own head and anchors: the paper's YOLOv3 head)",
}


def _add_config_flags(parser):
    """One flag per ``TrainConfig`` field; defaults are None so YAML values show through."""
    for name, field in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        kind = field.type if isinstance(field.type, type) else str(field.type)
        help_text = HELP.get(name, "")
        if kind in (bool, "bool"):
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        caster = {int: int, "int": int, float: float, "float": float}.get(kind)
        if caster is None:
            caster = int if "int" in str(kind) else float if "float" in str(kind) else str
        parser.add_argument(flag, dest=name, type=caster, default=None, help=help_text)


def _config_from_args(args):
    overrides = {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}
    return make_config(args.config, **overrides)


def _train(args):
    config = _config_from_args(args)
    result = train(config)
    if result.evaluation is not None:
        print(result.evaluation.summary)
        print(result.evaluation.table())
    print(f"outputs in {result.out_dir}")
    final = os.path.join(result.out_dir, "final.keras")
    if os.path.isfile(final):
        print(f"model: {final} (next: keras-csp export tflite --run {result.out_dir} model.tflite)")
    return 0


def _model_flags(parser):
    parser.add_argument("--run", help="a training run folder (its best.keras / final.keras, else model, classes, "
                        "anchors from its run.json), or a .keras detector file")
    parser.add_argument("--weights", help="best | final | last (of --run), a .keras detector, or a weights file "
                        "(.weights.h5 / Darknet .weights)")
    parser.add_argument("--model", help="model name, as for train (default: the run's)")
    parser.add_argument("--num-classes", type=int, help="classes (default: the run's)")
    parser.add_argument("--image-size", type=int, help="input side (default: the run's)")
    parser.add_argument("--anchors", help="anchors, as for train (default: the run's)")
    parser.add_argument("--verbose", type=int, default=1, help="2: TensorFlow's log lines and tracebacks on errors")


def _evaluation_source(spec, names, detector_names):
    """The evaluation data: a dataset file's val split, or any source ``train`` takes; YOLO
    txt data without a names file beside take the detector's class names."""
    text = os.fspath(spec)
    yolo = text.endswith(".txt") or (os.path.isdir(text) and not os.path.isdir(os.path.join(text, "Annotations")))
    if names is None and yolo and not is_dataset_file(text) and os.path.exists(text) and find_names_file(text) is None:
        names = list(detector_names)
    return open_detection_source(text, training=False, names=names)


def _evaluate(args):
    detector, info = restore_detector(args.run, args.weights, args.model, args.num_classes, args.image_size,
                                      args.anchors, args.names)
    source = _evaluation_source(args.data, args.names, info["class_names"])
    if source.num_classes != len(info["class_names"]):
        raise ValueError(f"{args.data}: {source.num_classes} classes, but the detector has "
                         f"{len(info['class_names'])} ({', '.join(info['class_names'][:5])}...)")
    dataset = detection_dataset(source, image_size=info["image_size"], batch_size=args.batch_size, training=False)
    if args.out and args.pictures:  # one pass for the numbers and the pictures
        result, _, _ = validation_pictures(detector, dataset, args.out, source, max_batches=args.max_batches)
    else:
        result = evaluate_detector(detector, dataset, source, max_batches=args.max_batches)
    print(result.summary)
    print(result.table())
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        atomic_write_text(os.path.join(args.out, "coco_eval.json"), json.dumps(result.to_json(), indent=1))
        atomic_write_text(os.path.join(args.out, "per_class_ap.txt"), result.table() + "\n")
        if args.pr_curves:
            write_pr_curves(result, args.out)
        print(f"results in {args.out}")
    return 0


def _predict(args):
    detector, info = restore_detector(args.run, args.weights, args.model, args.num_classes, args.image_size,
                                      args.anchors, args.names)
    records = predict_files(detector, args.images, args.out, info["class_names"], args.score_threshold,
                            image_size=info["image_size"])
    for r in records:
        print(f"{r['image']}: {len(r['detections'])} objects -> {r['output']}")
    return 0


def _demo(args):
    options = {k: v for k, v in vars(args).items() if k not in ("command", "handler") and v is not None}
    report = run_demo(**options)
    return 0 if report.get("learned", True) else 1


def add_training_parsers(subparsers):
    """Add ``train``, ``evaluate``, ``predict`` and ``demo`` to the ``keras-csp`` command."""
    p = subparsers.add_parser(
        "train", help="train a detector with model.fit (resumable, distributed, COCO mAP)",
        description="Train a CSP detector. Options come from --config (YAML) and flags (flags win). "
        "Restart the same command after a crash to resume from <out>/backup.",
    )
    p.add_argument("--config", help="YAML file of options (keys as the flags, with underscores)")
    _add_config_flags(p)
    p.set_defaults(handler=_train)

    p = subparsers.add_parser("evaluate", help="COCO mAP of a trained detector on a dataset")
    p.add_argument("data", help="evaluation data: a Darknet .data / Ultralytics data.yaml (its val split), a COCO "
                   ".json, a YOLO list .txt or image folder, a VOC folder, tfds:NAME:SPLIT, synthetic")
    _model_flags(p)
    p.add_argument("--names", help="class names file (one per line; default: the detector's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-batches", type=int, help="evaluate only this many batches")
    p.add_argument("--out", help="write coco_eval.json, per_class_ap.txt (and PR curves) here")
    p.add_argument("--pr-curves", action=argparse.BooleanOptionalAction, default=True, help="write PR-curve PNGs")
    p.add_argument("--pictures", action=argparse.BooleanOptionalAction, default=True,
                   help="with --out: confusion matrix, P/R/F1/PR curves, labels.png, val_images.png")
    p.set_defaults(handler=_evaluate)

    p = subparsers.add_parser("predict", help="draw a trained detector's boxes on images (PNG)")
    p.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    _model_flags(p)
    p.add_argument("--names", help="class names file (one per line; default: the run's)")
    p.add_argument("--out", required=True, help="output folder for the PNGs and detections.json")
    p.add_argument("--score-threshold", type=float, default=0.25)
    p.set_defaults(handler=_predict)

    p = subparsers.add_parser(
        "demo", help="synthetic data -> train a small CSP detector on the CPU -> mAP -> TFLite -> pictures",
        description="Make the synthetic dataset, train a small CSP detector with model.fit, evaluate COCO "
        "mAP on held-out images, export to TFLite and run it, and write a report with PNGs.",
    )
    p.add_argument("--out", help="output folder (default: a new temporary folder)")
    p.add_argument("--data-dir", help="where to write the synthetic dataset (default: inside --out)")
    p.add_argument("--quick", action="store_true", help="three minutes of training (about four in all) instead of fourteen")
    p.add_argument("--minutes", type=float, help="training time budget in minutes")
    p.add_argument("--model", help="detector (default: the demo's small CSP detector)")
    p.add_argument("--image-size", type=int, help="input side")
    p.add_argument("--epochs", type=int, help="maximum epochs (training also stops at --minutes)")
    p.add_argument("--train-images", type=int, help="synthetic training images")
    p.add_argument("--val-images", type=int, help="held-out synthetic images")
    p.add_argument("--export", action=argparse.BooleanOptionalAction, default=None, help="export to TFLite and run it")
    p.add_argument("--seed", type=int)
    p.set_defaults(handler=_demo)
    return subparsers


def main(argv=None):
    return keras_csp_main(argv)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["add_training_parsers"]

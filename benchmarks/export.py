"""Every export format of one detector side by side: a thin caller of ``keras-csp benchmark``
(``keras_csp.export.benchmark``), with two conveniences for this repository's measurements:
a tiny detector trained here on the synthetic set when no model is given, and ``--demo OUT``
(the detector and held-out set of a finished ``keras-csp demo --out OUT``).

    python benchmarks/export.py                                # tiny detector, 30 epochs, 128 px
    python benchmarks/export.py --model run_folder_or.keras --data val.json
    python benchmarks/export.py --demo OUT                     # the demo's detector, its held-out set

The table: mAP@0.5, mAP@0.5:0.95 (COCO, same decode + NMS for every format), p50 latency at
batch 1, file size, GPU-delegate findings. Backbone latency alone (no detection head):
``python benchmarks/backbones.py --models CSPDarknet53 --tflite``. The QAT row of the README
was measured with this script before it became a caller (commit 411cc13 has that version).
"""

import argparse
import json
import os
import sys
import tempfile
import time


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a .keras detector, a keras-csp train run folder or a detector name")
    parser.add_argument("--data", help="evaluation data (default: a held-out synthetic set made here)")
    parser.add_argument("--demo", help="the --out folder of a finished `keras-csp demo` run")
    parser.add_argument("--weights", help="run folder: best | final; detector name: a weights file")
    parser.add_argument("--size", type=int, default=128, help="tiny detector / synthetic images: input side")
    parser.add_argument("--epochs", type=int, default=30, help="tiny detector training epochs")
    parser.add_argument("--train-images", type=int, default=256)
    parser.add_argument("--val-images", type=int, default=64)
    parser.add_argument("--formats", help="comma-separated (default: every format)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--calibration", help="int8: image folder (default: --demo's training images, else the data)")
    parser.add_argument("--num-calibration", type=int, default=200)
    parser.add_argument("--out", help="keep the files here (default: a temp folder)")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args(argv)


def _tiny_detector(args, folder):
    """A tiny detector trained ``--epochs`` on synthetic images, and the held-out source."""
    from keras_csp.backend import keras
    from keras_csp.data import detection_dataset
    from keras_csp.data.synthetic import SHAPE_CLASSES, synthetic_source
    from keras_csp.detectors import YOLOTask
    from keras_csp.export import examples

    size = args.size
    train = synthetic_source(os.path.join(folder, "train"), num_images=args.train_images, seed=0,
                             min_side=size, max_side=2 * size)
    val = synthetic_source(os.path.join(folder, "val"), num_images=args.val_images, seed=1,
                           min_side=size, max_side=2 * size)
    task = YOLOTask(examples.tiny_detector(size, len(SHAPE_CLASSES), width=16), examples.tiny_heads(len(SHAPE_CLASSES)))
    task.compile(optimizer=keras.optimizers.Adam(2e-3))
    start = time.time()
    task.fit(detection_dataset(train, image_size=size, batch_size=16, seed=0), epochs=args.epochs, verbose=2)
    print(f"trained {args.epochs} epochs in {time.time() - start:.0f} s", flush=True)
    return task, val


def main(argv=None):
    args = _parse(argv)
    import tensorflow as tf  # before anything runs: Keras and the SavedModel get --threads too

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from keras_csp.data import resolve_source
    from keras_csp.export.benchmark import FORMATS, benchmark

    folder = args.out or tempfile.mkdtemp(prefix="export_bench_")
    os.makedirs(folder, exist_ok=True)
    calibration = args.calibration
    if args.demo:
        report_path = os.path.join(args.demo, "report.json")
        if not os.path.isfile(report_path):
            raise SystemExit(f"--demo {args.demo}: no report.json; run `keras-csp demo --out {args.demo}` to the end first")
        with open(report_path, encoding="utf-8") as handle:
            report = json.load(handle)
        model, weights = report["run_dir"], args.weights or "final"
        source = resolve_source(args.data or os.path.join(args.demo, "data", "val", "annotations.json"), training=False)
        calibration = calibration or os.path.join(args.demo, "data", "train", "images")
    elif args.model:
        if not args.data:
            raise SystemExit("--model needs --data (the evaluation set)")
        model, weights, source = args.model, args.weights, resolve_source(args.data, training=False)
    else:
        model, source = _tiny_detector(args, folder)
        weights = None
    result = benchmark(model, source, args.formats or FORMATS, folder, runs=args.runs, threads=args.threads,
                       calibration=calibration, num_calibration=args.num_calibration, weights=weights)
    print(f"\n{result.model} {result.image_size}x{result.image_size}, {result.num_images} images, "
          f"{result.threads} threads, load average {result.load_average}; int8 calibrated on {result.calibration}")
    print(result.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result.to_json(), handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of the detection input pipeline next to what a small detector consumes.

Measures images/s of the full training pipeline (decode, mosaic, scale/aspect/translate,
letterbox, flip, HSV, batch) at 416x416 with mosaic on and off, on the synthetic dataset
(written to a temporary folder, COCO-like image sizes), and the training throughput
(``fit`` steps on batches held in memory) of a small detector at 320x320 in the same run.
The pipeline should deliver at least 3x what the model consumes.

    python benchmarks/data_pipeline.py                    # defaults: 256 images, batch 16
    python benchmarks/data_pipeline.py --model standin    # skip the keras_csp detector

Not a test: numbers depend on the machine and on whatever else runs on it.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_csp.backend import keras, tf  # noqa: E402
from keras_csp.data import detection_dataset, synthetic_source  # noqa: E402


def pipeline_rate(dataset, batches, warmup):
    """(images per wall second, CPU milliseconds per image) over ``batches`` batches after
    ``warmup``; CPU time (all threads of this process) does not depend on other load."""
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start, cpu = time.perf_counter(), time.process_time()
    images = 0
    for _ in range(batches):
        x, _ = next(iterator)
        images += int(x.shape[0])
    return images / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / images


def build_model(kind, size, num_classes):
    """The small detector (CSPDenseNet-Ref backbone + PRN head) or, if that cannot be built
    here, a stand-in conv net with a YOLO-shaped output, labelled as such."""
    if kind in ("auto", "detector"):
        try:
            from keras_csp.detectors import YOLODetector
            from keras_csp.models.small import CSPDenseNetRef

            backbone = CSPDenseNetRef(include_top=False, input_shape=(size, size, 3), weights=None)
            model = YOLODetector(backbone, "prn", num_classes=num_classes)
            model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9))
            return model, "CSPDenseNet-Ref-PRN (keras_csp.detectors.YOLODetector)"
        except Exception as e:  # a sibling module may be unfinished: fall back, say so
            if kind == "detector":
                raise
            print(f"[model] CSPDenseNet-Ref-PRN not available ({type(e).__name__}: {e}); using the stand-in")
    inputs = keras.Input((size, size, 3))
    x = inputs
    for filters in (16, 32, 64, 128, 256):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.LeakyReLU(0.1)(x)
    x = keras.layers.Conv2D(3 * (5 + num_classes), 1)(x)
    model = keras.Model(inputs, x, name="standin")
    model.compile(optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
                  loss=lambda y_true, y_pred: tf.reduce_mean(tf.square(y_pred)) + 0.0 * tf.reduce_sum(y_true))
    return model, "STAND-IN conv net (5 strided 3x3 convs 16-256; not a keras_csp detector)"


def model_rate(model, batch_size, size, steps, dataset):
    """Training images per second: ``fit`` on batches already in memory (no input cost)."""
    images, boxes = next(iter(dataset))
    images = tf.image.resize(images, (size, size))
    data = tf.data.Dataset.from_tensors((images, boxes)).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=416)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=24, help="measured batches per pipeline run")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--model", choices=("auto", "detector", "standin", "none"), default="auto")
    parser.add_argument("--model-size", type=int, default=320)
    parser.add_argument("--model-steps", type=int, default=6)
    parser.add_argument("--data-dir", default=None, help="synthetic set folder (default: a temporary one)")
    args = parser.parse_args(argv)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs visible, load average {load:.1f}, "
          f"inter/intra threads {tf.config.threading.get_inter_op_parallelism_threads()}/"
          f"{tf.config.threading.get_intra_op_parallelism_threads()} (0 = all)")
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.data_dir or os.path.join(tmp, "synthetic")
        start = time.perf_counter()
        source = synthetic_source(directory, num_images=args.num_images, seed=0, min_side=400, max_side=640)
        print(f"synthetic set: {len(source)} JPEGs of 400-640 px per side, written in {time.perf_counter() - start:.1f} s")
        rates = {}
        for mosaic in (True, False):
            ds = detection_dataset(source, image_size=args.image_size, batch_size=args.batch_size, mosaic=mosaic,
                                   seed=0).repeat()
            rates[mosaic], cpu_ms = pipeline_rate(ds, args.batches, args.warmup)
            print(f"pipeline @{args.image_size}, mosaic {'on ' if mosaic else 'off'}: {rates[mosaic]:7.1f} images/s "
                  f"({cpu_ms:.1f} CPU-ms per image, all threads)")
        if args.model != "none":
            model, label = build_model(args.model, args.model_size, source.num_classes)
            ds = detection_dataset(source, image_size=args.model_size, batch_size=args.batch_size, seed=0)
            rate = model_rate(model, args.batch_size, args.model_size, args.model_steps, ds)
            print(f"model  @{args.model_size}: {label}: {rate:7.1f} images/s (training, fit)")
            for mosaic, r in rates.items():
                ratio = r / rate
                verdict = "OK (>= 3x)" if ratio >= 3 else "BELOW 3x"
                print(f"  pipeline/model, mosaic {'on ' if mosaic else 'off'}: {ratio:5.1f}x  {verdict}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    raise SystemExit(main())

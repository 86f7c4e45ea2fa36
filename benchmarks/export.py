"""Export variants measured: latency (and optionally mAP@0.5) of Keras vs TFLite fp32/fp16/int8.

Latency: batch 1, ``--threads`` CPU threads for both runtimes (TFLite through XNNPACK via
ai-edge-litert, Keras through a ``tf.function``), interleaved rounds so that load changes on
the machine hit every variant alike; p50 and p90 over ``--runs`` calls.

Accuracy (``--map``): COCO mAP@0.5 on a held-out synthetic set (keras_csp.data.synthetic)
of the Keras model and of each TFLite file, with the same decode + NMS
(``keras_csp.evaluation``). ``--model`` is a trained detector (``.keras``); without it a tiny
detector is trained for ``--epochs`` on the synthetic set first (a smoke-level model).
``--demo OUT`` takes the detector and the synthetic train / held-out sets of a finished
``keras-csp demo --out OUT`` run (a properly trained detector).

    python benchmarks/export.py                                   # tiny detector, 2 threads
    python benchmarks/export.py --backbone CSPDarknet53 --size 256
    python benchmarks/export.py --map --epochs 40 --size 128
    python benchmarks/export.py --map --model trained_detector.keras --size 416
    python benchmarks/export.py --map --demo OUT       # the detector `keras-csp demo --out OUT` trained

int8 is calibrated on ``--calibration`` (200) letterboxed synthetic training images. The
``qat`` variant (ranges calibrated on the same images, quantization-aware fine-tuning for
``--qat-epochs`` at Adam ``--qat-lr``, then int8) needs tensorflow-model-optimization, hence
tf_keras:

    TF_USE_LEGACY_KERAS=1 python benchmarks/export.py --map --variants keras,fp32,fp16,int8,qat
    TF_USE_LEGACY_KERAS=1 python benchmarks/export.py --map --demo OUT --variants keras,int8,qat

(with ``--demo`` under tf_keras, run once under Keras 3 first: it writes the weights as an
``.npz`` that tf_keras can read.)
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def _parse():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", help="a zoo backbone instead of the tiny detector")
    parser.add_argument("--model", help="a trained detector (.keras) for --map")
    parser.add_argument("--demo", help="the --out folder of a finished `keras-csp demo` run")
    parser.add_argument("--size", type=int, default=128, help="input side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--variants", default="keras,fp32,fp16,int8")
    parser.add_argument("--calibration", type=int, default=200)
    parser.add_argument("--map", action="store_true", help="also measure mAP@0.5")
    parser.add_argument("--epochs", type=int, default=30, help="tiny detector training")
    parser.add_argument("--qat-epochs", type=int, default=5, help="QAT fine-tuning epochs")
    parser.add_argument("--qat-lr", type=float, default=1e-4, help="QAT fine-tuning learning rate (Adam)")
    parser.add_argument("--train-images", type=int, default=256)
    parser.add_argument("--val-images", type=int, default=64)
    parser.add_argument("--out", help="folder for the files (default: a temp folder)")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(ARGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        # TF 2.21's grappler fuses tf_keras' FusedBatchNorm with a following Mish on CPU
        # and then has no kernel ("Fusion is not implemented: [FusedBatchNorm,Mish]").
        tf.config.optimizer.set_experimental_options({"remapping": False})

from keras_csp.backend import keras, tf  # noqa: E402
from keras_csp.export import examples, to_tflite  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/timing.py, when imported
from timing import interleaved_times, tflite_runner  # noqa: E402


def _datasets(size, train_images, val_images, folder):
    from keras_csp.data.pipeline import detection_dataset
    from keras_csp.data.synthetic import synthetic_source

    train_source = synthetic_source(os.path.join(folder, "train"), num_images=train_images,
                                    seed=0, min_side=size, max_side=2 * size)
    val_source = synthetic_source(os.path.join(folder, "val"), num_images=val_images, seed=1,
                                  min_side=size, max_side=2 * size)
    train = detection_dataset(train_source, image_size=size, batch_size=16, seed=0)
    calibration = detection_dataset(train_source, image_size=size, batch_size=16,
                                    training=False)
    val = detection_dataset(val_source, image_size=size, batch_size=8, training=False)
    return train, calibration, val, val_source


def _demo_sets(folder):
    """(train, calibration, val, val source) of a finished demo run's synthetic sets."""
    from keras_csp.data import resolve_source
    from keras_csp.data.pipeline import detection_dataset

    report = _demo_report(folder)
    size = report["image_size"]
    train_source = resolve_source(os.path.join(folder, "data", "train", "annotations.json"), training=True)
    val_source = resolve_source(os.path.join(folder, "data", "val", "annotations.json"), training=False)
    # The demo trains without augmentation: QAT fine-tunes on the same distribution.
    train = detection_dataset(train_source, image_size=size, batch_size=8, seed=0, augment=False, cache=True)
    calibration = detection_dataset(train_source, image_size=size, batch_size=16, training=False)
    val = detection_dataset(val_source, image_size=size, batch_size=16, training=False)
    return train, calibration, val, val_source


def _demo_report(folder):
    path = os.path.join(folder, "report.json")
    if not os.path.isfile(path):
        raise SystemExit(f"--demo {folder}: no report.json there; run `keras-csp demo --out {folder}` to the end first")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _demo_model(folder):
    """The demo's trained detector, rebuilt in this Keras (3 or tf_keras) with its weights."""
    from keras_csp.training.models import build_model, parse_anchors

    report = _demo_report(folder)
    detector = build_model(report["model"], len(report["class_names"]), report["image_size"],
                           anchors=parse_anchors(report["anchors"]), head_options=report["head_options"])
    run_dir = report["run_dir"]
    npz = os.path.join(run_dir, "final.network.npz")  # the network's weights (no loss trackers)
    network = getattr(detector, "detector", detector)
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        if not os.path.isfile(npz):
            raise SystemExit(f"{npz} is missing: run this once under Keras 3 (without TF_USE_LEGACY_KERAS) first")
        arrays = np.load(npz)
        network.set_weights([arrays[f"arr_{i}"] for i in range(len(arrays.files))])
    else:
        detector.load_weights(os.path.join(run_dir, "final.weights.h5"))
        np.savez(npz, *network.get_weights())
    return detector


def _model(args, train):
    if args.demo:
        return _demo_model(args.demo), None
    if args.model:
        return keras.models.load_model(args.model, compile=False), None
    if args.backbone:
        from keras_csp import zoo

        return zoo.build(args.backbone, weights=None, include_top=False,
                         input_shape=(args.size, args.size, 3)), None
    from keras_csp.data.synthetic import SHAPE_CLASSES
    from keras_csp.detectors import YOLOTask

    network = examples.tiny_detector(args.size, len(SHAPE_CLASSES), width=16)
    heads = examples.tiny_heads(len(SHAPE_CLASSES))
    if args.map:
        task = YOLOTask(network, heads)
        task.compile(optimizer=keras.optimizers.Adam(2e-3))
        start = time.time()
        task.fit(train, epochs=args.epochs, verbose=2)
        print(f"trained {args.epochs} epochs in {time.time() - start:.0f} s", flush=True)
    return network, heads


def _qat_model(network, heads, train, epochs, samples, learning_rate):
    """Quantization-aware fine-tuning of ``network`` (tf_keras only) with the YOLO loss,
    activation ranges started from the float model's on the calibration images."""
    from keras_csp.detectors import YOLOTask
    from keras_csp.export import qat

    model = qat.quantize_aware(network, calibration_data=samples)
    if train is not None and epochs > 0:
        task = YOLOTask(model, heads)
        task.compile(optimizer=keras.optimizers.Adam(learning_rate))
        start = time.time()
        task.fit(train, epochs=epochs, verbose=2)
        print(f"QAT fine-tuned {epochs} epochs in {time.time() - start:.0f} s", flush=True)
    return model


def latency(functions, image, runs, warmup=3):
    """p50 / p90 milliseconds of each function, interleaved call by call."""
    names = list(functions)
    times = interleaved_times([functions[n] for n in names], image, runs, warmup)
    return {name: {"p50_ms": float(np.percentile(t, 50) * 1000), "p90_ms": float(np.percentile(t, 90) * 1000)}
            for name, t in zip(names, times)}


def mean_ap50(network, heads, val, source, run=None):
    from keras_csp.detectors.inference import postprocess
    from keras_csp.evaluation.detection import EVAL_NMS, evaluate_detector

    detect = None
    if run is not None:
        def detect(images, image_info):
            outputs = [run(image) for image in images.numpy()]
            names = list(outputs[0])
            order = sorted(names, key=lambda n: -outputs[0][n].shape[1])  # stride 8 first
            raw = [tf.constant(np.concatenate([o[n] for o in outputs])) for n in order]
            shape = images.shape
            return postprocess(raw, heads, EVAL_NMS, (shape[1], shape[2]), image_info)
    result = evaluate_detector(network, val, source=source, heads=heads, detect=detect)
    return float(result.stats["AP50"])


def main(args):
    folder = args.out or tempfile.mkdtemp(prefix="export_bench_")
    os.makedirs(folder, exist_ok=True)
    train = calibration = val = source = None
    if args.demo:
        args.size = _demo_report(args.demo)["image_size"]
        train, calibration, val, source = _demo_sets(args.demo)
    elif args.map or not args.backbone:
        train, calibration, val, source = _datasets(args.size, args.train_images,
                                                    args.val_images, folder)
    network, heads = _model(args, train)
    heads = heads or getattr(network, "heads", None)
    network = getattr(network, "detector", network)
    if calibration is not None:
        batches = calibration.take(-(-args.calibration // 16))  # batches of 16
        samples = np.concatenate([x.numpy() for x, _ in batches])[:args.calibration]
    else:
        rng = np.random.default_rng(0)
        coarse = rng.random((args.calibration, 8, 8, 3)).astype(np.float32)
        samples = tf.image.resize(coarse, (args.size, args.size), "bicubic").numpy().clip(0, 1)
    variants = args.variants.split(",")
    files, results = {}, {"model": network.name, "size": args.size, "threads": args.threads,
                          "load_average": os.getloadavg()[0], "variants": {}}
    for variant in variants:
        if variant == "keras":
            continue
        quantize = {"fp32": None, "fp16": "float16", "int8": "int8", "dynamic": "dynamic",
                    "qat": "qat"}[variant]
        start = time.time()
        source_model = network
        if variant == "qat":
            source_model = _qat_model(network, heads, train, args.qat_epochs, samples, args.qat_lr)
        result = to_tflite(source_model, os.path.join(folder, f"{variant}.tflite"),
                           quantize=quantize,
                           representative_data=samples if quantize in ("int8", "qat") else None,
                           heads=heads)
        files[variant] = result.path
        results["variants"][variant] = {"size_mb": result.size_bytes / 1e6,
                                        "gpu_findings": len(result.gpu_report.findings),
                                        "export_s": time.time() - start}
        print(f"exported {variant}: {result.size_bytes / 1e6:.2f} MB in "
              f"{time.time() - start:.0f} s, GPU findings: {len(result.gpu_report.findings)}",
              flush=True)
    @tf.function(jit_compile=False)
    def keras_fn(x):
        return network(x, training=False)

    def keras_call(image):
        return [t.numpy() for t in tf.nest.flatten(keras_fn(tf.constant(image[None])))]

    functions = {"keras": keras_call} if "keras" in variants else {}
    runners = {name: tflite_runner(path, args.threads) for name, path in files.items()}
    functions.update(runners)
    image = samples[0]
    for name, stats in latency(functions, image, args.runs).items():
        results["variants"].setdefault(name, {}).update(stats)
    if args.map and heads is not None:
        results["variants"].setdefault("keras", {})["map50"] = mean_ap50(network, heads, val,
                                                                         source)
        for name, run in runners.items():
            results["variants"][name]["map50"] = mean_ap50(network, heads, val, source, run)
    print(f"\n{results['model']} {args.size}x{args.size}, {args.threads} threads, load "
          f"average {results['load_average']:.1f}")
    print("| variant | p50 ms | p90 ms | size MB | GPU findings | mAP@0.5 |")
    print("|---|---|---|---|---|---|")
    for name, stats in results["variants"].items():
        map50 = stats.get("map50")
        print(f"| {name} | {stats['p50_ms']:.2f} | {stats['p90_ms']:.2f} | "
              f"{stats.get('size_mb', float('nan')):.2f} | {stats.get('gpu_findings', '-')} | "
              f"{'-' if map50 is None else f'{100 * map50:.1f}'} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))

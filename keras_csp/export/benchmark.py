"""``keras-csp benchmark MODEL --data VAL``: every export format of one detector, measured in
one run: COCO mAP@0.5 and mAP@0.5:0.95 on the same images, p50 latency at batch 1, file size
and the TFLite GPU-delegate findings (what ``yolo benchmark`` does for Ultralytics).

Formats: ``keras`` (the model itself, a ``tf.function``), ``saved_model`` (raw outputs,
through its ``serving_default`` signature), ``tflite_fp32`` / ``tflite_fp16`` /
``tflite_int8`` (LiteRT with XNNPACK; int8 calibrated on ``--calibration`` images, default
the first images of VAL) and ``onnx`` (tf2onnx on the SavedModel, onnxruntime; only when
tf2onnx is installed). Every format goes through the same decode + NMS
(``keras_csp.evaluation.EVAL_NMS``) and the same COCO evaluation, so accuracy differences are
the format's. A format that fails keeps its row with the error; none is left out.

MODEL: a ``.keras`` detector file, a ``keras-csp train`` run folder (``--weights best|final``)
or a named detector (built for VAL's classes; ``--weights`` a weights file).
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_csp.backend import keras, tf
from keras_csp.data import detection_dataset, resolve_source
from keras_csp.detectors import DETECTORS
from keras_csp.detectors.detector import network_of
from keras_csp.evaluation.coco import GroundTruthBuilder
from keras_csp.evaluation.detection import EVAL_NMS, evaluate_detector, ground_truth_for
from keras_csp.export import calibration as calib
from keras_csp.export import serving, to_saved_model, to_tflite
from keras_csp.postprocess.decoder import postprocess
from keras_csp.training.models import build_model
from keras_csp.training.restore import restore_detector

FORMATS = ("keras", "saved_model", "tflite_fp32", "tflite_fp16", "tflite_int8", "onnx")
TFLITE_QUANTIZE = {"tflite_fp32": None, "tflite_fp16": "float16", "tflite_int8": "int8"}


@dataclasses.dataclass
class Row:
    """One format's measurements (None where it does not apply or failed, see ``error``)."""

    format: str
    file: str = None
    size_bytes: int = None
    map50: float = None
    map: float = None
    p50_ms: float = None
    p90_ms: float = None
    gpu_findings: int = None
    export_s: float = None
    error: str = None

    def cells(self):
        def number(value, fmt):
            return "-" if value is None else format(value, fmt)

        size = "-" if self.size_bytes is None else f"{self.size_bytes / 1e6:.2f}"
        gpu = "-" if self.gpu_findings is None else ("ok" if self.gpu_findings == 0 else f"{self.gpu_findings} findings")
        return [self.format, size, number(self.map50, ".4f"), number(self.map, ".4f"), number(self.p50_ms, ".2f"),
                gpu, self.error or ""]


@dataclasses.dataclass
class BenchmarkResult:
    """The rows, what was measured on, and the table as text (``table()``)."""

    rows: list
    model: str
    image_size: int
    num_images: int
    threads: int
    runs: int
    calibration: str
    load_average: float

    def table(self):
        header = ["format", "size MB", "mAP@0.5", "mAP@0.5:0.95", "p50 ms", "GPU delegate", "note"]
        lines = [self.row_text(header), self.row_text(["---"] * len(header))]
        lines += [self.row_text(r.cells()) for r in self.rows]
        return "\n".join(lines)

    @staticmethod
    def row_text(cells):
        return "| " + " | ".join(cells) + " |"

    def to_json(self):
        return {**{k: v for k, v in dataclasses.asdict(self).items() if k != "rows"},
                "rows": [dataclasses.asdict(r) for r in self.rows]}


def interleaved_times(functions, arg, repeats, warmup=2, force=None):
    """Per-call wall times (seconds) of each ``fn(arg)``: ``[[t, ...] per function]``, every
    function called once per round in turn, so load changes on the machine hit all alike.

    ``force`` turns a result into computed values (e.g. ``.numpy()``) inside the timed region."""
    force = force or (lambda value: value)
    for fn in functions:
        for _ in range(warmup):
            force(fn(arg))
    times = [[] for _ in functions]
    for _ in range(repeats):
        for i, fn in enumerate(functions):
            start = time.perf_counter()
            force(fn(arg))
            times[i].append(time.perf_counter() - start)
    return times


class LiteRunner:
    """A .tflite file run with LiteRT: ``runner(batch [1, h, w, 3] float) -> [raw outputs in
    head order, float32]``; an integer input is quantized and outputs dequantized with the
    file's own parameters."""

    def __init__(self, path, names, threads):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=os.fspath(path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.input = self.runner.get_input_details()["images"]
        self.outputs = self.runner.get_output_details()
        self.names = list(names)

    def __call__(self, batch):
        batch = np.asarray(batch, np.float32)
        dtype = self.input["dtype"]
        if dtype != np.float32:
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            batch = np.clip(np.round(batch / scale + zero), info.min, info.max).astype(dtype)
        results = self.runner(images=batch)
        out = []
        for name in self.names:
            value = results[name]
            scale, zero = self.outputs[name]["quantization"]
            if scale and value.dtype != np.float32:
                value = (value.astype(np.float32) - zero) * np.float32(scale)
            out.append(np.asarray(value, np.float32))
        return out


# --- the model --------------------------------------------------------------------------------

def load_benchmark_model(spec, source=None, weights=None, image_size=None):
    """``(detector, info)`` from a ``.keras`` file, a training run folder or a detector name.

    ``info``: ``name``, ``image_size``, ``class_names``. Raises ``ValueError`` saying what was
    expected when ``spec`` is none of them or the model has no YOLO heads.
    """
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        detector, info = restore_detector(spec, weights or "best")
        return detector, {"name": info.get("model", os.path.basename(spec)), "image_size": info["image_size"],
                          "class_names": info["class_names"]}
    if os.path.isfile(spec):
        if not spec.endswith((".keras", ".h5")):
            raise ValueError(f"{spec}: expected a .keras detector file, a training run folder or a detector name")
        detector = keras.saving.load_model(spec, compile=False)
    else:
        if spec not in DETECTORS:
            raise ValueError(f"{spec!r} is not a file, a run folder or a detector name "
                             f"({', '.join(sorted(DETECTORS))})")
        if source is None:
            raise ValueError(f"building {spec!r} needs --data (its classes)")
        detector = build_model(spec, source.num_classes, image_size or 416, weights=weights)
    heads = tuple(getattr(detector, "heads", ()) or ())
    if not heads:
        raise ValueError(f"{spec}: the model has no YOLO heads (expected a keras_csp Detector / YOLOTask)")
    network = network_of(detector)
    size = int(network.inputs[0].shape[1]) if network.inputs[0].shape[1] else (image_size or 416)
    names = getattr(detector, "class_names", None) or (source.class_names if source is not None else None)
    return detector, {"name": network.name, "image_size": image_size or size, "class_names": names}


# --- one function per format ---------------------------------------------------------------------

def _export(fmt, model, network, heads, folder, samples):
    """Write the format's file; returns ``(path, size_bytes, gpu_findings, run)`` where
    ``run(batch) -> raw outputs in head order``."""
    names = serving.output_names(network, heads)
    if fmt == "keras":
        path = os.path.join(folder, "network.keras")
        network.save(path)  # the network's graph and weights (no optimizer state): its size
        call = tf.function(lambda x: network(x, training=False), reduce_retracing=True)

        def run_keras(batch):
            return [np.asarray(t) for t in tf.nest.flatten(call(tf.constant(batch)))]

        return path, os.path.getsize(path), None, run_keras
    if fmt == "saved_model":
        path = to_saved_model(network, os.path.join(folder, "saved_model"), heads=heads, overwrite=True)
        signature = tf.saved_model.load(path).signatures["serving_default"]

        def run_saved(batch):
            out = signature(images=tf.constant(batch))
            return [np.asarray(out[n]) for n in names]

        return path, _folder_size(path), None, run_saved
    if fmt in TFLITE_QUANTIZE:
        quantize = TFLITE_QUANTIZE[fmt]
        result = to_tflite(network, os.path.join(folder, f"{fmt[7:]}.tflite"), quantize=quantize, heads=heads,
                           representative_data=samples if quantize == "int8" else None,
                           num_calibration_samples=len(samples))
        return result.path, result.size_bytes, len(result.gpu_report.findings), result.path
    if fmt == "onnx":
        return _onnx(network, heads, folder, names)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def _onnx(network, heads, folder, names):
    import importlib.util

    if importlib.util.find_spec("tf2onnx") is None:
        raise RuntimeError("skipped: tf2onnx is not installed (pip install tf2onnx onnxruntime)")
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeError("skipped: onnxruntime is not installed (pip install onnxruntime)") from None
    saved = os.path.join(folder, "saved_model_onnx")
    to_saved_model(network, saved, heads=heads, batch_size=1, overwrite=True)
    path = os.path.join(folder, "model.onnx")
    run = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved, "--signature_def",
                          "serving_default", "--opset", "17", "--output", path],
                         capture_output=True, text=True, timeout=1200, env=dict(os.environ))
    shutil.rmtree(saved, ignore_errors=True)
    if run.returncode != 0:
        last = [line for line in run.stderr.splitlines() if line.strip()][-1:] or ["no message"]
        raise RuntimeError(f"tf2onnx failed: {last[0][:200]}")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    order = [o.name for o in session.get_outputs()]
    by_name = {n: order.index(n) if n in order else None for n in names}
    if None in by_name.values():
        by_name = dict(zip(names, range(len(order))))

    def run_onnx(batch):
        out = session.run(None, {session.get_inputs()[0].name: np.asarray(batch, np.float32)})
        return [np.asarray(out[by_name[n]], np.float32) for n in names]

    return path, os.path.getsize(path), None, run_onnx


def _folder_size(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def _per_image(run):
    """Batch-1 ``run`` over a batch: its outputs stacked again."""
    def batched(batch):
        outputs = [run(batch[i:i + 1]) for i in range(len(batch))]
        return [np.concatenate([o[k] for o in outputs]) for k in range(len(outputs[0]))]
    return batched


def _evaluate(model, network, heads, dataset, source, ground_truth, run):
    def detect(images, image_info):
        raw = [tf.constant(r) for r in run(images.numpy())]
        return postprocess(raw, heads, EVAL_NMS, (images.shape[1], images.shape[2]), image_info)

    return evaluate_detector(network, dataset, source=source, ground_truth=ground_truth, heads=heads, detect=detect)


def benchmark(model, source, formats=FORMATS, out_dir=None, image_size=None, batch_size=8, runs=30, threads=None,
              calibration=None, num_calibration=100, max_batches=None, weights=None, log=print):
    """Export ``model`` to each of ``formats`` and measure it on ``source`` (see the module).

    Args:
      model: a detector object, a ``.keras`` file, a run folder or a detector name.
      source: the evaluation data (a ``keras_csp.data`` source or the spec
        ``resolve_source`` takes: COCO JSON, YOLO list, VOC folder, ...).
      out_dir: where the files go (default: a temporary folder, removed afterwards).
      runs: timed calls per format at batch 1 (interleaved, after 3 warm-up calls); p50 and p90.
      threads: CPU threads of LiteRT and onnxruntime (default ``min(4, cpu_count)``); Keras
        and the SavedModel use TensorFlow's own pool.
      calibration: int8: a folder / glob of images (default: the first
        ``num_calibration`` images of ``source``, said so in the result).
      max_batches: evaluate only this many batches of ``batch_size`` (quick checks).

    Returns a :class:`BenchmarkResult`; the files stay in ``out_dir`` when it is given.
    """
    formats = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    if isinstance(source, (str, os.PathLike)):
        source = resolve_source(os.fspath(source), training=False)
    if isinstance(model, (str, os.PathLike)):
        model, info = load_benchmark_model(model, source, weights, image_size)
    else:
        info = {"name": getattr(network_of(model), "name", "model"), "image_size": image_size}
    network = network_of(model)
    heads = tuple(model.heads)
    size = int(info["image_size"] or network.inputs[0].shape[1])
    if heads[0].num_classes != source.num_classes:
        raise ValueError(f"the detector has {heads[0].num_classes} classes, the data {source.num_classes}")
    threads = threads or min(4, os.cpu_count() or 1)
    dataset = detection_dataset(source, image_size=size, batch_size=batch_size, training=False, cache=True)
    if max_batches is not None:
        dataset = dataset.take(max_batches)
    ground_truth = ground_truth_for(source)
    if ground_truth is None:  # built once from the evaluation stream, shared by every format
        builder = GroundTruthBuilder(source.category_ids, source.class_names)
        for _, meta in dataset:
            builder.add(meta["boxes"].numpy(), meta["image_id"].numpy(), meta["image_info"].numpy())
        ground_truth = builder.ground_truth()
    if calibration:
        samples = calib.calibration_images(calibration, (size, size), num_calibration)
        calibrated_on = f"{len(samples)} images of {calibration}"
    else:
        samples = np.concatenate([images.numpy() for images, _ in dataset])[:num_calibration]
        if samples.dtype == np.uint8:
            samples = samples.astype(np.float32) / 255.0
        calibrated_on = f"the first {len(samples)} images of {getattr(source, 'name', 'the data')} (the evaluation set)"
    image = samples[:1].astype(np.float32)
    temp = None
    if out_dir is None:
        out_dir = temp = tempfile.mkdtemp(prefix="keras_csp_benchmark_")
    os.makedirs(out_dir, exist_ok=True)
    names = serving.output_names(network, heads)
    rows, runners = [], {}
    try:
        for fmt in formats:
            row = Row(fmt)
            rows.append(row)
            start = time.perf_counter()
            try:
                path, size_bytes, findings, run = _export(fmt, model, network, heads, out_dir, samples)
                if isinstance(run, str):  # a .tflite path
                    run = LiteRunner(run, names, threads)
                row.file, row.size_bytes, row.gpu_findings = path, size_bytes, findings
                row.export_s = round(time.perf_counter() - start, 2)
                log(f"{fmt}: exported in {row.export_s:.1f} s" if path else f"{fmt}: ready")
                batched = run if fmt in ("keras", "saved_model") else _per_image(run)
                result = _evaluate(model, network, heads, dataset, source, ground_truth, batched)
                row.map50, row.map = float(result.stats["AP50"]), float(result.stats["AP"])
                runners[fmt] = run
                log(f"{fmt}: mAP@0.5 {row.map50:.4f}, mAP@0.5:0.95 {row.map:.4f}")
            except Exception as err:  # the row says why; the other formats still run
                row.error = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
                log(f"{fmt}: {row.error}")
        if runners:
            times = interleaved_times(list(runners.values()), image, runs, warmup=3)
            for fmt, t in zip(runners, times):
                row = next(r for r in rows if r.format == fmt)
                row.p50_ms = float(np.percentile(t, 50) * 1000)
                row.p90_ms = float(np.percentile(t, 90) * 1000)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
            for row in rows:
                row.file = None
    num_images = len(ground_truth["images"]) if max_batches is None else min(len(ground_truth["images"]),
                                                                               max_batches * batch_size)
    return BenchmarkResult(rows, info["name"], size, num_images, threads, runs, calibrated_on,
                           round(os.getloadavg()[0], 2))


# --- the command -------------------------------------------------------------------------------------

def add_benchmark_parser(subparsers):
    """Add ``keras-csp benchmark``."""
    p = subparsers.add_parser(
        "benchmark", help="every export format side by side: mAP, latency, size, GPU delegate",
        description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("model", help="a .keras detector file, a keras-csp train run folder or a detector name")
    p.add_argument("--data", required=True, help="evaluation data: COCO .json, YOLO list .txt, VOC folder, ...")
    p.add_argument("--weights", help="run folder: best | final (default best); detector name: a weights file")
    p.add_argument("--image-size", type=int, help="input side (default: the model's)")
    p.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated (default {','.join(FORMATS)})")
    p.add_argument("--out", help="keep the exported files and benchmark.json here")
    p.add_argument("--runs", type=int, default=30, help="timed calls per format at batch 1 (default 30)")
    p.add_argument("--threads", type=int, help="LiteRT / onnxruntime threads (default min(4, CPUs))")
    p.add_argument("--calibration", help="int8: folder / glob of images (default: the first --num-calibration of --data)")
    p.add_argument("--num-calibration", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8, help="evaluation batch (batch 1 for TFLite / ONNX)")
    p.add_argument("--max-batches", type=int, help="evaluate only this many batches")
    p.set_defaults(handler=run_benchmark)
    return p


def run_benchmark(args):
    if args.weights in ("best", "final", "last") and not os.path.isdir(args.model):
        raise ValueError(f"--weights {args.weights} needs a run folder; {args.model} is not one")
    source = resolve_source(args.data, training=False)
    result = benchmark(args.model, source, args.formats, args.out, args.image_size, args.batch_size, args.runs,
                       args.threads, args.calibration, args.num_calibration, args.max_batches, args.weights)
    print(f"\n{result.model} {result.image_size}x{result.image_size} on {result.num_images} images of {args.data}; "
          f"latency: batch 1, p50 of {result.runs} calls, {result.threads} LiteRT threads, load average "
          f"{result.load_average}; int8 calibrated on {result.calibration}")
    print(result.table())
    if args.out:
        path = os.path.join(args.out, "benchmark.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(result.to_json(), handle, indent=1)
        print(f"files and {path} in {args.out}")
    return 1 if any(r.error and not r.error.startswith("skipped") for r in result.rows) else 0


__all__ = ["FORMATS", "BenchmarkResult", "LiteRunner", "Row", "add_benchmark_parser", "benchmark",
           "interleaved_times", "load_benchmark_model"]

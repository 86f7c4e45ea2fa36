"""Training throughput of a detector on this CPU: the model alone, the input pipeline alone and
``fit`` with both, with the pipeline's share of the cores.

For each model (the demo detector at 128 on the synthetic shapes, the same detector at 320 with
mosaic on real photos (benchmarks/realsets.py photo-objects: what ``keras-csp train`` does by
default, the recipe benchmark's setting) and CSPDarknet53-PANet-SPP at 320) and precision
(float32, and ``auto`` when it differs here), it times, after warm-up:

- pipeline: batches from ``keras_csp.data.detection_dataset`` (mosaic with ``--augment default``),
  as CPU milliseconds per batch (all threads; load from other processes does not change it);
- model: ``fit`` steps on batches held in memory (no pipeline work), median seconds per step,
  images/s and achieved GFLOP/s (3 x the forward BFLOPs: forward, input and weight gradients);
- fit: ``fit`` on the real pipeline, the same figures;
- the pipeline share: its CPU time per batch over (fit step time x cores).

When ``ultralytics`` imports in the benchmark environment (``--bench-python``; never a keras_csp
dependency), YOLO11n trains one epoch from scratch on the same real-photo images at 320, batch
32, mosaic on, 2 workers: its steady seconds per batch (data loading included, as in its
``train``), images/s, and the ratio keras_csp images/s / Ultralytics images/s.

    python benchmarks/train_throughput.py                       # all rows
    python benchmarks/train_throughput.py --models demo --steps 30

Not a test: the numbers depend on the machine; it prints the CPU model and flags beside them.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling benchmark modules
from recipe_vs_ultralytics import BENCH_PYTHON  # noqa: E402  (one place for the peer's Python)

MODELS = {  # key: (model, input size, batch, augment, data: "synthetic" shapes or a realsets set)
    "demo": ("CSPDenseNetb-Ref-PRN", 128, 32, "none", "synthetic"),
    "recipe": ("CSPDenseNetb-Ref-PRN", 320, 32, "default", "photo-objects"),
    "big": ("CSPDarknet53-PANet-SPP", 320, 8, "default", "synthetic"),
}
ULTRALYTICS_WORKER = r"""
import json, os, sys, time
os.environ.setdefault("YOLO_OFFLINE", "1")
from ultralytics import YOLO, settings
settings.update({"sync": False})
data, size, batch, out, model_yaml = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
model = YOLO(model_yaml)
times = []
model.add_callback("on_train_batch_end", lambda trainer: times.append(time.perf_counter()))
model.train(data=data, epochs=1, imgsz=size, batch=batch, workers=2, device="cpu", project=out, name="t",
            exist_ok=True, plots=False, val=False, verbose=False, amp=False, close_mosaic=0, seed=0)
print(json.dumps({"times": times}))
"""


def cpu_line():
    """The CPU model and the flags that decide the speed of training here."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(f for f in wanted if f in flags) or 'none of'}"


class _Times:
    def __init__(self):
        self.times = []

    def callback(self):
        from keras_csp.backend import keras

        outer = self

        class Timer(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                outer.times.append(time.perf_counter())

        return Timer()

    def median(self):
        return float(np.median(np.diff(self.times[2:])))


def _source(data, size, batch, folder):
    """The training source: the synthetic shapes, or a realsets set (written as YOLO txt)."""
    if data == "synthetic":
        from keras_csp.data import synthetic_source

        return synthetic_source(os.path.join(folder, f"data{size}"), num_images=max(64, batch * 8), seed=1,
                                image_size=(size, size)), None
    from keras_csp.data.dataset_files import read_dataset_file

    from realsets import write_set

    out = os.path.join(folder, f"{data}{size}")
    if not os.path.exists(os.path.join(out, "data.yaml")):
        write_set(out, data, train=batch * 24, val=8, size=size)
    return read_dataset_file(os.path.join(out, "data.yaml")).source("train"), os.path.join(out, "data.yaml")


def ultralytics_row(data_yaml, size, batch, folder, python, model_yaml="yolo11n.yaml"):
    """(seconds per batch, images/s) of Ultralytics training on ``data_yaml``, or an error string."""
    if not python or not os.path.exists(python):
        return f"{python} not found"
    done = subprocess.run([python, "-c", ULTRALYTICS_WORKER, data_yaml, str(size), str(batch),
                           os.path.join(folder, "ultralytics"), model_yaml],
                          capture_output=True, text=True, env=dict(os.environ, YOLO_OFFLINE="1"))
    if done.returncode:
        return (done.stderr.strip().splitlines() or ["failed"])[-1]
    times = json.loads(done.stdout.strip().splitlines()[-1])["times"]
    seconds = float(np.median(np.diff(times[2:])))
    return seconds, batch / seconds


def measure(name, size, batch, augment, data, precision, steps, folder):
    import dataclasses

    from keras_csp.backend import keras, tf
    from keras_csp.profiling import profile
    from keras_csp.training.config import make_config
    from keras_csp.training.models import build_model
    from keras_csp.training.precision import resolve_policy
    from keras_csp.training.run import _compile, make_datasets, resolve_anchors

    source, data_yaml = _source(data, size, batch, folder)
    files = dict(data=data_yaml) if data_yaml else dict(train=source.annotation_file)
    config = make_config(**files, model=name, image_size=size, batch_size=batch,
                         augment=augment, anchors="auto", epochs=1, cache=True, out=os.path.join(folder, "run"),
                         mixed_precision=precision)
    policy = resolve_policy(config.mixed_precision)
    previous = keras.mixed_precision.global_policy()
    if policy != "none":
        keras.mixed_precision.set_global_policy(policy)
    try:
        train_ds, _, _ = make_datasets(config, source, None)
        iterator = iter(train_ds)
        for _ in range(len(source) // batch + 2):  # one pass fills the cache
            next(iterator)
        cpu = time.process_time()
        held = [next(iterator) for _ in range(steps)]
        pipeline_ms = 1000 * (time.process_time() - cpu) / steps
        anchors = resolve_anchors(config, source, source.num_classes)
        model = build_model(name, source.num_classes, size, anchors=anchors, head_options=config.head_options)
        bflops = profile(getattr(model, "detector", model)).bflops
        _compile(model, dataclasses.replace(config, ema=0.0), steps * 4)
        memory = tf.data.Dataset.from_generator(lambda: (b for _ in range(10**6) for b in held),
                                                output_signature=train_ds.element_spec)
        rows = {}
        for label, data in (("model", memory), ("fit", train_ds)):
            timer = _Times()
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer.callback()])
            seconds = timer.median()
            rows[label] = (seconds, batch / seconds, 3 * bflops * batch / seconds)
        share = pipeline_ms / 1000 / (rows["fit"][0] * (os.cpu_count() or 1))
        return policy, bflops, pipeline_ms, rows, share
    finally:
        keras.mixed_precision.set_global_policy(previous)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="demo,big", help="comma list of: " + ", ".join(MODELS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--bench-python", default=BENCH_PYTHON, help="a Python with ultralytics (the peer)")
    args = parser.parse_args(argv)
    from keras_csp.training.precision import resolve_policy

    precisions = ["none"] + (["auto"] if resolve_policy("auto") != "none" else [])  # "none": float32
    print(f"CPU: {cpu_line()}; load average {os.getloadavg()[0]:.2f}")
    print("| model | input | batch | precision | BFLOPs | pipeline CPU ms/batch | model alone s/step (img/s, "
          "GFLOP/s) | fit s/step (img/s, GFLOP/s) | pipeline share |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        peers = []
        for key in args.models.split(","):
            name, size, batch, augment, data = MODELS[key]
            for precision in precisions:
                policy, bflops, pipeline_ms, rows, share = measure(name, size, batch, augment, data, precision,
                                                                   args.steps, folder)
                cells = [f"{s:.3f} ({ips:.0f}, {gf:.0f})" for s, ips, gf in (rows["model"], rows["fit"])]
                print(f"| {name} ({data}) | {size} | {batch} | {precision} ({policy if policy != 'none' else 'float32'}) | {bflops:.3f} | {pipeline_ms:.0f} | "
                      f"{cells[0]} | {cells[1]} | {100 * share:.0f}% |", flush=True)
                if data != "synthetic" and precision == "none":
                    peers.append((name, data, size, batch, rows["fit"][1]))
        for name, data, size, batch, ours in peers:
            found = ultralytics_row(_source(data, size, batch, folder)[1], size, batch, folder, args.bench_python)
            if isinstance(found, str):
                print(f"Ultralytics YOLO11n not measured: {found}")
            else:
                print(f"Ultralytics YOLO11n ({data}, {size}, batch {batch}, mosaic, 2 workers): {found[0]:.3f} s per "
                      f"batch, {found[1]:.0f} images/s; {name} fit / YOLO11n: {ours / found[1]:.2f}x", flush=True)
    if len(precisions) == 1:
        print("auto precision is float32 on this CPU (no AMX / AVX512_BF16): one row per model")


if __name__ == "__main__":
    main()

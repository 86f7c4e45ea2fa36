"""Training throughput of a detector on this CPU: the model alone, the input pipeline alone and
``fit`` with both, with the pipeline's share of the cores.

For each model (the demo detector at 128 and CSPDarknet53-PANet-SPP at 320 by default) and
precision (float32, and ``auto`` when it differs here), it times, after warm-up:

- pipeline: batches from ``keras_csp.data.detection_dataset`` (mosaic with ``--augment default``),
  as CPU milliseconds per batch (all threads; load from other processes does not change it);
- model: ``fit`` steps on batches held in memory (no pipeline work), median seconds per step,
  images/s and achieved GFLOP/s (3 x the forward BFLOPs: forward, input and weight gradients);
- fit: ``fit`` on the real pipeline, the same figures;
- the pipeline share: its CPU time per batch over (fit step time x cores).

    python benchmarks/train_throughput.py                       # both defaults
    python benchmarks/train_throughput.py --models demo --steps 30

Not a test: the numbers depend on the machine; it prints the CPU model and flags beside them.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

MODELS = {
    "demo": ("CSPDenseNetb-Ref-PRN", 128, 32, "none"),
    "big": ("CSPDarknet53-PANet-SPP", 320, 8, "default"),
}


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


def measure(name, size, batch, augment, precision, steps, folder):
    import dataclasses

    from keras_csp.backend import keras, tf
    from keras_csp.data import synthetic_source
    from keras_csp.profiling import profile
    from keras_csp.training.config import make_config
    from keras_csp.training.models import build_model
    from keras_csp.training.precision import resolve_policy
    from keras_csp.training.run import _compile, make_datasets, resolve_anchors

    source = synthetic_source(os.path.join(folder, f"data{size}"), num_images=max(64, batch * 8), seed=1,
                              image_size=(size, size))
    config = make_config(train=source.annotation_file, model=name, image_size=size, batch_size=batch,
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
    args = parser.parse_args(argv)
    from keras_csp.training.precision import resolve_policy

    precisions = ["none"] + (["auto"] if resolve_policy("auto") != "none" else [])  # "none": float32
    print(f"CPU: {cpu_line()}; load average {os.getloadavg()[0]:.2f}")
    print("| model | input | batch | precision | BFLOPs | pipeline CPU ms/batch | model alone s/step (img/s, "
          "GFLOP/s) | fit s/step (img/s, GFLOP/s) | pipeline share |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models.split(","):
            name, size, batch, augment = MODELS[key]
            for precision in precisions:
                policy, bflops, pipeline_ms, rows, share = measure(name, size, batch, augment, precision,
                                                                   args.steps, folder)
                cells = [f"{s:.3f} ({ips:.0f}, {gf:.0f})" for s, ips, gf in (rows["model"], rows["fit"])]
                print(f"| {name} | {size} | {batch} | {precision} ({policy if policy != 'none' else 'float32'}) | {bflops:.3f} | {pipeline_ms:.0f} | "
                      f"{cells[0]} | {cells[1]} | {100 * share:.0f}% |", flush=True)
    if len(precisions) == 1:
        print("auto precision is float32 on this CPU (no AMX / AVX512_BF16): one row per model")


if __name__ == "__main__":
    main()

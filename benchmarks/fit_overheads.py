"""Time a ``fit`` spends outside its steps: the first step (tracing) and the input iterator's teardown.

- first step: the quick demo's detector (96x96, batch 32, Adam, model EMA), compiled as
  ``keras_csp.training`` compiles it, timed on its first ``train_on_batch`` with the optimizer
  built before the call (what ``training.run`` does) and without (tf.function then traces the
  train step twice: once creating the optimizer's variables, once more to use them);
- teardown: a small model fits a ``tf.data`` pipeline (cache, shuffle, parallel map, prefetch) for
  ``--seconds``, stopped mid-epoch, then Python's garbage collector frees the iterator ``fit`` left
  behind. With tf.data's autotuning on, that can wait for its optimisation thread, which sleeps up
  to 60 s between rounds; ``keras_csp.data`` turns autotuning off (``pipeline._options``).

    python benchmarks/fit_overheads.py                      # both, teardown after 100 s of fit
    python benchmarks/fit_overheads.py --only teardown --seconds 100 --repeats 3

Each measurement runs in its own process (a fresh TensorFlow). Prints the CPU and its flags.
Not a test: the stall is intermittent (it depends on where the optimisation thread is in its sleep).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recipe_vs_ultralytics import cpu_info  # noqa: E402  (one place for the CPU line)

FIRST_STEP = r"""
import json, os, sys, tempfile, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from keras_csp.data import synthetic_source
from keras_csp.training import demo
from keras_csp.training.config import make_config
from keras_csp.training.ema import ModelEMA
from keras_csp.training.models import build_model
from keras_csp.training.optimizers import make_optimizer
from keras_csp.training.run import _compile, make_datasets, resolve_anchors
from keras_csp.training.schedules import DarknetSchedule

built = sys.argv[1] == "built"
folder = tempfile.mkdtemp()
source = synthetic_source(os.path.join(folder, "d"), num_images=64, seed=1, image_size=(96, 96), **demo.DATA)
config = make_config(train=source.annotation_file, model=demo.DEMO_MODEL, image_size=96, batch_size=32,
                     augment="none", anchors="auto", epochs=1, out=os.path.join(folder, "run"),
                     mixed_precision="none", head_options=demo.QUICK["head"], optimizer="adam", learning_rate=6e-3)
train_ds, _, _ = make_datasets(config, source, None)
x, y = next(iter(train_ds))
anchors = resolve_anchors(config, source, source.num_classes)
model = build_model(demo.DEMO_MODEL, source.num_classes, 96, anchors=anchors, head_options=config.head_options)
ema = ModelEMA(model, 0.998, 100)
if built:
    _compile(model, config, 1000, ema=ema)
else:  # _compile without its optimizer.build: the first step creates the optimizer's variables
    schedule = DarknetSchedule(config.learning_rate, 1000, "steps", burn_in=15)
    model.compile(optimizer=make_optimizer(config.optimizer, schedule, config.momentum, config.weight_decay, ema,
                                           config.clipnorm), loss=config.loss)
start = time.perf_counter()
model.train_on_batch(x, y)
first = time.perf_counter() - start
start = time.perf_counter()
model.train_on_batch(x, y)
print(json.dumps({"first": first, "second": time.perf_counter() - start}))
"""

TEARDOWN = r"""
import gc, json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
import keras

autotune, seconds = sys.argv[1] == "on", float(sys.argv[2])
x = tf.random.uniform([512, 32, 32, 3])
ds = (tf.data.Dataset.from_tensor_slices(x).cache().shuffle(512).repeat()
      .map(lambda a: (a * 2.0, tf.reduce_mean(a)), num_parallel_calls=tf.data.AUTOTUNE).batch(32)
      .prefetch(tf.data.AUTOTUNE))
options = tf.data.Options()
options.autotune.enabled = autotune
ds = ds.with_options(options)
model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3), keras.layers.GlobalAveragePooling2D(),
                          keras.layers.Dense(1)])
model.compile("adam", "mse")
start = time.perf_counter()


class Stop(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.02)  # a slower step, as a detector's
        if time.perf_counter() - start > seconds:
            self.model.stop_training = True


model.fit(ds, epochs=10**6, steps_per_epoch=100, verbose=0, callbacks=[Stop()])
begin = time.perf_counter()
gc.collect()
print(json.dumps({"teardown": time.perf_counter() - begin}))
"""


def _run(code, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir())
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("first-step", "teardown"), default=None)
    parser.add_argument("--seconds", type=float, default=100.0, help="seconds of fit before the teardown")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    model, simd, _ = cpu_info()
    print(f"CPU: {model}, {os.cpu_count()} cores; flags: {' '.join(simd)}; load average {os.getloadavg()[0]:.1f}")
    print(f"command: python benchmarks/fit_overheads.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    if args.only in (None, "first-step"):
        print("| first step (quick demo detector) | seconds, each run | second step |")
        print("|---|---|---|")
        for mode in ("built", "unbuilt"):
            rows = [_run(FIRST_STEP, mode) for _ in range(args.repeats)]
            label = "optimizer built before fit" if mode == "built" else "optimizer built by the first step"
            firsts = " / ".join(f"{r['first']:.2f}" for r in rows)
            print(f"| {label} | {firsts} | {rows[-1]['second']:.3f} |", flush=True)
    if args.only in (None, "teardown"):
        print(f"| tf.data autotuning | iterator teardown after {args.seconds:.0f} s of fit, seconds, each run |")
        print("|---|---|")
        for mode in ("on", "off"):
            rows = [_run(TEARDOWN, mode, str(args.seconds)) for _ in range(args.repeats)]
            teardowns = " / ".join(f"{r['teardown']:.2f}" for r in rows)
            print(f"| {mode} | {teardowns} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

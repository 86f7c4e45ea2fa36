"""tf.distribute: MirroredStrategy over two logical CPU devices takes the same step as one
device on the global batch (the loss is scaled by the global batch), and
MultiWorkerMirroredStrategy trains with two local worker processes (TF_CONFIG on 127.0.0.1).
Each check runs in a fresh process: devices can only be split before TensorFlow starts."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

MIRRORED = r"""
import json, sys
import numpy as np
import pytest
from keras_csp.training.strategy import split_cpu
split_cpu(2)
from keras_csp.backend import keras, tf
from keras_csp.training.strategy import make_strategy, check_global_batch
from keras_csp.training import train
from helpers import tiny_detector

strategy = make_strategy("mirrored", cpu_devices=2)
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
try:
    check_global_batch(3, strategy)
    raise SystemExit("a global batch of 3 over 2 replicas was accepted")
except ValueError as err:
    assert "multiple of 2" in str(err)

rng = np.random.default_rng(0)
half = rng.uniform(0, 1, (2, 64, 64, 3)).astype("float32")
boxes = np.full((2, 8, 5), -1, "float32")
boxes[0, 0] = [0.1, 0.1, 0.5, 0.6, 1]
boxes[1, 0] = [0.4, 0.3, 0.9, 0.8, 2]
boxes[1, 1] = [0.0, 0.5, 0.3, 0.9, 0]
# The global batch repeats its first half: each replica sees the same two images, so batch
# norm statistics agree and a correctly scaled loss gives exactly the one-device step.
images, targets = np.concatenate([half, half]), np.concatenate([boxes, boxes])
data = tf.data.Dataset.from_tensors((images, targets))

keras.utils.set_random_seed(1)
single = tiny_detector(3, (64, 64, 3))
with strategy.scope():
    mirrored = tiny_detector(3, (64, 64, 3))
mirrored.set_weights(single.get_weights())
single.compile(optimizer=keras.optimizers.SGD(0.05))
with strategy.scope():
    mirrored.compile(optimizer=keras.optimizers.SGD(0.05))
before = [np.array(w) for w in single.get_weights()]
single.fit(data, epochs=1, verbose=0)
mirrored.fit(data, epochs=1, verbose=0)
moved = max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), before))
diff = max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), mirrored.get_weights()))
print(json.dumps({"moved": moved, "diff": diff}))

result = train(train=sys.argv[1], model="helpers:tiny_detector", image_size=64, batch_size=4, epochs=1,
               augment="none", strategy="mirrored", cpu_devices=2, out=sys.argv[2], tensorboard=False, verbose=0)
print(json.dumps({"replicas": result.run_info["replicas"], "loss": result.history["loss"]}))
"""

WORKER = r"""
import sys
from keras_csp.training import train
result = train(train=sys.argv[1], model="helpers:tiny_detector", image_size=64, batch_size=4, epochs=2,
               steps_per_epoch=2, augment="none", strategy="multi_worker", out=sys.argv[2], tensorboard=False,
               verbose=0, seed=7)
print("REPLICAS", result.run_info["replicas"], "OUT", result.out_dir)
"""


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, ROOT, os.environ.get("PYTHONPATH", "")]),
               CUDA_VISIBLE_DEVICES="", **extra)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _dataset(tmp_path):
    from keras_csp.data import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path / "data", num_images=8, seed=2, image_size=(64, 64), max_objects=3,
                                   min_object=8)["coco_json"]


def _last_json(output, key):
    for line in reversed(output.splitlines()):
        if line.startswith("{") and key in line:
            return json.loads(line)
    raise AssertionError(f"no {key} in output:\n{output[-3000:]}")


def test_mirrored_step_equals_one_device_on_the_global_batch(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    done = subprocess.run([sys.executable, str(script), _dataset(tmp_path), str(tmp_path / "run")], env=_env(),
                          capture_output=True, text=True, timeout=400)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    step = _last_json(output, "moved")
    assert step["moved"] > 1e-4  # the step did something ...
    assert step["diff"] < 1e-5 * max(1.0, step["moved"] * 100)  # ... and the same on two replicas
    run = _last_json(output, "replicas")
    assert run["replicas"] == 2 and np.isfinite(run["loss"]).all()
    assert (tmp_path / "run" / "final.weights.h5").is_file()


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_with_two_local_workers(tmp_path):
    import h5py

    data = _dataset(tmp_path)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    out = tmp_path / "run"
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen([sys.executable, str(script), data, str(out)], env=_env(TF_CONFIG=config),
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for worker in workers:
        try:
            outputs.append(worker.communicate(timeout=400)[0])
        finally:
            if worker.poll() is None:
                worker.kill()
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
        assert "REPLICAS 2" in output
    chief, other = out / "last.weights.h5", out / "workers" / "worker-1" / "last.weights.h5"
    assert (out / "final.weights.h5").is_file() and (out / "history.json").is_file()
    assert not (out / "workers" / "worker-1" / "run.json").exists()  # only the chief writes run files

    def read(path):
        values = []
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: values.append((name, np.array(obj))) if hasattr(obj, "shape") else None)
        return values

    chief_weights, other_weights = read(chief), read(other)  # each worker keeps its own copy ...
    assert len(chief_weights) == len(other_weights) > 10
    trained = 0
    for (name, a), (_, b) in zip(chief_weights, other_weights):
        if "normalization" in name and name.endswith(("/2", "/3")):
            continue  # batch-norm moving statistics follow each worker's own batches
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)  # ... the weights agree
        trained += 1
    assert trained > 10

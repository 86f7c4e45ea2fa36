"""Fault tolerance: a ``keras-csp train`` process killed with SIGKILL in the middle of an epoch
resumes from its last backup when started again, ends at the requested epoch, and its final
weights equal those of a run that was never interrupted (fixed seeds, fixed data order)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

# Runs one training; with --pause-at E, sleeps inside batch 1 of epoch E (0-based) after
# writing a marker, so the test can kill it there, mid-epoch.
SCRIPT = r"""
import os, sys, time
from keras_csp.backend import keras
from keras_csp.training import train

class Pause(keras.callbacks.Callback):
    def __init__(self, epoch, marker):
        super().__init__()
        self.epoch, self.marker, self.current = epoch, marker, -1
    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch
    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == 1:
            open(self.marker, "w").close()
            time.sleep(600)

data, out, pause = sys.argv[1], sys.argv[2], int(sys.argv[3])
extra = [Pause(pause, os.path.join(out, "paused"))] if pause >= 0 else []
train(train=data, model="helpers:tiny_detector", image_size=64, batch_size=4, epochs=3,
      augment="none", shuffle=False, optimizer="sgd", learning_rate=0.02, burn_in=2, out=out,
      tensorboard=False, verbose=0, seed=3, extra_callbacks=extra)
print("FINISHED")
"""


def _env():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, ROOT, os.environ.get("PYTHONPATH", "")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _start(script, data, out, pause):
    return subprocess.Popen([sys.executable, str(script), str(data), str(out), str(pause)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process, timeout=240):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def _weights(path):
    import h5py

    values = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: values.__setitem__(name, np.array(obj)) if hasattr(obj, "shape") else None)
    return values


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path):
    from keras_csp.data import write_synthetic_dataset

    paths = write_synthetic_dataset(tmp_path / "data", num_images=12, seed=5, image_size=(64, 64), max_objects=3,
                                    min_object=8)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    killed_out, clean_out = tmp_path / "killed", tmp_path / "clean"
    killed_out.mkdir()

    clean = _start(script, paths["coco_json"], clean_out, -1)  # the reference, in parallel
    victim = _start(script, paths["coco_json"], killed_out, 1)
    marker = killed_out / "paused"
    deadline = time.time() + 240
    while not marker.exists():
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        assert time.time() < deadline, "the training never reached epoch 2"
        time.sleep(0.5)
    os.kill(victim.pid, signal.SIGKILL)  # mid-epoch 2: epoch 1 is backed up, epoch 2 is not
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    backup = killed_out / "backup"
    assert json.loads((backup / "latest.json").read_text())["epoch"] == 1
    assert not (killed_out / "final.weights.h5").exists()

    output = _finish(_start(script, paths["coco_json"], killed_out, -1))
    assert "Resuming from the backup of epoch 1" in output and "FINISHED" in output
    _finish(clean)

    history = json.loads((killed_out / "history.json").read_text())["epochs"]
    assert sorted(int(e) for e in history) == [1, 2, 3]  # ends at the requested epoch count
    assert json.loads((backup / "latest.json").read_text())["epoch"] == 3
    resumed, reference = _weights(killed_out / "final.weights.h5"), _weights(clean_out / "final.weights.h5")
    assert resumed.keys() == reference.keys() and len(resumed) > 10
    for name in reference:
        np.testing.assert_allclose(resumed[name], reference[name], rtol=1e-4, atol=1e-5, err_msg=name)
    clean_history = json.loads((clean_out / "history.json").read_text())["epochs"]
    assert history["3"]["loss"] == pytest.approx(clean_history["3"]["loss"], rel=1e-4)
    leftovers = [p for p in killed_out.rglob("*") if p.name.startswith(".tmp")]
    assert not leftovers

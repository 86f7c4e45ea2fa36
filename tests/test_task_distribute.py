"""YOLOTask under tf.distribute.MirroredStrategy (two logical CPUs) and under tf_keras.

Both run in subprocesses: logical devices must be configured before TensorFlow starts, and
the Keras implementation is chosen at import time.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
ROOT = TESTS.parent


def run_script(source, tmp_path, legacy=False, timeout=240):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["TF_USE_LEGACY_KERAS"] = "1" if legacy else "0"
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


MIRRORED = """
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from keras_csp.backend import keras
from keras_csp.detectors import YOLOTask
from helpers import tiny_network
from test_task import synthetic_data, tiny_heads

heads = tiny_heads("ciou")
images, boxes = synthetic_data(num_images=4, boxes_per_image=(1, 2))
initial = [w.numpy() for w in tiny_network(heads, seed=0).trainable_weights]


def one_step(strategy):
    with strategy.scope():
        task = YOLOTask(tiny_network(heads, seed=0), heads)
        task.compile(optimizer=keras.optimizers.SGD(0.05))
    start = [w.numpy() for w in task.trainable_weights]
    data = tf.data.Dataset.from_tensor_slices((images, boxes)).batch(4)  # global batch 4
    logs = task.fit(data, epochs=1, verbose=0).history
    return start, [w.numpy() for w in task.trainable_weights], logs, task


_, single, single_logs, _ = one_step(tf.distribute.get_strategy())
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
start, multi, multi_logs, task = one_step(mirrored)

# more steps under the strategy (same compiled step): training goes on and the loss falls
data = tf.data.Dataset.from_tensor_slices((images, boxes)).batch(4)
history = task.fit(data, epochs=8, verbose=0).history

print(json.dumps({
    "replicas": mirrored.num_replicas_in_sync,
    "same_start": max(float(np.max(np.abs(a - b))) for a, b in zip(initial, start)),
    "step_size": max(float(np.max(np.abs(a - b))) for a, b in zip(initial, single)),
    "difference": max(float(np.max(np.abs(a - b))) for a, b in zip(single, multi)),
    "single_loss": single_logs["loss"][0],
    "mirrored_loss": multi_logs["loss"][0],
    "mirrored_parts": [multi_logs[k][0] for k in ("box_loss", "obj_loss", "cls_loss")],
    "single_parts": [single_logs[k][0] for k in ("box_loss", "obj_loss", "cls_loss")],
    "history": history["loss"],
}))
"""


def test_mirrored_strategy_step_equals_single_device_step(tmp_path):
    """One SGD step on a global batch of 4 split over 2 replicas moves the weights exactly as on
    one device: the loss is scaled by the global batch. Logged losses agree too."""
    result = run_script(MIRRORED, tmp_path)
    assert result["replicas"] == 2
    assert result["same_start"] == 0.0
    assert result["step_size"] > 1e-3  # the step is large enough to show a wrong scaling
    assert result["difference"] < 1e-3 * result["step_size"] + 1e-6, result
    assert result["mirrored_loss"] == pytest.approx(result["single_loss"], rel=1e-4)
    assert result["mirrored_parts"] == pytest.approx(result["single_parts"], rel=1e-4)
    history = result["history"]
    assert all(map(lambda v: v == v and abs(v) != float("inf"), history))
    assert history[-1] < history[0]


LEGACY = """
import json
import numpy as np

from keras_csp.backend import LEGACY_KERAS, keras
from keras_csp.detectors import YOLOTask
from keras_csp.losses import NaNGuard, YoloLoss
from helpers import tiny_network
from test_task import dataset, synthetic_data, tiny_heads

heads = tiny_heads("giou")
task = YOLOTask(tiny_network(heads), heads)
images, boxes = synthetic_data()
task.compile(optimizer=keras.optimizers.Adam(5e-3), loss="mse")
history = task.fit(dataset(images, boxes), steps_per_epoch=20, epochs=3, verbose=0, shuffle=False, callbacks=[NaNGuard()]).history
logs = task.evaluate(images, boxes, batch_size=4, verbose=0, return_dict=True)
direct = YoloLoss(heads).with_box_loss("mse")(boxes, task(images, training=False))
print(json.dumps({
    "legacy": LEGACY_KERAS,
    "keras": keras.__name__,
    "history": {k: [float(x) for x in v] for k, v in history.items()},
    "evaluate": float(logs["loss"]),
    "direct": float(direct),
}))
"""


def test_fit_under_tf_keras(tmp_path):
    result = run_script(LEGACY, tmp_path, legacy=True)
    assert result["legacy"] is True and result["keras"].startswith("tf_keras")
    history = result["history"]
    assert {"loss", "box_loss", "obj_loss", "cls_loss"} <= set(history)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert result["evaluate"] == pytest.approx(result["direct"], rel=1e-4)

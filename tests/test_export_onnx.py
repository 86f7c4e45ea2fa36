"""The Jetson path's ONNX step: tf2onnx on an exported SavedModel, run with onnxruntime.

Skipped unless tf2onnx and onnxruntime are installed (they are not dependencies of
keras_csp); with them it checks the TF 2.21 SavedModel converts and gives the same boxes.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
ort = pytest.importorskip("onnxruntime")

from keras_csp.backend import keras, tf  # noqa: E402
from keras_csp.export import examples, to_saved_model  # noqa: E402


def test_saved_model_to_onnx_gives_the_same_boxes(tmp_path):
    keras.utils.set_random_seed(5)
    model = examples.tiny_detector(64, 3)
    for name in ("head_stride8", "head_stride16"):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * 3.0, bias])
    saved = to_saved_model(model, tmp_path / "saved", heads=examples.tiny_heads(3),
                           input_type="uint8", letterbox=True, nms=True, max_detections=30)
    onnx_path = tmp_path / "model.onnx"
    run = subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved),
         "--signature_def", "serving_default", "--opset", "17", "--output", str(onnx_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ})
    assert run.returncode == 0, run.stderr[-3000:]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).integers(0, 256, (1, 45, 77, 3), dtype=np.uint8)
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"images": image})))
    want = tf.saved_model.load(str(saved)).signatures["serving_default"](
        images=tf.constant(image))
    count = int(want["num_detections"][0])
    assert count > 0 and int(np.asarray(got["num_detections"]).reshape(-1)[0]) == count
    np.testing.assert_allclose(got["boxes"][0][:count], want["boxes"][0][:count], atol=1e-3)
    np.testing.assert_array_equal(got["classes"][0][:count], want["classes"][0][:count])

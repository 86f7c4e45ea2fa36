"""Quantization-aware training and pruning (tfmot, tf_keras): end to end on the synthetic set
in a TF_USE_LEGACY_KERAS=1 subprocess, and the clear errors Keras 3 models get."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_csp.backend import LEGACY_KERAS
from keras_csp.export import examples, qat, to_tflite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json, os, sys
import numpy as np
from keras_csp.backend import keras, tf, LEGACY_KERAS
assert LEGACY_KERAS and keras.__name__ == "tf_keras", keras.__name__
from keras_csp.data.pipeline import detection_dataset
from keras_csp.data.synthetic import SHAPE_CLASSES, synthetic_source
from keras_csp.detectors import YOLOTask
from keras_csp.export import examples, qat, to_tflite

out = sys.argv[1]
keras.utils.set_random_seed(0)
source = synthetic_source(os.path.join(out, "synthetic"), num_images=24, seed=0,
                          min_side=64, max_side=96)
train = detection_dataset(source, image_size=64, batch_size=8, augment=False, seed=0)
images = np.concatenate([x.numpy() for x, _ in train.take(3)])
heads = examples.tiny_heads(len(SHAPE_CLASSES))
network = examples.tiny_detector(64, len(SHAPE_CLASSES))

task = YOLOTask(network, heads)
task.compile(optimizer=keras.optimizers.Adam(1e-3))
task.fit(train, epochs=1, verbose=0)

qat_network = qat.quantize_aware(network)
wrapped = sum(type(l).__name__ == "QuantizeWrapperV2" for l in qat_network.layers)
qat_task = YOLOTask(qat_network, heads)
qat_task.compile(optimizer=keras.optimizers.Adam(1e-4))
history = qat_task.fit(train, epochs=1, verbose=0)
result = to_tflite(qat_network, os.path.join(out, "qat.tflite"), quantize="qat",
                   representative_data=images[:16], input_type="uint8", output_type="int8",
                   heads=heads)

from ai_edge_litert.interpreter import Interpreter
runner = Interpreter(model_path=result.path).get_signature_runner("serving_default")
scale, zero = runner.get_input_details()["images"]["quantization"]
outputs = runner.get_output_details()
steps = []  # |int8 file - fake-quantized Keras model| in output quantization steps
for image in images[16:20]:
    want = [o.numpy()[0] for o in qat_network(image[None], training=False)]
    got = runner(images=np.round(image[None] / scale + zero).astype(np.uint8))
    for name, value in zip(("stride8", "stride16"), want):
        out_scale, out_zero = outputs[name]["quantization"]
        levels = got[name][0].astype(np.float32) - out_zero
        steps.append(float(np.abs(levels - value / out_scale).max()))

pruned, callbacks = qat.prune(network, target_sparsity=0.6, begin_step=0, end_step=2,
                              frequency=1)
prune_task = YOLOTask(pruned, heads)
prune_task.compile(optimizer=keras.optimizers.Adam(1e-4))
prune_task.fit(train, epochs=1, verbose=0, callbacks=callbacks)
stripped = qat.strip_pruning(pruned)
report = qat.sparsity(stripped)
pruned_file = to_tflite(stripped, os.path.join(out, "pruned.tflite"), heads=heads)
# A zoo backbone: its P{n} Identity outputs and channel slices get their configs.
import keras_csp
zoo_qat = qat.quantize_aware(keras_csp.CSPDenseNetbRef(include_top=False, input_shape=(64, 64, 3)))
zoo_wrapped = sum(type(l).__name__ == "QuantizeWrapperV2" for l in zoo_qat.layers)
print("RESULT " + json.dumps({
    "zoo_wrapped": zoo_wrapped,
    "wrapped": wrapped, "qat_loss": history.history["loss"][-1], "steps": steps,
    "input": result.sidecar["input"], "gpu_ok": result.gpu_report.ok,
    "ops": result.gpu_report.op_counts, "sparsity": report["overall"],
    "pruned_gpu_ok": pruned_file.gpu_report.ok,
}))
"""


def test_qat_end_to_end_on_the_synthetic_set_and_pruning(tmp_path):
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["wrapped"] >= 10  # every conv (with its folded BN) is fake-quantized
    assert np.isfinite(result["qat_loss"])
    assert result["input"]["dtype"] == "uint8"
    assert abs(result["input"]["quantization"]["scale"] - 1 / 255) < 1e-6
    assert result["gpu_ok"] and result["ops"].get("CONV_2D", 0) >= 10
    assert "FlexConv2D" not in result["ops"]
    # The int8 file computes what the fake-quantized Keras model computes, to a step or two
    # of the output's int8 grid (integer kernels vs float simulation of fake quantization).
    assert max(result["steps"]) <= 2.01, result["steps"]
    assert result["sparsity"] > 0.5 and result["pruned_gpu_ok"]
    assert result["zoo_wrapped"] >= 30  # CSPDenseNetbRef's convs, slices and P{n} outputs


@pytest.mark.skipif(LEGACY_KERAS, reason="checks the Keras 3 error")
def test_keras3_models_get_a_clear_error(tmp_path):
    model = examples.tiny_detector(32, 2)
    with pytest.raises(RuntimeError, match="TF_USE_LEGACY_KERAS=1"):
        qat.quantize_aware(model)
    with pytest.raises(RuntimeError, match="TF_USE_LEGACY_KERAS=1"):
        qat.prune(model)
    target = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match="quantization-aware"):
        to_tflite(model, target, quantize="qat")
    assert not target.exists()

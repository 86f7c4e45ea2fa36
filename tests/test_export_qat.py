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
zoo_float = keras_csp.CSPDenseNetbRef(include_top=False, input_shape=(64, 64, 3))
zoo_qat = qat.quantize_aware(zoo_float, calibration_data=images[:8])
# Ranges start at the float model's (tfmot's own start is [-6, 6] for every activation).
def ranges(layer):  # [min, max] of the layer's output quantizer
    return [float(v.numpy()) for v in layer.weights if v.name.endswith(("_min:0", "_max:0"))]
zoo_input_range = ranges([l for l in zoo_qat.layers if type(l).__name__ == "QuantizeLayer"][0])
zoo_stage1_range = ranges(zoo_qat.get_layer("quant_stage1_concat"))
kernel_max = float(np.max([v.numpy() for v in zoo_qat.get_layer("quant_stem_conv1_conv").weights
                           if v.name.endswith("kernel_max:0")][0]))
float_kernel_max = float(np.abs(zoo_float.get_layer("stem_conv1_conv").kernel.numpy()).max())
probe = keras.Model(zoo_float.inputs, zoo_float.get_layer("stage1_concat").output)
stage1_max = float(np.max(probe(images[:8])))
zoo_wrapped = sum(type(l).__name__ == "QuantizeWrapperV2" for l in zoo_qat.layers)
# Its stage pools feed two slices each (the dense path and the cross-stage path): converting
# needs the pool's own quantizer (else "max_pool_2d ... violate the same scale constraint").
zoo_qat(images[:8], training=True)
zoo_file = to_tflite(zoo_qat, os.path.join(out, "zoo_qat.tflite"), quantize="qat",
                     representative_data=images[:8], input_type="uint8", output_type="int8")
zoo_runner = Interpreter(model_path=zoo_file.path).get_signature_runner("serving_default")
zoo_want = tf.nest.flatten(zoo_qat(images[16:17], training=False))
zoo_steps = []  # |int8 file - fake-quantized model| in output quantization steps
zoo_got = zoo_runner(images=np.round(images[16:17] / scale + zero).astype(np.uint8))
for name, detail in zoo_runner.get_output_details().items():
    out_scale, out_zero = detail["quantization"]
    want = np.asarray([w for w in zoo_want if tuple(w.shape) == zoo_got[name].shape][0])
    levels = zoo_got[name].astype(np.float32) - out_zero
    zoo_steps.append([float(np.abs(levels - want / out_scale).mean()),
                      float(np.abs(levels - want / out_scale).max())])

# CSPMobileNetV2: grouped convs with a BatchNormalization after them (tfmot folds BN only
# after Conv2D / DepthwiseConv2D) and RepeatChannels.
mobile_qat = qat.quantize_aware(keras_csp.CSPMobileNetV2(include_top=False, input_shape=(64, 64, 3)),
                                calibration_data=images[:8])
mobile_file = to_tflite(mobile_qat, os.path.join(out, "mobile_qat.tflite"), quantize="qat",
                        representative_data=images[:8])

print("RESULT " + json.dumps({
    "mobile_gpu_ok": mobile_file.gpu_report.ok, "mobile_ops": mobile_file.gpu_report.op_counts,
    "zoo_wrapped": zoo_wrapped, "zoo_input_range": zoo_input_range,
    "zoo_stage1_range": zoo_stage1_range,
    "kernel_max": kernel_max, "float_kernel_max": float_kernel_max, "stage1_max": stage1_max, "zoo_gpu_ok": zoo_file.gpu_report.ok,
    "zoo_ops": zoo_file.gpu_report.op_counts, "zoo_steps": zoo_steps,
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
    low, high = result["zoo_input_range"]
    assert low == 0.0 and 0.9 < high <= 1.0, result["zoo_input_range"]  # images in [0, 1]
    assert result["zoo_stage1_range"][1] == pytest.approx(result["stage1_max"], rel=1e-4)
    assert result["kernel_max"] == pytest.approx(result["float_kernel_max"], rel=1e-6)  # not 6
    # The QAT zoo backbone converts to int8, passes the GPU-delegate check, and its int8 file
    # computes what the fake-quantized model computes: about one step of the output grid on
    # average (measured 0.98, max 8), integer rounding adding up over ~30 quantized layers.
    assert result["zoo_gpu_ok"] and result["zoo_ops"].get("MAX_POOL_2D", 0) >= 4, result["zoo_ops"]
    assert result["mobile_gpu_ok"] and result["mobile_ops"].get("DEPTHWISE_CONV_2D", 0) >= 10, result["mobile_ops"]
    (mean_steps, max_steps), = result["zoo_steps"]
    assert mean_steps <= 1.5 and max_steps <= 12, result["zoo_steps"]


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

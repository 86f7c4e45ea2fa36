"""The GPU-delegate checker on small models that must fail it (5-D tensors, TOPK_V2, CUMSUM,
Flex, live variables, dynamic shapes, quantized ops with the quant flag off) and on ones that
must pass, with the Keras layer of every finding."""

import os
import shutil
import tempfile

import numpy as np
import pytest

from keras_csp.backend import keras, register, tf
from keras_csp.export import ExportError, check_gpu_compatibility, examples, to_tflite
from keras_csp.export import gpu_check, saved_model


@register
class FiveD(keras.layers.Layer):
    """A rank-5 reshape and transpose, as attention-style code produces."""

    def call(self, x):
        y = tf.reshape(x, [1, 2, 4, 8, 4])
        y = tf.transpose(y, [0, 2, 1, 3, 4])
        return tf.reshape(y, [1, 8, 8, 4])


@register
class TopK(keras.layers.Layer):
    def call(self, x):
        values = tf.math.top_k(tf.reshape(x, [1, -1]), k=4).values
        return tf.reshape(values, [1, 1, 1, 4])


@register
class Cumsum(keras.layers.Layer):
    def __init__(self, axis, exclusive=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.exclusive = exclusive

    def call(self, x):
        return tf.cumsum(x, axis=self.axis, exclusive=self.exclusive)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "exclusive": self.exclusive}


@register
class Bincount(keras.layers.Layer):
    """An op with no TFLite builtin kernel (DenseBincount): only Flex could run it."""

    def call(self, x):
        counts = tf.math.bincount(tf.cast(x * 10.0, tf.int32), minlength=11, maxlength=11)
        return x + tf.cast(counts[0], tf.float32)


@register
class BoolSlice(keras.layers.Layer):
    """Slices a float and a bool tensor: the bool one raises the shared opcode's version."""

    def call(self, x):
        mask = tf.cast((x > 0.0)[:, :, :, :2], tf.float32)
        return x[:, :, :, 1:3] * mask


def _model(layer):
    image = keras.Input((8, 8, 3), batch_size=1, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(image)
    return keras.Model(image, layer(x), name=f"with_{layer.name}")


@pytest.fixture(scope="module")
def out_dir():
    path = tempfile.mkdtemp(prefix="test_gpu_check_")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _export(model, out_dir):
    return to_tflite(model, os.path.join(out_dir, f"{model.name}.tflite"))


def test_rank5_reshape_and_transpose_fail_with_their_layer(out_dir):
    model = _model(FiveD(name="five_d"))
    report = _export(model, out_dir).gpu_report
    rank = [f for f in report.findings if f.kind == "rank"]
    assert rank and not report.ok
    assert {f.op for f in rank} >= {"RESHAPE", "TRANSPOSE"}
    assert {f.layer for f in rank} == {"five_d"}
    assert all("rank 5" in f.message for f in rank)
    assert "five_d" in report.layers() and "conv" not in report.layers()


def test_topk_fails(out_dir):
    report = _export(_model(TopK(name="top_k")), out_dir).gpu_report
    topk = [f for f in report.findings if f.op == "TOPK_V2"]
    assert topk and topk[0].kind == "op" and topk[0].layer == "top_k"


def test_cumsum_on_a_spatial_axis_or_exclusive_fails_channel_cumsum_passes(out_dir):
    spatial = _export(_model(Cumsum(1, name="cumsum_rows")), out_dir).gpu_report
    found = [f for f in spatial.findings if f.op == "CUMSUM"]
    assert found and found[0].kind == "params" and "axis 1" in found[0].message
    assert found[0].layer == "cumsum_rows"
    exclusive = _export(_model(Cumsum(-1, exclusive=True, name="cumsum_excl")), out_dir)
    assert any("exclusive" in f.message for f in exclusive.gpu_report.findings)
    channels = _export(_model(Cumsum(-1, name="cumsum_channels")), out_dir).gpu_report
    assert channels.ok, str(channels)
    assert channels.op_counts.get("CUMSUM") == 1


def test_flex_op_is_reported_and_to_tflite_refuses_it(out_dir):
    model = _model(Bincount(name="bincount"))
    target = os.path.join(out_dir, "flex.tflite")
    with pytest.raises(ExportError, match="DenseBincount.*bincount"):
        to_tflite(model, target)
    assert not os.path.exists(target)
    # Make the Flex file on purpose (SELECT_TF_OPS), to check the checker flags it.
    config = saved_model.serving_config(model, batch_size=1)
    temp, path = saved_model.write_temporary(model, config)
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(path)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                               tf.lite.OpsSet.SELECT_TF_OPS]
        content = converter.convert()
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    report = check_gpu_compatibility(content, model=model)
    flex = [f for f in report.findings if f.kind == "flex"]
    assert flex and flex[0].op.startswith("FlexDenseBincount")
    assert flex[0].layer == "bincount"


def test_one_bool_slice_raises_every_strided_slice_version(out_dir):
    report = _export(_model(BoolSlice(name="bool_slice")), out_dir).gpu_report
    versions = [f for f in report.findings if f.kind == "version"]
    assert len(versions) == report.op_counts["STRIDED_SLICE"] >= 2
    assert all("version 3" in f.message for f in versions)


def test_live_variables_from_concrete_functions_are_reported():
    image = keras.Input((8, 8, 3), batch_size=1)
    model = keras.Model(image, keras.layers.Conv2D(4, 3, name="conv")(image))
    function = tf.function(lambda x: model(x)).get_concrete_function(
        tf.TensorSpec([1, 8, 8, 3]))
    content = tf.lite.TFLiteConverter.from_concrete_functions([function], model).convert()
    report = check_gpu_compatibility(content, model=model)
    weights = [f for f in report.findings if f.kind == "weights"]
    assert {f.op for f in weights} >= {"READ_VARIABLE", "CONV_2D"}
    assert {f.layer for f in weights} == {"conv"}


def test_dynamic_batch_and_keras_upsampling_are_reported_with_a_hint(out_dir):
    image = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(image)
    model = keras.Model(image, keras.layers.UpSampling2D(2, name="up")(x))
    path = os.path.join(out_dir, "keras_export")
    model.export(path, format="tf_saved_model", verbose=False)  # Keras' own: batch None
    content = tf.lite.TFLiteConverter.from_saved_model(path).convert()
    report = check_gpu_compatibility(content, model=model)
    kinds = {f.kind for f in report.findings}
    assert {"dynamic", "rank"} <= kinds
    assert any(f.op == "INPUT" and "-1" in f.message for f in report.findings)
    up = [f for f in report.findings if f.layer == "up" and f.kind == "rank"]
    assert up and "NearestUpsample2D" in up[0].hint


def test_tiny_detector_passes_and_quant_ops_need_the_quant_flag(out_dir):
    model = examples.tiny_detector(32, 2)
    result = to_tflite(model, os.path.join(out_dir, "tiny.tflite"))
    assert result.gpu_report.ok, str(result.gpu_report)
    assert result.gpu_report.partitions == 1
    assert result.gpu_report.supported_ops == result.gpu_report.num_ops
    data = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    int8 = to_tflite(model, os.path.join(out_dir, "tiny_int8.tflite"), quantize="int8",
                     representative_data=data, input_type="uint8")
    assert int8.gpu_report.ok, str(int8.gpu_report)
    strict = check_gpu_compatibility(int8.path, allow_quant=False)
    assert any(f.op == "QUANTIZE" and f.kind == "op" for f in strict.findings)
    assert any(f.kind == "dtype" and "INT8" in f.message for f in strict.findings)


def test_layer_of_reads_tensor_names():
    names = {"c2_conv": "Conv2D", "conv2d_1": "Conv2D"}
    assert gpu_check.layer_of("functional_1/c2_conv_1/convolution", names) == "c2_conv"
    assert gpu_check.layer_of("model/conv2d_1/BiasAdd", names) == "conv2d_1"
    assert gpu_check.layer_of("functional_1/c2_conv_1/Relu;a/b", names) == "c2_conv"
    assert gpu_check.layer_of("m/conv2d_1/Relu;m/c2_conv_1/Conv2D", names) == "c2_conv"
    assert gpu_check.layer_of("functional_1/c2_conv_1/convolution") == "c2_conv"
    assert gpu_check.layer_of("arith.constant", names) is None


def test_command_line_exit_status(out_dir, capsys):
    good = os.path.join(out_dir, "tiny.tflite")
    bad = os.path.join(out_dir, "with_top_k.tflite")
    if not (os.path.exists(good) and os.path.exists(bad)):
        pytest.skip("needs the files of the tests above")
    assert gpu_check.main([good]) == 0
    assert gpu_check.main([good, bad]) == 1
    assert "TOPK_V2" in capsys.readouterr().out


def test_not_a_tflite_file(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="TFL3"):
        check_gpu_compatibility(path)

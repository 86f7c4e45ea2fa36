"""Detector layers: SPP, SpatialAttention, Maxout, Upsample and YoloDecode; numerics against
NumPy / keras_csp.ops, serialization, and a TFLite file the GPU delegate takes whole."""

import json

import numpy as np
import pytest

from keras_csp.backend import keras
from keras_csp.detectors.heads import head_specs
from keras_csp.layers import SPP, Maxout, SpatialAttention, Upsample, YoloDecode, conv_bn_act
from keras_csp.layers.pooling import ChannelMaxout
from keras_csp.ops import decode_heads


def _np_maxpool_same(x, k):
    """Stride-1 max-pool, window centred with Darknet's padding ((k-1)//2 before), -inf outside."""
    b, h, w, c = x.shape
    before = (k - 1) // 2
    padded = np.full((b, h + k - 1, w + k - 1, c), -np.inf, np.float32)
    padded[:, before:before + h, before:before + w] = x
    out = np.empty_like(x)
    for i in range(h):
        for j in range(w):
            out[:, i, j] = padded[:, i:i + k, j:j + k].max(axis=(1, 2))
    return out


def _roundtrip(layer):
    config = json.loads(json.dumps(layer.get_config()))
    return type(layer).from_config(config)


def test_spp_matches_darknet_route_order():
    x = np.random.default_rng(0).normal(size=(2, 9, 7, 3)).astype(np.float32)
    out = SPP()(x).numpy()
    expected = np.concatenate([_np_maxpool_same(x, 13), _np_maxpool_same(x, 9),
                               _np_maxpool_same(x, 5), x], axis=-1)
    np.testing.assert_allclose(out, expected)
    layer = _roundtrip(SPP((3, 7), name="s"))
    assert layer.pool_sizes == (3, 7) and layer.compute_output_shape((None, 5, 5, 4)) == (None, 5, 5, 12)
    with pytest.raises(ValueError, match="pool_sizes"):
        SPP((0, 3))


def test_spatial_attention_gates_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    gate = rng.random((2, 4, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(SpatialAttention()([x, gate]).numpy(), x * gate, rtol=1e-6)
    single = rng.normal(size=(2, 4, 5, 1)).astype(np.float32)
    out = SpatialAttention(activation="sigmoid")([x, single]).numpy()
    np.testing.assert_allclose(out, x / (1 + np.exp(-single)), rtol=1e-5)
    assert _roundtrip(SpatialAttention(activation="sigmoid")).activation == "sigmoid"
    with pytest.raises(ValueError, match="activation"):
        SpatialAttention(activation="relu")


def test_maxout_is_darknet_channel_maxout():
    assert Maxout is ChannelMaxout
    x = np.random.default_rng(2).normal(size=(1, 3, 3, 12)).astype(np.float32)
    out = Maxout(4)(x).numpy()
    np.testing.assert_allclose(out, x.reshape(1, 3, 3, 3, 4).max(axis=3))


def test_upsample_is_nearest_neighbour():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(Upsample(2)(x).numpy(), x.repeat(2, axis=1).repeat(2, axis=2))


HEADS = [
    dict(scale_x_y=1.0, new_coords=False),
    dict(scale_x_y=1.2, new_coords=False),
    dict(scale_x_y=2.0, new_coords=True),
]


@pytest.mark.parametrize("options", HEADS, ids=["plain", "scale_xy", "new_coords"])
def test_yolo_decode_matches_ops_decode(options):
    heads = head_specs(("P3", "P4"), 3, [[(10, 13), (16, 30)], [(30, 61), (62, 45)]], **options)
    rng = np.random.default_rng(3)
    raw = [rng.normal(size=(2, 8, 6, heads[0].channels)).astype(np.float32) * 2,
           rng.normal(size=(2, 4, 3, heads[1].channels)).astype(np.float32) * 2]
    out = YoloDecode(heads)(raw)
    ref = decode_heads(raw, heads, (64, 48))
    np.testing.assert_allclose(out["boxes"].numpy(), ref["boxes"].numpy(), rtol=1e-5, atol=1e-6)
    scores = ref["objectness"].numpy()[..., None] * ref["class_probs"].numpy()
    np.testing.assert_allclose(out["scores"].numpy(), scores, rtol=1e-5, atol=1e-7)
    # An explicit input size rescales the anchors the same way.
    out = YoloDecode(heads, input_size=(80, 40))(raw)
    ref = decode_heads(raw, heads, (80, 40))
    np.testing.assert_allclose(out["boxes"].numpy(), ref["boxes"].numpy(), rtol=1e-5, atol=1e-6)
    layer = _roundtrip(YoloDecode(heads, input_size=(80, 40)))
    assert layer.heads == tuple(heads) and layer.input_size == (80, 40)


def test_yolo_decode_errors():
    heads = head_specs(("P3",), 2, [[(10, 13)]])
    with pytest.raises(ValueError, match="channels"):
        YoloDecode(heads)([np.zeros((1, 4, 4, 8), np.float32)])
    with pytest.raises(ValueError, match="2 head outputs for 1"):
        YoloDecode(heads)([np.zeros((1, 4, 4, 7), np.float32)] * 2)


def _small_model(heads):
    x = keras.Input((64, 64, 3), name="images")
    a = conv_bn_act(x, 16, 3, 8, name="a")
    b = conv_bn_act(a, 16, 3, 2, name="b")
    s = SPP(name="spp")(b)
    u = Upsample(2, name="up")(s)
    m = Maxout(16, name="maxout")(keras.layers.Concatenate(name="cat")([u, a]))
    g = conv_bn_act(m, 16, 1, activation="logistic", name="gate")
    m = SpatialAttention(name="sam")([m, g])
    h3 = conv_bn_act(m, heads[0].channels, 1, batch_normalize=False, activation="linear", name="h3")
    h4 = conv_bn_act(s, heads[1].channels, 1, batch_normalize=False, activation="linear", name="h4")
    decoded = YoloDecode(heads, name="decode")([h3, h4])
    return keras.Model(x, [decoded["boxes"], decoded["scores"]], name="layers_probe")


def test_keras_file_roundtrip(tmp_path):
    heads = head_specs(("P3", "P4"), 3, [[(10, 13), (16, 30)], [(30, 61), (62, 45)]], scale_x_y=1.1)
    model = _small_model(heads)
    x = np.random.default_rng(4).random((1, 64, 64, 3), dtype=np.float32)
    path = tmp_path / "probe.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(model(x), loaded(x)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_tflite_has_builtin_rank4_gpu_ops_only(tmp_path):
    """SPP, Upsample, Maxout, SAM and YoloDecode convert to ops the GPU delegate runs."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_csp.export import to_tflite

    heads = head_specs(("P3", "P4"), 3, [[(10, 13), (16, 30)], [(30, 61), (62, 45)]], scale_x_y=1.1)
    model = _small_model(heads)
    result = to_tflite(model, tmp_path / "probe.tflite", write_sidecar=False)
    assert result.gpu_report.ok, str(result.gpu_report)
    interpreter = Interpreter(model_content=open(result.path, "rb").read())
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "RESIZE_NEAREST_NEIGHBOR" in ops and "TILE" not in ops
    assert not any(op.startswith("Flex") for op in ops)
    assert max(len(t["shape"]) for t in interpreter.get_tensor_details()) <= 4
    interpreter.allocate_tensors()
    x = np.random.default_rng(5).random((1, 64, 64, 3), dtype=np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    outputs = {tuple(d["shape"]): interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    for expected in model(x):
        np.testing.assert_allclose(outputs[tuple(expected.shape)], expected.numpy(), rtol=1e-4, atol=1e-5)

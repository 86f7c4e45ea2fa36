"""Darknet layers against loop-by-loop numpy transcriptions of Darknet's forward passes."""

import contextlib
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from keras_csp.backend import keras, tf
from keras_csp.darknet import infer_network, load, model_from_cfg
from keras_csp.darknet.weights import DarknetWeights, param_layers_from_network
from keras_csp.layers import (
    ChannelMaxout,
    DarknetPool2D,
    DarknetSoftmax,
    DarknetYolo,
    NearestUpsample2D,
    Reorg,
    ScaleChannels,
)

RNG = np.random.default_rng(7)


def _run(layer, *inputs):
    out = layer(*[tf.constant(x[None]) for x in inputs]) if len(inputs) == 1 else layer(
        [tf.constant(x[None]) for x in inputs]
    )
    return np.asarray(out)[0]


# --------------------------------------------------------------- numpy Darknet forwards


def darknet_pool(x, size, stride_y, stride_x, padding, mode):
    """Darknet's maxpool / local_avgpool: window i starts at i*stride - padding//2."""
    h, w, c = x.shape
    out_h = (h + padding - size) // stride_y + 1
    out_w = (w + padding - size) // stride_x + 1
    offset = -(padding // 2)
    out = np.empty((out_h, out_w, c), np.float32)
    for i in range(out_h):
        for j in range(out_w):
            rows = [r for r in range(i * stride_y + offset, i * stride_y + offset + size)
                    if 0 <= r < h]
            cols = [q for q in range(j * stride_x + offset, j * stride_x + offset + size)
                    if 0 <= q < w]
            window = x[np.ix_(rows, cols)]
            out[i, j] = window.max((0, 1)) if mode == "max" else window.mean((0, 1))
    return out


def darknet_maxout(x, out_channels):
    c = x.shape[-1]
    return np.stack([x[..., g:c:out_channels].max(-1) for g in range(out_channels)], -1)


def darknet_reorg(x, stride):
    """reorg_cpu(input, out_w, out_h, out_c, batch, stride, forward=0, output), CHW buffers."""
    h, w, c = x.shape
    src = x.transpose(2, 0, 1).ravel()
    out_w, out_h, out_c = w // stride, h // stride, c * stride * stride
    out = np.empty(out_c * out_h * out_w, np.float32)
    for k in range(out_c):
        for j in range(out_h):
            for i in range(out_w):
                in_index = i + out_w * (j + out_h * k)
                c2, offset = k % c, k // c
                w2 = i * stride + offset % stride
                h2 = j * stride + offset // stride
                out[in_index] = src[w2 + out_w * stride * (h2 + out_h * stride * c2)]
    return out.reshape(out_c, out_h, out_w).transpose(1, 2, 0)


def darknet_softmax(x, groups, temperature):
    flat = x.transpose(2, 0, 1).ravel().astype(np.float64) / temperature
    parts = flat.reshape(groups, -1)
    parts = np.exp(parts - parts.max(1, keepdims=True))
    parts /= parts.sum(1, keepdims=True)
    h, w, c = x.shape
    return parts.reshape(c, h, w).transpose(1, 2, 0)


def darknet_yolo(x, anchors, classes, scale_x_y, new_coords):
    out = x.astype(np.float64).copy()
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    per = 5 + classes
    for n in range(anchors):
        b = n * per
        if not new_coords:
            out[..., b:b + 2] = sigmoid(out[..., b:b + 2])
            out[..., b + 4:b + per] = sigmoid(out[..., b + 4:b + per])
        out[..., b:b + 2] = out[..., b:b + 2] * scale_x_y - 0.5 * (scale_x_y - 1)
    return out


# ----------------------------------------------------------------------------- pooling


@settings(max_examples=80, deadline=None)
@given(
    h=st.integers(1, 9), w=st.integers(1, 9), size=st.integers(1, 6),
    sy=st.integers(1, 3), sx=st.integers(1, 3), padding=st.integers(0, 10) | st.none(),
    mode=st.sampled_from(["max", "avg"]),
)
def test_pool_matches_darknet(h, w, size, sy, sx, padding, mode):
    pad = size - 1 if padding is None else padding
    assume(pad // 2 <= size - 1 and pad - pad // 2 <= size - 1)  # no window fully outside
    assume((h + pad - size) // sy + 1 >= 1 and (w + pad - size) // sx + 1 >= 1)
    x = RNG.normal(size=(h, w, 3)).astype(np.float32) - 2.0  # negative: zero padding would show
    got = _run(DarknetPool2D(size, (sy, sx), padding, mode=mode), x)
    np.testing.assert_allclose(got, darknet_pool(x, size, sy, sx, pad, mode), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size, stride, extent", [(3, 2, 128), (3, 2, 13), (2, 2, 13), (5, 1, 13),
                                                  (13, 1, 13), (2, 1, 7)])
def test_pool_cases_of_the_authors_cfgs(size, stride, extent):
    x = RNG.normal(size=(extent, extent, 2)).astype(np.float32) - 1.0
    layer = DarknetPool2D(size, stride)
    got = _run(layer, x)
    np.testing.assert_allclose(got, darknet_pool(x, size, stride, stride, size - 1, "max"))
    assert layer.compute_output_shape((1, extent, extent, 2))[1:3] == got.shape[:2]


@pytest.mark.parametrize("channels, k", [(8, 4), (9, 4), (7, 3), (4, 4), (6, 1), (5, 2)])
def test_channel_maxout_matches_darknet(channels, k):
    x = RNG.normal(size=(3, 4, channels)).astype(np.float32)
    np.testing.assert_array_equal(_run(ChannelMaxout(k), x), darknet_maxout(x, k))


# ------------------------------------------------------------------------- other layers


@pytest.mark.parametrize("stride, scale", [(2, 1.0), (3, 0.5)])
def test_upsample_is_nearest_neighbour(stride, scale):
    x = RNG.normal(size=(3, 5, 2)).astype(np.float32)
    expected = np.repeat(np.repeat(x, stride, 0), stride, 1) * scale
    np.testing.assert_allclose(_run(NearestUpsample2D(stride, scale), x), expected)


@pytest.mark.parametrize("stride", [2, 3])
def test_upsample_gradient_is_the_block_sum_and_compiles_with_xla(stride):
    x = tf.constant(RNG.normal(size=(2, 5, 3, 4)).astype(np.float32))
    weights = tf.constant(RNG.normal(size=(2, 5 * stride, 3 * stride, 4)).astype(np.float32))
    layer = NearestUpsample2D(stride, 0.5)

    def gradient(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(layer(inputs) * weights)
        return tape.gradient(loss, inputs)

    expected = 0.5 * weights.numpy().reshape(2, 5, stride, 3, stride, 4).sum(axis=(2, 4))
    np.testing.assert_allclose(gradient(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    # TensorFlow's ResizeNearestNeighborGrad has no XLA kernel: a jit_compile training step failed on it
    np.testing.assert_allclose(tf.function(gradient, jit_compile=True)(x).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("stride", [2, 3])
def test_reorg_matches_darknet_loop(stride):
    x = RNG.normal(size=(stride * 3, stride * 2, 5)).astype(np.float32)
    np.testing.assert_array_equal(_run(Reorg(stride), x), darknet_reorg(x, stride))


@pytest.mark.parametrize("shape, groups, temperature", [((1, 1, 10), 1, 1.0),
                                                        ((1, 1, 12), 3, 2.0),
                                                        ((2, 3, 4), 2, 1.0)])
def test_softmax_matches_darknet(shape, groups, temperature):
    x = RNG.normal(size=shape).astype(np.float32) * 3
    got = _run(DarknetSoftmax(groups, temperature), x)
    np.testing.assert_allclose(got, darknet_softmax(x, groups, temperature), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scale_x_y, new_coords", [(1.0, False), (1.05, False), (2.0, True)])
def test_yolo_forward_matches_darknet(scale_x_y, new_coords):
    x = RNG.normal(size=(4, 3, 3 * 7)).astype(np.float32) * 2
    got = _run(DarknetYolo(3, 2, scale_x_y, new_coords), x)
    np.testing.assert_allclose(got, darknet_yolo(x, 3, 2, scale_x_y, new_coords), rtol=1e-5,
                               atol=1e-6)


def test_scale_channels_broadcasts_per_channel():
    x = RNG.normal(size=(4, 3, 5)).astype(np.float32)
    s = RNG.normal(size=(1, 1, 5)).astype(np.float32)
    np.testing.assert_allclose(_run(ScaleChannels(), x, s), x * s)


@pytest.mark.parametrize(
    "layer",
    [DarknetPool2D(3, (2, 1), 4, mode="avg", name="p"), ChannelMaxout(3, name="m"),
     NearestUpsample2D(2, 0.5, name="u"), Reorg(2, name="r"), ScaleChannels(name="s"),
     DarknetSoftmax(2, 0.5, name="sm"), DarknetYolo(3, 80, 1.1, True, name="y")],
    ids=lambda layer: type(layer).__name__,
)
def test_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


# ------------------------------------------------------------------- TFLite and tf_keras

TINY_DETECTOR = """
[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=3
stride=2

[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky

[maxpool]
size=5
stride=1

[route]
layers=-1,-2

[maxpool]
maxpool_depth=1
out_channels=6

[upsample]
stride=2

[shortcut]
from=-7
activation=linear

[convolutional]
filters=18
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,13, 16,30, 33,23
classes=1
num=3
scale_x_y=1.05
"""

TINY_CLASSIFIER = """
[net]
width=16
height=16
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=swish

[avgpool]

[convolutional]
filters=8
size=1
stride=1
activation=logistic

[scale_channels]
from=-3

[reorg]
stride=2

[convolutional]
filters=32
size=1
stride=1
activation=logistic

[sam]
from=-2

[dropout]
probability=.2

[connected]
output=6
activation=linear

[softmax]
groups=2
"""


def random_weights(network, seed=0):
    """A valid random .weights payload for ``network`` (positive variances)."""
    rng = np.random.default_rng(seed)
    chunks = []
    for layer in param_layers_from_network(network):
        for name, shape in layer.fields():
            values = rng.normal(size=shape) * (0.3 if name == "weights" else 0.1)
            if name == "rolling_variance":
                values = rng.uniform(0.5, 1.5, shape)
            if name == "scales":
                values = rng.uniform(0.8, 1.2, shape)
            chunks.append(values.astype(np.float32).ravel())
    return DarknetWeights(values=np.concatenate(chunks))


def _litert(content):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    return interpreter


def _to_tflite(model, directory):
    """Export a SavedModel (Keras' ExportArchive) and convert it with builtin ops only."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((1,) + tuple(model.input_shape[1:]), tf.float32)
    archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=[spec])
    archive.write_out(str(directory), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(directory))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


@pytest.mark.parametrize("text", [TINY_DETECTOR, TINY_CLASSIFIER], ids=["detector", "classifier"])
def test_tflite_conversion_is_gpu_compatible_rank4_and_exact(text, tmp_path):
    network = infer_network(text)
    model = load(network, random_weights(network), outputs=list(range(len(network.layers)))[-3:])
    content = _to_tflite(model, tmp_path / "saved")
    interpreter = _litert(content)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not ops & {"TILE", "GATHER", "GATHER_ND", "FLEX_DELEGATE", "CUSTOM"}, ops
    if text is TINY_DETECTOR:
        assert {"RESIZE_NEAREST_NEIGHBOR", "MAX_POOL_2D", "STRIDED_SLICE"} <= ops, ops
    else:
        assert "SPACE_TO_DEPTH" in ops, ops
    assert max(len(t["shape"]) for t in interpreter.get_tensor_details()) <= 4
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        tf.lite.experimental.Analyzer.analyze(model_content=content, gpu_compatibility=True)
    assert "looks compatible with GPU delegate" in report.getvalue(), report.getvalue()[-2000:]

    x = np.random.default_rng(1).random((1,) + network.input_shape).astype(np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    expected = [np.asarray(t) for t in model(x)]
    got = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    for reference in expected:  # TFLite may order outputs differently
        errors = [np.abs(g - reference).max() for g in got if g.shape == reference.shape]
        assert min(errors) < 1e-4


def test_tf_keras_builds_the_same_numbers(tmp_path):
    """With TF_USE_LEGACY_KERAS=1 the same cfg and weights give the same outputs."""
    network = infer_network(TINY_DETECTOR)
    weights = random_weights(network, seed=3)
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY_DETECTOR)
    weights_path = tmp_path / "tiny.weights"
    weights_path.write_bytes(weights.to_bytes())
    x = np.random.default_rng(2).random((1, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import numpy as np
        from keras_csp.backend import keras, LEGACY_KERAS
        from keras_csp.darknet import load
        assert LEGACY_KERAS and keras.__name__ == "tf_keras"
        model = load({str(cfg)!r}, {str(weights_path)!r}, outputs=[1, 5, 7, 9])
        outs = model(np.load({str(tmp_path / "x.npy")!r}))
        np.savez({str(tmp_path / "legacy.npz")!r}, *[np.asarray(o) for o in outs])
        """
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    legacy = np.load(tmp_path / "legacy.npz")
    model = load(str(cfg), str(weights_path), outputs=[1, 5, 7, 9])
    for mine, theirs in zip(model(x), [legacy[k] for k in legacy.files]):
        np.testing.assert_allclose(np.asarray(mine), theirs, rtol=1e-5, atol=1e-5)


def test_tiny_models_keep_darknet_shapes_layer_by_layer():
    for text in (TINY_DETECTOR, TINY_CLASSIFIER):
        network = infer_network(text)
        model = model_from_cfg(network, outputs=list(range(len(network.layers))))
        for spec, tensor in zip(network.layers, model.outputs):
            assert tuple(tensor.shape[1:]) == spec.output_shape, spec.where()
        assert model.count_params() == network.weight_floats

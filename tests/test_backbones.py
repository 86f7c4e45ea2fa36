"""The big backbones: input sizes, pooling, tops, activations, ablations, gradients, weights files, errors."""

import numpy as np
import pytest

import keras_csp
from keras_csp import zoo
from keras_csp.backend import keras

# Counts, pyramid strides, forward passes and .keras round trips of every registered backbone:
# tests/test_registry_models.py.


def test_dynamic_input_size_and_feature_extractor():
    model = keras_csp.CSPResNeXt50(include_top=False, weights=None)
    extractor = keras_csp.feature_extractor(model, levels=("P3", "P4", "P5"))
    feats = extractor(np.zeros((1, 128, 160, 3), np.float32))
    assert [tuple(feats[k].shape) for k in ("P3", "P4", "P5")] == [
        (1, 16, 20, 512), (1, 8, 10, 1024), (1, 4, 5, 2048)
    ]


@pytest.mark.parametrize("pooling,shape", [("avg", (None, 1024)), ("max", (None, 1024)), (None, (None, 2, 2, 1024))])
def test_pooling(pooling, shape):
    model = keras_csp.CSPDarknet53(include_top=False, pooling=pooling, input_shape=(64, 64, 3))
    assert model.output_shape == shape


def test_classes_and_logits():
    model = keras_csp.CSPResNet50(classes=7, classifier_activation=None, input_shape=(64, 64, 3))
    logits = model(np.random.default_rng(1).random((3, 64, 64, 3), dtype=np.float32)).numpy()
    assert logits.shape == (3, 7)
    assert not np.allclose(logits.sum(-1), 1.0)
    probs = keras_csp.CSPResNet50(classes=7, input_shape=(64, 64, 3))(np.zeros((1, 64, 64, 3), np.float32))
    np.testing.assert_allclose(probs.numpy().sum(-1), 1.0, rtol=1e-5)


def test_input_tensor():
    inputs = keras.Input((64, 64, 3))
    model = keras_csp.Darknet53(include_top=False, input_tensor=inputs)
    assert model.inputs[0] is inputs or model.inputs[0].shape == inputs.shape
    assert model.output_shape == (None, 2, 2, 1024)


@pytest.mark.parametrize("activation,layer_type", [("mish", "Mish"), ("swish", "Activation"), ("relu", "ReLU")])
def test_activation_variants(activation, layer_type):
    model = keras_csp.CSPDarknet53(include_top=False, input_shape=(64, 64, 3), activation=activation)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert layer_type in kinds and "LeakyReLU" not in kinds


def test_fusion_first_last_and_partial_ratio_ablation():
    """Figure 3 / Table 1: fusion first saves compute; gamma scales the partial path."""

    def bflops(**kw):
        return keras_csp.profile(keras_csp.CSPResNeXt50(input_shape=(256, 256, 3), **kw)).bflops

    both, first, last = bflops(), bflops(fusion="first"), bflops(fusion="last")
    assert first < both and last < both
    quarter, three_quarters = bflops(partial_ratio=0.25), bflops(partial_ratio=0.75)
    assert quarter < both < three_quarters


def test_grouped_conv_runs_natively_and_matches_reference():
    layer = keras_csp.layers.GroupedConv2D(64, 3, padding="same", groups=32, use_bias=False)
    x = np.random.default_rng(2).random((1, 8, 8, 64), dtype=np.float32)
    y = layer(x).numpy()
    kernel = layer.kernel.numpy()  # (3, 3, 2, 64)
    # Reference: each group of 2 input channels convolved separately.
    ref = np.zeros_like(y)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for g in range(32):
        xs = xp[..., 2 * g : 2 * g + 2]
        for o in range(2 * g, 2 * g + 2):
            for i in range(8):
                for j in range(8):
                    ref[0, i, j, o] = np.sum(xs[0, i : i + 3, j : j + 3, :] * kernel[:, :, :, o])
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_darknet_symmetric_padding_for_stride_two():
    """Darknet pads 3x3/2 convs by 1 on every side; TF "same" would pad only bottom/right."""
    model = keras_csp.CSPDarknet53(include_top=False, input_shape=(64, 64, 3))
    pad = model.get_layer("stage1_down_pad")
    assert pad.padding == ((1, 1), (1, 1))
    assert model.get_layer("stage1_down_conv").padding == "valid"


def test_fit_one_step_and_every_weight_gets_a_gradient():
    import tensorflow as tf

    model = keras_csp.CSPResNeXt50(classes=4, input_shape=(64, 64, 3))
    x = np.random.default_rng(3).random((2, 64, 64, 3), dtype=np.float32)
    y = np.array([0, 3])
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and np.any(g.numpy() != 0) for g in grads)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_keras_weights_file(tmp_path):
    model = keras_csp.CSPResNet50(include_top=False, input_shape=(64, 64, 3))
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    again = keras_csp.CSPResNet50(include_top=False, input_shape=(64, 64, 3), weights=str(path))
    x = np.ones((1, 64, 64, 3), np.float32) * 0.5
    np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), rtol=1e-6)


def test_preprocess_input():
    out = keras_csp.preprocess_input(np.array([[0, 255, 51]], np.uint8))
    np.testing.assert_allclose(out, [[0.0, 1.0, 0.2]])


class TestBadArguments:
    def test_imagenet_with_custom_classes(self):
        with pytest.raises(ValueError, match="classes` must be 1000"):
            keras_csp.CSPDarknet53(weights="imagenet", classes=10)

    def test_input_smaller_than_stride(self):
        with pytest.raises(ValueError, match="at least 32"):
            keras_csp.CSPResNet50(input_shape=(16, 64, 3))

    def test_unknown_activation(self):
        with pytest.raises(ValueError, match="Unknown activation 'gelu'"):
            keras_csp.CSPDarknet53(activation="gelu")

    def test_unknown_weights_path(self):
        with pytest.raises(ValueError, match="received weights='nope.h5'"):
            keras_csp.CSPDarknet53(weights="nope.h5")

    def test_bad_pooling_and_fusion(self):
        with pytest.raises(ValueError, match="pooling"):
            keras_csp.CSPDarknet53(include_top=False, pooling="sum")
        with pytest.raises(ValueError, match="fusion"):
            keras_csp.CSPDarknet53(fusion="middle")

    def test_imagenet_offline_fails_clearly(self, tmp_path, monkeypatch):
        monkeypatch.setenv("KERAS_CSP_HOME", str(tmp_path))
        with pytest.raises(FileNotFoundError, match="csdarknet53-omega_final.weights"):
            keras_csp.CSPDarknet53(weights="imagenet", activation="mish")

    def test_unknown_zoo_name(self):
        with pytest.raises(ValueError, match="Unknown model 'cspfoo'"):
            zoo.build("cspfoo")


def test_mish_matches_its_definition():
    """Mish's int8-friendly form equals x * tanh(log(1 + e^x)) (float64 reference)."""
    x = np.linspace(-30, 30, 20001).astype(np.float32)
    got = keras_csp.layers.Mish()(x).numpy()
    ref = x.astype(np.float64) * np.tanh(np.log1p(np.exp(x.astype(np.float64))))
    np.testing.assert_allclose(got, ref, atol=5e-6)

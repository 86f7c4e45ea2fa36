"""FusedBatchNormalization trains as Keras' BatchNormalization does (outputs, gradients and
moving statistics), with TensorFlow's fused kernel, in training and at inference; save/load is Keras' own."""

import numpy as np
import pytest

from keras_csp.backend import keras, tf
from keras_csp.layers import FusedBatchNormalization, conv_bn_act


def _step(layer, x, training=True):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * tf.sin(y))
    dx, dgamma, dbeta = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [np.asarray(v, np.float32) for v in (y, dx, dgamma, dbeta, layer.moving_mean, layer.moving_variance)]


@pytest.mark.parametrize("shape", [(8, 16, 16, 32), (2, 3, 5, 7)])
def test_fused_training_step_equals_keras_batch_normalization(shape):
    x = tf.random.stateless_normal(shape, seed=(1, 2)) * 3.0 + 1.0
    reference = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-3)
    for layer in (reference, fused):
        layer.build(x.shape)
        layer.gamma.assign(tf.linspace(0.5, 2.0, shape[-1]))
        layer.beta.assign(tf.linspace(-1.0, 1.0, shape[-1]))
    expected, got = _step(reference, x), _step(fused, x)
    names = ["output", "dx", "dgamma", "dbeta", "moving_mean", "moving_variance"]
    for name, a, b in zip(names, expected, got):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-4 * max(1.0, float(np.abs(a).max())), err_msg=name)
    assert not np.allclose(got[4], 0.0)  # the moving statistics moved


def test_inference_and_frozen_layers_equal_keras_and_mixed_precision_keeps_dtypes():
    x = tf.random.stateless_normal((4, 8, 8, 6), seed=(3, 4))
    reference, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
    for layer in (reference, fused):
        layer.build(x.shape)
        layer.moving_mean.assign(tf.linspace(-0.5, 0.5, 6))
        layer.moving_variance.assign(tf.linspace(0.2, 3.0, 6))
        layer.gamma.assign(tf.linspace(0.5, 2.0, 6))
    np.testing.assert_allclose(fused(x, training=False), reference(x, training=False), rtol=1e-5, atol=1e-5)
    for layer in (reference, fused):
        layer.trainable = False  # a frozen BN normalizes with its moving statistics, as Keras'
    expected, got = _step(reference, x)[:2], _step(fused, x)[:2]  # the outputs and dx
    for name, a, b in zip(["output", "dx"], expected, got):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(fused.moving_mean, reference.moving_mean)  # untouched
    # In a graph, the optimizer can fold the inference op into the conv before it.
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, conv_bn_act(inputs, 4, 3, activation="leaky", name="c"))
    graph = tf.function(lambda t: model(t, training=False)).get_concrete_function(
        tf.TensorSpec((1, 8, 8, 3))).graph.as_graph_def()
    assert {"Conv2D", "FusedBatchNormV3"} <= {n.op for n in graph.node}
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = FusedBatchNormalization()
        y = layer(tf.cast(x, tf.bfloat16), training=True)
        assert y.dtype == tf.bfloat16 and layer.moving_mean.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_package_convs_use_it_and_it_survives_keras_save_load(tmp_path):
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, conv_bn_act(inputs, 8, 3, activation="leaky", name="c1"))
    assert any(type(layer) is FusedBatchNormalization for layer in model.layers)
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    model(x, training=True)  # moves the statistics
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert any(type(layer) is FusedBatchNormalization for layer in again.layers)
    np.testing.assert_allclose(again(x, training=False), model(x, training=False), atol=1e-6)

"""Names that existed twice with different meanings got one that says what it does; the old one
still works for a release and warns (DeprecationWarning):

- ``keras_csp.darknet.build_model`` (a Keras model of a Darknet cfg) -> ``darknet.model_from_cfg``
  (``keras_csp.training.models.build_model`` builds a detector by name);
- ``keras_csp.training.restore.load_detector`` (a trained run's detector) -> ``restore_detector``
  (``keras_csp.darknet.load_detector`` builds a detector from a cfg);
- ``keras_csp.export.saved_model.make_config`` (checked serving arguments) -> ``serving_config``
  (``keras_csp.training.make_config`` builds a training config).

And ``network_of`` (a Detector's functional network) is one function, in keras_csp.detectors.
"""

import numpy as np
import pytest

from keras_csp.backend import keras

CFG = """
[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=4
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=6
size=1
stride=1
activation=linear
"""


def test_darknet_build_model_is_the_deprecated_name_of_model_from_cfg():
    from keras_csp import darknet

    model = darknet.model_from_cfg(CFG)
    with pytest.warns(DeprecationWarning, match="use keras_csp.darknet.model_from_cfg"):
        old = darknet.build_model(CFG)
    assert [type(layer).__name__ for layer in old.layers] == [type(layer).__name__ for layer in model.layers]
    assert old.output_shape == model.output_shape == (None, 8, 8, 6)
    assert darknet.darknet_order(old) == darknet.darknet_order(model) == ("layer000", "layer002")


def test_restore_load_detector_is_the_deprecated_name_of_restore_detector(tmp_path):
    from helpers import tiny_detector

    from keras_csp.training import restore

    trained = tiny_detector(2, (64, 64, 3))
    weights = tmp_path / "trained.weights.h5"
    trained.save_weights(weights)
    args = dict(model="helpers:tiny_detector", num_classes=2, image_size=64, weights=str(weights))
    detector, info = restore.restore_detector(**args)
    with pytest.warns(DeprecationWarning, match="use restore_detector"):
        old, old_info = restore.load_detector(**args)
    assert old.heads == detector.heads == trained.heads and old_info == info
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    for a, b in zip(trained(x, training=False), old(x, training=False)):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-6)


def test_saved_model_make_config_is_the_deprecated_name_of_serving_config():
    from keras_csp.export import examples, saved_model

    model = examples.tiny_detector(32, 2)
    heads = examples.tiny_heads(2)
    config = saved_model.serving_config(model, heads=heads, nms=True, max_detections=7)
    with pytest.warns(DeprecationWarning, match="use serving_config"):
        old = saved_model.make_config(model, heads=heads, nms=True, max_detections=7)
    assert old == config and config.nms.max_detections == 7 and config.input_size == (32, 32)


def test_network_of_is_one_function():
    from keras_csp import detectors
    from keras_csp.export import serving
    from keras_csp.export.examples import tiny_heads

    assert serving.network_of is detectors.network_of
    image = keras.Input((32, 32, 3))
    network = keras.Model(image, [keras.layers.Conv2D(h.channels, h.stride, strides=h.stride)(image)
                                  for h in tiny_heads(1)[:1]])
    detector = detectors.Detector(network, tiny_heads(1)[:1])
    assert detectors.network_of(detector) is network
    assert detectors.network_of(network) is network

    class Wrapper:  # a ``.detector`` that is not a built Keras network is not unwrapped
        detector = np.zeros(3)

    wrapper = Wrapper()
    assert detectors.network_of(wrapper) is wrapper

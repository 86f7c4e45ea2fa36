"""The Darknet block order is part of the model: a backbone or detector network reloaded from
``.keras`` takes a Darknet ``.weights`` file and writes it back byte for byte."""

import subprocess
import sys

import numpy as np
import pytest

import keras_csp
from keras_csp import darknet, detectors
from keras_csp.backend import keras

CFG = "darknet/cfg/darknet-repo/yolov4-tiny.cfg"  # CSPDarknet53-tiny (its first 15 convs) + neck
SHAPE = (64, 64, 3)  # the weights do not depend on the input size; small is fast


@pytest.fixture(scope="module")
def seeded_weights(shared_dir, tmp_path_factory):
    """yolov4-tiny's seeded random Darknet weights, written by the reference writer."""
    path = tmp_path_factory.mktemp("order") / "yolov4-tiny.weights"
    subprocess.run([sys.executable, str(shared_dir / "darknet/make_weights.py"), str(shared_dir / CFG),
                    str(path), "--seed", "0"], check=True, capture_output=True)
    return path


def _reloaded(model, tmp_path):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    return keras.saving.load_model(path)


def _image():
    return np.random.default_rng(0).random((1, *SHAPE), dtype=np.float32)


def test_reloaded_backbone_takes_and_writes_darknet_weights(seeded_weights, tmp_path):
    fresh = keras_csp.CSPDarknet53Tiny(include_top=False, input_shape=SHAPE, weights=str(seeded_weights))
    reloaded = _reloaded(keras_csp.CSPDarknet53Tiny(include_top=False, input_shape=SHAPE), tmp_path)
    assert type(reloaded) is darknet.DarknetBlocksModel
    assert darknet.darknet_order(reloaded) == darknet.darknet_order(fresh) == fresh.darknet_blocks
    assert len(fresh.darknet_blocks) == 15  # yolov4-tiny.cfg's convs before the neck

    darknet.load_conv_weights(reloaded, None, seeded_weights, allow_extra=True)
    np.testing.assert_array_equal(reloaded(_image(), training=False).numpy(),
                                  fresh(_image(), training=False).numpy())
    out = tmp_path / "backbone.weights"
    darknet.save_conv_weights(reloaded, None, out, header=darknet.read_weights(seeded_weights))
    assert out.read_bytes() == seeded_weights.read_bytes()[:out.stat().st_size]  # the file's head


def test_reloaded_detector_network_takes_and_writes_darknet_weights(shared_dir, seeded_weights, tmp_path):
    fresh = detectors.YOLOv4Tiny(input_shape=SHAPE, weights=str(seeded_weights)).detector
    reloaded = _reloaded(detectors.YOLOv4Tiny(input_shape=SHAPE).detector, tmp_path)
    assert type(reloaded) is darknet.DarknetBlocksModel
    assert darknet.darknet_order(reloaded) == fresh.darknet_blocks
    assert darknet.darknet_order(reloaded)[:2] == ("stem_conv1", "stem_conv2")  # the backbone's first

    darknet.load_conv_weights(reloaded, None, seeded_weights)
    for got, want in zip(reloaded(_image(), training=False), fresh(_image(), training=False)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    header = darknet.read_weights(seeded_weights)
    darknet.save_weights(reloaded, shared_dir / CFG, tmp_path / "cfg.weights", header=header)
    darknet.save_conv_weights(reloaded, None, tmp_path / "blocks.weights", header=header)
    assert (tmp_path / "cfg.weights").read_bytes() == seeded_weights.read_bytes()
    assert (tmp_path / "blocks.weights").read_bytes() == seeded_weights.read_bytes()


def test_save_weights_checks_the_model_against_the_cfg(shared_dir, tmp_path):
    cfg = shared_dir / CFG
    with pytest.raises(ValueError, match="has 15 conv blocks in Darknet order; .* has 21 weighted layers"):
        darknet.save_weights(keras_csp.CSPDarknet53Tiny(include_top=False, input_shape=SHAPE), cfg,
                             tmp_path / "x.weights")
    three_classes = detectors.YOLOv4Tiny(num_classes=3, input_shape=SHAPE).detector
    with pytest.raises(ValueError, match=r"'filters': 255.* in the cfg, but block .*'filters': 24"):
        darknet.save_weights(three_classes, cfg, tmp_path / "x.weights")


def test_order_of_cfg_models_and_of_models_without_one():
    cfg = "\n".join(["[net]", "width=32", "height=32", "channels=3",
                     "[convolutional]", "filters=4", "size=3", "stride=2", "pad=1", "activation=leaky",
                     "[maxpool]", "size=2", "stride=2",
                     "[convolutional]", "filters=2", "size=1", "stride=1", "activation=linear"])
    assert darknet.darknet_order(darknet.model_from_cfg(cfg)) == ("layer000", "layer002")
    inputs = keras.Input((8, 8, 3))
    plain = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="x_conv")(inputs))
    with pytest.raises(ValueError, match="has no Darknet block order"):
        darknet.darknet_order(plain)
    assert darknet.darknet_order(plain, default=()) == ()

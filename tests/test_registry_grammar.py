"""The one name grammar (keras_csp.registry.build) behind every tool, and the one
keras_csp.load_weights for every model and weights format."""

import numpy as np
import pytest

import keras_csp
from keras_csp import registry, zoo
from keras_csp.darknet.weights import save_conv_weights
from keras_csp.detectors.builders import merge_head_options
from keras_csp.training.models import build_model

SHAPE = (64, 64, 3)


def test_every_form_of_the_grammar_builds_through_the_registry():
    composed = registry.build("CSPDarknet53Tiny+prn", num_classes=2, input_shape=(128, 128, 3))
    assert isinstance(composed, keras_csp.detectors.Detector) and [h.stride for h in composed.heads] == [16, 32]
    assert composed.network is composed.detector is keras_csp.detectors.network_of(composed)
    factory = registry.build("helpers:tiny_detector", num_classes=3, input_shape=(64, 64, 3))
    assert factory.heads[0].num_classes == 3
    # the same names through the tools' faces: zoo (export, profile) and train's build_model
    assert zoo.build("CSPDarknet53Tiny+prn", include_top=False, input_shape=(128, 128, 3)).heads[0].stride == 16
    assert build_model("CSPDarknet53Tiny+prn", 2, 128).name == composed.name
    with pytest.raises(ValueError, match=r"Unknown model 'nope'.*BACKBONE\+NECK.*module:function"):
        registry.build("nope")
    with pytest.raises(ValueError, match="model factory 'no_such_module:f' not found"):
        registry.build("no_such_module:f")
    with pytest.raises(ValueError, match="'Nope' is not a registered backbone"):
        registry.build("Nope+prn")
    with pytest.raises(ValueError, match="is a backbone; a detector on it is BACKBONE\\+NECK"):
        build_model("CSPDarknet53Tiny", 2, 64)


def test_user_head_options_go_over_the_named_detectors_own():
    assert merge_head_options({"ignore_thresh": 0.7}, {"iou_loss": "ciou"}) == {"ignore_thresh": 0.7, "iou_loss": "ciou"}
    own = ({"scale_x_y": 1.2, "iou_thresh": 0.2}, {"scale_x_y": 1.1, "iou_thresh": 0.2})
    assert merge_head_options(own, {"iou_thresh": 1.0}) == [{"scale_x_y": 1.2, "iou_thresh": 1.0},
                                                            {"scale_x_y": 1.1, "iou_thresh": 1.0}]
    assert merge_head_options(own, [{}, {"scale_x_y": 2.0}])[1] == {"scale_x_y": 2.0, "iou_thresh": 0.2}
    with pytest.raises(ValueError, match="3 per-level dicts for a detector with 2 levels"):
        merge_head_options(own, [{}, {}, {}])
    # the builder (not only keras-csp train) merges: YOLOv4-tiny keeps its cfg's scale_x_y and masks
    tiny = keras_csp.detectors.YOLOv4Tiny(num_classes=2, input_shape=(128, 128, 3), head_options={"iou_loss": "giou"})
    assert [(h.iou_loss, h.scale_x_y, h.ignore_thresh, h.anchor_indices) for h in tiny.heads] == [
        ("giou", 1.05, 0.7, (1, 2, 3)), ("giou", 1.05, 0.7, (3, 4, 5))]


def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.5, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()])


def _equal_weights(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


@pytest.mark.parametrize("form", ["keras", "darknet"])
def test_load_weights_takes_every_format_for_backbones_and_detectors(form, tmp_path):
    backbone = keras_csp.CSPDarknet53Tiny(include_top=False, input_shape=SHAPE)
    detector = registry.build("CSPDarknet53Tiny+prn", num_classes=2, input_shape=(128, 128, 3))
    for i, model in enumerate((backbone, detector)):
        _randomize(model, i)
        if form == "keras":
            path = tmp_path / f"{i}.weights.h5"
            model.save_weights(path)
        else:
            path = tmp_path / f"{i}.weights"
            save_conv_weights(keras_csp.detectors.network_of(model), None if i == 0 else model.darknet_blocks, path)
    fresh_backbone = keras_csp.CSPDarknet53Tiny(include_top=False, input_shape=SHAPE)
    fresh_detector = registry.build("CSPDarknet53Tiny+prn", num_classes=2, input_shape=(128, 128, 3))
    assert not _equal_weights(fresh_backbone, backbone) and not _equal_weights(fresh_detector, detector)
    assert keras_csp.load_weights(fresh_backbone, str(tmp_path / f"0.weights{'.h5' if form == 'keras' else ''}")) is fresh_backbone
    keras_csp.load_weights(fresh_detector, str(tmp_path / f"1.weights{'.h5' if form == 'keras' else ''}"))
    assert _equal_weights(fresh_backbone, backbone) and _equal_weights(fresh_detector, detector)
    if form == "darknet":
        assert fresh_detector.transfer_report is not None and fresh_detector.transfer_report.complete
    with pytest.raises(ValueError, match="no such file"):
        keras_csp.load_weights(fresh_detector, str(tmp_path / "missing.weights"))

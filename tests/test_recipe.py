"""The default training recipe (keras_csp/training/recipe.py): it reaches the config, the built
detector's heads and the compiled optimizer; the user's flags win; ``--recipe darknet`` and the
cfg detectors with their own box loss keep the plain / cfg behaviour."""

import argparse
import dataclasses

import pytest

from keras_csp.training import recipe
from keras_csp.training.config import TrainConfig, load_yaml, make_config, save_yaml
from keras_csp.training.models import build_model

SMALL = "CSPDenseNetb-Ref-PRN"


def _heads(config, num_classes=2, size=128):
    from keras_csp.training.run import resolve_anchors

    anchors = None if config.anchors in (None, "auto") else resolve_anchors(config, None, num_classes)
    return build_model(config.model, num_classes, size, anchors=anchors, head_options=config.head_options).heads


def test_named_detector_gets_the_recipe():
    config = make_config(model=SMALL, image_size=320)
    assert (config.recipe, config.optimizer, config.learning_rate, config.batch_size) == ("csp", "adam", 6e-3, 32)
    assert (config.bn_momentum, config.anchors, config.augment, config.ema) == (0.9, "auto", "default", 0.998)
    for head in _heads(config):
        assert (head.iou_loss, head.iou_normalizer, head.iou_thresh, head.scale_x_y) == ("ciou", 0.07, 0.213, 1.05)
        assert head.ignore_thresh == 0.7  # the detector's own (its cfg's) options stay under the recipe


def test_recipe_reaches_the_compiled_optimizer():
    from keras_csp.training.optimizers import DarknetAdam
    from keras_csp.training.run import _compile

    config = make_config(model=SMALL)
    model = build_model(SMALL, 2, 128, head_options=config.head_options)
    _compile(model, config, total_steps=100)
    assert isinstance(model.optimizer, DarknetAdam)
    schedule = model.optimizer._learning_rate
    assert (schedule.learning_rate, schedule.policy, schedule.burn_in) == (pytest.approx(6e-3), "steps", 10)
    assert float(schedule(50)) == pytest.approx(6e-3)


def test_flags_win_and_head_options_merge_over_the_recipe():
    config = make_config(model=SMALL, optimizer="sgd", learning_rate=0.02, batch_size=8, bn_momentum=0.97,
                         head_options="iou_loss=giou,iou_thresh=1.0", anchors="scaled")
    assert (config.optimizer, config.learning_rate, config.batch_size, config.bn_momentum) == ("sgd", 0.02, 8, 0.97)
    assert config.anchors == "scaled"
    head = _heads(config)[0]
    assert (head.iou_loss, head.iou_thresh, head.iou_normalizer, head.scale_x_y) == ("giou", 1.0, 0.07, 1.05)


def test_cli_flags_reach_the_config():
    from keras_csp.training.cli import _add_config_flags, _config_from_args

    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    _add_config_flags(parser)
    config = _config_from_args(parser.parse_args(["--model", SMALL, "--learning-rate", "0.01"]))
    assert (config.learning_rate, config.optimizer, config.head_options) == (0.01, "adam", recipe.HEAD_TEXT)
    plain = _config_from_args(parser.parse_args(["--model", SMALL, "--recipe", "darknet"]))
    assert (plain.optimizer, plain.learning_rate, plain.batch_size, plain.head_options, plain.anchors) == (
        "sgd", 0.001, 16, None, None)


def test_darknet_recipe_is_the_papers_yolov3_head():
    config = make_config(model=SMALL, recipe="darknet")
    assert config.bn_momentum is None
    for head in _heads(config):
        assert (head.iou_loss, head.iou_thresh, head.scale_x_y) == ("mse", 1.0, 1.0)


def test_cfg_detectors_with_their_own_box_loss_keep_it():
    config = make_config(model="YOLOv4-tiny")
    assert config.head_options is None and config.optimizer == "adam"
    own = [(h.iou_loss, h.scale_x_y, h.iou_thresh) for h in _heads(config, size=128)]
    assert own == [("ciou", 1.05, 1.0)] * 2  # yolov4-tiny.cfg: scale_x_y 1.05, no iou_thresh
    mixed = make_config(model="YOLOv4-tiny", head_options="iou_loss=giou")
    assert mixed.head_options == "iou_loss=giou"


def test_fine_tuning_and_factories_keep_their_anchors():
    assert make_config(model=SMALL, weights="some.weights").anchors is None
    assert make_config(model="test_train_parts:tiny_detector").anchors is None
    assert make_config(model="test_train_parts:tiny_detector").head_options is None


def test_resolved_config_round_trips(tmp_path):
    config = make_config(model=SMALL, learning_rate=0.004)
    save_yaml(config, tmp_path / "config.yaml")
    again = make_config(tmp_path / "config.yaml")
    assert again == config and load_yaml(tmp_path / "config.yaml")["recipe"] == "csp"
    assert dataclasses.replace(config, epochs=3).head_options == config.head_options  # idempotent


def test_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="recipe.*csp.*darknet"):
        TrainConfig(recipe="yolov9")


def test_demo_uses_the_recipe():
    from keras_csp.training import demo

    assert demo.DEMO_HEAD == recipe.HEAD_TEXT
    assert (demo.FULL["learning_rate"], demo.FULL["batch_size"]) == (recipe.CSP["learning_rate"], recipe.CSP["batch_size"])
    assert demo.DEMO_EMA == {"ema": recipe.CSP["ema"], "ema_tau": recipe.CSP["ema_tau"]}

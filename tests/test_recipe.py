"""The default training recipe (keras_csp/training/recipe.py): it reaches the config, the built
detector's heads and the compiled optimizer; the user's flags win; ``--recipe darknet`` and the
cfg detectors with their own box loss keep the plain / cfg behaviour."""

import argparse
import dataclasses

import pytest

from keras_csp.training import recipe
from keras_csp.training.config import TrainConfig, load_yaml, make_config, save_yaml
from keras_csp.training.models import build_model, parse_head_options

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
        assert (head.iou_loss, head.iou_normalizer, head.iou_thresh, head.scale_x_y) == ("ciou", 2.0, 0.213, 1.05)
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
    assert (head.iou_loss, head.iou_thresh, head.iou_normalizer, head.scale_x_y) == ("giou", 1.0, 2.0, 1.05)


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
    assert make_config(model="helpers:tiny_detector").anchors is None
    assert make_config(model="helpers:tiny_detector").head_options is None
    assert make_config(model="helpers:tiny_detector", anchors="auto").anchors == "auto"  # asked for
    assert make_config(model=SMALL, weights="some.weights", anchors="auto").anchors == "auto"


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

    assert demo.DEMO_HEAD == demo.FULL["head"] == recipe.HEAD_TEXT
    quick = parse_head_options(demo.QUICK["head"])  # the recipe's head without IoU objectness targets
    assert quick == {**recipe.HEAD, "obj_iou": 0.0, "iou_normalizer": 0.07} and recipe.HEAD["obj_iou"] == 1.0
    assert (demo.FULL["learning_rate"], demo.FULL["batch_size"]) == (recipe.CSP["learning_rate"], recipe.CSP["batch_size"])
    assert demo.DEMO_EMA == {"ema": recipe.CSP["ema"], "ema_tau": recipe.CSP["ema_tau"]}


# -- YOLOv5's extra positives (HeadSpec anchor_t / neighbor_cells; off by default) -------------
def _positives(loss, boxes, grid, size):
    import numpy as np

    out = loss.assign(np.asarray([boxes], np.float32), [(grid, grid)], (size, size))[0]["gt_index"].numpy()[0]
    return {(int(c) // grid, int(c) % grid, int(a)) for c, a in zip(*np.nonzero(out >= 0))}


def _reference(boxes, anchors, grid, size, anchor_t=0.0, neighbors=False, iou_thresh=1.0):
    """The positives by loops: best anchor, IoU above iou_thresh, wh ratio below anchor_t; the
    centre cell and (neighbors) the nearer horizontal and vertical cells."""
    import math

    found = set()
    for x1, y1, x2, y2, _ in boxes:
        w, h = (x2 - x1) * size, (y2 - y1) * size
        ious = [min(w, aw) * min(h, ah) / (w * h + aw * ah - min(w, aw) * min(h, ah)) for aw, ah in anchors]
        best = ious.index(max(ious))
        ok = [a == best or ious[a] > iou_thresh or (anchor_t and max(w / aw, aw / w, h / ah, ah / h) < anchor_t)
              for a, (aw, ah) in enumerate(anchors)]
        cx, cy = (x1 + x2) / 2 * grid, (y1 + y2) / 2 * grid
        col, row = int(math.floor(cx)), int(math.floor(cy))
        cells = [(row, col)]
        if neighbors:
            nc = col - 1 if cx - col < 0.5 else col + 1
            nr = row - 1 if cy - row < 0.5 else row + 1
            cells += [(row, nc)] if 0 <= nc < grid else []
            cells += [(nr, col)] if 0 <= nr < grid else []
        found |= {(r, c, a) for r, c in cells for a in range(len(anchors)) if ok[a]}
    return found


def test_yolov5_extra_positives_match_the_reference():
    import numpy as np

    from keras_csp.losses.yolo import YoloLoss
    from keras_csp.ops.head_spec import HeadSpec

    anchors, grid, size = [(10, 10), (30, 30), (100, 100)], 8, 64
    rng = np.random.default_rng(3)
    boxes = []
    for _ in range(6):
        cx, cy, w, h = rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95), rng.uniform(0.1, 0.6), rng.uniform(0.1, 0.6)
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, 0.0])
    boxes.append([0.0, 0.0, 0.1, 0.1, 0.0])  # centre in the corner cell, near its top-left edge: no neighbours
    for options in ({}, {"anchor_t": 4.0}, {"neighbor_cells": True}, {"anchor_t": 4.0, "neighbor_cells": True,
                                                                       "scale_x_y": 2.0}):
        head = HeadSpec(stride=size // grid, anchors=anchors, num_classes=1, **options)
        got = _positives(YoloLoss([head]), boxes, grid, size)
        want = _reference(boxes, anchors, grid, size, options.get("anchor_t", 0.0), options.get("neighbor_cells"))
        assert got == want, options
    plain = _positives(YoloLoss([HeadSpec(stride=8, anchors=anchors, num_classes=1)]), boxes, grid, size)
    more = _positives(YoloLoss([HeadSpec(stride=8, anchors=anchors, num_classes=1, anchor_t=4.0,
                                         neighbor_cells=True)]), boxes, grid, size)
    assert plain < more and len(more) >= 2 * len(plain)  # the options add positives; the default is Darknet's


def test_yolov5_positives_reach_the_loss_through_head_options():
    import numpy as np

    from keras_csp.backend import tf

    model = build_model(SMALL, 2, 64, head_options="anchor_t=4,neighbor_cells=true,scale_x_y=2.0")
    assert all(h.anchor_t == 4.0 and h.neighbor_cells and h.scale_x_y == 2.0 for h in model.heads)
    from keras_csp.losses.yolo import YoloLoss

    loss = YoloLoss(model.heads)
    images = tf.random.uniform([2, 64, 64, 3])
    y_true = tf.constant([[[0.1, 0.2, 0.5, 0.6, 1.0], [0.0, 0.0, 0.0, 0.0, -1.0]]] * 2)
    with tf.GradientTape() as tape:
        value = loss(y_true, model(images, training=True))
    grads = tape.gradient(value, model.trainable_variables)
    assert np.isfinite(float(value)) and all(g is None or np.isfinite(g.numpy()).all() for g in grads)
    with pytest.raises(ValueError, match="anchor_t"):
        build_model(SMALL, 2, 64, head_options="anchor_t=0.5")

"""Detectors loaded from a Darknet cfg train and filter as the cfg says.

The label assignment of ``darknet.load_detector`` / ``darknet.head_specs`` is checked
against an independent NumPy transcription of Darknet's ``forward_yolo_layer`` (each
[yolo] layer: best anchor over ALL ``num`` anchors of its section; a positive if the mask
holds it; plus ``iou_thresh`` extra positives among the mask) for yolov4-tiny and
yolov3-tiny, whose masks share / skip anchors. Also: one [yolo] parser for ``load`` and
``load_detector``, and ``nms_kind`` / ``beta_nms`` reaching ``predict``'s NMS.
"""

import math

import numpy as np
import pytest

from keras_csp import darknet
from keras_csp.darknet import CfgError
from keras_csp.losses import YoloLoss
from keras_csp.ops import HeadSpec

NET = 416
# (x1, y1, x2, y2) in pixels of the 416 input, class
BOXES_PX = [
    (160, 110, 241, 192, 3),    # 81x82: anchor 3, which yolov4-tiny's two masks share
    (60, 300, 70, 314, 1),      # 10x14: anchor 0, in no yolov4-tiny mask
    (30, 40, 60, 70, 7),        # 30x30: anchor 1
    (100, 150, 400, 400, 2),    # 300x250: anchor 5
    (165, 115, 245, 195, 5),    # 80x80, same cells as the first: a collision on anchor 3
    (380, 380, 416, 416, 0),    # 36x36 at the bottom-right border
    (200, 20, 240, 80, 4),      # 40x60: anchor 2
]


def _cfg(shared_dir, name):
    return shared_dir / "darknet" / "cfg" / "darknet-repo" / f"{name}.cfg"


def _yolo_sections(text):
    """The [yolo] sections of a cfg as dicts (Darknet's read_cfg: whitespace removed)."""
    sections, current = [], None
    for raw in text.splitlines():
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = {} if line == "[yolo]" else None
            if current is not None:
                sections.append(current)
        elif current is not None:
            key, value = line.split("=", 1)
            current[key] = value
    return sections


def darknet_assignment(text, boxes_px, net_w=NET, net_h=NET):
    """Darknet's positives, written from forward_yolo_layer with loops.

    Returns ``{grid: {(row, col, mask slot): [truth indices in order]}}`` per [yolo] layer
    (keyed by its grid side ``net / stride``; both cfgs here have their stride-32 [yolo]
    first, then the stride-16 one).
    """
    sections = _yolo_sections(text)
    strides = (32, 16)
    out = {}
    for section, stride in zip(sections, strides):
        total = int(section.get("num", 1))
        values = [float(v) for v in section["anchors"].split(",")]
        biases = [(values[2 * n], values[2 * n + 1]) for n in range(total)]
        mask = [int(v) for v in section["mask"].split(",")]
        iou_thresh = float(section.get("iou_thresh", 1.0))
        lw, lh = net_w // stride, net_h // stride
        positives = {}
        for t, (x1, y1, x2, y2, _) in enumerate(boxes_px):
            tx, ty = (x1 + x2) / 2 / net_w, (y1 + y2) / 2 / net_h
            tw, th = (x2 - x1) / net_w, (y2 - y1) / net_h
            best_iou, best_n = 0.0, 0
            ious = []
            for n in range(total):
                pw, ph = biases[n][0] / net_w, biases[n][1] / net_h
                inter = min(pw, tw) * min(ph, th)
                iou = inter / (pw * ph + tw * th - inter)
                ious.append(iou)
                if iou > best_iou:
                    best_iou, best_n = iou, n
            i, j = min(int(tx * lw), lw - 1), min(int(ty * lh), lh - 1)
            if best_n in mask:
                positives.setdefault((j, i, mask.index(best_n)), []).append(t)
            for n in range(total):
                if n in mask and n != best_n and iou_thresh < 1.0 and ious[n] > iou_thresh:
                    positives.setdefault((j, i, mask.index(n)), []).append(t)
        out[lw] = positives
    return out


def _y_true(boxes_px):
    rows = [[x1 / NET, y1 / NET, x2 / NET, y2 / NET, c] for x1, y1, x2, y2, c in boxes_px]
    rows.append([-1, -1, -1, -1, -1])  # padding
    return np.array([rows], np.float32)


def _check(heads, text, boxes_px=BOXES_PX):
    """Assert the loss's targets are Darknet's; return the positives per grid."""
    want = darknet_assignment(text, boxes_px)
    grids = [(NET // h.stride, NET // h.stride) for h in heads]
    got = YoloLoss(heads).assign(_y_true(boxes_px), grids, (NET, NET))
    for head, (side, _), result in zip(heads, grids, got):
        index = result["gt_index"][0].numpy().reshape(side, side, head.num_anchors)
        classes = result["class_targets"][0].numpy().reshape(side, side, head.num_anchors, -1)
        expected_index = -np.ones_like(index)
        expected_classes = np.zeros_like(classes)
        for (j, i, a), truths in want[side].items():
            expected_index[j, i, a] = truths[-1]  # the last truth's box target (Darknet overwrites)
            expected_classes[j, i, a, [boxes_px[t][4] for t in truths]] = 1.0  # classes OR-ed
        np.testing.assert_array_equal(index, expected_index, err_msg=f"grid {side}")
        np.testing.assert_array_equal(classes, expected_classes, err_msg=f"grid {side}")
    return want


@pytest.mark.parametrize(
    "name, masks, heads_of_81x82",
    [
        ("yolov4-tiny", [(1, 2, 3), (3, 4, 5)], 2),      # anchor 3 in both masks
        ("yolov3-tiny-prn", [(1, 2, 3), (3, 4, 5)], 2),  # the same masks
        # 0,1,2 / 3,4,5: the old pool (all heads' anchors in order) was already the cfg's list
        ("yolov3-tiny", [(0, 1, 2), (3, 4, 5)], 1),
    ],
)
def test_tiny_assignment_is_darknets(name, masks, heads_of_81x82, shared_dir):
    cfg = _cfg(shared_dir, name)
    heads = darknet.head_specs(cfg)
    assert [h.stride for h in heads] == [16, 32]
    assert [h.anchor_indices for h in heads] == masks
    assert all(len(h.matching_anchors) == 6 for h in heads)
    want = _check(heads, cfg.read_text())
    truths = {side: {t for ts in want[side].values() for t in ts} for side in (26, 13)}
    assert sum(0 in truths[side] for side in (26, 13)) == heads_of_81x82
    # the 10x14 box's best anchor is 0: a positive only where a mask holds anchor 0
    assert (1 in truths[26]) == (0 in masks[0]) and 1 not in truths[13]
    if heads_of_81x82 == 2:  # ... with its collision: the later box's target, both classes
        assert want[26][(151 // 16, 200 // 16, 2)] == [0, 4]
        assert want[13][(151 // 32, 200 // 32, 0)] == [0, 4]


def test_iou_thresh_extra_positives_are_darknets(shared_dir):
    """iou_thresh adds positives among this layer's mask only, beside the best anchor."""
    text = _cfg(shared_dir, "yolov4-tiny").read_text().replace("nms_kind=greedynms", "iou_thresh=0.3")
    heads = darknet.head_specs(text, input_size=(NET, NET))
    assert all(h.iou_thresh == 0.3 for h in heads)
    want = _check(heads, text)
    strict = darknet_assignment(_cfg(shared_dir, "yolov4-tiny").read_text(), BOXES_PX)
    assert sum(map(len, want[26].values())) > sum(map(len, strict[26].values()))


def test_load_detector_trains_with_darknets_pool(shared_dir):
    """The Detector's own loss (what ``fit`` uses) assigns the 81x82 box in both heads."""
    det = darknet.load_detector(_cfg(shared_dir, "yolov4-tiny"))
    assert [h.anchor_indices for h in det.heads] == [(1, 2, 3), (3, 4, 5)]
    boxes = [BOXES_PX[0]]
    got = det.yolo_loss.assign(_y_true(boxes), [(26, 26), (13, 13)], (NET, NET))
    assert [int((g["gt_index"] >= 0).numpy().sum()) for g in got] == [1, 1]
    # ... and survives serialization (the pool travels in the head configs)
    clone = YoloLoss.from_config(det.yolo_loss.get_config())
    assert [h.matching_anchors for h in clone.heads] == [h.matching_anchors for h in det.heads]
    with pytest.raises(ValueError, match="own matching pool"):
        YoloLoss(det.heads, matching_anchors=[(1, 1), (2, 2)])


def test_head_spec_pool_is_validated():
    spec = HeadSpec(stride=8, anchors=[(2, 2)], num_classes=1, matching_anchors=[(1, 1), (2, 2)],
                    anchor_indices=[1])
    assert HeadSpec.from_config(spec.get_config()) == spec
    assert spec.replace(anchors=[(5, 5)]).matching_anchors is None  # new anchors: pool dropped
    with pytest.raises(ValueError, match="anchor_indices"):
        HeadSpec(stride=8, anchors=[(2, 2)], num_classes=1, matching_anchors=[(1, 1), (2, 2)],
                 anchor_indices=[0])
    with pytest.raises(ValueError, match="matching_anchors"):
        HeadSpec(stride=8, anchors=[(2, 2)], num_classes=1, matching_anchors=[(2, 2)])
    with pytest.raises(ValueError, match="nms_kind"):
        HeadSpec(stride=8, anchors=[(2, 2)], num_classes=1, nms_kind="cornersnms")


def test_ties_pick_the_first_anchor():
    """Two equal anchors: Darknet's strict '>' keeps the first, so only the head owning it."""
    pool = [(10, 10), (10, 10)]
    heads = [HeadSpec(stride=8, anchors=[(10, 10)], num_classes=1, matching_anchors=pool, anchor_indices=[1]),
             HeadSpec(stride=16, anchors=[(10, 10)], num_classes=1, matching_anchors=pool, anchor_indices=[0])]
    y_true = np.array([[[0.4, 0.4, 0.5, 0.5, 0]]], np.float32)
    got = YoloLoss(heads).assign(y_true, [(8, 8), (4, 4)], (64, 64))
    assert [int((g["gt_index"] >= 0).numpy().sum()) for g in got] == [0, 1]


# ---------------------------------------------------------------- one [yolo] parser
def _tiny_cfg(yolo_extra="", anchors="3,3", mask="0", num=1):
    return (
        "[net]\nwidth=4\nheight=4\nchannels=3\n\n"
        "[convolutional]\nfilters=6\nsize=1\nstride=1\nactivation=linear\n\n"
        f"[yolo]\nmask={mask}\nanchors={anchors}\nclasses=1\nnum={num}\n{yolo_extra}"
    )


YOLO_LINE = 17  # the line of `yolo_extra` in _tiny_cfg (`mask` is on line 13)


def test_load_and_load_detector_share_the_parser():
    # invalid for both: the same CfgError, naming the line and the option
    for extra, option in (("iou_loss=eiou\n", "iou_loss"), ("nms_kind=fastnms\n", "nms_kind"),
                          ("scale_x_y=big\n", "scale_x_y"), ("bogus=1\n", "bogus")):
        messages = []
        for build in (darknet.load, darknet.load_detector):
            with pytest.raises(CfgError) as info:
                build(_tiny_cfg(extra))
            assert info.value.line == YOLO_LINE and option in str(info.value), str(info.value)
            messages.append(str(info.value))
        assert messages[0] == messages[1]
    with pytest.raises(CfgError, match=r"<cfg>:13: .*mask index 2"):
        darknet.load_detector(_tiny_cfg(mask="2"))
    # valid Darknet, built by load, but a detector cannot honour it: named file:line:option
    for extra, option in (("focal_loss=1\n", "focal_loss"), ("scale_x_y=0.5\n", "scale_x_y"),
                          ("nms_kind=cornersnms\n", "nms_kind"), ("iou_thresh_kind=giou\n", "iou_thresh_kind")):
        darknet.load(_tiny_cfg(extra))
        with pytest.raises(CfgError, match=rf"<cfg>:{YOLO_LINE}: .*{option}") as info:
            darknet.load_detector(_tiny_cfg(extra))
        assert info.value.option == option
    # Darknet reads `num` anchors: extras ignored, missing ones 0.5 px; both warn
    with pytest.warns(UserWarning, match="num=2"):
        heads = darknet.head_specs(_tiny_cfg(anchors="3,3", num=2))
    assert heads[0].matching_anchors == ((3.0, 3.0), (0.5, 0.5))


def test_from_darknet_is_the_cfg_parser(shared_dir):
    cfg = _cfg(shared_dir, "yolov4-tiny")
    heads = darknet.head_specs(cfg)
    sections = _yolo_sections(cfg.read_text())[::-1]  # cfg order is stride 32 first
    assert tuple(HeadSpec.from_darknet(s, h.stride) for s, h in zip(sections, heads)) == heads
    assert heads[0].scale_x_y == 1.05 and heads[0].iou_loss == "ciou" and heads[0].nms_kind == "greedynms"
    with pytest.raises(CfgError, match="focal_loss"):
        HeadSpec.from_darknet({**sections[0], "focal_loss": "1"}, 16)
    with pytest.raises(CfgError, match="unknown option 'bogus'"):
        HeadSpec.from_darknet({**sections[0], "bogus": "1"}, 16)


# ------------------------------------------------------------------ nms_kind reaches predict
def _weights(path):
    """A .weights file for _tiny_cfg: objectness logit 20 * red - 10, class logit 10,
    box logits 0 (so every red pixel's cell predicts its anchor, centred)."""
    biases = np.array([0, 0, 0, 0, -10, 10], np.float32)
    kernel = np.zeros((6, 3, 1, 1), np.float32)
    kernel[4, 0] = 20.0
    with open(path, "wb") as handle:
        handle.write(np.array([0, 2, 0], "<i4").tobytes() + np.array([0], "<u8").tobytes())
        handle.write(biases.tobytes() + kernel.tobytes())
    return path


@pytest.mark.parametrize(
    "extra, kept",
    [
        ("", 1),                                   # default: IoU NMS at 0.45
        ("nms_kind=greedynms\n", 1),
        ("nms_kind=diounms\nbeta_nms=0.6\n", 2),   # DIoU 0.5 - 0.04**0.6 = 0.355 < 0.45
        ("nms_kind=diounms\nbeta_nms=2\n", 1),     # DIoU 0.5 - 0.04**2 = 0.498 > 0.45
    ],
)
def test_nms_kind_and_beta_nms_reach_predict(extra, kept, tmp_path):
    """Two 3x3 boxes one pixel apart on a 4x4 input: IoU 0.5, centre distance^2 / diagonal^2
    = 1 / 25. Greedy NMS keeps one; Darknet's DIoU NMS keeps both at beta 0.6, one at 2."""
    det = darknet.load_detector(_tiny_cfg(extra), _weights(tmp_path / "tiny.weights"))
    image = np.zeros((1, 4, 4, 3), np.float32)
    image[0, 1, 1, 0] = image[0, 1, 2, 0] = 1.0
    out = det.predict(image, verbose=0)
    assert int(out["num_detections"][0]) == kept
    np.testing.assert_allclose(out["boxes"][0, 0], [0, 0, 3, 3], atol=1e-3)
    method = "diou" if "diounms" in extra else "greedy"
    assert det.nms_config.method == method
    # a dict sets other fields on top of the cfg's kind; an NMSConfig is used as given
    tuned = darknet.cfg_nms(_tiny_cfg(extra), {"score_threshold": 0.5})
    assert (tuned.method, tuned.score_threshold) == (method, 0.5)
    assert math.isclose(tuned.beta, 2.0 if "beta_nms=2" in extra else 0.6)

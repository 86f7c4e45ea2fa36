"""The YOLO loss: head specs, decoding, label assignment and loss values against a loop-by-loop
reference written from docs/loss.md, Darknet's deltas as gradients, and NaN-freedom."""

import math

import numpy as np
import pytest
from test_boxes import np_metrics

from keras_csp.backend import tf
from keras_csp.losses import YoloLoss
from keras_csp.darknet import yolo_head_spec
from keras_csp.ops import HeadSpec, decode_head, decode_heads

BOX_KINDS = ("mse", "iou", "giou", "diou", "ciou")


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def bce(label, logit):
    """Binary cross-entropy of sigmoid(logit) against label, in float64."""
    p = min(max(sigmoid(logit), 1e-300), 1 - 1e-16)
    return -(label * math.log(p) + (1 - label) * math.log(1 - p))


def entropy(p):
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


# ------------------------------------------------------------------- fixtures
def two_scale_heads(iou_loss="mse", **options):
    common = dict(num_classes=3, iou_loss=iou_loss, **options)
    return [
        HeadSpec(stride=8, anchors=[(6, 5), (12, 14), (20, 10)], scale_x_y=1.1, iou_thresh=0.4, **common),
        HeadSpec(stride=16, anchors=[(24, 30), (40, 36)], scale_x_y=1.05, **common),
    ]


def sample_ground_truth():
    """Two images of 64x64: collisions, a border box, a tiny box, padding, an empty image."""
    rows = [
        [
            [0.10, 0.12, 0.30, 0.28, 0],
            [0.11, 0.13, 0.29, 0.27, 2],  # same cell and shape as the first: collision
            [0.80, 0.60, 1.00, 1.00, 1],  # touches the border
            [0.45, 0.45, 0.46, 0.455, 1],  # tiny
            [0.20, 0.50, 0.85, 0.95, 2],  # big: the stride-16 scale
            [-1, -1, -1, -1, -1],
        ],
        [[-1, -1, -1, -1, -1]] * 6,  # no boxes at all
    ]
    return np.array(rows, np.float32)


def random_outputs(heads, batch=2, size=64, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(batch, size // h.stride, size // h.stride, h.channels)) * scale).astype(np.float32)
        for h in heads
    ]


# --------------------------------------------------------------- the reference
def reference_decode(logits, head, input_hw):
    """Darknet's get_yolo_box by loops: dict (row, col, anchor) -> (xyxy, obj logit, cls logits, raw)."""
    height, width = logits.shape[:2]
    in_h, in_w = input_hw
    s = head.scale_x_y
    out = {}
    for j in range(height):
        for i in range(width):
            for a, (aw, ah) in enumerate(head.anchors):
                raw = [float(v) for v in logits[j, i, a * (5 + head.num_classes) : (a + 1) * (5 + head.num_classes)]]
                x = (i + s * sigmoid(raw[0]) - (s - 1) / 2) / width
                y = (j + s * sigmoid(raw[1]) - (s - 1) / 2) / height
                if head.new_coords:
                    w = (2 * sigmoid(raw[2])) ** 2 * aw / in_w
                    h = (2 * sigmoid(raw[3])) ** 2 * ah / in_h
                else:
                    w = math.exp(raw[2]) * aw / in_w
                    h = math.exp(raw[3]) * ah / in_h
                out[(j, i, a)] = ([x - w / 2, y - h / 2, x + w / 2, y + h / 2], raw)
    return out


def np_iou_any(a, b):
    """Plain IoU that tolerates empty boxes (for the ignore test)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_assignment(y_true, heads, grids, input_hw):
    """Per image, per scale: {(row, col, anchor): (winning gt index, set of classes)}."""
    pool = [a for h in heads for a in h.anchors]
    offsets = np.cumsum([0] + [h.num_anchors for h in heads])
    in_h, in_w = input_hw
    result = []
    for image in y_true:
        per_scale = [dict() for _ in heads]
        for m, (x1, y1, x2, y2, c) in enumerate(image.tolist()):
            if c < 0 or x2 <= x1 or y2 <= y1:
                continue
            gw, gh = (x2 - x1) * in_w, (y2 - y1) * in_h
            shape_ious = []
            for aw, ah in pool:
                inter = min(gw, aw) * min(gh, ah)
                shape_ious.append(inter / (gw * gh + aw * ah - inter))
            best = int(np.argmax(shape_ious))  # first maximum, as Darknet's strict '>'
            for s, head in enumerate(heads):
                height, width = grids[s]
                col = min(int(math.floor((x1 + x2) / 2 * width)), width - 1)
                row = min(int(math.floor((y1 + y2) / 2 * height)), height - 1)
                for a in range(head.num_anchors):
                    k = offsets[s] + a
                    if k == best or shape_ious[k] > head.iou_thresh:
                        _, classes = per_scale[s].get((row, col, a), (None, set()))
                        per_scale[s][(row, col, a)] = (m, classes | {int(c)})
        result.append(per_scale)
    return result


def reference_loss(y_true, outputs, heads):
    """Per-image (box, obj, cls) sums, by loops, from the formulas of docs/loss.md."""
    grids = [o.shape[1:3] for o in outputs]
    input_hw = (grids[0][0] * heads[0].stride, grids[0][1] * heads[0].stride)
    assignment = reference_assignment(y_true, heads, grids, input_hw)
    totals = []
    for b, image in enumerate(y_true):
        gts = [r for r in image.tolist() if r[4] >= 0 and r[2] > r[0] and r[3] > r[1]]
        box_sum = obj_sum = cls_sum = 0.0
        for s, head in enumerate(heads):
            logits = outputs[s][b].astype(np.float64)
            height, width = grids[s]
            preds = reference_decode(logits, head, input_hw)
            for (j, i, a), (pred_box, raw) in preds.items():
                positive = (j, i, a) in assignment[b][s]
                if positive:
                    m, classes = assignment[b][s][(j, i, a)]
                    gt = image[m].tolist()
                    gw, gh = gt[2] - gt[0], gt[3] - gt[1]
                    if head.iou_loss == "mse":
                        t = [(gt[0] + gt[2]) / 2 * width - i, (gt[1] + gt[3]) / 2 * height - j]
                        s_xy, shift = head.scale_x_y, (head.scale_x_y - 1) / 2
                        anchor = head.anchors[a]
                        size = [gw * input_hw[1] / anchor[0], gh * input_hw[0] / anchor[1]]
                        term = 0.0
                        for k in range(2):
                            if head.new_coords:
                                term += 0.5 * (s_xy * sigmoid(raw[k]) - shift - t[k]) ** 2
                                term += 0.5 * (sigmoid(raw[2 + k]) - 0.5 * math.sqrt(size[k])) ** 2
                            else:
                                u = min(max((t[k] + shift) / s_xy, 0.0), 1.0)
                                term += s_xy * (bce(u, raw[k]) - entropy(u))
                                term += 0.5 * (raw[2 + k] - math.log(size[k])) ** 2
                        box_sum += head.iou_normalizer * (2 - gw * gh) * term
                    else:
                        box_sum += head.iou_normalizer * (1 - np_metrics(pred_box, gt[:4])[head.iou_loss])
                    e = head.label_smoothing
                    for c in range(head.num_classes):
                        label = (1.0 if c in classes else 0.0) * (1 - e) + 0.5 * e
                        cls_sum += head.cls_normalizer * bce(label, raw[5 + c])
                    fit = np_metrics(pred_box, gt[:4])["iou"]
                    obj_sum += head.obj_normalizer * bce(1.0 - head.obj_iou + head.obj_iou * fit, raw[4])
                else:
                    best = max([np_iou_any(pred_box, g[:4]) for g in gts], default=0.0)
                    if best <= head.ignore_thresh:
                        obj_sum += head.obj_normalizer * bce(0.0, raw[4])
        totals.append((box_sum, obj_sum, cls_sum))
    return np.array(totals)


# ------------------------------------------------------------------ head spec
def test_head_spec_validation_names_the_field():
    with pytest.raises(ValueError, match="stride"):
        HeadSpec(stride=0, anchors=[(1, 1)], num_classes=1)
    with pytest.raises(ValueError, match="anchors"):
        HeadSpec(stride=8, anchors=[(1, -1)], num_classes=1)
    with pytest.raises(ValueError, match="anchors"):
        HeadSpec(stride=8, anchors=[], num_classes=1)
    with pytest.raises(ValueError, match="iou_loss"):
        HeadSpec(stride=8, anchors=[(1, 1)], num_classes=1, iou_loss="eiou")
    with pytest.raises(ValueError, match="ignore_thresh"):
        HeadSpec(stride=8, anchors=[(1, 1)], num_classes=1, ignore_thresh=1.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        HeadSpec(stride=8, anchors=[(1, 1)], num_classes=1, label_smoothing=1.0)
    with pytest.raises(ValueError, match="unknown keys"):
        HeadSpec.from_config({"stride": 8, "anchors": [(1, 1)], "num_classes": 1, "mask": [0]})
    spec = HeadSpec(stride=8, anchors=[[10, 13]], num_classes=80)
    assert spec.channels == 85 and spec.anchors == ((10.0, 13.0),)
    assert HeadSpec.from_config(spec.get_config()) == spec
    assert spec.replace(iou_loss="ciou").iou_loss == "ciou"


def _yolo_sections(path):
    sections, current = [], None
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("["):
            current = {} if line == "[yolo]" else None
            if current is not None:
                sections.append(current)
        elif current is not None and "=" in line:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
    return sections


def test_head_spec_from_darknet_cfgs(shared_dir):
    """Every [yolo] of the reference cfgs maps onto a HeadSpec with Darknet's values."""
    cfg = shared_dir / "darknet" / "cfg" / "reference-repo" / "csresnext50-panet-spp-original-optimal.cfg"
    sections = _yolo_sections(cfg)
    specs = [yolo_head_spec(sec, stride) for sec, stride in zip(sections, (8, 16, 32))]
    assert [s.anchors[0] for s in specs] == [(12.0, 16.0), (36.0, 75.0), (142.0, 110.0)]
    assert [s.scale_x_y for s in specs] == [1.2, 1.1, 1.05]
    first = specs[0]
    assert (first.iou_loss, first.iou_normalizer, first.iou_thresh, first.ignore_thresh) == ("ciou", 0.07, 0.213, 0.7)
    assert first.num_classes == 80 and first.channels == 255
    # defaults are Darknet's: yolov3 has no iou_* options
    plain = yolo_head_spec(_yolo_sections(shared_dir / "darknet" / "cfg" / "darknet-repo" / "yolov3.cfg")[0], 32)
    assert (plain.iou_loss, plain.iou_normalizer, plain.iou_thresh, plain.scale_x_y) == ("mse", 0.75, 1.0, 1.0)
    assert plain.anchors == ((116.0, 90.0), (156.0, 198.0), (373.0, 326.0))


def test_head_spec_from_darknet_rejects_unsupported_training_options():
    base = {"anchors": "10,13, 16,30", "mask": "0", "classes": "2"}
    assert yolo_head_spec({**base, "truth_thresh": "1", "max_delta": "5"}, 8).anchors == ((10.0, 13.0),)
    with pytest.raises(ValueError, match="objectness_smooth"):
        yolo_head_spec({**base, "objectness_smooth": "1"}, 8)
    with pytest.raises(ValueError, match="mask"):
        yolo_head_spec({**base, "mask": "0,5"}, 8)
    with pytest.raises(ValueError, match="anchors"):
        yolo_head_spec({"anchors": "10,13,16"}, 8)


# -------------------------------------------------------------------- decoding
@pytest.mark.parametrize("new_coords", [False, True])
def test_decode_matches_darknet_formulas(new_coords):
    head = HeadSpec(stride=16, anchors=[(10, 14), (30, 20)], num_classes=2, scale_x_y=1.2, new_coords=new_coords)
    logits = random_outputs([head], batch=1, size=64, seed=3)[0]
    decoded = decode_head(logits, head)
    assert decoded["boxes"].shape == (1, 4 * 4 * 2, 4)
    reference = reference_decode(logits[0].astype(np.float64), head, (64, 64))
    index = 0
    for j in range(4):
        for i in range(4):
            for a in range(2):
                box, raw = reference[(j, i, a)]
                np.testing.assert_allclose(decoded["boxes"][0, index], box, rtol=1e-5, atol=1e-6)
                assert decoded["objectness"][0, index].numpy() == pytest.approx(sigmoid(raw[4]), rel=1e-5)
                np.testing.assert_allclose(decoded["class_probs"][0, index], [sigmoid(v) for v in raw[5:]], rtol=1e-5)
                index += 1


def test_decode_heads_concatenates_scales_and_checks_channels():
    heads = two_scale_heads()
    outputs = random_outputs(heads)
    decoded = decode_heads(outputs, heads)
    assert decoded["boxes"].shape == (2, 8 * 8 * 3 + 4 * 4 * 2, 4)
    assert decoded["class_probs"].shape == (2, 8 * 8 * 3 + 4 * 4 * 2, 3)
    with pytest.raises(ValueError, match="channels"):
        decode_head(outputs[0][..., :-1], heads[0])
    with pytest.raises(ValueError, match="must match"):
        decode_heads(outputs[:1], heads)
    # huge logits give finite boxes (exp is capped)
    big = decode_head(np.full((1, 2, 2, heads[1].channels), 500.0, np.float32), heads[1])
    assert np.all(np.isfinite(big["boxes"].numpy()))


# ------------------------------------------------------------------ assignment
def test_assignment_matches_reference():
    heads = two_scale_heads()
    y_true = sample_ground_truth()
    grids = [(8, 8), (4, 4)]
    got = YoloLoss(heads).assign(y_true, grids, (64, 64))
    want = reference_assignment(y_true, heads, grids, (64, 64))
    positives = 0
    for b in range(2):
        for s, (height, width) in enumerate(grids):
            index = got[s]["gt_index"][b].numpy().reshape(height, width, -1)
            classes = got[s]["class_targets"][b].numpy().reshape(height, width, heads[s].num_anchors, 3)
            expected_index = -np.ones_like(index)
            expected_classes = np.zeros_like(classes)
            for (j, i, a), (m, cls) in want[b][s].items():
                expected_index[j, i, a] = m
                expected_classes[j, i, a, sorted(cls)] = 1.0
            np.testing.assert_array_equal(index, expected_index)
            np.testing.assert_array_equal(classes, expected_classes)
            positives += int((index >= 0).sum())
    assert positives >= 5  # the sample exercises both scales and iou_thresh
    # the collision: the later box (index 1) wins the box target, both classes are set
    shared = [m for m, c in want[0][0].values() if c == {0, 2}]
    assert shared and set(shared) == {1}


def test_iou_thresh_adds_positives_and_one_disables_them():
    y_true = sample_ground_truth()[:1]
    count = lambda heads: sum(int((r["gt_index"] >= 0).numpy().sum()) for r in YoloLoss(heads).assign(y_true, [(8, 8), (4, 4)], (64, 64)))  # noqa: E731
    strict = [h.replace(iou_thresh=1.0) for h in two_scale_heads()]
    loose = [h.replace(iou_thresh=0.05) for h in two_scale_heads()]
    assert count(strict) == 4  # one best anchor per distinct valid box (the collision shares one)
    assert count(loose) > count(two_scale_heads()) > count(strict)


def test_matching_anchors_pool_leaves_unowned_best_anchors_unassigned():
    head = HeadSpec(stride=16, anchors=[(20, 20)], num_classes=1)
    y_true = np.array([[[0.7, 0.7, 0.75, 0.75, 0], [0.2, 0.2, 0.5, 0.5, 0]]], np.float32)  # 3 px and 19 px
    default = YoloLoss([head]).assign(y_true, [(4, 4)], (64, 64))[0]["gt_index"].numpy()
    assert sorted(default[default >= 0].tolist()) == [0, 1]
    pooled = YoloLoss([head], matching_anchors=[(3, 3), (20, 20)]).assign(y_true, [(4, 4)], (64, 64))
    index = pooled[0]["gt_index"].numpy()
    assert index[index >= 0].tolist() == [1]  # the small box's best anchor belongs to no head
    with pytest.raises(ValueError, match="matching_anchors"):
        YoloLoss([head], matching_anchors=[(3, 3)])


# ------------------------------------------------------------------ loss values
@pytest.mark.parametrize("kind", BOX_KINDS)
def test_loss_matches_reference(kind):
    heads = two_scale_heads(kind, label_smoothing=0.1, obj_normalizer=0.8, cls_normalizer=0.6, iou_normalizer=0.3)
    y_true = sample_ground_truth()
    outputs = random_outputs(heads, seed=5)
    got = YoloLoss(heads).per_image(y_true, outputs)
    want = reference_loss(y_true, outputs, heads)
    for col, name in enumerate(("box", "obj", "cls")):
        np.testing.assert_allclose(got[name].numpy(), want[:, col], rtol=2e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(got["total"].numpy(), want.sum(1), rtol=2e-4)
    scalar = YoloLoss(heads)(y_true, outputs)
    assert scalar.numpy() == pytest.approx(want.sum() / 2, rel=2e-4)
    assert want[0, 0] > 0 and want[1, 0] == 0 and want[1, 2] == 0  # the empty image has only objectness


def test_obj_iou_targets_follow_the_predicted_boxes_fit():
    heads = two_scale_heads("ciou", obj_iou=0.7)
    y_true = sample_ground_truth()
    outputs = random_outputs(heads, seed=2)
    got = YoloLoss(heads).per_image(y_true, outputs)["obj"].numpy()
    np.testing.assert_allclose(got, reference_loss(y_true, outputs, heads)[:, 1], rtol=2e-4, atol=1e-5)
    plain = YoloLoss(two_scale_heads("ciou")).per_image(y_true, outputs)["obj"].numpy()
    assert got[0] != pytest.approx(plain[0]) and got[1] == pytest.approx(plain[1])  # no boxes: no change


@pytest.mark.parametrize("kind", ["mse", "ciou"])
def test_new_coords_loss_matches_reference(kind):
    heads = [h.replace(new_coords=True) for h in two_scale_heads(kind)]
    y_true = sample_ground_truth()
    outputs = random_outputs(heads, seed=6)
    got = YoloLoss(heads).per_image(y_true, outputs)
    want = reference_loss(y_true, outputs, heads)
    np.testing.assert_allclose(got["box"].numpy(), want[:, 0], rtol=2e-4, atol=1e-5)


def test_ignore_thresh_removes_negatives():
    heads = two_scale_heads()
    y_true = sample_ground_truth()
    outputs = random_outputs(heads, seed=7, scale=0.3)
    lenient = YoloLoss([h.replace(ignore_thresh=0.05) for h in heads]).per_image(y_true, outputs)["obj"].numpy()
    strict = YoloLoss([h.replace(ignore_thresh=1.0) for h in heads]).per_image(y_true, outputs)["obj"].numpy()
    assert lenient[0] < strict[0]  # some predictions overlap a box by more than 0.05
    assert lenient[1] == pytest.approx(strict[1])  # nothing to overlap in the empty image


def test_sample_weight_and_scalar_reduction():
    heads = two_scale_heads()
    y_true = sample_ground_truth()
    outputs = random_outputs(heads, seed=8)
    loss = YoloLoss(heads)
    total = loss.per_image(y_true, outputs)["total"].numpy()
    assert loss(y_true, outputs).numpy() == pytest.approx(total.mean(), rel=1e-6)
    assert loss(y_true, outputs, sample_weight=[1.0, 0.0]).numpy() == pytest.approx(total[0] / 2, rel=1e-6)


def test_loss_rejects_mismatched_inputs():
    heads = two_scale_heads()
    outputs = random_outputs(heads)
    with pytest.raises(ValueError, match="2 heads but received 1"):
        YoloLoss(heads)(sample_ground_truth(), outputs[:1])
    with pytest.raises(ValueError, match="channels"):
        YoloLoss(heads)(sample_ground_truth(), [outputs[0][..., :10], outputs[1]])
    with pytest.raises(ValueError, match="max_boxes, 5"):
        YoloLoss(heads)(sample_ground_truth()[..., :4], outputs)
    with pytest.raises(ValueError, match="same number of classes"):
        YoloLoss([heads[0], heads[1].replace(num_classes=2)])


# ----------------------------------------------------------- Darknet's deltas
def test_gradients_are_darknets_deltas():
    """d loss / d logit = -delta of Darknet's [yolo] layer, at a positive and at a negative."""
    head = HeadSpec(stride=16, anchors=[(16, 16)], num_classes=2, scale_x_y=1.2, iou_normalizer=0.7,
                    obj_normalizer=0.9, cls_normalizer=0.8, label_smoothing=0.2, ignore_thresh=1.0)
    y_true = np.array([[[0.30, 0.35, 0.55, 0.50, 1]]], np.float32)
    logits = tf.Variable(random_outputs([head], batch=1, seed=9, scale=0.5)[0])
    with tf.GradientTape() as tape:
        loss = YoloLoss([head])(y_true, [logits])
    grad = tape.gradient(loss, logits).numpy()[0]
    out = logits.numpy()[0].astype(np.float64)
    j, i = int(0.425 * 4), int(0.425 * 4)  # centre (0.425, 0.425) on a 4x4 grid
    gw, gh = 0.25, 0.15
    raw = out[j, i]
    scale = 0.7 * (2 - gw * gh)
    s = 1.2
    tx, ty = 0.425 * 4 - i, 0.425 * 4 - j
    for k, t in ((0, tx), (1, ty)):
        x_out = s * sigmoid(raw[k]) - (s - 1) / 2
        assert grad[j, i, k] == pytest.approx(-scale * (t - x_out), rel=1e-4)
    tw, th = math.log(gw * 64 / 16), math.log(gh * 64 / 16)
    assert grad[j, i, 2] == pytest.approx(-scale * (tw - raw[2]), rel=1e-4)
    assert grad[j, i, 3] == pytest.approx(-scale * (th - raw[3]), rel=1e-4)
    assert grad[j, i, 4] == pytest.approx(-0.9 * (1 - sigmoid(raw[4])), rel=1e-4)
    smooth = [0.1, 0.9]  # y (1 - 0.2) + 0.1
    for c in range(2):
        assert grad[j, i, 5 + c] == pytest.approx(-0.8 * (smooth[c] - sigmoid(raw[5 + c])), rel=1e-4)
    # a negative cell: only objectness, towards 0
    assert grad[0, 3, 4] == pytest.approx(-0.9 * (0 - sigmoid(out[0, 3, 4])), rel=1e-4)
    np.testing.assert_array_equal(grad[0, 3, [0, 1, 2, 3, 5, 6]], 0.0)


# ------------------------------------------------------------------ robustness
def _edge_batches():
    pad = [-1, -1, -1, -1, -1]
    return {
        "all_padding": np.array([[pad] * 4, [pad] * 4], np.float32),
        "tiny": np.array([[[0.5, 0.5, 0.5 + 1e-6, 0.5 + 1e-6, 0], pad, pad, pad], [[0.0, 0.0, 1e-5, 2e-5, 1], pad, pad, pad]], np.float32),
        "border": np.array([[[0.0, 0.0, 0.05, 1.0, 0], [0.95, 0.95, 1.0, 1.0, 1], [0.0, 0.99, 1.0, 1.0, 2], pad]] * 2, np.float32),
        "degenerate": np.array([[[0.3, 0.3, 0.3, 0.5, 0], [0.6, 0.6, 0.4, 0.4, 1], [0.1, 0.1, 0.9, 0.9, 7], pad]] * 2, np.float32),
        "whole_image": np.array([[[0.0, 0.0, 1.0, 1.0, 0], pad, pad, pad]] * 2, np.float32),
    }


@pytest.mark.parametrize("kind", BOX_KINDS)
@pytest.mark.parametrize("case", sorted(_edge_batches()))
def test_no_nan_or_inf_on_edge_cases(kind, case):
    heads = two_scale_heads(kind)
    y_true = _edge_batches()[case]
    for scale in (1.0, 30.0):  # ordinary and saturated logits
        variables = [tf.Variable(o) for o in random_outputs(heads, seed=10, scale=scale)]
        with tf.GradientTape() as tape:
            parts = YoloLoss(heads).per_image(y_true, variables)
        grads = tape.gradient(parts["total"], variables)
        for name, value in parts.items():
            assert np.all(np.isfinite(value.numpy())), (case, name, scale)
        for g in grads:
            assert np.all(np.isfinite(g.numpy())), (case, scale)
    if case in ("all_padding", "degenerate"):
        # nothing valid (class 7 is out of range for 3 classes): no box or class loss
        parts = YoloLoss(heads).per_image(y_true, random_outputs(heads, seed=11))
        np.testing.assert_array_equal(parts["box"].numpy(), 0.0)
        np.testing.assert_array_equal(parts["cls"].numpy(), 0.0)
        assert np.all(parts["obj"].numpy() > 0)


def test_unused_rows_never_leak_into_the_loss():
    """Rows that are padding, empty, out-of-range or NaN change nothing, wherever they are."""
    heads = two_scale_heads("giou")
    clean = sample_ground_truth()
    dirty = clean.copy()
    dirty[0, 5] = [np.nan, 0.1, 0.2, 0.3, 1]
    dirty[1, 0] = [0.1, 0.1, 0.3, 0.3, np.nan]
    dirty[1, 1] = [0.1, 0.1, 0.3, 0.3, 3]  # class 3 of 3 classes
    dirty = np.concatenate([dirty[:, 5:], dirty[:, :5]], axis=1)  # the NaN row first: gathered for negatives
    outputs = random_outputs(heads, seed=14)
    got = YoloLoss(heads).per_image(dirty, outputs)["total"].numpy()
    want = YoloLoss(heads).per_image(clean, outputs)["total"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_xla_matches_eager():
    """Loss and gradients compile with XLA (one head ciou, one mse) and equal the eager ones."""
    heads = two_scale_heads("ciou")
    heads[1] = heads[1].replace(iou_loss="mse")
    loss = YoloLoss(heads)
    y_true = sample_ground_truth()
    outputs = random_outputs(heads, seed=12)

    @tf.function(jit_compile=True)
    def compiled(y, o1, o2):
        with tf.GradientTape() as tape:
            tape.watch([o1, o2])
            value = loss(y, [o1, o2])
        return value, tape.gradient(value, [o1, o2])

    value, grads = compiled(y_true, *outputs)
    with tf.GradientTape() as tape:
        eager_inputs = [tf.constant(o) for o in outputs]
        tape.watch(eager_inputs)
        eager = loss(y_true, eager_inputs)
    eager_grads = tape.gradient(eager, eager_inputs)
    assert value.numpy() == pytest.approx(eager.numpy(), rel=1e-5)
    for g, e in zip(grads, eager_grads):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-4, atol=1e-7)


def test_mixed_precision_outputs_give_a_float32_loss():
    heads = two_scale_heads("giou")
    y_true = sample_ground_truth()
    outputs = random_outputs(heads, seed=13)
    half = [tf.constant(o, tf.float16) for o in outputs]
    loss16 = YoloLoss(heads)(y_true, half)
    loss32 = YoloLoss(heads)(y_true, [tf.cast(h, tf.float32) for h in half])
    assert loss16.dtype == tf.float32
    assert loss16.numpy() == pytest.approx(loss32.numpy(), rel=1e-6)


def test_config_round_trip():
    loss = YoloLoss(two_scale_heads("diou"), matching_anchors=[(6, 5), (12, 14), (20, 10), (24, 30), (40, 36), (99, 99)])
    clone = YoloLoss.from_config(loss.get_config())
    assert clone.heads == loss.heads and clone.matching_anchors == loss.matching_anchors


def test_head_spec_from_darknet_is_a_deprecated_alias_of_yolo_head_spec():
    options = {"mask": "0", "anchors": "10,13, 16,30", "classes": "3", "num": "2"}
    with pytest.warns(DeprecationWarning, match="yolo_head_spec"):
        spec = HeadSpec.from_darknet(options, 8)
    assert spec == yolo_head_spec(options, 8)

"""NMS against a plain NumPy reference: greedy and DIoU, class-aware and agnostic, ties,
empty and all-below-threshold inputs, fixed-size outputs."""

import numpy as np
import pytest

from keras_csp.detectors.nms import NMSConfig, non_max_suppression


def _overlap(a, b, method, beta):
    """IoU or Darknet's box_diounms of two xyxy boxes, written out for one pair."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    iou = inter / union if union > 0 else 0.0
    if method == "greedy":
        return iou
    cw = max(a[2], b[2]) - min(a[0], b[0])
    ch = max(a[3], b[3]) - min(a[1], b[1])
    c = cw * cw + ch * ch
    if c == 0:
        return iou
    d = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    return iou - (d / c) ** beta


def reference_nms(boxes, scores, cfg):
    """One image: loop over candidates sorted by score (stable), keep or suppress."""
    boxes = boxes.astype(np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    cands = []  # (score, flat index, box row, class)
    n, c = scores.shape
    if cfg.multi_label:
        for i in range(n):
            for k in range(c):
                cands.append((scores[i, k], i * c + k, i, k))
    else:
        for i in range(n):
            k = int(np.argmax(scores[i]))
            cands.append((scores[i, k], i, i, k))
    cands.sort(key=lambda t: (-t[0], t[1]))
    cands = cands[: cfg.pre_nms_top_k]
    kept = []
    for score, _, row, cls in cands:
        if not score > cfg.score_threshold:
            continue
        suppressed = any(
            (not cfg.class_aware or cls == kc)
            and _overlap(boxes[kr], boxes[row], cfg.method, cfg.beta) > cfg.iou_threshold
            for _, kr, kc in kept
        )
        if not suppressed:
            kept.append((score, row, cls))
    return kept[: cfg.max_detections]


def _random_case(rng, n, c, ties=False):
    xy = rng.random((n, 2)) * 0.8
    wh = rng.random((n, 2)) * 0.3 + 0.02
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.random((n, c)).astype(np.float32)
    if ties:  # quantised scores: many exact ties
        scores = (np.round(scores * 4) / 4).astype(np.float32)
    return boxes, scores


def _check(result, refs, k):
    assert result["boxes"].shape[1:] == (k, 4) and result["scores"].shape[1:] == (k,)
    for b, ref in enumerate(refs):
        num = int(result["num_detections"][b])
        assert num == len(ref)
        np.testing.assert_allclose(result["scores"][b, :num], [r[0] for r in ref], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(result["classes"][b, :num], [r[2] for r in ref])
        np.testing.assert_array_equal(result["classes"][b, num:], -1)
        np.testing.assert_array_equal(result["scores"][b, num:], 0.0)
        np.testing.assert_array_equal(result["boxes"][b, num:], 0.0)


CONFIGS = [
    NMSConfig(score_threshold=0.3, iou_threshold=0.45, max_detections=50),
    NMSConfig(score_threshold=0.3, iou_threshold=0.3, max_detections=50, class_aware=False),
    NMSConfig(score_threshold=0.2, iou_threshold=0.45, max_detections=50, method="diou"),
    NMSConfig(score_threshold=0.2, iou_threshold=0.3, max_detections=40, method="diou",
              beta=1.0, class_aware=False),
    NMSConfig(score_threshold=0.5, iou_threshold=0.5, max_detections=60, multi_label=True),
    NMSConfig(score_threshold=0.1, iou_threshold=0.5, max_detections=5),  # truncation
    NMSConfig(score_threshold=0.1, iou_threshold=0.5, max_detections=30, pre_nms_top_k=20),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.method}-aware{int(c.class_aware)}-ml{int(c.multi_label)}-k{c.max_detections}-top{c.pre_nms_top_k}")
@pytest.mark.parametrize("ties", [False, True])
def test_matches_numpy_reference(cfg, ties):
    rng = np.random.default_rng(7 if ties else 3)
    batch = [_random_case(rng, 60, 4, ties) for _ in range(3)]
    boxes = np.stack([b for b, _ in batch])
    scores = np.stack([s for _, s in batch])
    out = {k: v.numpy() for k, v in non_max_suppression(boxes, scores, cfg).items()}
    refs = [reference_nms(b, s, cfg) for b, s in batch]
    _check(out, refs, cfg.max_detections)
    for b, ref in enumerate(refs):
        for j, (_, row, _) in enumerate(ref):
            np.testing.assert_allclose(out["boxes"][b, j], boxes[b, row], atol=1e-6)


def test_identical_boxes_with_tied_scores_keep_the_first():
    boxes = np.tile(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), (4, 1))[None]
    scores = np.full((1, 4, 1), 0.9, np.float32)
    out = non_max_suppression(boxes, scores, NMSConfig(max_detections=3))
    assert int(out["num_detections"][0]) == 1
    np.testing.assert_allclose(out["boxes"][0, 0], boxes[0, 0])


def test_all_below_threshold_and_empty_input():
    rng = np.random.default_rng(0)
    boxes, scores = _random_case(rng, 10, 3)
    out = non_max_suppression(boxes[None], scores[None] * 0.1, NMSConfig(score_threshold=0.5))
    assert out["num_detections"].numpy().tolist() == [0]
    assert (out["classes"].numpy() == -1).all() and not out["boxes"].numpy().any()
    empty = non_max_suppression(np.zeros((2, 0, 4), np.float32), np.zeros((2, 0, 3), np.float32),
                                NMSConfig(max_detections=7))
    assert empty["boxes"].shape == (2, 7, 4)
    assert empty["num_detections"].numpy().tolist() == [0, 0]


def test_class_aware_keeps_overlapping_boxes_of_other_classes():
    boxes = np.array([[[0, 0, 1, 1], [0, 0, 1, 1], [0.05, 0, 1, 1]]], np.float32)
    scores = np.array([[[0.9, 0.0], [0.0, 0.8], [0.7, 0.0]]], np.float32)
    aware = non_max_suppression(boxes, scores, NMSConfig())
    agnostic = non_max_suppression(boxes, scores, NMSConfig(class_aware=False))
    assert aware["classes"][0, :2].numpy().tolist() == [0, 1]
    assert int(aware["num_detections"][0]) == 2
    assert int(agnostic["num_detections"][0]) == 1


def test_diou_keeps_a_distant_overlapping_box_greedy_drops():
    # IoU 0.6; DIoU = 0.6 - (0.0225 / 1.5625) ** 0.6 = 0.521.
    boxes = np.array([[[0.0, 0.0, 0.6, 1.0], [0.15, 0.0, 0.75, 1.0]]], np.float32)
    scores = np.array([[0.9, 0.8]], np.float32)
    greedy = non_max_suppression(boxes, scores, NMSConfig(iou_threshold=0.55))
    diou = non_max_suppression(boxes, scores, NMSConfig(iou_threshold=0.55, method="diou", beta=0.6))
    assert int(greedy["num_detections"][0]) == 1
    assert int(diou["num_detections"][0]) == 2


def test_runs_in_a_tf_function_with_static_output_shapes():
    import tensorflow as tf

    fn = tf.function(lambda b, s: non_max_suppression(b, s, NMSConfig(max_detections=9)))
    spec = fn.get_concrete_function(tf.TensorSpec([2, None, 4]), tf.TensorSpec([2, None, 5]))
    assert spec.structured_outputs["boxes"].shape.as_list() == [2, 9, 4]
    rng = np.random.default_rng(1)
    boxes, scores = _random_case(rng, 30, 5)
    out = fn(np.stack([boxes] * 2), np.stack([scores] * 2))
    assert out["scores"].shape == (2, 9)


@pytest.mark.parametrize(
    "field,value", [("method", "soft"), ("iou_threshold", 1.5), ("max_detections", 0), ("beta", 0)]
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        NMSConfig(**{field: value})

"""Box geometry: formats, pixel scaling, IoU/GIoU/DIoU/CIoU values, gradients and properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from keras_csp.backend import tf
from keras_csp.ops import boxes as B

KINDS = ("iou", "giou", "diou", "ciou")


# ---------------------------------------------------------------- NumPy reference
def np_metrics(a, b):
    """IoU, GIoU, DIoU, CIoU of two xyxy boxes with positive area, straight from the papers."""
    a = [float(v) for v in a]
    b = [float(v) for v in b]
    aw, ah = a[2] - a[0], a[3] - a[1]
    bw, bh = b[2] - b[0], b[3] - b[1]
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    iou = inter / union
    cw = max(a[2], b[2]) - min(a[0], b[0])
    ch = max(a[3], b[3]) - min(a[1], b[1])
    giou = iou - (cw * ch - union) / (cw * ch)
    rho2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    diou = iou - rho2 / (cw**2 + ch**2)
    v = 4 / math.pi**2 * (math.atan(bw / bh) - math.atan(aw / ah)) ** 2
    alpha = v / ((1 - iou) + v) if v > 0 else 0.0
    return {"iou": iou, "giou": giou, "diou": diou, "ciou": diou - alpha * v, "alpha": alpha, "v": v}


def random_boxes(rng, n, low=0.01):
    xy = rng.uniform(0, 0.8, (n, 2))
    wh = rng.uniform(low, 0.5, (n, 2))
    return np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)


# ---------------------------------------------------------------------- formats
def test_format_conversions_by_hand():
    xyxy = np.array([[10.0, 20.0, 50.0, 100.0]], np.float32)
    np.testing.assert_allclose(B.xyxy_to_xywh(xyxy), [[30.0, 60.0, 40.0, 80.0]])
    np.testing.assert_allclose(B.xyxy_to_yxyx(xyxy), [[20.0, 10.0, 100.0, 50.0]])
    np.testing.assert_allclose(B.xywh_to_xyxy([[30.0, 60.0, 40.0, 80.0]]), xyxy)
    np.testing.assert_allclose(B.yxyx_to_xyxy([[20.0, 10.0, 100.0, 50.0]]), xyxy)
    np.testing.assert_allclose(B.convert_format([[20.0, 10.0, 100.0, 50.0]], "yxyx", "xywh"), [[30.0, 60.0, 40.0, 80.0]])


@pytest.mark.parametrize("source", B.FORMATS)
@pytest.mark.parametrize("target", B.FORMATS)
def test_format_round_trip(source, target):
    boxes = random_boxes(np.random.default_rng(0), 20).reshape(4, 5, 4)
    boxes = B.convert_format(boxes, "xyxy", source)
    back = B.convert_format(B.convert_format(boxes, source, target), target, source)
    np.testing.assert_allclose(back, boxes, atol=1e-6)


def test_pixel_scaling_by_hand_and_per_image():
    norm = np.array([[0.1, 0.2, 0.5, 1.0]], np.float32)
    image_size = (100, 200)  # height, width
    np.testing.assert_allclose(B.to_pixels(norm, image_size), [[20.0, 20.0, 100.0, 100.0]], rtol=1e-6)
    np.testing.assert_allclose(B.to_pixels(B.xyxy_to_yxyx(norm), image_size, "yxyx"), [[20.0, 20.0, 100.0, 100.0]], rtol=1e-6)
    np.testing.assert_allclose(B.to_pixels(B.xyxy_to_xywh(norm), image_size, "xywh"), [[60.0, 60.0, 80.0, 80.0]], rtol=1e-6)
    np.testing.assert_allclose(B.to_normalized(B.to_pixels(norm, image_size), image_size), norm, rtol=1e-6)
    # one size per image of a batch: [batch, 1, 2] against [batch, n, 4]
    batch = np.stack([norm, norm])
    sizes = np.array([[[100, 200]], [[10, 20]]], np.float32)
    pixels = B.to_pixels(batch, sizes).numpy()
    np.testing.assert_allclose(pixels[1], [[2.0, 2.0, 10.0, 10.0]], rtol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="box_format"):
        B.iou([0.0, 0, 1, 1], [0.0, 0, 1, 1], box_format="cxcywh")
    with pytest.raises(ValueError, match="4 coordinates"):
        B.iou([0.0, 0, 1], [0.0, 0, 1, 1])
    with pytest.raises(ValueError, match="kind"):
        B.box_iou([0.0, 0, 1, 1], [0.0, 0, 1, 1], kind="eiou")
    with pytest.raises(ValueError, match="image_size"):
        B.to_pixels([[0.0, 0, 1, 1]], (1, 2, 3))


# ------------------------------------------------------------------ IoU values
def test_iou_family_hand_computed():
    a, b = [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]
    # inter 1, union 7, enclosing 3x3, centre distance^2 2, diagonal^2 18, same aspect: v = 0
    assert B.iou(a, b).numpy() == pytest.approx(1 / 7)
    assert B.giou(a, b).numpy() == pytest.approx(1 / 7 - 2 / 9)
    assert B.diou(a, b).numpy() == pytest.approx(1 / 7 - 2 / 18)
    assert B.ciou(a, b).numpy() == pytest.approx(1 / 7 - 2 / 18)
    a, b = [0.0, 0.0, 4.0, 2.0], [0.0, 0.0, 2.0, 4.0]
    # inter 4, union 12, enclosing 4x4, rho^2 = 2, c^2 = 32, v = 4/pi^2 (atan 2 - atan 1/2)^2
    v = 4 / math.pi**2 * (math.atan(2.0) - math.atan(0.5)) ** 2
    alpha = v / (1 - 1 / 3 + v)
    assert B.iou(a, b).numpy() == pytest.approx(1 / 3)
    assert B.giou(a, b).numpy() == pytest.approx(1 / 3 - 4 / 16)
    assert B.diou(a, b).numpy() == pytest.approx(1 / 3 - 2 / 32)
    assert B.ciou(a, b).numpy() == pytest.approx(1 / 3 - 2 / 32 - alpha * v, rel=1e-5)
    # disjoint: IoU 0, GIoU negative
    a, b = [0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 3.0, 1.0]
    assert B.iou(a, b).numpy() == 0.0
    assert B.giou(a, b).numpy() == pytest.approx(-1 / 3)
    assert B.diou(a, b).numpy() == pytest.approx(-4 / 10)


@pytest.mark.parametrize("kind", KINDS)
def test_against_numpy_reference(kind):
    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 64), random_boxes(rng, 64)
    b[:8] = a[:8] + rng.uniform(-0.02, 0.02, (8, 4)).astype(np.float32)  # near-coincident pairs
    got = B.box_iou(a, b, kind=kind).numpy()
    want = [np_metrics(x, y)[kind] for x, y in zip(a, b)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_pairwise_and_formats_agree(kind):
    rng = np.random.default_rng(2)
    a, b = random_boxes(rng, 5), random_boxes(rng, 7)
    matrix = B.pairwise_iou(a, b, kind=kind).numpy()
    assert matrix.shape == (5, 7)
    want = np.array([[np_metrics(x, y)[kind] for y in b] for x in a])
    np.testing.assert_allclose(matrix, want, rtol=1e-4, atol=1e-6)
    for fmt in ("yxyx", "xywh"):
        converted = B.pairwise_iou(B.convert_format(a, "xyxy", fmt), B.convert_format(b, "xyxy", fmt), kind, fmt)
        np.testing.assert_allclose(converted, matrix, rtol=1e-4, atol=1e-6)


def test_ciou_alpha_is_a_constant_in_the_gradient():
    """d CIoU / d box equals the finite-difference gradient of DIoU - alpha0 * v with alpha frozen."""
    a = np.array([0.1, 0.2, 0.5, 0.4], np.float64)
    b = np.array([0.15, 0.1, 0.35, 0.6], np.float64)
    alpha0 = np_metrics(a, b)["alpha"]
    assert alpha0 > 0.05  # the test is meaningless when the aspect term vanishes

    def frozen(x):
        m = np_metrics(x, b)
        return m["diou"] - alpha0 * m["v"]

    numeric = np.zeros(4)
    for i in range(4):
        step = np.zeros(4)
        step[i] = 1e-6
        numeric[i] = (frozen(a + step) - frozen(a - step)) / 2e-6
    box = tf.Variable(a)
    with tf.GradientTape() as tape:
        value = B.ciou(box, tf.constant(b))
    analytic = tape.gradient(value, box).numpy()
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)

    def full(x):
        return np_metrics(x, b)["ciou"]  # alpha differentiated too: must differ

    numeric_full = np.array([(full(a + s) - full(a - s)) / 2e-6 for s in np.eye(4) * 1e-6])
    assert np.max(np.abs(numeric_full - analytic)) > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_degenerate_boxes_are_nan_free_in_value_and_gradient(kind):
    boxes1 = np.array(
        [
            [0.5, 0.5, 0.5, 0.5],  # a point
            [0.0, 0.0, 0.0, 0.0],  # a point at the origin
            [0.2, 0.2, 0.2, 0.6],  # zero width
            [0.6, 0.6, 0.2, 0.2],  # inverted
            [0.1, 0.1, 0.1 + 1e-7, 0.1 + 1e-7],  # tiny
            [0.0, 0.0, 1.0, 1.0],
        ],
        np.float32,
    )
    boxes2 = np.array(
        [
            [0.5, 0.5, 0.5, 0.5],  # same point: everything zero
            [0.3, 0.3, 0.4, 0.4],
            [0.2, 0.2, 0.2, 0.6],
            [0.2, 0.2, 0.6, 0.6],
            [0.1, 0.1, 0.1 + 1e-7, 0.1 + 1e-7],
            [0.0, 0.0, 0.0, 0.0],
        ],
        np.float32,
    )
    v1, v2 = tf.Variable(boxes1), tf.Variable(boxes2)
    with tf.GradientTape() as tape:
        value = B.box_iou(v1, v2, kind=kind)
    g1, g2 = tape.gradient(value, [v1, v2])
    assert np.all(np.isfinite(value.numpy()))
    assert np.all(np.isfinite(g1.numpy())) and np.all(np.isfinite(g2.numpy()))
    low = -2.0 if kind == "ciou" else -1.0
    assert np.all(value.numpy() >= low - 1e-6) and np.all(value.numpy() <= 1.0 + 1e-6)


def test_low_precision_inputs_computed_in_float32():
    a = np.array([[10.0, 10.0, 50.0, 30.0]], np.float16)
    b = np.array([[20.0, 5.0, 60.0, 40.0]], np.float16)
    for kind in KINDS:
        half = B.box_iou(tf.constant(a), tf.constant(b), kind=kind)
        assert half.dtype == tf.float16
        full = B.box_iou(a.astype(np.float32), b.astype(np.float32), kind=kind)
        np.testing.assert_allclose(half.numpy().astype(np.float32), full.numpy(), rtol=2e-3)


def test_box_area():
    np.testing.assert_allclose(B.box_area([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 0.0, 0.0]]), [6.0, 0.0])
    np.testing.assert_allclose(B.box_area([[1.0, 1.0, 2.0, 3.0]], "xywh"), [6.0])


# --------------------------------------------------------------- properties
def _boxes(min_size=1e-2):
    """[n, 4] xyxy boxes with positive sizes, as x, y, w, h draws."""
    coordinate = st.floats(0.0, 1.0, width=32)
    size = st.floats(float(np.float32(min_size)), 1.0, width=32)
    return st.integers(1, 8).flatmap(
        lambda n: st.tuples(
            arrays(np.float32, (n, 2), elements=coordinate), arrays(np.float32, (n, 2), elements=size)
        ).map(lambda t: np.concatenate([t[0], t[0] + t[1]], axis=-1))
    )


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_symmetry_and_bounds(data):
    a = data.draw(_boxes())
    b = data.draw(arrays(np.float32, a.shape, elements=st.floats(0.0, 2.0, width=32)))
    b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:]) + 1e-2], -1)
    values = {k: B.box_iou(a, b, kind=k).numpy() for k in KINDS}
    for kind in KINDS:
        np.testing.assert_allclose(values[kind], B.box_iou(b, a, kind=kind).numpy(), rtol=1e-5, atol=1e-6)
    tol = 1e-6
    assert np.all((values["iou"] >= 0) & (values["iou"] <= 1 + tol))
    assert np.all((values["giou"] >= -1 - tol) & (values["giou"] <= values["iou"] + tol))
    assert np.all((values["diou"] >= -1 - tol) & (values["diou"] <= values["iou"] + tol))
    assert np.all((values["ciou"] >= -2 - tol) & (values["ciou"] <= values["diou"] + tol))


@settings(max_examples=30, deadline=None)
@given(_boxes(min_size=1e-3))
def test_a_box_with_itself_scores_one(a):
    for kind in KINDS:
        np.testing.assert_allclose(B.box_iou(a, a, kind=kind).numpy(), 1.0, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_invariant_to_translation_and_scale(data):
    a = data.draw(_boxes())
    b = data.draw(arrays(np.float32, a.shape, elements=st.floats(0.0, 1.0, width=32)))
    b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:]) + 1e-2], -1)
    shift = np.float32(data.draw(st.floats(-1.0, 1.0, width=32)))
    scale = np.float32(data.draw(st.floats(0.5, 50.0, width=32)))
    for kind in KINDS:
        base = B.box_iou(a, b, kind=kind).numpy()
        np.testing.assert_allclose(B.box_iou(a + shift, b + shift, kind=kind).numpy(), base, atol=1e-4)
        np.testing.assert_allclose(B.box_iou(a * scale, b * scale, kind=kind).numpy(), base, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, (6, 2, 4), elements=st.floats(-2.0, 2.0, width=32)))
def test_any_input_is_nan_free(raw):
    a, b = tf.Variable(raw[:, 0]), tf.Variable(raw[:, 1])
    for kind in KINDS:
        with tf.GradientTape() as tape:
            value = B.box_iou(a, b, kind=kind)
        grads = tape.gradient(value, [a, b])
        assert np.all(np.isfinite(value.numpy()))
        assert all(np.all(np.isfinite(g.numpy())) for g in grads)

"""Box geometry in pure, vectorised TensorFlow: formats, IoU, GIoU, DIoU and CIoU.

Every function works on tensors whose last axis holds 4 coordinates and broadcasts over
the leading axes, so ``iou(a[..., :, None, :], b[..., None, :, :])`` is a pairwise matrix
(``pairwise_iou`` does exactly that). Formats:

- ``"xyxy"``: ``[x_min, y_min, x_max, y_max]`` (the library's ground-truth format);
- ``"yxyx"``: ``[y_min, x_min, y_max, x_max]`` (``tf.image`` and NMS ops);
- ``"xywh"``: ``[x_center, y_center, width, height]`` (Darknet and YOLO labels).

Coordinates are either normalised to ``[0, 1]`` of the image or in pixels; the IoU family
does not care which, as long as both boxes use the same. The IoU family is NaN-free for
zero-area, inverted and coincident boxes, in value and in gradient: widths and heights are
clamped at 0, and every division has a denominator of at least ``EPSILON`` (so boxes with
an area below about ``EPSILON`` get an approximate IoU, never a NaN). Low-precision inputs
(float16, bfloat16) are computed in float32 and cast back. These are raw ``tf`` ops: call
them eagerly, in ``tf.function``/``tf.data``, or inside a Layer's ``call``.
"""

import math

from keras_csp.backend import tf

FORMATS = ("xyxy", "yxyx", "xywh")
IOU_KINDS = ("iou", "giou", "diou", "ciou")
EPSILON = 1e-9

_LOW_PRECISION = (tf.float16, tf.bfloat16)


def _check_format(box_format, argument="box_format"):
    if box_format not in FORMATS:
        raise ValueError(f"`{argument}` must be one of {FORMATS}; received {box_format!r}.")


def _as_tensor(boxes, argument="boxes"):
    boxes = tf.convert_to_tensor(boxes)
    if not boxes.dtype.is_floating:
        boxes = tf.cast(boxes, tf.float32)
    last = boxes.shape[-1] if boxes.shape.rank else None
    if boxes.shape.rank == 0 or (last is not None and last != 4):
        raise ValueError(
            f"`{argument}` must have 4 coordinates on its last axis; received shape {boxes.shape}."
        )
    return boxes


def convert_format(boxes, source, target):
    """Convert ``boxes`` between ``"xyxy"``, ``"yxyx"`` and ``"xywh"`` (centre, size)."""
    _check_format(source, "source")
    _check_format(target, "target")
    boxes = _as_tensor(boxes)
    if source == target:
        return boxes
    a, b, c, d = tf.unstack(boxes, axis=-1)
    if source == "yxyx":
        a, b, c, d = b, a, d, c  # now xyxy
    elif source == "xywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    # a, b, c, d are x_min, y_min, x_max, y_max
    if target == "yxyx":
        return tf.stack([b, a, d, c], axis=-1)
    if target == "xywh":
        return tf.stack([0.5 * (a + c), 0.5 * (b + d), c - a, d - b], axis=-1)
    return tf.stack([a, b, c, d], axis=-1)


def xyxy_to_xywh(boxes):
    """``[x_min, y_min, x_max, y_max]`` to ``[x_center, y_center, width, height]``."""
    return convert_format(boxes, "xyxy", "xywh")


def xywh_to_xyxy(boxes):
    """``[x_center, y_center, width, height]`` to ``[x_min, y_min, x_max, y_max]``."""
    return convert_format(boxes, "xywh", "xyxy")


def xyxy_to_yxyx(boxes):
    """``[x_min, y_min, x_max, y_max]`` to ``[y_min, x_min, y_max, x_max]``."""
    return convert_format(boxes, "xyxy", "yxyx")


def yxyx_to_xyxy(boxes):
    """``[y_min, x_min, y_max, x_max]`` to ``[x_min, y_min, x_max, y_max]``."""
    return convert_format(boxes, "yxyx", "xyxy")


def _xy_scale(image_size, box_format, dtype):
    """Per-coordinate multipliers for an image ``(height, width)`` in ``box_format``."""
    size = tf.cast(tf.convert_to_tensor(image_size), dtype)
    if size.shape.rank == 0 or (size.shape[-1] is not None and size.shape[-1] != 2):
        raise ValueError(
            f"`image_size` must be (height, width) (or [..., 2]); received shape {size.shape}."
        )
    height, width = size[..., 0], size[..., 1]
    if box_format == "yxyx":
        order = [height, width, height, width]
    else:  # xyxy and xywh both put x first
        order = [width, height, width, height]
    return tf.stack(order, axis=-1)


def to_pixels(boxes, image_size, box_format="xyxy"):
    """Scale normalised ``boxes`` to pixels of an image ``image_size = (height, width)``.

    ``image_size`` may also be a tensor ``[..., 2]`` that broadcasts against the boxes'
    leading axes with a box axis of 1 (e.g. ``[batch, 1, 2]`` for ``[batch, n, 4]`` boxes).
    """
    _check_format(box_format)
    boxes = _as_tensor(boxes)
    return boxes * _xy_scale(image_size, box_format, boxes.dtype)


def to_normalized(boxes, image_size, box_format="xyxy"):
    """Scale pixel ``boxes`` to ``[0, 1]`` of an image ``image_size = (height, width)``."""
    _check_format(box_format)
    boxes = _as_tensor(boxes)
    return boxes / _xy_scale(image_size, box_format, boxes.dtype)


def box_area(boxes, box_format="xyxy"):
    """Area of ``boxes`` (0 for inverted or empty boxes), shape ``boxes.shape[:-1]``."""
    x1, y1, x2, y2 = tf.unstack(convert_format(boxes, box_format, "xyxy"), axis=-1)
    return tf.nn.relu(x2 - x1) * tf.nn.relu(y2 - y1)


def _safe_div(numerator, denominator):
    return numerator / tf.maximum(denominator, tf.cast(EPSILON, denominator.dtype))


def _pair(boxes1, boxes2, box_format):
    _check_format(box_format)
    boxes1 = _as_tensor(boxes1, "boxes1")
    boxes2 = _as_tensor(boxes2, "boxes2")
    if boxes1.dtype != boxes2.dtype:
        boxes2 = tf.cast(boxes2, boxes1.dtype)
    out_dtype = boxes1.dtype
    if out_dtype in _LOW_PRECISION:
        boxes1, boxes2 = tf.cast(boxes1, tf.float32), tf.cast(boxes2, tf.float32)
    boxes1 = convert_format(boxes1, box_format, "xyxy")
    boxes2 = convert_format(boxes2, box_format, "xyxy")
    return boxes1, boxes2, out_dtype


def _overlap(boxes1, boxes2):
    """Terms shared by the IoU family: iou, union, sizes and the two boxes' corners."""
    ax1, ay1, ax2, ay2 = tf.unstack(boxes1, axis=-1)
    bx1, by1, bx2, by2 = tf.unstack(boxes2, axis=-1)
    aw, ah = tf.nn.relu(ax2 - ax1), tf.nn.relu(ay2 - ay1)
    bw, bh = tf.nn.relu(bx2 - bx1), tf.nn.relu(by2 - by1)
    inter_w = tf.nn.relu(tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1))
    inter_h = tf.nn.relu(tf.minimum(ay2, by2) - tf.maximum(ay1, by1))
    inter = inter_w * inter_h
    union = aw * ah + bw * bh - inter
    return {
        "iou": _safe_div(inter, union),
        "union": union,
        "a": (ax1, ay1, ax2, ay2, aw, ah),
        "b": (bx1, by1, bx2, by2, bw, bh),
    }


def _enclosing(terms):
    """Smallest box holding both boxes (and, for inverted boxes, all their corners)."""
    ax1, ay1, ax2, ay2, _, _ = terms["a"]
    bx1, by1, bx2, by2, _, _ = terms["b"]
    x_lo = tf.minimum(tf.minimum(ax1, ax2), tf.minimum(bx1, bx2))
    y_lo = tf.minimum(tf.minimum(ay1, ay2), tf.minimum(by1, by2))
    x_hi = tf.maximum(tf.maximum(ax1, ax2), tf.maximum(bx1, bx2))
    y_hi = tf.maximum(tf.maximum(ay1, ay2), tf.maximum(by1, by2))
    return x_hi - x_lo, y_hi - y_lo


def _center_distance_term(terms):
    """DIoU penalty: squared centre distance over squared diagonal of the enclosing box."""
    ax1, ay1, ax2, ay2, _, _ = terms["a"]
    bx1, by1, bx2, by2, _, _ = terms["b"]
    dx = 0.5 * ((ax1 + ax2) - (bx1 + bx2))
    dy = 0.5 * ((ay1 + ay2) - (by1 + by2))
    cw, ch = _enclosing(terms)
    return _safe_div(dx * dx + dy * dy, cw * cw + ch * ch)


def _aspect_term(terms):
    """CIoU's ``v = 4 / pi^2 * (atan(w_b / h_b) - atan(w_a / h_a))^2``."""
    eps = tf.cast(EPSILON, terms["iou"].dtype)
    _, _, _, _, aw, ah = terms["a"]
    _, _, _, _, bw, bh = terms["b"]
    angle_a = tf.atan(tf.maximum(aw, eps) / tf.maximum(ah, eps))
    angle_b = tf.atan(tf.maximum(bw, eps) / tf.maximum(bh, eps))
    return (4.0 / math.pi**2) * tf.square(angle_b - angle_a)


def iou(boxes1, boxes2, box_format="xyxy"):
    """Intersection over union of ``boxes1`` and ``boxes2`` (elementwise, broadcast), in [0, 1]."""
    boxes1, boxes2, dtype = _pair(boxes1, boxes2, box_format)
    return tf.cast(_overlap(boxes1, boxes2)["iou"], dtype)


def giou(boxes1, boxes2, box_format="xyxy"):
    """Generalised IoU (Rezatofighi et al. 2019): ``IoU - (C - U) / C``, in [-1, 1].

    ``C`` is the area of the smallest box enclosing both, ``U`` their union.
    """
    boxes1, boxes2, dtype = _pair(boxes1, boxes2, box_format)
    terms = _overlap(boxes1, boxes2)
    cw, ch = _enclosing(terms)
    enclosing = cw * ch
    value = terms["iou"] - _safe_div(enclosing - terms["union"], enclosing)
    return tf.cast(value, dtype)


def diou(boxes1, boxes2, box_format="xyxy"):
    """Distance IoU (Zheng et al. 2020): ``IoU - rho^2 / c^2``, in [-1, 1].

    ``rho`` is the distance between the centres, ``c`` the diagonal of the enclosing box.
    """
    boxes1, boxes2, dtype = _pair(boxes1, boxes2, box_format)
    terms = _overlap(boxes1, boxes2)
    return tf.cast(terms["iou"] - _center_distance_term(terms), dtype)


def ciou(boxes1, boxes2, box_format="xyxy"):
    """Complete IoU (Zheng et al. 2020): ``IoU - rho^2 / c^2 - alpha * v``, in [-2, 1].

    ``v = 4 / pi^2 * (atan(w2 / h2) - atan(w1 / h1))^2`` measures the aspect-ratio mismatch
    and ``alpha = v / ((1 - IoU) + v)`` is its trade-off weight. As the paper defines it,
    ``alpha`` is a constant in the gradient (``tf.stop_gradient``); only ``v`` is
    differentiated. (The paper also drops the ``1 / (w^2 + h^2)`` factor of dv/dw, h; we
    keep the true gradient: with YOLO's ``w = anchor * exp(t)`` that factor cancels, the
    gradient with respect to ``t`` being bounded by 1/2.)
    """
    boxes1, boxes2, dtype = _pair(boxes1, boxes2, box_format)
    terms = _overlap(boxes1, boxes2)
    value_iou = terms["iou"]
    v = _aspect_term(terms)
    alpha = tf.stop_gradient(_safe_div(v, (1.0 - value_iou) + v))
    return tf.cast(value_iou - _center_distance_term(terms) - alpha * v, dtype)


_KIND_FUNCTIONS = {"iou": iou, "giou": giou, "diou": diou, "ciou": ciou}


def box_iou(boxes1, boxes2, kind="iou", box_format="xyxy"):
    """Elementwise IoU of the given ``kind`` (``"iou"``, ``"giou"``, ``"diou"``, ``"ciou"``)."""
    if kind not in _KIND_FUNCTIONS:
        raise ValueError(f"`kind` must be one of {IOU_KINDS}; received {kind!r}.")
    return _KIND_FUNCTIONS[kind](boxes1, boxes2, box_format=box_format)


def pairwise_iou(boxes1, boxes2, kind="iou", box_format="xyxy"):
    """IoU of every box in ``boxes1 [..., N, 4]`` with every box in ``boxes2 [..., M, 4]``.

    Returns ``[..., N, M]``; leading axes broadcast.
    """
    boxes1 = _as_tensor(boxes1, "boxes1")
    boxes2 = _as_tensor(boxes2, "boxes2")
    return box_iou(boxes1[..., :, None, :], boxes2[..., None, :, :], kind, box_format)


__all__ = [
    "EPSILON",
    "FORMATS",
    "IOU_KINDS",
    "box_area",
    "box_iou",
    "ciou",
    "convert_format",
    "diou",
    "giou",
    "iou",
    "pairwise_iou",
    "to_normalized",
    "to_pixels",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "xyxy_to_yxyx",
    "yxyx_to_xyxy",
]

"""Mosaic and random affine (scale, aspect, translation), computed for a group at once.

The pipeline batches ``G`` prepared images (each resized so its longer side is ``S`` and
padded bottom/right with 114 to ``S x S``) and makes ``G`` outputs ``T x T``. Output ``j``
is either image ``j`` alone, scaled / stretched / shifted, or a mosaic: image ``j`` and
three images drawn from the group, placed around a random centre of a ``2S x 2S`` canvas (as
YOLOv4 / YOLOv5 do), then scaled and shifted into ``T x T``.

Every slot of an output is one axis-aligned affine map ``u = a * x + b`` (per axis), so the
whole plan (sources, maps, regions) and all box transforms are computed for the group in
one vectorised pass. Pixels are sampled with ``crop_and_resize``: one batched call for the
single-image outputs; for a mosaic, each quadrant samples only its own pixels (``T^2`` in
all, not ``4 T^2``) and the quadrants are concatenated.
"""

import math

from keras_csp.backend import tf
from keras_csp.data.augment import split_seed
from keras_csp.data.boxes import box_candidates, compact
from keras_csp.data.structure import PAD_VALUE


def _plan(valid_hw, size, out_size, seeds, sx, sy, tx, ty, mosaic_prob):
    """Per output: sources ``[G, 4]``, maps ``(ax, bx, ay, by)`` ``[G, 4]``, the integer
    quadrant split ``(qx, qy)`` ``[G]`` and canvas bounds ``[G, 4]`` in output pixels.

    A single-image output is a "mosaic" whose first quadrant is the whole frame.
    """
    g = tf.shape(valid_hw)[0]
    hw = tf.cast(valid_hw, tf.float32)
    s, t = float(size), float(out_size)
    is_mosaic = tf.random.stateless_uniform([g], seeds[0]) < mosaic_prob
    own_slot = tf.random.stateless_uniform([g], seeds[1], 0, 4, dtype=tf.int32)
    others = tf.random.stateless_uniform([g, 4], seeds[2], 0, g, dtype=tf.int32)
    own = tf.range(g)[:, None]
    src = tf.where(tf.range(4)[None, :] == own_slot[:, None], own, others)
    src = tf.where(is_mosaic[:, None], src, tf.tile(own, [1, 4]))

    h_k, w_k = tf.gather(hw[:, 0], src), tf.gather(hw[:, 1], src)
    centre = tf.random.stateless_uniform([g, 2], seeds[3], 0.5 * s, 1.5 * s)
    cx, cy = centre[:, :1], centre[:, 1:]
    left = tf.constant([[1.0, 0.0, 1.0, 0.0]])  # slots 0 (top-left) and 2 (bottom-left) end at cx
    top = tf.constant([[1.0, 1.0, 0.0, 0.0]])  # slots 0 and 1 (top-right) end at cy
    sx_, sy_, tx_, ty_ = sx[:, None], sy[:, None], tx[:, None], ty[:, None]
    m_bx = sx_ * (cx - left * w_k - s) + tx_
    m_by = sy_ * (cy - top * h_k - s) + ty_
    s_bx = tf.floor(tx_ - sx_ * w_k / 2)  # single image: centred on (tx, ty), whole-pixel shift
    s_by = tf.floor(ty_ - sy_ * h_k / 2)  # (no blur when unscaled; same offset as ``letterbox``)
    m = is_mosaic[:, None]
    bx, by = tf.where(m, m_bx, s_bx), tf.where(m, m_by, s_by)
    ax, ay = tf.tile(sx_, [1, 4]), tf.tile(sy_, [1, 4])

    def to_frame(v):
        return tf.clip_by_value(tf.round(v), 0.0, t)

    qx = tf.where(is_mosaic, to_frame(sx * (cx[:, 0] - s) + tx), t)
    qy = tf.where(is_mosaic, to_frame(sy * (cy[:, 0] - s) + ty), t)
    canvas = tf.stack([to_frame(sx * -s + tx), to_frame(sy * -s + ty), to_frame(sx * s + tx), to_frame(sy * s + ty)], 1)
    canvas = tf.where(is_mosaic[:, None], canvas, tf.constant([[0.0, 0.0, t, t]]))
    return src, (ax, bx, ay, by), (qx, qy), canvas


def _regions(qx, qy, canvas, out_size):
    """Slot rectangles ``[x0, y0, x1, y1]`` (each ``[G, 4]``): quadrant within the canvas."""
    t = float(out_size)
    zero, full = tf.zeros_like(qx), tf.fill(tf.shape(qx), t)
    x0 = tf.stack([zero, qx, zero, qx], 1)
    x1 = tf.stack([qx, full, qx, full], 1)
    y0 = tf.stack([zero, zero, qy, qy], 1)
    y1 = tf.stack([qy, qy, full, full], 1)
    x0, y0 = tf.maximum(x0, canvas[:, :1]), tf.maximum(y0, canvas[:, 1:2])
    x1, y1 = tf.minimum(x1, canvas[:, 2:3]), tf.minimum(y1, canvas[:, 3:4])
    return x0, y0, tf.maximum(x1, x0), tf.maximum(y1, y0)


def _crop_box(a, b, start, count, size):
    """``crop_and_resize`` coordinates that sample output pixels ``start .. start+count-1``
    (pixel centres) of the map ``u = a * x + b`` from a source of ``size`` pixels."""
    first = (start + 0.5 - b) / a - 0.5
    last = first + (tf.maximum(count, 1.0) - 1.0) / a
    return first / (size - 1.0), last / (size - 1.0)


def _sample(images, src, y0, x0, y1, x1, maps, size):
    """Sample one rectangle per row of ``src`` (float32 ``[n, h, w, 3]`` for fixed h, w)."""
    ax, bx, ay, by = maps
    top, bottom = _crop_box(ay, by, y0, y1 - y0, size)
    left, right = _crop_box(ax, bx, x0, x1 - x0, size)
    boxes = tf.reshape(tf.stack([top, left, bottom, right], axis=-1), [-1, 4])
    crop = tf.stack([tf.maximum(y1 - y0, 1.0), tf.maximum(x1 - x0, 1.0)])
    return tf.image.crop_and_resize(images, boxes, src, tf.cast(crop, tf.int32), extrapolation_value=float(PAD_VALUE))


def _to_uint8(x):
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def _single_pixels(images, maps, out_size, size):
    """All outputs are single images: one batched ``crop_and_resize`` of ``[G, T, T]``."""
    g = tf.shape(images)[0]
    ax, bx, ay, by = (m[:, 0] for m in maps)
    zero, t = tf.zeros([g]), tf.fill([g], float(out_size))
    top, bottom = _crop_box(ay, by, zero, t, size)
    left, right = _crop_box(ax, bx, zero, t, size)
    boxes = tf.stack([top, left, bottom, right], axis=-1)
    out = tf.image.crop_and_resize(images, boxes, tf.range(g), [out_size, out_size], extrapolation_value=float(PAD_VALUE))
    return _to_uint8(out)


def render_mosaic(sources, ax, bx, ay, by, qx, qy, canvas, out_size):
    """Pixels of one output from its four (gathered) sources ``[4, S, S, 3]``.

    Each quadrant (split at ``qx``, ``qy``) samples only its own pixels with its slot's map
    ``u = a * x + b``; pixels outside ``canvas`` ``[x0, y0, x1, y1]`` are 114.
    """
    size = sources.shape[1]
    t = float(out_size)
    quads = []
    spans = ((0.0, qx, 0.0, qy), (qx, t, 0.0, qy), (0.0, qx, qy, t), (qx, t, qy, t))
    for k, (xs, xe, ys, ye) in enumerate(spans):
        crop = _sample(sources, tf.constant([k]), ys, xs, ye, xe, (ax[k], bx[k], ay[k], by[k]), size)[0]
        quads.append(crop[: tf.cast(ye - ys, tf.int32), : tf.cast(xe - xs, tf.int32)])
    out = tf.concat([tf.concat(quads[:2], axis=1), tf.concat(quads[2:], axis=1)], axis=0)
    centres = tf.range(out_size, dtype=tf.float32) + 0.5
    cols = (centres >= canvas[0]) & (centres < canvas[2])
    rows = (centres >= canvas[1]) & (centres < canvas[3])
    out = tf.where((rows[:, None] & cols[None, :])[..., None], out, float(PAD_VALUE))
    return _to_uint8(tf.ensure_shape(out, [out_size, out_size, 3]))


def plan_group(images, boxes, valid_hw, seed, out_size, max_boxes, mosaic=1.0, scale=0.5,
               translate=0.1, aspect=0.0, min_box_size=2.0, min_area_ratio=0.1, return_cut=False):
    """Draw the augmentation of a group and transform its boxes (vectorised; no pixels).

    Arguments as ``compose``. Returns ``(plan, boxes [G, max_boxes, 5])`` where ``plan`` has
    ``src`` ``[G, 4]`` (source index per slot), ``ax``, ``bx``, ``ay``, ``by`` ``[G, 4]``
    (slot maps ``u = a * x + b`` in pixels), ``qx``, ``qy`` ``[G]`` (quadrant split) and
    ``canvas`` ``[G, 4]``; pixels follow with ``render_mosaic`` (or ``_single_pixels``).
    With ``return_cut`` a third value counts, per output, the surviving boxes that did not
    fit ``max_boxes`` (int32 ``[G]``; a mosaic holds up to 4x one image's boxes).
    """
    size = images.shape[1]
    if size is None or images.shape[2] != size:
        raise ValueError(f"compose needs square prepared images of static size; got {images.shape}")
    g = tf.shape(images)[0]
    seeds = tf.unstack(split_seed(seed, 8))
    zoom = tf.random.stateless_uniform([g], seeds[4], 1.0 - scale, 1.0 + scale)
    stretch = math.log1p(aspect)
    log_aspect = tf.random.stateless_uniform([g], seeds[5], -stretch, stretch)
    sx = zoom * tf.exp(log_aspect / 2)
    sy = zoom * tf.exp(-log_aspect / 2)
    shift = tf.random.stateless_uniform([g, 2], seeds[6], 0.5 - translate, 0.5 + translate) * out_size
    varying = isinstance(mosaic, (tf.Tensor, tf.Variable))  # a rate a callback changes while training
    src, maps, (qx, qy), canvas = _plan(valid_hw, size, out_size, seeds, sx, sy, shift[:, 0], shift[:, 1], mosaic)
    regions = _regions(qx, qy, canvas, out_size)
    slots = 4 if varying or mosaic > 0 else 1
    if slots == 1:  # single images only: slot 0 is the whole frame
        src, maps, regions = src[:, :1], [m[:, :1] for m in maps], [r[:, :1] for r in regions]
    ax, bx, ay, by = maps
    src_boxes = tf.gather(boxes, src)  # [G, K, M, 5]
    px = src_boxes[..., :4] * float(size)
    a4 = tf.stack([ax, ay, ax, ay], axis=-1)[:, :, None, :]
    b4 = tf.stack([bx, by, bx, by], axis=-1)[:, :, None, :]
    before = px * a4 + b4
    x0, y0, x1, y1 = regions
    lo = tf.stack([x0, y0, x0, y0], axis=-1)[:, :, None, :]
    hi = tf.stack([x1, y1, x1, y1], axis=-1)[:, :, None, :]
    after = tf.minimum(tf.maximum(before, lo), hi)
    keep = (src_boxes[..., 4] >= 0) & box_candidates(before, after, min_box_size, min_area_ratio)
    rows = tf.concat([after / float(out_size), src_boxes[..., 4:]], axis=-1)
    rows = tf.reshape(rows, [g, slots * tf.shape(boxes)[1], 5])
    out_boxes, cut = compact(rows, tf.reshape(keep, [g, -1]), max_boxes, return_cut=True)
    plan = {"src": src, "ax": ax, "bx": bx, "ay": ay, "by": by, "qx": qx, "qy": qy, "canvas": canvas}
    return (plan, out_boxes, cut) if return_cut else (plan, out_boxes)


def single_pixels(images, plan, out_size):
    """Pixels of single-image outputs (a plan made with ``mosaic=0``): one batched crop."""
    return _single_pixels(images, [plan[k] for k in ("ax", "bx", "ay", "by")], out_size, images.shape[1])


def compose(images, boxes, valid_hw, seed, out_size, max_boxes, mosaic=1.0, scale=0.5,
            translate=0.1, aspect=0.0, min_box_size=2.0, min_area_ratio=0.1):
    """Mosaic / random-affine a group of prepared images.

    Args:
        images: uint8 ``[G, S, S, 3]``, each valid in its top-left ``valid_hw``, 114 elsewhere.
        boxes: ``[G, M, 5]`` normalised to the ``S x S`` canvas, -1 padded.
        valid_hw: int32 ``[G, 2]`` (height, width) of each image's content.
        seed: stateless seed ``[2]``.
        out_size: ``T``, the output side.
        max_boxes: rows of the output boxes.
        mosaic: probability that an output is a mosaic (0 gives the single-image fast path), or
            a float32 ``tf.Variable`` read at every group (mosaic pixels are always planned).
        scale: zoom drawn from ``[1 - scale, 1 + scale]``.
        translate: centre shift, a fraction of ``T`` drawn from ``[-translate, translate]``.
        aspect: stretch drawn log-uniformly from ``[1 / (1 + aspect), 1 + aspect]``.
        min_box_size, min_area_ratio: see ``boxes.box_candidates`` (pixels of the output).

    Returns:
        ``(images uint8 [G, T, T, 3], boxes [G, max_boxes, 5])`` normalised to the output.
        (The pipeline runs the same steps as ``plan_group`` per group, then
        ``render_mosaic`` per output in a parallel map.)
    """
    plan, out_boxes = plan_group(images, boxes, valid_hw, seed, out_size, max_boxes, mosaic, scale, translate,
                                 aspect, min_box_size, min_area_ratio)
    if isinstance(mosaic, (tf.Tensor, tf.Variable)) or mosaic > 0:
        keys = ("ax", "bx", "ay", "by", "qx", "qy", "canvas")
        out = tf.map_fn(
            lambda a: render_mosaic(tf.gather(images, a[0]), *a[1:], out_size=out_size),
            (plan["src"], *(plan[k] for k in keys)),
            fn_output_signature=tf.TensorSpec([out_size, out_size, 3], tf.uint8),
        )
    else:
        out = single_pixels(images, plan, out_size)
    return tf.ensure_shape(out, [None, out_size, out_size, 3]), out_boxes

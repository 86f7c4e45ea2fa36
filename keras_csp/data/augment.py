"""Box-aware augmentations in the graph: letterbox, flip, HSV, mixup; and the classification
ones (random resized crop, center crop, cutmix, mixup).

Random ones take a stateless ``seed`` (int ``[2]``), so a pipeline seed fixes every draw.
Images are uint8 ``[H, W, 3]`` (or float32 ``[B, H, W, 3]`` in [0, 1] for the batch-level
ones), boxes normalised xyxy. Scale/aspect jitter, translation and mosaic live in
``mosaic.py`` (one warp does all of them).
"""

import math

from keras_csp.backend import tf
from keras_csp.data.boxes import compact, valid_mask
from keras_csp.data.structure import PAD_VALUE
from keras_csp.postprocess.geometry import letterbox as _letterbox


def split_seed(seed, num):
    """``num`` independent stateless seeds ``[num, 2]`` from one ``[2]`` seed."""
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num)


def sample_beta(shape, seed, alpha, beta):
    """Beta(alpha, beta) samples via two gammas (TF has no stateless beta)."""
    s1, s2 = tf.unstack(split_seed(seed, 2))
    x = tf.random.stateless_gamma(shape, s1, alpha)
    y = tf.random.stateless_gamma(shape, s2, beta)
    return x / (x + y)


def _to_uint8(image):
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def resize_long_side(image, size):
    """Resize uint8 ``image [H, W, 3]`` keeping aspect so its longer side is ``size``.

    Returns ``(image, new_hw)`` with ``new_hw`` int32 ``[2]``.
    """
    hw = tf.shape(image)[:2]
    ratio = tf.cast(size, tf.float32) / tf.cast(tf.reduce_max(hw), tf.float32)
    new_hw = tf.maximum(1, tf.minimum(size, tf.cast(tf.round(tf.cast(hw, tf.float32) * ratio), tf.int32)))
    resized = _to_uint8(tf.image.resize(image, new_hw, method="bilinear"))
    return resized, new_hw


def letterbox(image, boxes, size, pad_value=PAD_VALUE):
    """Letterbox uint8 ``image [H, W, 3]`` to ``size x size`` with its ``boxes``.

    ``boxes [N, 4+]`` are normalised to ``image``; returns ``(image [S, S, 3] uint8, boxes
    normalised to the output, image_info [4, 2])``: the pipeline's face of
    :func:`keras_csp.postprocess.letterbox`, ``image_info`` its ``Letterbox.to_info()``
    (``Letterbox.from_info(image_info).boxes_to_original`` undoes it).
    """
    out, geometry = _letterbox(image, size, pad_value, dtype=tf.uint8)
    return out, geometry.boxes_to_input(tf.cast(boxes, tf.float32)), geometry.to_info()


def random_flip(images, boxes, seed, prob=0.5):
    """Flip each image of ``images [B, H, W, C]`` left-right with probability ``prob``,
    with its ``boxes [B, M, 5]`` (padding rows stay -1)."""
    flip = tf.random.stateless_uniform([tf.shape(images)[0]], seed) < prob
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    flipped = tf.stack([1.0 - boxes[..., 2], boxes[..., 1], 1.0 - boxes[..., 0], boxes[..., 3], boxes[..., 4]], -1)
    use = flip[:, None] & valid_mask(boxes)
    return images, tf.where(use[..., None], flipped, boxes)


def random_hsv(images, seed, hue=0.015, saturation=0.7, value=0.4):
    """HSV-style colour jitter of float ``images [B, H, W, 3]`` in [0, 1] (boxes keep).

    Per image, one 3x3 colour matrix: hue turned by up to ``hue`` turns (a rotation about
    the grey axis), saturation scaled by ``1 +- saturation`` (distance from the grey axis;
    HSV hue is kept exactly), value scaled by ``1 +- value`` (exactly HSV's V), then
    clipped. About 10x cheaper than ``rgb_to_hsv`` / ``hsv_to_rgb`` on a CPU, which matters
    at ~1 ms per image budget.
    """
    b = tf.shape(images)[0]
    gains = tf.random.stateless_uniform([b, 3], seed, -1.0, 1.0) * tf.constant([hue, saturation, value])
    eye = tf.eye(3, batch_shape=[1])
    mean = tf.fill([1, 3, 3], 1.0 / 3.0)
    cross = tf.constant([[[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]]) / math.sqrt(3.0)
    angle = gains[:, 0] * (2.0 * math.pi)
    cos, sin = tf.cos(angle)[:, None, None], tf.sin(angle)[:, None, None]
    rotate = cos * eye + (1.0 - cos) * mean + sin * cross  # Rodrigues about (1, 1, 1)
    s_gain = 1.0 + gains[:, 1, None, None]
    saturate = s_gain * eye + (1.0 - s_gain) * mean
    matrix = (1.0 + gains[:, 2, None, None]) * tf.matmul(rotate, saturate)
    shape = tf.shape(images)
    out = tf.matmul(tf.reshape(images, [b, -1, 3]), matrix, transpose_b=True)
    return tf.clip_by_value(tf.reshape(out, shape), 0.0, 1.0)


def mixup_detection(images, boxes, seed, prob, max_boxes, alpha=32.0, return_cut=False):
    """Blend each image with the next one of the batch with probability ``prob`` (ratio
    ~ Beta(alpha, alpha), as YOLOv5) and keep the boxes of both (``[B, max_boxes, 5]``).

    With ``return_cut`` also returns the boxes per image that did not fit (int32 ``[B]``).
    """
    s1, s2 = tf.unstack(split_seed(seed, 2))
    b = tf.shape(images)[0]
    mix = tf.random.stateless_uniform([b], s1) < prob
    ratio = sample_beta([b], s2, alpha, alpha)
    other = tf.roll(images, shift=-1, axis=0)
    other_boxes = tf.roll(boxes, shift=-1, axis=0)
    r = tf.where(mix, ratio, 1.0)[:, None, None, None]
    images = images * r + other * (1.0 - r)
    other_boxes = tf.where(mix[:, None, None], other_boxes, -1.0)
    both = tf.concat([boxes, other_boxes], axis=1)
    mixed = compact(both, valid_mask(both), max_boxes, return_cut=return_cut)
    return (images, *mixed) if return_cut else (images, mixed)


# -- classification ---------------------------------------------------------------------------
def random_resized_crop(image, size, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), return_crop=False):
    """Crop a random region (area fraction in ``scale``, aspect in ``ratio``) and resize it to
    ``size x size`` (the Inception / ResNet training crop).

    With ``return_crop`` also returns the crop ``[y_min, x_min, y_max, x_max]`` normalised.
    """
    hw = tf.shape(image)[:2]
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    out = _to_uint8(tf.image.resize(crop, [size, size], method="bilinear"))
    out = tf.ensure_shape(out, [size, size, 3])
    if not return_crop:
        return out
    f_hw = tf.cast(hw, tf.float32)
    start = tf.cast(begin[:2], tf.float32) / f_hw
    end = tf.cast(begin[:2] + crop_size[:2], tf.float32) / f_hw
    return out, tf.concat([start, end], axis=0)


def center_crop(image, size, crop_fraction=0.875):
    """Resize the shorter side to ``size / crop_fraction`` and take the central square (eval)."""
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    short = tf.cast(tf.round(size / crop_fraction), tf.float32)
    new_hw = tf.cast(tf.round(hw * short / tf.reduce_min(hw)), tf.int32)
    new_hw = tf.maximum(new_hw, size)
    resized = _to_uint8(tf.image.resize(image, new_hw, method="bilinear"))
    top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
    return tf.ensure_shape(resized[top : top + size, left : left + size], [size, size, 3])


def cutmix(images, labels, seed, prob, alpha=1.0, return_boxes=False):
    """CutMix: paste a random box of the next image of the batch into each image with
    probability ``prob``; soft ``labels [B, C]`` are mixed by the pasted area.

    ``images [B, S, S, C]`` float. With ``return_boxes`` also returns the pasted boxes
    ``[B, 4]`` (normalised xyxy, zero-size where nothing was pasted).
    """
    s1, s2, s3 = tf.unstack(split_seed(seed, 3))
    shape = tf.shape(images)
    b, h, w = shape[0], shape[1], shape[2]
    apply = tf.random.stateless_uniform([b], s1) < prob
    lam = sample_beta([b], s2, alpha, alpha)
    cut = tf.sqrt(1.0 - lam)
    centre = tf.random.stateless_uniform([b, 2], s3)
    fh, fw = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    y0 = tf.round(tf.clip_by_value(centre[:, 0] - cut / 2, 0.0, 1.0) * fh)
    y1 = tf.round(tf.clip_by_value(centre[:, 0] + cut / 2, 0.0, 1.0) * fh)
    x0 = tf.round(tf.clip_by_value(centre[:, 1] - cut / 2, 0.0, 1.0) * fw)
    x1 = tf.round(tf.clip_by_value(centre[:, 1] + cut / 2, 0.0, 1.0) * fw)
    zero = tf.zeros_like(y0)
    y0, y1, x0, x1 = (tf.where(apply, v, zero) for v in (y0, y1, x0, x1))
    rows = tf.cast(tf.range(h), tf.float32)[None, :, None] + 0.5
    cols = tf.cast(tf.range(w), tf.float32)[None, None, :] + 0.5
    inside = (
        (rows >= y0[:, None, None]) & (rows < y1[:, None, None])
        & (cols >= x0[:, None, None]) & (cols < x1[:, None, None])
    )  # fmt: skip
    other = tf.roll(images, shift=-1, axis=0)
    images = tf.where(inside[..., None], other, images)
    area = (y1 - y0) * (x1 - x0) / (fh * fw)
    labels = labels * (1.0 - area[:, None]) + tf.roll(labels, shift=-1, axis=0) * area[:, None]
    if return_boxes:
        return images, labels, tf.stack([x0 / fw, y0 / fh, x1 / fw, y1 / fh], axis=-1)
    return images, labels


def mixup_classification(images, labels, seed, prob, alpha=0.2):
    """Mixup for classification: blend with the next image of the batch (ratio ~
    Beta(alpha, alpha)) with probability ``prob``; soft ``labels [B, C]`` blended the same."""
    s1, s2 = tf.unstack(split_seed(seed, 2))
    b = tf.shape(images)[0]
    mix = tf.random.stateless_uniform([b], s1) < prob
    r = tf.where(mix, sample_beta([b], s2, alpha, alpha), 1.0)
    images = images * r[:, None, None, None] + tf.roll(images, -1, axis=0) * (1.0 - r[:, None, None, None])
    labels = labels * r[:, None] + tf.roll(labels, -1, axis=0) * (1.0 - r[:, None])
    return images, labels

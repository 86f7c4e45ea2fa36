"""Turn raw YOLO head outputs (logits) into boxes, objectness and class probabilities.

The raw output of one scale is ``[batch, H, W, A * (5 + C)]``, channels anchor-major
``[x, y, w, h, obj, cls_0 .. cls_{C-1}]`` per anchor, exactly the input of Darknet's
``[yolo]`` layer. Decoding (Darknet's ``get_yolo_box``), with ``s = scale_x_y`` and the
cell ``(i, j)`` of an ``H x W`` grid on an input of ``(in_h, in_w)`` pixels::

    x = (i + s * sigmoid(tx) - (s - 1) / 2) / W          y likewise with j, H
    w = anchor_w / in_w * exp(tw)                        (new_coords: (2 sigmoid(tw))^2)
    objectness = sigmoid(to)                             class_c = sigmoid(tc)

With ``new_coords`` (Scaled-YOLOv4) Darknet's conv before ``[yolo]`` already applies the
logistic; here heads always emit logits and decoding applies the sigmoid. Boxes come out
normalised ``[x_min, y_min, x_max, y_max]`` of the input image, not clipped. Every tensor
stays at rank 4 or less and uses only ops TFLite runs natively (sigmoid, exp, reshape,
strided slice, concat); with static map sizes the grid and anchors are constants, so
``keras_csp.layers.YoloDecode`` wraps these functions for export.
"""

import math

import numpy as np

from keras_csp.backend import tf
from keras_csp.ops.head_spec import HeadSpec

# exp(tw) is evaluated at min(tw, MAX_LOG_WH) (straight-through gradient): a box ~3000x its
# anchor is already absurd, and it keeps exp() finite for any logit.
MAX_LOG_WH = math.log(3000.0)


def split_head(logits, num_anchors, num_classes):
    """``[B, H, W, A * (5 + C)]`` to ``[B, H * W, A, 5 + C]`` (cells row-major)."""
    logits = tf.convert_to_tensor(logits)
    depth = num_anchors * (5 + num_classes)
    if logits.shape.rank is not None and logits.shape.rank != 4:
        raise ValueError(
            f"A YOLO head output must be [batch, H, W, A*(5+C)]; received shape {logits.shape}."
        )
    if logits.shape[-1] is not None and logits.shape[-1] != depth:
        raise ValueError(
            f"A YOLO head with {num_anchors} anchors and {num_classes} classes needs "
            f"{num_anchors}*(5+{num_classes}) = {depth} channels; received shape {logits.shape}."
        )
    height, width = grid_size(logits)
    return tf.reshape(logits, [-1, height * width, num_anchors, 5 + num_classes])


def grid_size(logits):
    """``(H, W)`` of ``[B, H, W, ...]`` logits: Python ints where static, else tensors."""
    shape = tf.shape(logits)
    height, width = logits.shape[1], logits.shape[2]
    return (shape[1] if height is None else int(height)), (shape[2] if width is None else int(width))


def cell_offsets(height, width, dtype=tf.float32):
    """``[H * W, 1, 2]``: the (column, row) of each cell, row-major, to broadcast over anchors.

    With Python ints it is a constant (no RANGE / SHAPE ops in an exported graph)."""
    if isinstance(height, int) and isinstance(width, int):
        rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        offsets = np.stack([cols.reshape(-1), rows.reshape(-1)], axis=-1)
        return tf.constant(offsets[:, None, :], dtype)
    rows, cols = tf.meshgrid(tf.range(height), tf.range(width), indexing="ij")
    offsets = tf.stack([tf.reshape(cols, [-1]), tf.reshape(rows, [-1])], axis=-1)
    return tf.cast(offsets[:, None, :], dtype)


def _grid_and_input_size(logits, stride, input_size):
    height, width = grid_size(logits)
    if input_size is None:
        in_h, in_w = height * stride, width * stride
    else:
        in_h, in_w = input_size
    return height, width, in_h, in_w


def decode_xy(raw_xy, offsets, grid_hw, scale_x_y=1.0):
    """Normalised box centres from ``raw_xy`` logits ``[..., HW, A, 2]`` (grid sensitivity)."""
    xy = tf.sigmoid(raw_xy)
    if scale_x_y != 1.0:
        xy = xy * scale_x_y - 0.5 * (scale_x_y - 1.0)
    height, width = grid_hw
    grid = tf.cast(tf.stack([width, height]), raw_xy.dtype)
    return (xy + offsets) / grid


def decode_wh(raw_wh, anchors_normalized, new_coords=False, straight_through=True):
    """Normalised box sizes from ``raw_wh`` logits ``[..., A, 2]`` and anchors ``[A, 2]``.

    ``exp`` sees ``min(raw_wh, MAX_LOG_WH)``; with ``straight_through`` (training) the
    gradient passes as if unclipped, without it (an inference graph) it is the plain minimum.
    """
    if new_coords:
        return tf.square(2.0 * tf.sigmoid(raw_wh)) * anchors_normalized
    if not straight_through:
        return tf.exp(tf.minimum(raw_wh, MAX_LOG_WH)) * anchors_normalized
    clipped = raw_wh + tf.stop_gradient(tf.minimum(raw_wh, MAX_LOG_WH) - raw_wh)
    return tf.exp(clipped) * anchors_normalized


def normalized_anchors(head, input_hw, dtype=tf.float32):
    """``head.anchors`` (pixels) divided by the input size ``(in_h, in_w)``: ``[A, 2]``."""
    in_h, in_w = input_hw
    anchors = tf.constant(head.anchors, dtype)
    return anchors / tf.cast(tf.stack([in_w, in_h]), dtype)


def decode_head(logits, head, input_size=None, straight_through=True):
    """Decode one scale's logits ``[B, H, W, A*(5+C)]`` described by ``head`` (a HeadSpec).

    ``input_size`` is the model input ``(height, width)`` in pixels; by default
    ``(H * stride, W * stride)``. ``straight_through``: see ``decode_wh``. Returns a dict of float32 tensors, ``N = H * W * A``
    ordered (row, column, anchor): ``boxes [B, N, 4]`` (normalised xyxy),
    ``objectness [B, N]``, ``class_probs [B, N, C]``.
    """
    head = HeadSpec.coerce(head)
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    parts = split_head(logits, head.num_anchors, head.num_classes)
    height, width, in_h, in_w = _grid_and_input_size(logits, head.stride, input_size)
    xy = decode_xy(parts[..., 0:2], cell_offsets(height, width), (height, width), head.scale_x_y)
    wh = decode_wh(parts[..., 2:4], normalized_anchors(head, (in_h, in_w)), head.new_coords,
                   straight_through)
    boxes = tf.concat([xy - 0.5 * wh, xy + 0.5 * wh], axis=-1)
    count = height * width * head.num_anchors
    return {
        "boxes": tf.reshape(boxes, [-1, count, 4]),
        # [..., 4:5], not [..., 4]: a shrinking slice is a STRIDED_SLICE the GPU delegate refuses.
        "objectness": tf.reshape(tf.sigmoid(parts[..., 4:5]), [-1, count]),
        "class_probs": tf.reshape(tf.sigmoid(parts[..., 5:]), [-1, count, head.num_classes]),
    }


def decode_heads(outputs, heads, input_size=None, straight_through=True):
    """Decode every scale (``outputs`` and ``heads`` in the same order) and concatenate.

    Returns the dict of ``decode_head`` with ``N`` the sum over scales, scales in order.
    """
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    if len(outputs) != len(heads):
        raise ValueError(
            f"Got {len(outputs)} head outputs for {len(heads)} head specs; they must match."
        )
    decoded = [decode_head(o, h, input_size, straight_through) for o, h in zip(outputs, heads)]
    return {key: tf.concat([d[key] for d in decoded], axis=1) for key in decoded[0]}


__all__ = [
    "MAX_LOG_WH",
    "cell_offsets",
    "decode_head",
    "decode_heads",
    "decode_wh",
    "decode_xy",
    "grid_size",
    "normalized_anchors",
    "split_head",
]

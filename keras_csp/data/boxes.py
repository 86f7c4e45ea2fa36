"""Box tensors of the pipeline as pure functions (shapes and formats in each docstring).

Padded boxes are ``[..., max_boxes, 5]`` = ``[x_min, y_min, x_max, y_max, class]`` with
padding rows all -1 (class -1 marks padding), the library-wide training contract. In
evaluation batches a class ``<= -2`` marks an ignored region of class ``-2 - value`` (COCO
``iscrowd``, VOC ``difficult``): no target, but the ground truth built from the stream keeps
it so that it neither counts as a miss nor makes a detection a false positive.

Rows that do not fit ``max_boxes`` are cut; every function that cuts can return how many
(``return_cut``), and the pipeline counts them in the source's report.
"""

from keras_csp.backend import tf
from keras_csp.postprocess.geometry import Letterbox


def encode_ignored(classes):
    """Class codes of ignored regions: class ``c`` -> ``-2 - c`` (always <= -2)."""
    return -2 - classes


def decode_ignored(codes):
    """Inverse of ``encode_ignored``: the class of an ignored region's code."""
    return -2 - codes


def ignored_mask(boxes):
    """``[..., K, 5]`` -> bool ``[..., K]``: the ignored-region rows."""
    return boxes[..., 4] <= -2


def pad_boxes(boxes, classes, max_boxes, return_cut=False):
    """``boxes [n, 4]`` + ``classes [n]`` -> ``[max_boxes, 5]``, -1 padded; extra rows cut.

    With ``return_cut`` also returns how many rows were cut (int32 scalar).
    """
    rows = tf.concat([tf.cast(boxes, tf.float32), tf.cast(classes, tf.float32)[:, None]], axis=-1)
    cut = tf.maximum(tf.shape(rows)[0] - max_boxes, 0)
    rows = rows[:max_boxes]
    padded = tf.ensure_shape(tf.pad(rows, [[0, max_boxes - tf.shape(rows)[0]], [0, 0]], constant_values=-1.0),
                             [max_boxes, 5])
    return (padded, cut) if return_cut else padded


def valid_mask(boxes):
    """``[..., K, 5]`` -> bool ``[..., K]``: the rows that are targets (not padding, not ignored)."""
    return boxes[..., 4] >= 0


def compact(boxes, keep, max_boxes, return_cut=False):
    """Move the kept rows of ``boxes [B, K, 5]`` first (order kept), set the rest to -1 and
    return ``[B, max_boxes, 5]`` (truncating or padding).

    With ``return_cut`` also returns the kept rows cut per image (int32 ``[B]``).
    """
    boxes = tf.where(keep[..., None], boxes, -1.0)
    order = tf.argsort(tf.cast(tf.logical_not(keep), tf.int32), axis=-1, stable=True)
    boxes = tf.gather(boxes, order, batch_dims=1)
    k = tf.shape(boxes)[1]
    boxes = boxes[:, :max_boxes]
    boxes = tf.pad(boxes, [[0, 0], [0, tf.maximum(0, max_boxes - k)], [0, 0]], constant_values=-1.0)
    boxes = tf.ensure_shape(boxes, [None, max_boxes, 5])
    if not return_cut:
        return boxes
    return boxes, tf.maximum(tf.reduce_sum(tf.cast(keep, tf.int32), axis=-1) - max_boxes, 0)


def box_candidates(before, after, min_size=2.0, min_area_ratio=0.1, max_aspect=100.0):
    """Which transformed boxes to keep, in pixels ``[..., 4]`` xyxy.

    ``before`` is the transformed box before clipping, ``after`` the clipped one. A box stays
    if it is still at least ``min_size`` pixels wide and high, keeps ``min_area_ratio`` of its
    area, and is not thinner than 1:``max_aspect`` (the rule of Ultralytics' augmentations).
    """
    w1, h1 = before[..., 2] - before[..., 0], before[..., 3] - before[..., 1]
    w2, h2 = after[..., 2] - after[..., 0], after[..., 3] - after[..., 1]
    eps = 1e-9
    aspect = tf.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > min_size) & (h2 > min_size) & (w2 * h2 / (w1 * h1 + eps) > min_area_ratio) & (aspect < max_aspect)


def boxes_to_original(boxes, image_info):
    """Undo the letterbox: normalised model-input xyxy ``[..., N, 4+]`` -> original-image
    pixel xyxy ``[..., N, 4]``, clipped to the image.

    ``image_info [..., 4, 2]`` as ``Letterbox.to_info()`` writes it; the same as
    ``keras_csp.postprocess.Letterbox.from_info(image_info).boxes_to_original(boxes)``.
    """
    return Letterbox.from_info(tf.cast(image_info, tf.float32)).boxes_to_original(
        tf.cast(boxes, tf.float32))


def xyxy_to_coco(boxes):
    """Pixel xyxy ``[..., 4]`` -> COCO ``[x, y, width, height]``."""
    return tf.concat([boxes[..., :2], boxes[..., 2:4] - boxes[..., :2]], axis=-1)

"""The element every source yields, and the constants the pipeline shares.

Keeping one structure for COCO, YOLO txt, VOC, TFDS and the synthetic set is what lets
decoding, augmentation and batching be written once.
"""

from keras_csp.backend import tf
from keras_csp.postprocess.geometry import PAD_VALUE  # noqa: F401  (letterbox / mosaic grey)

DEFAULT_MAX_BOXES = 100
"""Rows of the padded box tensor; COCO has at most 93 non-crowd boxes in one image."""

ELEMENT_SPEC = {
    "image": tf.TensorSpec([None, None, 3], tf.uint8),
    "boxes": tf.TensorSpec([None, 4], tf.float32),
    "classes": tf.TensorSpec([None], tf.int32),
    "image_id": tf.TensorSpec([], tf.int64),
    "original_size": tf.TensorSpec([2], tf.int32),
}
"""``tf.data`` element spec shared by all detection sources (see the package docstring)."""

CLASSIFICATION_SPEC = {
    "image": tf.TensorSpec([None, None, 3], tf.uint8),
    "label": tf.TensorSpec([], tf.int32),
    "image_id": tf.TensorSpec([], tf.int64),
}
"""``tf.data`` element spec shared by all classification sources."""


def make_element(image, boxes, classes, image_id):
    """Build a detection element, fixing dtypes and static shapes; ``original_size`` from ``image``."""
    image = tf.ensure_shape(tf.convert_to_tensor(image, tf.uint8), [None, None, 3])
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
    return {
        "image": image,
        "boxes": boxes,
        "classes": classes,
        "image_id": tf.cast(image_id, tf.int64),
        "original_size": tf.shape(image)[:2],
    }


def sanitize_boxes(boxes, classes, num_classes=None, min_size=1e-6):
    """Clip normalised xyxy ``boxes`` to [0, 1] and drop empty, non-finite or unknown-class rows.

    In-graph counterpart of the Python checks of the file sources, for sources (TFDS) whose
    boxes arrive as tensors. Returns ``(boxes, classes)``.
    """
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    boxes = tf.clip_by_value(tf.where(finite[:, None], boxes, 0.0), 0.0, 1.0)
    keep = finite & (boxes[:, 2] - boxes[:, 0] > min_size) & (boxes[:, 3] - boxes[:, 1] > min_size)
    keep &= classes >= 0
    if num_classes is not None:
        keep &= classes < num_classes
    return tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)

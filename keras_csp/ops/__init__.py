"""Pure TensorFlow ops: box geometry, YOLO head specs and decoding."""

from keras_csp.ops.boxes import (
    EPSILON,
    FORMATS,
    IOU_KINDS,
    box_area,
    box_iou,
    ciou,
    convert_format,
    diou,
    giou,
    iou,
    pairwise_iou,
    to_normalized,
    to_pixels,
    xywh_to_xyxy,
    xyxy_to_xywh,
    xyxy_to_yxyx,
    yxyx_to_xyxy,
)
from keras_csp.ops.decode import decode_head, decode_heads, split_head
from keras_csp.ops.head_spec import BOX_LOSSES, HeadSpec, all_anchors

__all__ = [
    "BOX_LOSSES",
    "EPSILON",
    "FORMATS",
    "HeadSpec",
    "IOU_KINDS",
    "all_anchors",
    "box_area",
    "box_iou",
    "ciou",
    "convert_format",
    "decode_head",
    "decode_heads",
    "diou",
    "giou",
    "iou",
    "pairwise_iou",
    "split_head",
    "to_normalized",
    "to_pixels",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "xyxy_to_yxyx",
    "yxyx_to_xyxy",
]

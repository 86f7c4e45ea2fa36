"""The YOLO head: one 1x1 prediction conv per scale, and the anchors and specs that go with it.

The head turns each neck output into ``A * (5 + C)`` logits, channels anchor-major
``[x, y, w, h, obj, cls...]`` (Darknet's ``[yolo]`` input), with a linear conv with bias,
as the ``[convolutional] size=1 activation=linear`` before every ``[yolo]`` in the cfgs.
"""

import math
import numbers

import numpy as np

from keras_csp.detectors.necks import level_index
from keras_csp.layers import conv_bn_act
from keras_csp.ops.head_spec import HeadSpec

# COCO anchors of yolov3.cfg and every cs*-panet-spp.cfg, (w, h) in pixels at 416/608.
YOLOV3_ANCHORS = (
    ((10, 13), (16, 30), (33, 23)),
    ((30, 61), (62, 45), (59, 119)),
    ((116, 90), (156, 198), (373, 326)),
)
# yolov3-tiny-prn.cfg: six anchors; P4 uses mask 1,2,3 and P5 mask 3,4,5 (anchor 0 unused).
TINY_ANCHORS = ((10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319))
TINY_PRN_ANCHORS = (TINY_ANCHORS[1:4], TINY_ANCHORS[3:6])


def _is_pair(value):
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, numbers.Real) for v in value)
    )


def split_anchors(anchors, num_levels):
    """Per-level anchor lists from ``anchors``: either one list per level, or one flat list
    of ``(w, h)`` pairs dealt out evenly, smallest anchors to the smallest stride."""
    if anchors is None:
        if num_levels == 3:
            return YOLOV3_ANCHORS
        if num_levels == 2:
            return TINY_PRN_ANCHORS
        raise ValueError(f"No default anchors for {num_levels} levels; pass `anchors`.")
    anchors = list(anchors)
    if anchors and all(_is_pair(a) for a in anchors):
        if len(anchors) % num_levels:
            raise ValueError(
                f"{len(anchors)} anchors cannot be split evenly over {num_levels} levels; pass "
                "one list of (w, h) pairs per level instead."
            )
        per = len(anchors) // num_levels
        return tuple(tuple(anchors[i * per:(i + 1) * per]) for i in range(num_levels))
    if len(anchors) != num_levels or not all(a and all(_is_pair(p) for p in a) for a in anchors):
        raise ValueError(
            f"`anchors` must be (w, h) pairs, flat or one list per level ({num_levels} levels); "
            f"received {anchors!r}."
        )
    return tuple(tuple(tuple(p) for p in a) for a in anchors)


def head_specs(levels, num_classes, anchors=None, **options):
    """One ``HeadSpec`` per level (``"P3"`` -> stride 8): ``options`` are HeadSpec fields
    shared by all scales (``scale_x_y``, ``iou_loss``, ``ignore_thresh``, ...)."""
    per_level = split_anchors(anchors, len(levels))
    return tuple(
        HeadSpec(stride=2 ** level_index(level), anchors=a, num_classes=num_classes, **options)
        for level, a in zip(levels, per_level)
    )


def head_level(head):
    """The pyramid level (``"P3"``) of a head spec, from its stride."""
    level = int(round(math.log2(head.stride)))
    if 2 ** level != head.stride:
        raise ValueError(f"Head stride must be a power of two; received {head.stride}.")
    return f"P{level}"


def yolo_head(features, heads, registry=None, name="head"):
    """1x1 linear prediction convs: ``features`` ``{level: tensor}`` -> list of logits in
    the order of ``heads`` (each spec's stride picks its level). Blocks are named
    ``{name}_p{n}`` and recorded in ``registry`` as ``{level: block name}``."""
    outputs = []
    for head in heads:
        level = head_level(head)
        if level not in features:
            raise ValueError(
                f"Head with stride {head.stride} needs neck level {level}; the neck gives "
                f"{sorted(features)}."
            )
        block = f"{name}_{level.lower()}"
        outputs.append(
            conv_bn_act(features[level], head.channels, 1, activation="linear",
                        batch_normalize=False, name=block)
        )
        if registry is not None:
            registry[level] = block
    return outputs


def prior_biases(head, input_size, objects_per_image=8.0, class_prior=0.6):
    """Bias vector giving sensible initial outputs (YOLOv5's ``_initialize_biases``):
    objectness ``log(objects / cells)`` for ``objects_per_image`` objects spread over the
    grid of an ``input_size`` image, class logits ``log(p / (C - p))`` for ``p = class_prior``."""
    cells = (input_size / head.stride) ** 2
    per_anchor = 5 + head.num_classes
    bias = np.zeros(head.channels, np.float32)
    for a in range(head.num_anchors):
        bias[a * per_anchor + 4] = math.log(objects_per_image / cells)
        bias[a * per_anchor + 5:(a + 1) * per_anchor] = math.log(
            class_prior / (head.num_classes - 0.99)
        )
    return bias


__all__ = [
    "TINY_ANCHORS", "TINY_PRN_ANCHORS", "YOLOV3_ANCHORS", "head_level", "head_specs",
    "prior_biases", "split_anchors", "yolo_head",
]

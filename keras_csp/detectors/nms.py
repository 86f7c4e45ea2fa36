"""Batched, fixed-size non-maximum suppression: greedy IoU-NMS and Darknet's DIoU-NMS.

``non_max_suppression(boxes, scores)`` keeps, per image, boxes in descending score order,
dropping every box whose overlap with an already kept box exceeds ``iou_threshold``:
``overlap = IoU`` (greedy NMS) or ``IoU - (d^2 / c^2) ** beta`` (Darknet's ``diounms``, ``d``
the distance between centres, ``c`` the diagonal of the smallest enclosing box; ``beta`` is
the cfg's ``beta_nms``). Class-aware NMS only lets boxes of the same class suppress each
other; class-agnostic NMS lets any box suppress any other.

It is a separate stage: detectors export their raw heads (and optionally ``YoloDecode``)
without it, and ``predict`` / :mod:`keras_csp.detectors.inference` add it. All shapes are
fixed: ``[B, max_detections]`` with ``num_detections [B]`` valid rows, padding rows with
zero boxes and scores and class ``-1``. Greedy NMS is computed exactly, in-graph, as the
fixed point of ``keep[j] = valid[j] and no kept i < j suppresses j`` (entry ``j`` is final
after ``j`` sweeps; in practice a handful).
"""

import dataclasses

from keras_csp.backend import tf

METHODS = ("greedy", "diou")


@dataclasses.dataclass(frozen=True)
class NMSConfig:
    """Settings of the post-processing stage.

    Attributes:
      score_threshold: candidates need ``score > score_threshold`` (Darknet's ``thresh``),
        with ``score = objectness * class probability``.
      iou_threshold: suppression threshold on IoU (greedy) or DIoU (``method="diou"``).
      max_detections: rows of the fixed-size output per image.
      method: ``"greedy"`` or ``"diou"`` (Darknet's ``nms_kind=diounms``).
      beta: exponent of the DIoU distance term (Darknet's ``beta_nms``, default 0.6).
      class_aware: only boxes of one class suppress each other (False: agnostic).
      multi_label: a box may be kept once per class whose score passes the threshold (as
        Darknet does); False keeps only each box's best class.
      pre_nms_top_k: candidates considered per image, best scores first.
    """

    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    method: str = "greedy"
    beta: float = 0.6
    class_aware: bool = True
    multi_label: bool = False
    pre_nms_top_k: int = 1000

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"NMS `method` must be one of {METHODS}; received {self.method!r}.")
        for name in ("score_threshold", "iou_threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"NMS `{name}` must be in [0, 1]; received {value!r}.")
        for name in ("max_detections", "pre_nms_top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NMS `{name}` must be a positive int; received {value!r}.")
        if not isinstance(self.beta, (int, float)) or self.beta <= 0:
            raise ValueError(f"NMS `beta` must be > 0; received {self.beta!r}.")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def get_config(self):
        return dataclasses.asdict(self)

    @classmethod
    def coerce(cls, value):
        """An ``NMSConfig`` from None (defaults), a config dict, or an ``NMSConfig``."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"Unknown NMS settings {sorted(unknown)}; received {value!r}.")
            return cls(**value)
        raise TypeError(f"Expected an NMSConfig or a dict; received {type(value).__name__}.")


# Darknet's [yolo] ``nms_kind`` -> NMSConfig.method (Darknet's test/map tools use IoU 0.45).
DARKNET_NMS_KINDS = {"default": "greedy", "greedynms": "greedy", "diounms": "diou"}


def darknet_nms(nms_kind="default", beta_nms=0.6, nms=None):
    """The NMSConfig a Darknet ``[yolo]`` section asks for: IoU NMS for ``default`` /
    ``greedynms``, DIoU NMS with exponent ``beta_nms`` for ``diounms``.

    ``nms``: None (the section's settings, other fields NMSConfig's defaults), a dict of
    fields applied on top of them, or an ``NMSConfig`` used as it is.
    """
    if isinstance(nms, NMSConfig):
        return nms
    if nms_kind not in DARKNET_NMS_KINDS:
        raise ValueError(
            f"nms_kind={nms_kind!r} is not implemented by keras_csp's NMS; expected one of "
            f"{sorted(DARKNET_NMS_KINDS)}."
        )
    config = {"method": DARKNET_NMS_KINDS[nms_kind], "beta": float(beta_nms)}
    if nms is not None:
        if not isinstance(nms, dict):
            raise TypeError(f"`nms` must be None, a dict or an NMSConfig; received {type(nms).__name__}.")
        config.update(nms)
    return NMSConfig.coerce(config)


def pairwise_overlap(boxes, method="greedy", beta=0.6):
    """``[..., K, K]`` IoU (``"greedy"``) or Darknet DIoU-NMS score of xyxy ``boxes [..., K, 4]``."""
    a = boxes[..., :, None, :]
    b = boxes[..., None, :, :]
    inter_w = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    inter_h = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = inter_w * inter_h
    area = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    union = area[..., :, None] + area[..., None, :] - inter
    iou = tf.math.divide_no_nan(inter, union)
    if method == "greedy":
        return iou
    outer_w = tf.maximum(a[..., 2], b[..., 2]) - tf.minimum(a[..., 0], b[..., 0])
    outer_h = tf.maximum(a[..., 3], b[..., 3]) - tf.minimum(a[..., 1], b[..., 1])
    diagonal = outer_w * outer_w + outer_h * outer_h
    dx = 0.5 * (a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2])
    dy = 0.5 * (a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3])
    ratio = tf.math.divide_no_nan(dx * dx + dy * dy, diagonal)
    # Darknet returns the plain IoU when the enclosing box is degenerate (c == 0).
    penalty = tf.where(diagonal > 0.0, tf.pow(tf.maximum(ratio, 1e-30), beta), 0.0)
    return iou - penalty


def _candidates(boxes, scores, config):
    """Top-``pre_nms_top_k`` (box, score, class) candidates per image, best first."""
    if scores.shape.rank == 2:
        flat_scores = scores
        flat_classes = tf.zeros_like(scores, tf.int32)
        box_index = None
    elif config.multi_label:
        num_classes = tf.shape(scores)[2]
        flat_scores = tf.reshape(scores, [tf.shape(scores)[0], -1])
        box_index = tf.range(tf.shape(flat_scores)[1]) // num_classes
        flat_classes = tf.range(tf.shape(flat_scores)[1]) % num_classes
        flat_classes = tf.broadcast_to(flat_classes[None], tf.shape(flat_scores))
        box_index = tf.broadcast_to(box_index[None], tf.shape(flat_scores))
    else:
        flat_scores = tf.reduce_max(scores, axis=-1)
        flat_classes = tf.argmax(scores, axis=-1, output_type=tf.int32)
        box_index = None
    k = tf.minimum(config.pre_nms_top_k, tf.shape(flat_scores)[1])
    top_scores, order = tf.math.top_k(flat_scores, k=k, sorted=True)  # ties: lower index first
    classes = tf.gather(flat_classes, order, batch_dims=1)
    rows = order if box_index is None else tf.gather(box_index, order, batch_dims=1)
    top_boxes = tf.gather(boxes, rows, batch_dims=1)
    return top_boxes, top_scores, classes


def _greedy_keep(overlap, valid, same_class, threshold):
    """Exact greedy NMS on candidates sorted by score: the fixed point of
    ``keep[j] = valid[j] & ~any_i<j(keep[i] & suppresses[i, j])``."""
    k = tf.shape(overlap)[-1]
    earlier = tf.linalg.band_part(tf.ones([k, k], tf.bool), 0, -1) & ~tf.eye(k, dtype=tf.bool)
    suppresses = (overlap > threshold) & earlier[None] & valid[:, :, None] & valid[:, None, :]
    if same_class is not None:
        suppresses &= same_class

    def sweep(keep):
        hit = tf.reduce_any(suppresses & keep[:, :, None], axis=1)
        return valid & ~hit

    def body(keep, _changed):
        new = sweep(keep)
        return new, tf.reduce_any(tf.not_equal(new, keep))

    keep, _ = tf.while_loop(
        lambda keep, changed: changed, body, (valid, tf.constant(True)),
        maximum_iterations=k + 1,
    )
    return keep


def non_max_suppression(boxes, scores, config=None, **overrides):
    """NMS over a batch: ``boxes [B, N, 4]`` (xyxy, any units), ``scores [B, N, C]`` (or
    ``[B, N]`` for one class). ``config`` is an :class:`NMSConfig` (or dict); keyword
    ``overrides`` change single fields.

    Returns ``{"boxes": [B, K, 4], "scores": [B, K], "classes": [B, K] int32 (-1 padding),
    "num_detections": [B] int32}`` with ``K = max_detections``, rows in descending score
    order (equal scores: the lower candidate index first).
    """
    config = NMSConfig.coerce(config)
    if overrides:
        config = config.replace(**overrides)
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    if boxes.shape.rank != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"`boxes` must be [batch, N, 4]; received shape {boxes.shape}.")
    if scores.shape.rank not in (2, 3):
        raise ValueError(f"`scores` must be [batch, N, C] or [batch, N]; received {scores.shape}.")
    cand_boxes, cand_scores, cand_classes = _candidates(boxes, scores, config)
    # Pad the candidate list to at least max_detections rows so the output is fixed-size.
    pad = tf.maximum(config.max_detections - tf.shape(cand_scores)[1], 0)
    cand_boxes = tf.pad(cand_boxes, [[0, 0], [0, pad], [0, 0]])
    cand_scores = tf.pad(cand_scores, [[0, 0], [0, pad]], constant_values=-1.0)
    cand_classes = tf.pad(cand_classes, [[0, 0], [0, pad]], constant_values=-1)
    valid = cand_scores > config.score_threshold
    overlap = pairwise_overlap(cand_boxes, config.method, config.beta)
    same_class = None
    if config.class_aware:
        same_class = tf.equal(cand_classes[:, :, None], cand_classes[:, None, :])
    keep = _greedy_keep(overlap, valid, same_class, config.iou_threshold)
    # The first max_detections kept candidates, in candidate (score) order.
    count = tf.shape(keep)[1]
    rank = tf.cast(count - tf.range(count), tf.float32)[None]
    key = tf.where(keep, rank, 0.0)
    _, picked = tf.math.top_k(key, k=config.max_detections, sorted=True)
    kept = tf.gather(keep, picked, batch_dims=1)
    num = tf.minimum(tf.reduce_sum(tf.cast(keep, tf.int32), axis=1), config.max_detections)
    out_boxes = tf.where(kept[..., None], tf.gather(cand_boxes, picked, batch_dims=1), 0.0)
    out_scores = tf.where(kept, tf.gather(cand_scores, picked, batch_dims=1), 0.0)
    out_classes = tf.where(kept, tf.gather(cand_classes, picked, batch_dims=1), -1)
    return {
        "boxes": out_boxes,
        "scores": out_scores,
        "classes": out_classes,
        "num_detections": num,
    }


__all__ = ["METHODS", "NMSConfig", "darknet_nms", "non_max_suppression", "pairwise_overlap"]

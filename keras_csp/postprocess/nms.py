"""Fixed-size non-maximum suppression: its settings (``NMSConfig``) and its two kernels.

``non_max_suppression(boxes, scores)`` keeps, per image, boxes in descending score order,
dropping every box whose overlap with an already kept box exceeds ``iou_threshold``:
``overlap = IoU`` (greedy NMS) or ``IoU - (d^2 / c^2) ** beta`` (Darknet's ``diounms``, ``d``
the distance between centres, ``c`` the diagonal of the smallest enclosing box; ``beta`` is
the cfg's ``beta_nms``). Class-aware NMS only lets boxes of the same class suppress each
other; class-agnostic NMS lets any box suppress any other.

It is a separate stage: detectors export their raw heads (and optionally ``YoloDecode``)
without it, and ``predict`` / :func:`keras_csp.postprocess.postprocess` add it. All shapes are
fixed: ``[B, max_detections]`` with ``num_detections [B]`` valid rows, padding rows with
zero boxes and scores and class ``-1``. Greedy NMS is computed exactly, in-graph, as the
fixed point of ``keep[j] = valid[j] and no kept i < j suppresses j`` (entry ``j`` is final
after ``j`` sweeps; in practice a handful). That needs a ``[K, K]`` overlap matrix, so a
config with ``pre_nms_top_k > DENSE_MAX_CANDIDATES`` (the reference evaluation keeps up to
30000 candidates, as YOLOv5's ``val.py``) runs the same greedy NMS tile by tile, ``NMS_TILE`` at a time,
each tile first suppressed by the boxes kept so far (at most ``max_detections``), then by
itself; the loop ends once every image has ``max_detections`` boxes or no candidate is left.

``builtin_nms`` is the kernel of exported files: greedy, single-label, built from TOPK_V2 +
NON_MAX_SUPPRESSION_V5 so that TFLite runs it with builtin kernels (``tflite/yolo_numpy.py``
reproduces it in NumPy).
"""

import dataclasses
import numbers

from keras_csp.backend import tf

METHODS = ("greedy", "diou")
# The builtin kernel separates classes by shifting boxes class * CLASS_SHIFT apart, after
# clipping their coordinates to NMS_RANGE (normalised units); boxes reaching further than 2
# image sizes outside the image are the only ones whose overlap this changes.
NMS_RANGE = (-2.0, 3.0)
CLASS_SHIFT = 8.0
DENSE_MAX_CANDIDATES = 1000
"""Up to this ``pre_nms_top_k`` (the default) NMS is one ``[K, K]`` fixed point; above it, tiled."""
NMS_TILE = 512
"""Candidates per tile of the tiled path (a ``[B, 512, 512]`` overlap matrix per step)."""


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
        # Any real / integral number (NumPy's too) is accepted and stored as float / int.
        for name in ("score_threshold", "iou_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
                raise ValueError(f"NMS `{name}` must be in [0, 1]; received {value!r}.")
            object.__setattr__(self, name, float(value))
        for name in ("max_detections", "pre_nms_top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"NMS `{name}` must be a positive int; received {value!r}.")
            object.__setattr__(self, name, int(value))
        if isinstance(self.beta, bool) or not isinstance(self.beta, numbers.Real) or self.beta <= 0:
            raise ValueError(f"NMS `beta` must be > 0; received {self.beta!r}.")
        object.__setattr__(self, "beta", float(self.beta))
        for name in ("class_aware", "multi_label"):
            object.__setattr__(self, name, bool(getattr(self, name)))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def get_config(self):
        return dataclasses.asdict(self)

    @property
    def exportable(self):
        """Whether ``builtin_nms`` (greedy, single-label) computes this config."""
        return self.method == "greedy" and not self.multi_label

    def sidecar(self):
        """The settings an app needs to run the exported NMS itself (the JSON sidecar's)."""
        return {"max_detections": self.max_detections, "iou_threshold": self.iou_threshold,
                "score_threshold": self.score_threshold, "class_aware": self.class_aware,
                "pre_nms_top_k": self.pre_nms_top_k}

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
    return cross_overlap(boxes, boxes, method, beta)


def cross_overlap(first, second, method="greedy", beta=0.6):
    """``[..., K, L]`` IoU or DIoU-NMS score between xyxy ``first [..., K, 4]`` and ``second [..., L, 4]``."""
    a = first[..., :, None, :]
    b = second[..., None, :, :]
    inter_w = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    inter_h = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = inter_w * inter_h
    def area(boxes):
        return tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)

    union = area(first)[..., :, None] + area(second)[..., None, :] - inter
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


def _tiled_nms(boxes, scores, classes, config):
    """Greedy NMS of sorted candidates ``[B, K]`` tile by tile (see the module docstring);
    returns the first ``max_detections`` kept ``(boxes, scores, classes, count)``."""
    d, tile = config.max_detections, NMS_TILE
    batch, k = tf.shape(scores)[0], tf.shape(scores)[1]
    tiles = tf.maximum((k + tile - 1) // tile, 1)
    pad = tiles * tile - k
    boxes = tf.pad(boxes, [[0, 0], [0, pad], [0, 0]])
    scores = tf.pad(scores, [[0, 0], [0, pad]], constant_values=-1.0)
    classes = tf.pad(classes, [[0, 0], [0, pad]], constant_values=-1)
    threshold = config.iou_threshold

    def cond(i, kept_boxes, kept_scores, kept_classes, count):
        start = tf.minimum(i * tile, tiles * tile - 1)
        left = tf.reduce_any((count < d) & (scores[:, start] > config.score_threshold))
        return (i < tiles) & left

    def body(i, kept_boxes, kept_scores, kept_classes, count):
        start = i * tile
        t_boxes, t_scores = boxes[:, start : start + tile], scores[:, start : start + tile]
        t_classes = classes[:, start : start + tile]
        kept_mask = tf.range(d)[None, :] < count[:, None]
        by_kept = (cross_overlap(t_boxes, kept_boxes, config.method, config.beta) > threshold) & kept_mask[:, None]
        same_class = None
        if config.class_aware:
            by_kept &= tf.equal(t_classes[:, :, None], kept_classes[:, None, :])
            same_class = tf.equal(t_classes[:, :, None], t_classes[:, None, :])
        valid = (t_scores > config.score_threshold) & ~tf.reduce_any(by_kept, axis=2)
        keep = _greedy_keep(pairwise_overlap(t_boxes, config.method, config.beta), valid, same_class, threshold)
        # Append the tile's kept candidates after the kept ones, in order; keep the first d.
        every = tf.concat([kept_mask, keep], axis=1)
        n = d + tile
        key = tf.where(every, tf.cast(n - tf.range(n), tf.float32)[None], 0.0)
        _, picked = tf.math.top_k(key, k=d, sorted=True)
        chosen = tf.gather(every, picked, batch_dims=1)
        kept_boxes = tf.where(chosen[..., None], tf.gather(tf.concat([kept_boxes, t_boxes], 1), picked, batch_dims=1), 0.0)
        kept_scores = tf.where(chosen, tf.gather(tf.concat([kept_scores, t_scores], 1), picked, batch_dims=1), 0.0)
        kept_classes = tf.where(chosen, tf.gather(tf.concat([kept_classes, t_classes], 1), picked, batch_dims=1), -1)
        count = tf.minimum(count + tf.reduce_sum(tf.cast(keep, tf.int32), axis=1), d)
        return i + 1, kept_boxes, kept_scores, kept_classes, count

    state = (tf.constant(0), tf.zeros([batch, d, 4]), tf.zeros([batch, d]), -tf.ones([batch, d], tf.int32),
             tf.zeros([batch], tf.int32))
    _, kept_boxes, kept_scores, kept_classes, count = tf.while_loop(cond, body, state)
    return kept_boxes, kept_scores, kept_classes, count


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
    if config.pre_nms_top_k > DENSE_MAX_CANDIDATES:  # no [K, K] matrix for many candidates
        out_boxes, out_scores, out_classes, num = _tiled_nms(cand_boxes, cand_scores, cand_classes, config)
        return {"boxes": out_boxes, "scores": out_scores, "classes": out_classes, "num_detections": num}
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


def builtin_nms(boxes, scores, config=None):
    """NMS from TFLite builtin ops: ``boxes [B, N, 4]`` normalised xyxy, ``scores [B, N, C]``.

    Greedy and single-label only (``config.exportable``); the candidate count ``N`` must be
    static (a dynamic batch runs image by image in a ``tf.map_fn``). Each box keeps its best
    class, the ``pre_nms_top_k`` best are candidates; returns the dict of
    ``non_max_suppression`` with boxes clipped to [0, 1].
    """
    config = NMSConfig.coerce(config)
    if not config.exportable:
        raise ValueError(
            f"builtin_nms runs greedy single-label NMS (TFLite NON_MAX_SUPPRESSION_V5); "
            f"received method={config.method!r}, multi_label={config.multi_label}."
        )
    best = tf.reduce_max(scores, axis=-1)
    classes = tf.argmax(scores, axis=-1, output_type=tf.int32)
    if boxes.shape[0] is None:
        k = config.max_detections
        signature = {
            "boxes": tf.TensorSpec([k, 4], tf.float32),
            "scores": tf.TensorSpec([k], tf.float32),
            "classes": tf.TensorSpec([k], tf.int32),
            "num_detections": tf.TensorSpec([], tf.int32),
        }
        return tf.map_fn(lambda one: _builtin_one(*one, config), (boxes, best, classes),
                         fn_output_signature=signature)
    per_image = [_builtin_one(boxes[i], best[i], classes[i], config) for i in range(boxes.shape[0])]
    return {key: tf.stack([r[key] for r in per_image]) for key in per_image[0]}


def _builtin_one(boxes, scores, classes, config):
    k = config.max_detections
    count = boxes.shape[0]
    top = min(config.pre_nms_top_k, count)
    if top < count:
        scores, order = tf.math.top_k(scores, k=top, sorted=True)
        boxes, classes = tf.gather(boxes, order), tf.gather(classes, order)
    nms_boxes = tf.clip_by_value(boxes, *NMS_RANGE)
    if config.class_aware:
        nms_boxes = nms_boxes + tf.cast(classes, tf.float32)[:, None] * CLASS_SHIFT
    selected, _, valid = tf.raw_ops.NonMaxSuppressionV5(
        boxes=tf.gather(nms_boxes, [1, 0, 3, 2], axis=1),  # the op takes [y1, x1, y2, x2]
        scores=scores,
        max_output_size=k,
        iou_threshold=config.iou_threshold,
        score_threshold=config.score_threshold,
        soft_nms_sigma=0.0,
        pad_to_max_output_size=True,
    )
    # A float mask: slicing a bool tensor would raise the version of every STRIDED_SLICE in
    # the file to 3 (versions are per opcode), which the GPU delegate refuses in the body too.
    keep = tf.cast(tf.range(k) < valid, tf.float32)
    out_boxes = tf.clip_by_value(tf.gather(boxes, selected), 0.0, 1.0)
    out_classes = tf.cast(tf.gather(classes, selected) + 1, tf.float32) * keep - 1.0
    return {
        "boxes": tf.ensure_shape(out_boxes * tf.expand_dims(keep, 1), [k, 4]),
        "scores": tf.ensure_shape(tf.gather(scores, selected) * keep, [k]),
        "classes": tf.ensure_shape(tf.cast(out_classes, tf.int32), [k]),
        "num_detections": tf.reshape(valid, []),
    }


__all__ = [
    "CLASS_SHIFT", "DENSE_MAX_CANDIDATES", "METHODS", "NMS_RANGE", "NMS_TILE", "NMSConfig",
    "builtin_nms", "cross_overlap", "darknet_nms", "non_max_suppression", "pairwise_overlap",
]

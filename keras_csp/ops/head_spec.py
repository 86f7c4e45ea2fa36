"""The description of one YOLO output scale: geometry for decoding, options for the loss.

A detector's raw outputs are a list of ``[batch, H, W, A * (5 + C)]`` logits, one per scale;
``HeadSpec`` says how to read one of them (stride, anchors in input pixels, classes,
``scale_x_y``, ``new_coords``) and how to train it (the Darknet ``[yolo]`` loss options).
Defaults are Darknet's own defaults for a ``[yolo]`` section, so a spec built from a cfg
behaves as Darknet does with the same cfg.
"""

import dataclasses
import numbers

BOX_LOSSES = ("mse", "iou", "giou", "diou", "ciou")
# Darknet's ``nms_kind`` values that keras_csp's NMS reproduces ("default" and "greedynms"
# are IoU NMS, "diounms" is DIoU NMS with ``beta_nms``; "cornersnms" is not implemented).
NMS_KINDS = ("default", "greedynms", "diounms")


def _fail(field, expected, received):
    raise ValueError(f"HeadSpec `{field}` must be {expected}; received {received!r}.")


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One YOLO scale. ``anchors`` are ``(width, height)`` pairs in input-image pixels.

    Loss options (see docs/loss.md for the formulas and the Darknet mapping):
    ``iou_loss`` (``mse``, ``iou``, ``giou``, ``diou``, ``ciou``), ``iou_normalizer``,
    ``obj_normalizer``, ``cls_normalizer``, ``ignore_thresh`` (predictions whose best IoU
    with any ground truth exceeds it are not negatives), ``iou_thresh`` (anchors whose
    shape IoU with a ground truth exceeds it are positives too; 1.0 disables) and
    ``label_smoothing`` (Darknet's ``label_smooth_eps``: targets ``y (1 - e) + e / 2``).

    Darknet's per-layer matching pool: ``matching_anchors`` is the ``[yolo]`` section's whole
    ``anchors=`` list and ``anchor_indices`` its ``mask`` (``anchors == [matching_anchors[i]
    for i in anchor_indices]``). A ground truth whose best anchor in ``matching_anchors`` is
    one of this head's is a positive here (so one box can be a positive in two heads whose
    masks share an anchor, as in yolov4-tiny). Both None: the pool is ``YoloLoss``'s.
    ``nms_kind`` / ``beta_nms``: the section's NMS (see :func:`keras_csp.postprocess.nms.darknet_nms`).

    Beyond Darknet (off by default, so the paper's assignment stays the default): ``anchor_t``
    (YOLOv5's: every anchor of this head with ``max(w/a_w, a_w/w, h/a_h, a_h/h) < anchor_t``
    is a positive too; 0 disables) and ``neighbor_cells`` (YOLOv5's: the box is also a positive
    in the horizontal and the vertical neighbour cell nearest its centre; pair it with
    ``scale_x_y=2`` so that a neighbour's prediction can reach the centre) and ``obj_iou``
    (YOLOv5's ``gr``: a positive's objectness target is ``1 - obj_iou + obj_iou * IoU(pred,
    gt)``, the IoU not differentiated, so scores rank the tighter boxes first; 0: Darknet's 1).
    """

    stride: int
    anchors: tuple
    num_classes: int
    scale_x_y: float = 1.0
    new_coords: bool = False
    iou_loss: str = "mse"
    iou_normalizer: float = 0.75
    obj_normalizer: float = 1.0
    cls_normalizer: float = 1.0
    ignore_thresh: float = 0.5
    iou_thresh: float = 1.0
    label_smoothing: float = 0.0
    matching_anchors: tuple = None
    anchor_indices: tuple = None
    nms_kind: str = "default"
    beta_nms: float = 0.6
    anchor_t: float = 0.0
    neighbor_cells: bool = False
    obj_iou: float = 0.0

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if isinstance(self.stride, bool) or not isinstance(self.stride, numbers.Integral) or self.stride < 1:
            _fail("stride", "a positive int", self.stride)
        set_("stride", int(self.stride))
        try:
            anchors = tuple((float(w), float(h)) for w, h in self.anchors)
        except (TypeError, ValueError):
            _fail("anchors", "a sequence of (width, height) pairs in pixels", self.anchors)
        if not anchors or any(not (w > 0 and h > 0) for w, h in anchors):
            _fail("anchors", "a non-empty sequence of positive (width, height) pairs", self.anchors)
        set_("anchors", anchors)
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, numbers.Integral)
            or self.num_classes < 1
        ):
            _fail("num_classes", "a positive int", self.num_classes)
        set_("num_classes", int(self.num_classes))
        if not _is_number(self.scale_x_y) or not self.scale_x_y >= 1.0:
            _fail("scale_x_y", "a number >= 1 (1 disables grid sensitivity)", self.scale_x_y)
        if self.new_coords not in (0, 1, True, False):
            _fail("new_coords", "a bool", self.new_coords)
        set_("new_coords", bool(self.new_coords))
        if self.iou_loss not in BOX_LOSSES:
            _fail("iou_loss", f"one of {BOX_LOSSES}", self.iou_loss)
        for name in ("iou_normalizer", "obj_normalizer", "cls_normalizer"):
            value = getattr(self, name)
            if not _is_number(value) or not value >= 0:
                _fail(name, "a number >= 0", value)
        for name in ("ignore_thresh", "iou_thresh", "obj_iou"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                _fail(name, "a number in [0, 1]", value)
        if not _is_number(self.label_smoothing) or not 0.0 <= self.label_smoothing < 1.0:
            _fail("label_smoothing", "a number in [0, 1)", self.label_smoothing)
        if self.nms_kind not in NMS_KINDS:
            _fail("nms_kind", f"one of {NMS_KINDS}", self.nms_kind)
        if not _is_number(self.beta_nms) or not self.beta_nms > 0:
            _fail("beta_nms", "a number > 0", self.beta_nms)
        if not _is_number(self.anchor_t) or not (self.anchor_t == 0 or self.anchor_t > 1):
            _fail("anchor_t", "0 (off) or a wh ratio > 1 (YOLOv5: 4)", self.anchor_t)
        if self.neighbor_cells not in (0, 1, True, False):
            _fail("neighbor_cells", "a bool", self.neighbor_cells)
        set_("neighbor_cells", bool(self.neighbor_cells))
        for name in ("scale_x_y", "iou_normalizer", "obj_normalizer", "cls_normalizer",
                     "ignore_thresh", "iou_thresh", "label_smoothing", "beta_nms", "anchor_t", "obj_iou"):
            set_(name, float(getattr(self, name)))
        self._check_pool(set_)

    def _check_pool(self, set_):
        if (self.matching_anchors is None) != (self.anchor_indices is None):
            _fail("matching_anchors", "given together with `anchor_indices` (both or neither)",
                  self.matching_anchors)
        if self.matching_anchors is None:
            return
        try:
            pool = tuple((float(w), float(h)) for w, h in self.matching_anchors)
        except (TypeError, ValueError):
            _fail("matching_anchors", "a sequence of (width, height) pairs in pixels", self.matching_anchors)
        if not pool or any(not (w > 0 and h > 0) for w, h in pool):
            _fail("matching_anchors", "a non-empty sequence of positive (width, height) pairs",
                  self.matching_anchors)
        try:
            indices = tuple(int(i) for i in self.anchor_indices)
        except (TypeError, ValueError):
            _fail("anchor_indices", "a sequence of ints", self.anchor_indices)
        if any(not 0 <= i < len(pool) for i in indices):
            _fail("anchor_indices", f"indices into the {len(pool)} matching_anchors", self.anchor_indices)
        if len(set(indices)) != len(indices):
            _fail("anchor_indices", "distinct indices", self.anchor_indices)
        if tuple(pool[i] for i in indices) != self.anchors:
            _fail("anchor_indices", f"the positions of `anchors` {list(self.anchors)} in "
                  f"`matching_anchors` {list(pool)}", self.anchor_indices)
        set_("matching_anchors", pool)
        set_("anchor_indices", indices)

    @property
    def num_anchors(self):
        return len(self.anchors)

    @property
    def channels(self):
        """Channels of this scale's raw output: ``A * (5 + C)``."""
        return self.num_anchors * (5 + self.num_classes)

    def replace(self, **changes):
        """A copy with some fields changed (validated again). New ``anchors`` without a new
        pool drop the Darknet pool (it belonged to the old anchors)."""
        if "anchors" in changes and "matching_anchors" not in changes:
            changes = {**changes, "matching_anchors": None, "anchor_indices": None}
        return dataclasses.replace(self, **changes)

    def get_config(self):
        config = dataclasses.asdict(self)
        config["anchors"] = [list(a) for a in self.anchors]
        if self.matching_anchors is not None:
            config["matching_anchors"] = [list(a) for a in self.matching_anchors]
            config["anchor_indices"] = list(self.anchor_indices)
        return config

    @classmethod
    def from_config(cls, config):
        unknown = set(config) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"HeadSpec config has unknown keys {sorted(unknown)}; received {config!r}.")
        return cls(**config)

    @classmethod
    def coerce(cls, value):
        """A ``HeadSpec`` from a ``HeadSpec`` or its config dict."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls.from_config(value)
        raise TypeError(f"Expected a HeadSpec or a dict of its fields; received {type(value).__name__}: {value!r}.")

    @classmethod
    def from_darknet(cls, options, stride):
        """Deprecated: use :func:`keras_csp.darknet.yolo_head_spec` (the [yolo] parser lives in
        ``darknet``, above ``ops``; this alias stays for one release)."""
        import importlib
        import warnings

        warnings.warn("HeadSpec.from_darknet is deprecated; use keras_csp.darknet.yolo_head_spec(options, stride)",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module("keras_csp.darknet.spec").yolo_head_spec(options, stride)


def all_anchors(heads):
    """The anchors of all ``heads`` in order: the pool a ground truth picks its best from."""
    return tuple(anchor for head in heads for anchor in head.anchors)


__all__ = ["BOX_LOSSES", "NMS_KINDS", "HeadSpec", "all_anchors"]

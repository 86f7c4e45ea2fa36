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

# [yolo] keys we read; their HeadSpec field names.
_DARKNET_KEYS = {
    "classes": "num_classes",
    "scale_x_y": "scale_x_y",
    "new_coords": "new_coords",
    "iou_loss": "iou_loss",
    "iou_normalizer": "iou_normalizer",
    "obj_normalizer": "obj_normalizer",
    "cls_normalizer": "cls_normalizer",
    "ignore_thresh": "ignore_thresh",
    "iou_thresh": "iou_thresh",
    "label_smooth_eps": "label_smoothing",
}
# [yolo] keys that change training in ways this loss does not reproduce, with their no-op values.
_DARKNET_UNSUPPORTED = {
    "truth_thresh": 1.0,
    "objectness_smooth": 0.0,
    "focal_loss": 0.0,
    "iou_thresh_kind": "iou",
    "counters_per_class": None,
}


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
        for name in ("ignore_thresh", "iou_thresh"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                _fail(name, "a number in [0, 1]", value)
        if not _is_number(self.label_smoothing) or not 0.0 <= self.label_smoothing < 1.0:
            _fail("label_smoothing", "a number in [0, 1)", self.label_smoothing)
        for name in ("scale_x_y", "iou_normalizer", "obj_normalizer", "cls_normalizer",
                     "ignore_thresh", "iou_thresh", "label_smoothing"):
            set_(name, float(getattr(self, name)))

    @property
    def num_anchors(self):
        return len(self.anchors)

    @property
    def channels(self):
        """Channels of this scale's raw output: ``A * (5 + C)``."""
        return self.num_anchors * (5 + self.num_classes)

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def get_config(self):
        config = dataclasses.asdict(self)
        config["anchors"] = [list(a) for a in self.anchors]
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
        """Build a spec from a parsed Darknet ``[yolo]`` section (a dict of option strings).

        ``anchors`` lists all anchors, ``mask`` picks this scale's (all when absent).
        Options that only affect data loading or NMS (``jitter``, ``random``, ``nms_kind``,
        ``beta_nms``, ...) are ignored, as is ``max_delta`` (Darknet's gradient clip; this
        loss is NaN-free without it). Options whose training behaviour this loss does not
        reproduce raise ``ValueError`` unless they hold their no-op value.
        """
        def number(key, text):
            try:
                return float(str(text).strip())
            except ValueError:
                raise ValueError(f"[yolo] option `{key}` must be a number; received {text!r}.") from None

        if "anchors" not in options:
            raise ValueError(f"[yolo] section needs `anchors`; received keys {sorted(options)}.")
        values = [number("anchors", v) for v in str(options["anchors"]).split(",") if v.strip()]
        if len(values) % 2:
            raise ValueError(f"[yolo] `anchors` must hold (w, h) pairs; received {options['anchors']!r}.")
        all_anchors = list(zip(values[0::2], values[1::2]))
        if "mask" in options and str(options["mask"]).strip():
            try:
                mask = [int(v) for v in str(options["mask"]).split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"[yolo] `mask` must be anchor indices; received {options['mask']!r}.") from None
            if any(not 0 <= m < len(all_anchors) for m in mask):
                raise ValueError(
                    f"[yolo] `mask` {mask} indexes outside the {len(all_anchors)} anchors."
                )
        else:
            mask = list(range(len(all_anchors)))
        for key, neutral in _DARKNET_UNSUPPORTED.items():
            if key not in options:
                continue
            value = options[key]
            if isinstance(neutral, str):
                supported = str(value).strip() == neutral
            else:
                supported = neutral is not None and number(key, value) == neutral
            if not supported:
                raise ValueError(
                    f"[yolo] option `{key}={value}` is not supported by keras_csp's YOLO loss "
                    f"(see docs/loss.md)."
                )
        kwargs = {"stride": stride, "anchors": [all_anchors[m] for m in mask]}
        for key, field in _DARKNET_KEYS.items():
            if key not in options:
                continue
            text = str(options[key]).strip()
            if field == "iou_loss":
                kwargs[field] = text
            elif field == "num_classes":
                kwargs[field] = int(number(key, text))
            elif field == "new_coords":
                kwargs[field] = bool(int(number(key, text)))
            else:
                kwargs[field] = number(key, text)
        if "num_classes" not in kwargs:
            kwargs["num_classes"] = 20  # Darknet's default `classes`
        return cls(**kwargs)


def all_anchors(heads):
    """The anchors of all ``heads`` in order: the pool a ground truth picks its best from."""
    return tuple(anchor for head in heads for anchor in head.anchors)


__all__ = ["BOX_LOSSES", "HeadSpec", "all_anchors"]

"""Build the detector a run asks for, from a name, and its anchors.

``model`` follows the one name grammar of :func:`keras_csp.registry.build`:

- a named detector of ``keras_csp.detectors.DETECTORS`` (``CSPDarknet53-PANet-SPP``, ...);
- ``BACKBONE+NECK``: any registered backbone with any neck of
  ``keras_csp.detectors.necks.NECKS`` (``CSPResNeXt50+panet_spp``);
- ``package.module:function``: your own factory, called as
  ``function(num_classes=..., input_shape=..., anchors=..., head_options=...)`` (plus
  ``backbone_weights=`` / ``nms=`` when given) and returning a ``keras_csp`` Detector.
"""

import numpy as np

import keras_csp.load as load  # noqa: PLR0402  (the module, not keras_csp/__init__)
import keras_csp.registry as registry  # noqa: PLR0402  (the module, not keras_csp/__init__)
from keras_csp.detectors.builders import DETECTORS
from keras_csp.detectors.heads import YOLOV3_ANCHORS
from keras_csp.detectors.necks import NECKS, get_neck


def parse_anchors(text):
    """``"10,13, 16,30, 33,23; 30,61, ..."`` (levels split by ``;``) -> per-level pairs."""
    levels = []
    for part in str(text).split(";"):
        values = [float(v) for v in part.replace(",", " ").split()]
        if len(values) % 2 or not values:
            raise ValueError(f"anchors {text!r}: each level needs an even count of numbers (w, h pairs)")
        levels.append(tuple((values[i], values[i + 1]) for i in range(0, len(values), 2)))
    return tuple(levels)


def parse_head_options(text):
    """``"iou_loss=ciou, iou_normalizer=0.07"`` (or a dict) -> ``{"iou_loss": "ciou", ...}``."""
    if text is None or isinstance(text, dict):
        return text
    options = {}
    for item in str(text).split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"head options {text!r}: expected key=value items, found {item.strip()!r}")
        value = value.strip()
        try:
            value = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            value = {"true": True, "false": False}.get(value.lower(), value)
        options[key.strip()] = value
    return options


def _iou_wh(boxes, anchors):
    inter = np.minimum(boxes[:, None, 0], anchors[None, :, 0]) * np.minimum(boxes[:, None, 1], anchors[None, :, 1])
    union = boxes[:, None, 0] * boxes[:, None, 1] + anchors[None, :, 0] * anchors[None, :, 1] - inter
    return inter / union


def kmeans_anchors(wh, count, iterations=100, seed=0):
    """``count`` anchors (w, h) clustering box sizes ``wh [N, 2]`` with 1 - IoU as distance
    (Darknet's ``calc_anchors``); sorted by area."""
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(axis=1)]
    if len(wh) < count:
        raise ValueError(f"need at least {count} boxes to fit {count} anchors; received {len(wh)}")
    rng = np.random.default_rng(seed)
    centres = wh[rng.choice(len(wh), count, replace=False)]
    for _ in range(iterations):
        assign = _iou_wh(wh, centres).argmax(axis=1)
        new = np.array([np.median(wh[assign == k], axis=0) if (assign == k).any() else centres[k] for k in range(count)])
        if np.allclose(new, centres):
            break
        centres = new
    return centres[np.argsort(centres.prod(axis=1))]


def anchors_from_dataset(dataset, image_size, levels, per_level=3, max_batches=50):
    """Fit anchors to the boxes of an evaluation-form dataset (letterboxed to ``image_size``);
    returns one tuple of ``per_level`` (w, h) pixel pairs per level, smallest first."""
    wh = []
    for step, (_, meta) in enumerate(dataset):
        if step >= max_batches:
            break
        boxes = meta["boxes"].numpy().reshape(-1, 5)
        boxes = boxes[boxes[:, 4] >= 0]
        wh.append((boxes[:, 2:4] - boxes[:, 0:2]) * image_size)
    anchors = kmeans_anchors(np.concatenate(wh), levels * per_level)
    rounded = [tuple(round(float(v), 1) for v in a) for a in anchors]
    return tuple(tuple(rounded[i * per_level:(i + 1) * per_level]) for i in range(levels))


def scaled_default_anchors(image_size, levels=3):
    """YOLOv3's COCO anchors (made for 416) scaled to ``image_size``."""
    if levels != 3:
        return None
    s = image_size / 416.0
    return tuple(tuple((round(w * s, 1), round(h * s, 1)) for w, h in lvl) for lvl in YOLOV3_ANCHORS)


def neck_output_count(neck):
    """Output scales of a neck (a name of ``NECKS`` or a neck object)."""
    return len(getattr(get_neck(neck), "levels", ())) or 3


def model_levels(name, num_classes=1, image_size=None):
    """How many output scales the model ``name`` has (for fitting anchors); a factory
    (``module:function``) is built once to find out."""
    if name in DETECTORS:
        return neck_output_count(DETECTORS[name].neck)
    if "+" in name:
        return neck_output_count(name.split("+", 1)[1])
    return len(build_model(name, num_classes, image_size or 256).heads)


def build_model(name, num_classes, image_size, anchors=None, head_options=None, backbone_weights=None,
                weights=None, nms=None):
    """The detector ``name`` (see the module docstring) for ``num_classes`` at ``image_size``.

    ``name`` is resolved by :func:`keras_csp.registry.build` (one grammar for every tool);
    ``head_options`` go key by key over a named detector's own. ``weights``: a Keras weights
    file, a Darknet file of the detector (or, for a named detector, a registry name / alias such
    as ``coco``), loaded after building by :func:`load_weights`. ``backbone_weights``: weights
    of the backbone alone.
    """
    name = str(name)
    if registry.kind_of(name) in ("backbone", "variant"):
        raise ValueError(f"model {name!r} is a backbone; a detector on it is BACKBONE+NECK, e.g. "
                         f"{name}+panet_spp (necks: {', '.join(sorted(NECKS))})")
    kwargs = dict(num_classes=num_classes, input_shape=(image_size, image_size, 3), anchors=anchors,
                  head_options=parse_head_options(head_options))
    # A factory (module:function) is called with these four; the rest only when given.
    kwargs.update({k: v for k, v in (("backbone_weights", backbone_weights), ("nms", nms)) if v is not None})
    detector = registry.build(name, **kwargs)
    if weights:
        load_weights(detector, weights, model=name if name in DETECTORS else None)
    return detector


def load_weights(detector, path, model=None):
    """Load weights into ``detector`` (:func:`keras_csp.load.load_weights`): a Keras weights
    file, a Darknet file (the blocks that fit; prediction convs for other classes re-created,
    reported: fine-tuning), or for a named detector ``model`` a registry name or alias (``coco``,
    ``conv.29``; keras_csp.weights)."""
    return load.load_weights(detector, path, name=model)


__all__ = ["anchors_from_dataset", "build_model", "kmeans_anchors", "load_weights", "model_levels",
           "parse_anchors", "parse_head_options", "scaled_default_anchors"]

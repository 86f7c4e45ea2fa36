"""What an exported file computes: the model call, with optional letterbox, decode and NMS.

Everything here runs inside a ``tf.function`` traced at a fixed input size, so shapes are
static and TFLite gets plain builtin ops. The numbers follow the rest of the library:

- letterbox as ``keras_csp.data`` evaluation pipelines (bilinear resize of the 0-255 image,
  rounded to uint8 levels, centred on grey 114, then / 255);
- decode with ``keras_csp.ops.decode``;
- NMS as ``keras_csp.detectors`` ``NMSConfig`` defaults (greedy, class-aware, each box keeps
  its best class, ``score = objectness x class probability > score_threshold``, the
  ``pre_nms_top_k`` best candidates, suppressed when IoU > ``iou_threshold``), built from
  TOPK_V2 + NON_MAX_SUPPRESSION_V5 so that TFLite runs it with builtin kernels.

Boxes are ``[x_min, y_min, x_max, y_max]``: normalised to the model input (clipped to
[0, 1]) without letterbox, in pixels of the given image (clipped) with it.
"""

import dataclasses
import numbers

from keras_csp.backend import keras, tf

PAD_VALUE = 114  # letterbox grey (uint8), keras_csp.data.structure.PAD_VALUE
INPUT_TYPES = ("float32", "uint8")
# NMS separates classes by shifting boxes class * CLASS_SHIFT apart, after clipping their
# coordinates to NMS_RANGE (normalised units); boxes reaching further than 2 image sizes
# outside the image are the only ones whose overlap this changes.
NMS_RANGE = (-2.0, 3.0)
CLASS_SHIFT = 8.0


def network_of(model):
    """The functional network to export: ``model`` or, for a ``Detector``, ``model.detector``."""
    inner = getattr(model, "detector", None)
    if isinstance(inner, keras.Model) and getattr(inner, "inputs", None):
        return inner
    return model


def resolve_input_size(model, input_size=None):
    """``(height, width)`` of the exported input: ``input_size`` or the model's static shape."""
    if input_size is not None:
        if isinstance(input_size, numbers.Integral):
            input_size = (int(input_size), int(input_size))
        try:
            height, width = (int(v) for v in input_size)
        except (TypeError, ValueError):
            raise ValueError(
                f"input_size must be an int or (height, width); received {input_size!r}."
            ) from None
        if height < 1 or width < 1:
            raise ValueError(f"input_size must be positive; received {input_size!r}.")
        return height, width
    shape = input_shape(model)
    if shape[1] is None or shape[2] is None:
        raise ValueError(
            f"The model input {tuple(shape)} has no static height/width; pass "
            "input_size=(height, width)."
        )
    return int(shape[1]), int(shape[2])


def input_shape(model):
    inputs = getattr(network_of(model), "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(
            f"Export needs a functional model with exactly one image input; {model.name!r} "
            f"has {len(inputs) if inputs else 'no symbolic'} input(s)."
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[3] != 3:
        raise ValueError(
            f"Export needs an NHWC RGB image input (batch, height, width, 3); {model.name!r} "
            f"takes {shape}."
        )
    return shape


def check_input_type(input_type, argument="input_type"):
    if input_type not in INPUT_TYPES:
        raise ValueError(f"{argument} must be one of {INPUT_TYPES}; received {input_type!r}.")
    return input_type


@dataclasses.dataclass(frozen=True)
class Postprocess:
    """Decode + NMS settings (the exported subset of ``keras_csp.detectors.NMSConfig``)."""

    heads: tuple
    max_detections: int = 100
    iou_threshold: float = 0.45
    score_threshold: float = 0.25
    class_aware: bool = True
    pre_nms_top_k: int = 1000

    def __post_init__(self):
        if not self.heads:
            raise ValueError("Decoding and NMS need the detector's head specs; received none.")
        for name in ("max_detections", "pre_nms_top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive int; received {value!r}.")
        for name in ("iou_threshold", "score_threshold"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; received {value!r}.")

    def sidecar(self):
        return {"max_detections": int(self.max_detections),
                "iou_threshold": float(self.iou_threshold),
                "score_threshold": float(self.score_threshold),
                "class_aware": bool(self.class_aware),
                "pre_nms_top_k": int(self.pre_nms_top_k)}


def postprocess_from(model, heads, max_detections=None, iou_threshold=None,
                     score_threshold=None):
    """``Postprocess`` from explicit values, else the model's ``nms_config``, else defaults."""
    config = getattr(model, "nms_config", None)
    if config is not None and (getattr(config, "method", "greedy") != "greedy"
                               or getattr(config, "multi_label", False)):
        raise ValueError(
            f"{model.name!r} predicts with NMS method={config.method!r}, "
            f"multi_label={config.multi_label}; exported NMS is greedy single-label "
            "(TFLite NON_MAX_SUPPRESSION_V5). Export without NMS and run it in the app, or "
            "set the detector's nms_config to the greedy defaults."
        )

    def pick(value, field, default):
        if value is not None:
            return value
        return getattr(config, field, default) if config is not None else default

    return Postprocess(
        tuple(heads),
        pick(max_detections, "max_detections", 100),
        pick(iou_threshold, "iou_threshold", 0.45),
        pick(score_threshold, "score_threshold", 0.25),
        getattr(config, "class_aware", True) if config is not None else True,
        getattr(config, "pre_nms_top_k", 1000) if config is not None else 1000,
    )


def coerce_heads(heads):
    """A tuple of ``HeadSpec`` from HeadSpecs or their config dicts (None stays None)."""
    if heads is None:
        return None
    from keras_csp.ops.head_spec import HeadSpec

    return tuple(HeadSpec.coerce(h) for h in heads)


def heads_of(model):
    """The head specs a detector carries (``model.heads`` or ``model.head_specs``), or None."""
    for attribute in ("heads", "head_specs"):
        heads = getattr(model, attribute, None)
        if heads:
            try:
                return coerce_heads(heads)
            except (TypeError, ValueError):
                continue
    return None


def output_names(model, heads=None):
    """Names of the raw outputs in the exported signature, in model output order."""
    network = network_of(model)
    outputs = network.outputs
    if isinstance(network.output, dict):
        return list(network.output_names)
    if heads is not None and len(heads) == len(outputs):
        names = [f"stride{h.stride}" for h in heads]
        if len(set(names)) == len(names):
            return names
    if len(outputs) == 1:
        return ["output"]
    return [f"output_{i}" for i in range(len(outputs))]


def call_model(model, images):
    """The network's outputs on ``images`` as a list in output order."""
    network = network_of(model)
    outputs = network(images, training=False)
    if isinstance(outputs, dict):
        return [outputs[name] for name in network.output_names]
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def to_unit_float(images):
    """uint8 pixels to float32 in [0, 1]; floats pass through as float32."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def letterbox(images, size, pad_value=PAD_VALUE):
    """Fit ``images`` ``[B, H0, W0, 3]`` (uint8, or floats in [0, 1]) into ``size`` = (h, w).

    Bilinear resize (half-pixel centres, no antialiasing) of the 0-255 values to
    ``round(H0 * r), round(W0 * r)`` with ``r = min(h / H0, w / W0)``, rounded to uint8
    levels, centred on ``pad_value``; as ``keras_csp.data.augment.letterbox``. Returns
    ``(float32 images in [0, 1], scale [2] (sx, sy), offset [2] (left, top))``.
    """
    height, width = size
    pixels = tf.cast(images, tf.float32)
    if images.dtype != tf.uint8:
        pixels = pixels * 255.0
    shape = tf.shape(images)
    in_h, in_w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    ratio = tf.minimum(height / in_h, width / in_w)
    new_h = tf.clip_by_value(tf.cast(tf.round(in_h * ratio), tf.int32), 1, height)
    new_w = tf.clip_by_value(tf.cast(tf.round(in_w * ratio), tf.int32), 1, width)
    resized = tf.image.resize(pixels, tf.stack([new_h, new_w]), method="bilinear",
                              antialias=False)
    resized = tf.clip_by_value(tf.round(resized), 0.0, 255.0)
    top = (height - new_h) // 2
    left = (width - new_w) // 2
    padded = tf.pad(resized, [[0, 0], [top, height - new_h - top], [left, width - new_w - left],
                              [0, 0]], constant_values=float(pad_value))
    padded = tf.ensure_shape(padded / 255.0, [None, height, width, 3])
    scale = tf.stack([tf.cast(new_w, tf.float32) / in_w, tf.cast(new_h, tf.float32) / in_h])
    offset = tf.cast(tf.stack([left, top]), tf.float32)
    return padded, scale, offset


def undo_letterbox(boxes, size, scale, offset, image_hw):
    """Normalised model-input boxes ``[..., 4]`` to pixels of the original image (clipped)."""
    height, width = size
    pixels = boxes * tf.constant([width, height, width, height], tf.float32)
    pixels = (pixels - tf.tile(offset, [2])) / tf.tile(scale, [2])
    limit = tf.cast(tf.stack([image_hw[1], image_hw[0], image_hw[1], image_hw[0]]), tf.float32)
    return tf.clip_by_value(pixels, 0.0, limit)


def detect(raw_outputs, post, input_size):
    """Decode the raw head outputs and run NMS; the batch dimension must be static.

    Returns ``boxes [B, K, 4]`` (normalised to the model input, clipped to [0, 1]),
    ``scores [B, K]``, ``classes [B, K]`` (int32, -1 for padding) and ``num_detections [B]``
    with ``K = post.max_detections``.
    """
    from keras_csp.ops.decode import decode_heads

    decoded = decode_heads(raw_outputs, list(post.heads), input_size)
    scores_all = decoded["objectness"][..., None] * decoded["class_probs"]
    best = tf.reduce_max(scores_all, axis=-1)
    classes = tf.argmax(scores_all, axis=-1, output_type=tf.int32)
    batch = raw_outputs[0].shape[0]
    per_image = [
        _nms_one(decoded["boxes"][i], best[i], classes[i], post) for i in range(batch)
    ]
    return {key: tf.stack([r[key] for r in per_image]) for key in per_image[0]}


def _nms_one(boxes, scores, classes, post):
    k = int(post.max_detections)
    count = boxes.shape[0]
    top = min(int(post.pre_nms_top_k), count)
    if top < count:
        scores, order = tf.math.top_k(scores, k=top, sorted=True)
        boxes, classes = tf.gather(boxes, order), tf.gather(classes, order)
    nms_boxes = tf.clip_by_value(boxes, *NMS_RANGE)
    if post.class_aware:
        nms_boxes = nms_boxes + tf.cast(classes, tf.float32)[:, None] * CLASS_SHIFT
    selected, _, valid = tf.raw_ops.NonMaxSuppressionV5(
        boxes=tf.gather(nms_boxes, [1, 0, 3, 2], axis=1),  # the op takes [y1, x1, y2, x2]
        scores=scores,
        max_output_size=k,
        iou_threshold=float(post.iou_threshold),
        score_threshold=float(post.score_threshold),
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

"""What an exported file computes: the model call, with optional letterbox, decode and NMS.

Everything here runs inside a ``tf.function`` traced at a fixed input size, so shapes are
static and TFLite gets plain builtin ops. The numbers are those of the rest of the library,
from :mod:`keras_csp.postprocess`: its ``letterbox`` (as ``keras_csp.data`` evaluation
pipelines) and ``postprocess`` with the ``"builtin"`` NMS kernel (greedy, class-aware, each
box keeps its best class, ``score = objectness x class probability > score_threshold``, the
``pre_nms_top_k`` best candidates, suppressed when IoU > ``iou_threshold``, from TOPK_V2 +
NON_MAX_SUPPRESSION_V5 so that TFLite runs it with builtin kernels), with the detector's
``NMSConfig``.

Boxes are ``[x_min, y_min, x_max, y_max]``: normalised to the model input (clipped to
[0, 1]) without letterbox, in pixels of the given image (clipped) with it.
"""

import numbers

from keras_csp.backend import tf
from keras_csp.detectors.detector import network_of
from keras_csp.ops.head_spec import HeadSpec
from keras_csp.postprocess.geometry import PAD_VALUE  # noqa: F401  (the sidecar's pad_value)
from keras_csp.postprocess.nms import NMSConfig

INPUT_TYPES = ("float32", "uint8")


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


def nms_from(model, max_detections=None, iou_threshold=None, score_threshold=None):
    """The exported ``NMSConfig``: the model's own (``model.nms``) with explicit values on top.

    Exported NMS is greedy and single-label (TFLite NON_MAX_SUPPRESSION_V5); a detector set
    to DIoU or multi-label NMS is refused rather than exported with different boxes.
    """
    config = getattr(model, "nms", None)
    config = config if isinstance(config, NMSConfig) else NMSConfig()
    if not config.exportable:
        raise ValueError(
            f"{model.name!r} predicts with NMS method={config.method!r}, "
            f"multi_label={config.multi_label}; exported NMS is greedy single-label "
            "(TFLite NON_MAX_SUPPRESSION_V5). Export without NMS and run it in the app, or "
            "set the detector's nms to the greedy defaults."
        )
    changes = {"max_detections": max_detections, "iou_threshold": iou_threshold,
               "score_threshold": score_threshold}
    return config.replace(**{k: v for k, v in changes.items() if v is not None})


def coerce_heads(heads):
    """A tuple of ``HeadSpec`` from HeadSpecs or their config dicts (None stays None)."""
    if heads is None:
        return None
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

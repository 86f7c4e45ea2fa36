"""``to_tflite``: a .tflite file of builtin ops only (never Flex), fp32 / fp16 / int8 / QAT.

Traps avoided (measured with TF 2.21): ``TFLiteConverter.from_concrete_functions`` writes a
file that reads live resource variables and holds no weights, and
``model.export(format="litert")`` turns SELECT_TF_OPS on. Here the model is traced into a
SavedModel with a fixed batch of 1 and converted with ``from_saved_model`` and builtin op
sets only; the result is loaded and run once with LiteRT's interpreter before the file is
written, so a failed export leaves nothing at ``path``.
"""

import dataclasses
import json
import os
import re
import shutil

import numpy as np

from keras_csp.backend import tf
from keras_csp.export import _files, calibration, saved_model, serving
from keras_csp.export.gpu_check import check_gpu_compatibility

QUANTIZE_MODES = (None, "float16", "dynamic", "int8", "qat")
NMS_MODES = ("none", "builtin")
INTEGER_TYPES = ("int8", "uint8")
SIDECAR_FORMAT = "keras_csp.tflite/1"


class ExportError(RuntimeError):
    """The model cannot be converted (an op with no TFLite builtin, a bad graph, ...)."""


@dataclasses.dataclass
class TFLiteExport:
    """What ``to_tflite`` wrote: the file, its sidecar and the GPU-delegate report."""

    path: str
    sidecar_path: str
    size_bytes: int
    sidecar: dict
    gpu_report: object


def _check_choice(value, choices, argument):
    if value not in choices:
        raise ValueError(f"{argument} must be one of {choices}; received {value!r}.")
    return value


def _is_quantize_aware(model):
    return any(type(layer).__name__ in ("QuantizeWrapper", "QuantizeWrapperV2",
                                        "QuantizeLayer") for layer in _all_layers(model))


def _all_layers(model):
    stack, seen = list(getattr(model, "layers", [])), []
    while stack:
        layer = stack.pop(0)
        seen.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return seen


def _converter(saved_model_dir, quantize, samples, input_type, output_type, nms):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=["serving_default"])
    builtins = tf.lite.OpsSet.TFLITE_BUILTINS
    converter.target_spec.supported_ops = [builtins]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize in ("int8", "qat"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if samples is not None:
            converter.representative_dataset = lambda: ([s] for s in samples)
        if quantize == "int8":
            int8 = tf.lite.OpsSet.TFLITE_BUILTINS_INT8
            # NMS has no int8 kernel: with it, float fallbacks are allowed (still no Flex).
            converter.target_spec.supported_ops = [int8] if nms == "none" else [int8, builtins]
        converter.inference_input_type = {"float32": tf.float32, "uint8": tf.uint8,
                                          "int8": tf.int8}[input_type]
        converter.inference_output_type = {"float32": tf.float32, "uint8": tf.uint8,
                                           "int8": tf.int8}[output_type]
    converter.allow_custom_ops = False
    return converter


def _conversion_error(model, error):
    text = str(error)
    ops = re.findall(r"'tf\.(\w+)' op is neither", text)
    select = re.search(r"TF Select ops: ([^\n]+)", text)
    if select:
        ops += [o.strip() for o in select.group(1).split(",")]
    layers = re.findall(r'"[\w.]+/([^/"]+?)(?:_\d+)?/[^"]*@__inference', text)
    names = {layer.name for layer in _all_layers(model)}
    layers = [layer for layer in dict.fromkeys(layers) if layer in names] or list(
        dict.fromkeys(layers))
    if ops:
        where = f" in layer(s) {', '.join(layers)}" if layers else ""
        return ExportError(
            f"Cannot convert {model.name!r} to TFLite builtin ops: TensorFlow op(s) "
            f"{', '.join(dict.fromkeys(ops))}{where} have no TFLite builtin kernel. Flex "
            "(SELECT_TF_OPS) is never enabled by keras_csp, since it needs the TF runtime on "
            "the device and never runs on the GPU; rewrite the layer with builtin ops."
        )
    first = next((line for line in text.splitlines() if "error" in line.lower()), text[:500])
    return ExportError(f"TFLite conversion of {model.name!r} failed: {first.strip()}")


def _verify(content, model_name):
    """Load the flatbuffer with LiteRT, reject Flex / custom ops, run it once on zeros."""
    from ai_edge_litert.interpreter import Interpreter

    report = check_gpu_compatibility(content)
    flex = [f.op for f in report.findings if f.kind in ("flex", "custom")]
    if flex:
        raise ExportError(f"The converted {model_name!r} holds custom / Flex ops {flex}.")
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    return interpreter


def _quantization(detail):
    scale, zero_point = detail["quantization"]
    if not scale:
        return None
    return {"scale": float(scale), "zero_point": int(zero_point)}


def _sidecar(model, path, config, quantize, nms, interpreter, labels_file):
    runner = interpreter.get_signature_runner("serving_default")
    inputs = runner.get_input_details()
    outputs = runner.get_output_details()
    image = inputs["images"]
    heads = config.heads
    post = config.nms
    if post is None and heads is not None:  # thresholds for apps doing NMS themselves
        post = serving.nms_from(model)
    output_order = (["boxes", "scores", "classes", "num_detections"] if nms == "builtin"
                    else list(config.names))
    return {
        "format": SIDECAR_FORMAT,
        "model": model.name,
        "file": os.path.basename(path),
        "signature": "serving_default",
        "quantize": quantize or "none",
        "input": {
            "name": "images",
            "shape": [int(d) for d in image["shape"]],
            "dtype": np.dtype(image["dtype"]).name,
            "layout": "NHWC",
            "color": "RGB",
            "normalization": "pixels / 255 (float input in [0, 1])",
            "quantization": _quantization(image),
            "letterbox": {"resize": "bilinear", "pad_value": serving.PAD_VALUE,
                          "centered": True},
        },
        "outputs": [
            {"name": name, "shape": [int(d) for d in outputs[name]["shape"]],
             "dtype": np.dtype(outputs[name]["dtype"]).name,
             "quantization": _quantization(outputs[name])}
            for name in output_order
        ],
        "heads": None if heads is None else [
            {"stride": h.stride, "anchors": [list(a) for a in h.anchors],
             "num_classes": h.num_classes, "scale_x_y": h.scale_x_y,
             "new_coords": h.new_coords}
            for h in heads
        ],
        "postprocess": {
            "nms": nms,
            "box_format": "xyxy, normalised to the model input",
            "score": "sigmoid(objectness) * sigmoid(class logit), best class per box",
            **(post.sidecar() if post is not None else {}),
        },
        "labels": labels_file,
    }


def _sidecar_path(path):
    root, _ = os.path.splitext(path)
    return root + ".json"


def _pin_input_range(samples):
    """Add one sample whose input spans exactly [0, 1], so uint8 input means pixel / 255."""
    anchor = samples[0].copy()
    anchor.reshape(-1)[0] = 0.0
    anchor.reshape(-1)[-1] = 1.0
    return [anchor] + list(samples)


def to_tflite(model, path, *, quantize=None, representative_data=None,
              num_calibration_samples=calibration.DEFAULT_SAMPLES, input_type="float32",
              output_type="float32", nms="none", heads=None, input_size=None,
              max_detections=None, iou_threshold=None, score_threshold=None, labels=None,
              write_sidecar=True):
    """Convert ``model`` to a .tflite file with builtin ops only and a JSON sidecar.

    - ``quantize``: None (float32), ``"float16"`` (fp16 weights), ``"dynamic"`` (int8
      weights, float activations), ``"int8"`` (full-integer post-training quantization,
      calibrated on ``representative_data``: about 200 real letterboxed images, see
      ``calibration``) or ``"qat"`` (a model made by ``keras_csp.export.qat``, trained with
      fake quantization; converted to int8).
    - ``input_type`` / ``output_type``: ``"float32"``, or with int8/qat ``"uint8"`` /
      ``"int8"`` (a uint8 input is the raw 0-255 pixel: scale 1/255, zero point 0).
    - ``nms``: ``"none"`` (raw per-scale outputs, named ``stride8`` ...; decode and NMS on the
      CPU, e.g. ``tflite/detect.py``) or ``"builtin"`` (decode + NON_MAX_SUPPRESSION_V5 in
      the file: outputs ``boxes`` normalised xyxy, ``scores``, ``classes``,
      ``num_detections``; those tail ops run on the CPU, not the GPU delegate).
    - ``input_size``: ``(height, width)`` to export at (default: the model's input shape).
    - ``labels``: class names, written to ``<name>.labels.txt`` beside the file.

    All arguments and the calibration data are checked before conversion; nothing is
    written unless conversion and a test run succeed. Returns a ``TFLiteExport`` with the
    GPU-delegate report of the file (``result.gpu_report``).
    """
    path = os.fspath(path)
    _check_choice(quantize, QUANTIZE_MODES, "quantize")
    _check_choice(nms, NMS_MODES, "nms")
    _check_choice(input_type, ("float32",) + INTEGER_TYPES, "input_type")
    _check_choice(output_type, ("float32",) + INTEGER_TYPES, "output_type")
    integer_io = input_type != "float32" or output_type != "float32"
    if integer_io and quantize not in ("int8", "qat"):
        raise ValueError(
            f"input_type={input_type!r} / output_type={output_type!r} need quantize='int8' or "
            f"'qat'; a {quantize or 'float32'} model takes and returns float32 (feed pixels "
            "/ 255: a uint8 -> float CAST would keep the GPU delegate off the input)."
        )
    if output_type != "float32" and nms == "builtin":
        raise ValueError("nms='builtin' returns float boxes and scores; use output_type="
                         "'float32'.")
    if quantize == "qat" and not _is_quantize_aware(model):
        raise ValueError(
            f"quantize='qat' needs a quantization-aware model (keras_csp.export.qat."
            f"quantize_aware, then fit); {model.name!r} has no QuantizeWrapper layers."
        )
    if quantize in ("float16", "dynamic", None) and representative_data is not None:
        raise ValueError(f"representative_data is only used by quantize='int8' or 'qat'; "
                         f"received it with quantize={quantize!r}.")
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs representative_data: about "
            f"{calibration.DEFAULT_SAMPLES} real images letterboxed to the input size "
            "(keras_csp.export.calibration_images(folder, input_size))."
        )
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise FileNotFoundError(f"Cannot write {path}: its folder does not exist.")
    config = saved_model.serving_config(
        model, input_size, "float32", False, nms == "builtin", heads, max_detections,
        iou_threshold, score_threshold, batch_size=1)
    if labels is not None and config.heads is not None and len(labels) != (
            config.heads[0].num_classes):
        raise ValueError(f"Got {len(labels)} labels for {config.heads[0].num_classes} "
                         "classes; give one name per class.")
    samples = None
    if representative_data is not None:
        samples = calibration.calibration_samples(representative_data, config.input_size,
                                                  num_calibration_samples)
        if input_type != "float32":
            samples = _pin_input_range(samples)

    temp, saved = saved_model.write_temporary(model, config)
    try:
        converter = _converter(saved, quantize, samples, input_type, output_type, nms)
        try:
            content = converter.convert()
        except Exception as error:  # the converter raises ConverterError and friends
            raise _conversion_error(model, error) from error
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    interpreter = _verify(content, model.name)

    labels_file = None
    if labels is not None:
        labels = [str(label) for label in labels]
        labels_file = os.path.basename(os.path.splitext(path)[0]) + ".labels.txt"
    sidecar = _sidecar(model, path, config, quantize, nms, interpreter, labels_file)
    _files.write_bytes(path, content)
    sidecar_path = None
    if write_sidecar:
        sidecar_path = _sidecar_path(path)
        _files.write_text(sidecar_path, json.dumps(sidecar, indent=2) + "\n")
    if labels_file is not None:
        _files.write_text(os.path.join(os.path.dirname(os.path.abspath(path)), labels_file),
                          "\n".join(labels) + "\n")
    return TFLiteExport(path, sidecar_path, len(content), sidecar,
                        check_gpu_compatibility(content, model=model))

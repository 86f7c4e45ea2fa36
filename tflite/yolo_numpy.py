"""Letterbox, YOLO decode and NMS in NumPy, plus a thin LiteRT runner: no TensorFlow needed.

Copy this folder next to a .tflite file and its JSON sidecar (written by
``keras_csp.export.to_tflite``) on any device with ``ai-edge-litert`` (or ``tflite-runtime``),
NumPy and Pillow. The numbers follow keras_csp exactly:

- letterbox (``keras_csp.postprocess.letterbox``): bilinear resize with half-pixel centres
  and no antialiasing (what ``tf.image.resize(..., antialias=False)`` does) of the 0-255
  image to ``round(H0 * r), round(W0 * r)``, ``r = min(h / H0, w / W0)``, rounded to uint8
  levels, centred on grey ``pad_value``, then / 255; the geometry is a ``Letterbox`` with the
  fields and convention of ``keras_csp.postprocess.Letterbox``
  (``input_pixel = original_pixel * scale + offset``, (y, x) order);
- decode (Darknet ``[yolo]``, as ``keras_csp.ops.decode``): ``xy = (s * sigmoid(t) -
  (s - 1) / 2 + cell) / grid``, ``wh = exp(min(t, log 3000)) * anchor / input`` (new_coords:
  ``(2 sigmoid(t))^2 * anchor / input``), objectness and classes through a sigmoid, channels
  anchor-major ``[x, y, w, h, obj, cls...]``;
- NMS as ``keras_csp.postprocess.builtin_nms`` (the exported graphs'): each box keeps its best class
  (score = objectness x class probability), the best ``pre_nms_top_k`` are candidates,
  greedy per class, a box is dropped when its IoU with a kept one is above
  ``iou_threshold``; scores must be above ``score_threshold``.
"""

import json
import math
import os

import numpy as np

MAX_LOG_WH = math.log(3000.0)  # keras_csp.ops.decode.MAX_LOG_WH
NMS_RANGE = (-2.0, 3.0)  # keras_csp.postprocess.nms.NMS_RANGE
CLASS_SHIFT = 8.0  # keras_csp.postprocess.nms.CLASS_SHIFT


# --- pre-processing -------------------------------------------------------------------------

def _resize_axis(size_in, size_out):
    scale = np.float32(size_in) / np.float32(size_out)
    src = (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    low = np.floor(src)
    frac = (src - low).astype(np.float32)
    low = low.astype(np.int64)
    return np.clip(low, 0, size_in - 1), np.clip(low + 1, 0, size_in - 1), frac


def resize_bilinear(image, height, width):
    """``image`` ``[H, W, C]`` float32 to ``[height, width, C]``: half-pixel centres, no AA."""
    y0, y1, fy = _resize_axis(image.shape[0], height)
    x0, x1, fx = _resize_axis(image.shape[1], width)
    top = image[y0][:, x0] + (image[y0][:, x1] - image[y0][:, x0]) * fx[None, :, None]
    bottom = image[y1][:, x0] + (image[y1][:, x1] - image[y1][:, x0]) * fx[None, :, None]
    return (top + (bottom - top) * fy[:, None, None]).astype(np.float32)


class Letterbox:
    """Where an original image sits in the model input: ``keras_csp.postprocess.Letterbox``
    in NumPy, same fields (float32 ``[2]``, (y, x) order) and convention::

        input_pixel = original_pixel * scale + offset
    """

    __slots__ = ("input_hw", "offset", "original_hw", "scale")

    def __init__(self, original_hw, input_hw, scale, offset):
        self.original_hw = np.asarray(original_hw, np.float32)
        self.input_hw = np.asarray(input_hw, np.float32)
        self.scale = np.asarray(scale, np.float32)
        self.offset = np.asarray(offset, np.float32)

    @classmethod
    def from_info(cls, image_info):
        """From an ``image_info [4, 2]`` array (the exported SavedModel's output)."""
        info = np.asarray(image_info, np.float32)
        return cls(info[0], info[1], info[2], info[3])

    def to_info(self):
        """``image_info [4, 2]``: original (h, w), input (h, w), scale, offset."""
        return np.stack([self.original_hw, self.input_hw, self.scale, self.offset])

    def boxes_to_original(self, boxes):
        """Normalised model-input xyxy boxes ``[N, 4]`` to pixels of the original image (clipped)."""
        def xyxy(pair):
            return np.tile(pair[::-1], 2)

        pixels = np.asarray(boxes, np.float32)[..., :4] * xyxy(self.input_hw)
        pixels = (pixels - xyxy(self.offset)) / xyxy(self.scale)
        return np.clip(pixels, 0.0, xyxy(self.original_hw)).astype(np.float32)


def letterbox(image, size, pad_value=114):
    """Fit an RGB image (``[H0, W0, 3]`` uint8, or float in [0, 1]) into ``size`` = (h, w).

    The resized 0-255 values are rounded to uint8 levels before / 255, as keras_csp.data.

    Returns ``(float32 [h, w, 3] in [0, 1], Letterbox)``.
    """
    height, width = size
    pixels = np.asarray(image)
    if pixels.dtype == np.uint8:
        pixels = pixels.astype(np.float32)
    else:
        pixels = pixels.astype(np.float32) * np.float32(255.0)
    in_h, in_w = pixels.shape[:2]
    ratio = min(np.float32(height) / np.float32(in_h), np.float32(width) / np.float32(in_w))
    new_h = int(np.clip(np.round(np.float32(in_h) * ratio), 1, height))
    new_w = int(np.clip(np.round(np.float32(in_w) * ratio), 1, width))
    resized = np.clip(np.round(resize_bilinear(pixels, new_h, new_w)), 0, 255)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out = np.full((height, width, 3), np.float32(pad_value), np.float32)
    out[top:top + new_h, left:left + new_w] = resized
    out /= np.float32(255.0)
    scale = np.array([new_h / np.float32(in_h), new_w / np.float32(in_w)], np.float32)
    return out, Letterbox((in_h, in_w), (height, width), scale, (top, left))


# --- decode -----------------------------------------------------------------------------------

def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def decode_head(raw, head, input_size):
    """One scale ``[1, H, W, A*(5+C)]`` -> (boxes [N, 4] normalised xyxy, obj [N], cls [N, C]).

    ``head`` is a sidecar head dict: stride, anchors (pixels), num_classes, scale_x_y,
    new_coords. ``N = H * W * A`` ordered (row, column, anchor).
    """
    raw = np.asarray(raw, np.float32)
    anchors = np.asarray(head["anchors"], np.float32)
    classes = int(head["num_classes"])
    _, height, width, depth = raw.shape
    if depth != len(anchors) * (5 + classes):
        raise ValueError(
            f"Output of shape {raw.shape} does not match a head with {len(anchors)} anchors "
            f"and {classes} classes ({len(anchors) * (5 + classes)} channels)."
        )
    parts = raw.reshape(height * width, len(anchors), 5 + classes)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    cells = np.stack([cols.reshape(-1), rows.reshape(-1)], -1).astype(np.float32)[:, None]
    s = np.float32(head.get("scale_x_y", 1.0))
    xy = _sigmoid(parts[..., 0:2])
    if s != 1.0:
        xy = xy * s - np.float32(0.5) * (s - np.float32(1.0))
    xy = (xy + cells) / np.array([width, height], np.float32)
    in_h, in_w = input_size
    anchors = anchors / np.array([in_w, in_h], np.float32)
    if head.get("new_coords", False):
        wh = np.square(np.float32(2.0) * _sigmoid(parts[..., 2:4])) * anchors
    else:
        wh = np.exp(np.minimum(parts[..., 2:4], np.float32(MAX_LOG_WH))) * anchors
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], -1).reshape(-1, 4)
    return boxes.astype(np.float32), _sigmoid(parts[..., 4]).reshape(-1), _sigmoid(
        parts[..., 5:]).reshape(-1, classes)


def decode(outputs, heads, input_size):
    """All scales (``outputs`` in head order) concatenated, as ``decode_head``."""
    if len(outputs) != len(heads):
        raise ValueError(f"{len(outputs)} outputs for {len(heads)} heads; they must match.")
    parts = [decode_head(o, h, input_size) for o, h in zip(outputs, heads)]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


# --- NMS --------------------------------------------------------------------------------------

def _iou_one(box, others):
    y1 = np.maximum(np.minimum(box[1], box[3]), np.minimum(others[:, 1], others[:, 3]))
    x1 = np.maximum(np.minimum(box[0], box[2]), np.minimum(others[:, 0], others[:, 2]))
    y2 = np.minimum(np.maximum(box[1], box[3]), np.maximum(others[:, 1], others[:, 3]))
    x2 = np.minimum(np.maximum(box[0], box[2]), np.maximum(others[:, 0], others[:, 2]))
    inter = np.maximum(y2 - y1, 0) * np.maximum(x2 - x1, 0)
    area = abs((box[2] - box[0]) * (box[3] - box[1]))
    areas = np.abs((others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]))
    union = area + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where((area > 0) & (areas > 0), inter / union, 0.0)
    return iou


def nms(boxes, objectness, class_probs, iou_threshold=0.45, score_threshold=0.25,
        max_detections=100, class_aware=True, pre_nms_top_k=1000):
    """Greedy NMS; returns a dict ``boxes [K, 4]`` (clipped to [0, 1]), ``scores``, ``classes``.

    Each box keeps its best class; the ``pre_nms_top_k`` best (score, then lower index) are
    candidates; a candidate needs ``score > score_threshold`` and is dropped when its IoU
    with a kept box of the same class (any class if not ``class_aware``) is above
    ``iou_threshold``. Overlaps are computed on boxes clipped to NMS_RANGE and shifted
    ``class * CLASS_SHIFT`` apart, exactly as the exported TFLite / SavedModel graphs do.
    """
    scores_all = objectness[:, None] * class_probs
    scores = scores_all.max(-1).astype(np.float32)
    classes = scores_all.argmax(-1).astype(np.int32)
    order = np.argsort(-scores, kind="stable")[:pre_nms_top_k]
    order = order[scores[order] > np.float32(score_threshold)]
    shifted = np.clip(boxes, *NMS_RANGE).astype(np.float32)
    if class_aware:
        shifted = shifted + classes[:, None].astype(np.float32) * np.float32(CLASS_SHIFT)
    kept = []
    for index in order:
        if len(kept) >= max_detections:
            break
        if kept and np.any(_iou_one(shifted[index], shifted[kept]) > iou_threshold):
            continue
        kept.append(index)
    kept = np.asarray(kept, np.int64)
    return {"boxes": np.clip(boxes[kept], 0.0, 1.0).astype(np.float32),
            "scores": scores[kept], "classes": classes[kept]}


# --- running a .tflite file --------------------------------------------------------------------

def _interpreter_module():
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        try:
            from tflite_runtime import interpreter
        except ImportError:
            raise ImportError("Install ai-edge-litert (pip install ai-edge-litert) or "
                              "tflite-runtime to run .tflite files.") from None
    return interpreter


def sidecar_path(model_path):
    return os.path.splitext(model_path)[0] + ".json"


class TFLiteModel:
    """A .tflite file plus its sidecar: run letterboxed float images, get named float outputs.

    ``threads``: CPU threads (XNNPACK). ``gpu_delegate``: path of the GPU delegate library
    (``libtensorflowlite_gpu_delegate.so`` on Linux / Jetson; on Android use the Java / Kotlin
    API). Quantized inputs and outputs are (de)quantized with the file's own parameters.
    """

    def __init__(self, model_path, sidecar=None, threads=2, gpu_delegate=None):
        module = _interpreter_module()
        sidecar = sidecar or sidecar_path(model_path)
        with open(sidecar, encoding="utf-8") as handle:
            self.sidecar = json.load(handle)
        delegates = [module.load_delegate(gpu_delegate)] if gpu_delegate else None
        self.interpreter = module.Interpreter(model_path=model_path, num_threads=threads,
                                              experimental_delegates=delegates)
        self.runner = self.interpreter.get_signature_runner(self.sidecar["signature"])
        self.input_detail = self.runner.get_input_details()["images"]
        self.output_details = self.runner.get_output_details()
        shape = self.sidecar["input"]["shape"]
        self.input_size = (int(shape[1]), int(shape[2]))
        self.output_names = [o["name"] for o in self.sidecar["outputs"]]

    def quantize_input(self, image):
        """Float image ``[h, w, 3]`` in [0, 1] to the model's input array ``[1, h, w, 3]``."""
        dtype = self.input_detail["dtype"]
        batch = np.asarray(image, np.float32)[None]
        if dtype == np.float32:
            return batch
        scale, zero = self.input_detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(batch / scale + zero), info.min, info.max).astype(dtype)

    def raw(self, batch):
        """Run the model on an already prepared input array; outputs as float32, by name."""
        results = self.runner(images=batch)
        outputs = {}
        for name in self.output_names:
            value = results[name]
            scale, zero = self.output_details[name]["quantization"]
            if scale and value.dtype != np.float32:
                value = (value.astype(np.float32) - zero) * np.float32(scale)
            outputs[name] = value
        return outputs

    def __call__(self, image):
        return self.raw(self.quantize_input(image))


def detect(model, image, iou_threshold=None, score_threshold=None, max_detections=None):
    """Boxes for one RGB image (``[H0, W0, 3]`` uint8): letterbox, run, decode, NMS, undo.

    Returns ``boxes [K, 4]`` (xyxy pixels of ``image``), ``scores [K]``, ``classes [K]``.
    Works for files exported with ``nms="none"`` (decode and NMS here) and ``"builtin"``.
    """
    post = model.sidecar["postprocess"]
    iou_threshold = post["iou_threshold"] if iou_threshold is None else iou_threshold
    score_threshold = post["score_threshold"] if score_threshold is None else score_threshold
    max_detections = post["max_detections"] if max_detections is None else max_detections
    pad = model.sidecar["input"]["letterbox"]["pad_value"]
    boxed, geometry = letterbox(image, model.input_size, pad)
    outputs = model(boxed)
    if post["nms"] == "builtin":
        count = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
        result = {"boxes": outputs["boxes"][0][:count], "scores": outputs["scores"][0][:count],
                  "classes": outputs["classes"][0][:count].astype(np.int32)}
        keep = result["scores"] > score_threshold
        result = {key: value[keep][:max_detections] for key, value in result.items()}
    else:
        heads = model.sidecar["heads"]
        if not heads:
            raise ValueError("The sidecar has no YOLO heads: this file is not a detector.")
        raw = [outputs[name] for name in model.output_names]
        boxes, objectness, class_probs = decode(raw, heads, model.input_size)
        result = nms(boxes, objectness, class_probs, iou_threshold, score_threshold,
                     max_detections, post.get("class_aware", True),
                     post.get("pre_nms_top_k", 1000))
    result["boxes"] = geometry.boxes_to_original(result["boxes"])
    return result

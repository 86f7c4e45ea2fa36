"""From raw head outputs to boxes: decode, score, NMS and undo the letterbox, in one function.

``postprocess`` is what ``Detector.predict``, ``InferenceModel``, evaluation and the exported
SavedModel / TFLite graphs run; they differ only in the NMS kernel (``"graph"``: the exact
in-graph NMS with every ``NMSConfig`` option; ``"builtin"``: TFLite builtin ops, greedy
single-label) and in the units asked for.
"""

from keras_csp.backend import tf
from keras_csp.ops.decode import decode_heads
from keras_csp.postprocess.geometry import as_letterbox
from keras_csp.postprocess.nms import NMSConfig, builtin_nms, non_max_suppression

KERNELS = ("graph", "builtin")


def postprocess(raw_outputs, heads, nms=None, input_hw=None, image_info=None, *, kernel="graph",
                pixels=True):
    """Decode ``raw_outputs`` (list of ``[B, H, W, A*(5+C)]`` logits, in ``heads`` order),
    score each box (objectness x class probability), run NMS and express boxes.

    Args:
      heads: the ``HeadSpec`` of each output; nms: an ``NMSConfig`` or dict.
      input_hw: model input ``(height, width)``; default ``H * stride`` of the first output.
      image_info: the letterbox of the images, a
        :class:`~keras_csp.postprocess.geometry.Letterbox` or its ``image_info [B, 4, 2]``
        tensor as ``keras_csp.data`` pipelines carry it. With it boxes are in
        original-image pixels (clipped to the image).
      kernel: ``"graph"`` (default) or ``"builtin"`` (TFLite builtin NMS: greedy,
        single-label, static batch, boxes clipped to the input).
      pixels: without ``image_info``, boxes in model-input pixels (True) or normalised to
        the input (False).

    Returns the fixed-size dict of :func:`~keras_csp.postprocess.nms.non_max_suppression`
    (``boxes``, ``scores``, ``classes``, ``num_detections``), padding rows' boxes zero.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; received {kernel!r}.")
    if not isinstance(raw_outputs, (list, tuple)):
        raw_outputs = [raw_outputs]
    if input_hw is None:
        shape = tf.shape(raw_outputs[0])
        input_hw = (shape[1] * heads[0].stride, shape[2] * heads[0].stride)
    decoded = decode_heads(list(raw_outputs), list(heads), input_hw)
    scores = decoded["objectness"][..., None] * decoded["class_probs"]
    config = NMSConfig.coerce(nms)
    if kernel == "builtin":
        result = builtin_nms(decoded["boxes"], scores, config)
    else:
        result = non_max_suppression(decoded["boxes"], scores, config)
    geometry = as_letterbox(image_info)
    if geometry is None and not pixels:
        return result
    if geometry is not None:
        boxes = geometry.boxes_to_original(result["boxes"])
    else:
        height, width = (tf.cast(v, tf.float32) for v in input_hw)
        boxes = result["boxes"] * tf.stack([width, height, width, height])
    valid = tf.range(tf.shape(result["scores"])[1])[None] < result["num_detections"][:, None]
    result["boxes"] = tf.where(valid[..., None], boxes, 0.0)
    return result


__all__ = ["KERNELS", "postprocess"]

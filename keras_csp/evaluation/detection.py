"""Run a detector over an evaluation dataset and score it with COCO's metrics.

The dataset is the ``keras_csp.data`` evaluation form, unshuffled:
``(images, {"boxes", "image_id", "image_info"})`` (``detection_dataset(..., training=False)``).
Predictions go through the detector's decode + NMS with the evaluation NMS settings, back to
original-image pixels (``image_info``) and to the dataset's category ids.
"""

import logging

from keras_csp.backend import tf
from keras_csp.detectors.detector import network_of
from keras_csp.evaluation.coco import GroundTruthBuilder, detections_to_coco, evaluate_coco, load_ground_truth
from keras_csp.postprocess.decoder import postprocess
from keras_csp.postprocess.nms import NMSConfig

REFERENCE_EVAL_NMS = NMSConfig(score_threshold=0.001, iou_threshold=0.6, max_detections=300, multi_label=True,
                               pre_nms_top_k=30000)
"""NMS for mAP as the reference tools run it: every class above 0.001 for every box
(multi-label, as Darknet's ``-map`` and YOLOv5's ``val.py``), up to 30000 candidates before
NMS and 300 detections per image (YOLOv5's ``max_nms`` and ``max_det``; pycocotools then
scores at most 100 per image and class), IoU 0.6 (``val.py``)."""

FAST_EVAL_NMS = NMSConfig(score_threshold=0.001, iou_threshold=0.6, max_detections=100)
"""The earlier evaluation setting: one label per box (its best class), the 1000 best boxes
before NMS, 100 per image. Cheaper; it scores a little lower (see the README)."""

EVAL_NMS_PRESETS = {"reference": REFERENCE_EVAL_NMS, "fast": FAST_EVAL_NMS}
LOGGER = logging.getLogger(__name__)

EVAL_NMS = REFERENCE_EVAL_NMS
"""The default of ``evaluate_detector``, ``COCOEvalCallback`` and ``keras-csp evaluate``."""


def eval_nms(nms=None):
    """The evaluation ``NMSConfig`` of ``nms``: None (``EVAL_NMS``), a preset name
    (``"reference"`` / ``"fast"``), a config dict or an ``NMSConfig``."""
    if nms is None:
        return EVAL_NMS
    if isinstance(nms, str):
        try:
            return EVAL_NMS_PRESETS[nms]
        except KeyError:
            raise ValueError(f"Unknown evaluation NMS preset {nms!r}; known: {sorted(EVAL_NMS_PRESETS)}") from None
    return NMSConfig.coerce(nms)


def _network_and_heads(model, heads):
    network = network_of(model)
    heads = tuple(heads) if heads is not None else tuple(getattr(model, "heads", ()))
    if not heads:
        raise ValueError(
            "Cannot tell how to decode this model's outputs: pass a keras_csp Detector / YOLOTask "
            "or give `heads` (one HeadSpec per output)."
        )
    return network, heads


def detection_function(model, nms=None, heads=None):
    """A compiled function ``(images, image_info) -> detections dict`` (original pixels)."""
    network, heads = _network_and_heads(model, heads)
    config = eval_nms(nms)

    # autograph=False: nothing here branches on tensors, and autograph's conversion of the
    # post-processing was most of the first call (measured 43 s against 14 s, equal outputs).
    @tf.function(reduce_retracing=True, autograph=False)
    def detect(images, image_info):
        raw = network(images, training=False)
        if not isinstance(raw, (list, tuple)):
            raw = [raw]
        shape = tf.shape(images)
        return postprocess(list(raw), heads, config, (shape[1], shape[2]), image_info)

    return detect


def ground_truth_for(source=None):
    """The ground truth to evaluate against: the source's COCO JSON when it has one
    (``CocoSource``), else ``None`` (then it is built from the evaluation stream)."""
    path = getattr(source, "annotation_file", None)
    return load_ground_truth(path) if path else None


def predict_dataset(model, dataset, nms=None, heads=None, max_batches=None, category_ids=None,
                    collect_ground_truth=None, detect=None):
    """Detections of ``model`` on every image of ``dataset`` as COCO result dicts.

    Returns ``(detections, image_ids)``; when ``collect_ground_truth`` is a
    :class:`GroundTruthBuilder`, the batches' boxes are added to it too. ``detect``: a
    function from :func:`detection_function` to reuse (saves retracing).
    """
    detect = detect or detection_function(model, nms, heads)
    num_classes = _network_and_heads(model, heads)[1][0].num_classes
    category_ids = list(range(num_classes)) if category_ids is None else list(category_ids)
    detections, image_ids, full = [], [], None
    for step, batch in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        images, meta = batch
        if not isinstance(meta, dict) or "image_info" not in meta or "image_id" not in meta:
            raise ValueError(
                "Evaluation needs batches (images, {'image_id', 'image_info', 'boxes'}) as "
                "keras_csp.data.detection_dataset(..., training=False) yields."
            )
        if images.dtype == tf.uint8:
            images = tf.cast(images, tf.float32) / 255.0
        count = int(images.shape[0])
        full = full or count
        info = meta["image_info"]
        if count < full:  # pad the last batch: one traced shape for the whole evaluation
            images = tf.pad(images, [[0, full - count], [0, 0], [0, 0], [0, 0]])
            info = tf.concat([info, tf.repeat(info[-1:], full - count, axis=0)], axis=0)
        out = {k: v[:count] for k, v in detect(images, info).items()}
        ids = meta["image_id"].numpy()
        detections += detections_to_coco(
            out["boxes"].numpy(), out["scores"].numpy(), out["classes"].numpy(),
            out["num_detections"].numpy(), ids, category_ids,
        )
        image_ids += [int(i) for i in ids]
        if collect_ground_truth is not None:
            collect_ground_truth.add(meta["boxes"].numpy(), ids, meta["image_info"].numpy())
    return detections, image_ids


def evaluate_detector(model, dataset, source=None, ground_truth=None, category_ids=None, class_names=None,
                      nms=None, heads=None, max_batches=None, detect=None):
    """COCO AP of ``model`` on an evaluation ``dataset``.

    Args:
      model: a ``keras_csp`` Detector (or a raw YOLO network with ``heads``).
      dataset: ``detection_dataset(source, training=False, ...)`` (unshuffled, every image).
      source: the dataset's source: gives the category ids, the class names and, for a COCO
        JSON, the ground truth itself.
      ground_truth: a COCO dict / JSON path; default: the source's JSON, else built from the
        boxes in ``dataset`` (mapped back to original pixels).
      category_ids, class_names: default from ``source`` (else 0..C-1).
      nms: NMS settings: ``"reference"`` (the default ``EVAL_NMS``: multi-label, score >
        0.001, 30000 candidates, IoU 0.6, 300 per image), ``"fast"`` (``FAST_EVAL_NMS``), a
        dict or an ``NMSConfig``.
      max_batches: evaluate only this many batches (quick checks).
      detect: a compiled function from :func:`detection_function` to reuse.

    Returns a :class:`~keras_csp.evaluation.coco.COCOResult`; its ``num_failed_images``
    (also the first line of its ``summary``) counts the source's images that failed to decode
    and so are not in the evaluation.
    """
    _, resolved_heads = _network_and_heads(model, heads)
    if category_ids is None:
        category_ids = getattr(source, "category_ids", None) or list(range(resolved_heads[0].num_classes))
    if class_names is None:
        class_names = getattr(source, "class_names", None)
    if ground_truth is None:
        ground_truth = ground_truth_for(source)
    builder = GroundTruthBuilder(category_ids, class_names) if ground_truth is None else None
    report = getattr(source, "report", None)
    failures_before = report.runtime_failures if report is not None else 0
    detections, image_ids = predict_dataset(model, dataset, nms, heads, max_batches, category_ids, builder,
                                                detect)
    if builder is not None:
        ground_truth = builder.ground_truth()
    result = evaluate_coco(ground_truth, detections, image_ids)
    expected = source.image_ids() if hasattr(source, "image_ids") and max_batches is None else None
    if expected is not None:  # robust to a cached dataset, which decodes only once
        failed = len(set(expected) - set(image_ids))
    else:
        failed = (report.runtime_failures - failures_before) if report is not None else 0
    if failed:
        line = (f"{failed} image(s) of {getattr(source, 'name', 'the source')} failed to decode and are not in "
                f"this evaluation (AP over the other {result.num_images}; the TensorFlow warnings name the errors)")
        LOGGER.warning(line)
        result.num_failed_images = failed
        result.summary = f"{line}\n{result.summary}"
    result.detections, result.image_ids, result.ground_truth = detections, image_ids, ground_truth
    return result


__all__ = ["EVAL_NMS", "EVAL_NMS_PRESETS", "FAST_EVAL_NMS", "REFERENCE_EVAL_NMS", "detection_function", "eval_nms",
           "evaluate_detector", "ground_truth_for", "predict_dataset"]

"""COCO box evaluation with pycocotools: ground truth, detections, the 12 numbers, per-class AP.

Ground truth is a COCO instances dict: the dataset's own JSON when there is one (its areas and
``iscrowd`` flags count), else one built from the evaluation stream (see
``GroundTruthBuilder``). Detections are COCO result dicts in original-image pixels with the
dataset's own category ids; contiguous class 0 is a class like any other (never background).

Annotation ids are renumbered from 1 before evaluating: pycocotools marks a matched ground
truth by storing its id and tests ``> 0``, so an annotation with id 0 would match twice.
"""

import contextlib
import copy
import dataclasses
import io
import json
import math
import os

import numpy as np

from keras_csp.postprocess.geometry import Letterbox

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""Names of the 12 numbers of ``COCOeval.summarize()``, in its order."""
LOGGED_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
"""The numbers a training run logs (``val_AP``, ...); ARs/m/l stay in the JSON results."""


def _quiet(function, *args, **kwargs):
    """Call ``function`` with pycocotools' prints captured; returns ``(result, text)``."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = function(*args, **kwargs)
    return result, buffer.getvalue()


def load_ground_truth(annotation_file):
    """A COCO instances JSON as a dict (for ``evaluate_coco``)."""
    path = os.fspath(annotation_file)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: not a COCO instances file (no list {key!r})")
    return data


def coco_dict(images, annotations, categories):
    """A COCO instances dict; annotations get ids 1..N and ``area``/``iscrowd`` if missing."""
    annotations = [dict(a) for a in annotations]
    for i, ann in enumerate(annotations, start=1):
        ann["id"] = i
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    return {
        "info": {"description": "keras_csp evaluation ground truth"},
        "licenses": [],
        "images": [dict(im) for im in images],
        "annotations": annotations,
        "categories": [dict(c) for c in categories],
    }


class GroundTruthBuilder:
    """Collect ground truth from evaluation batches (any source, e.g. YOLO txt, VOC, TFDS).

    ``add(boxes, image_ids, image_info)`` takes the ``keras_csp.data`` evaluation form:
    boxes ``[B, M, 5]`` normalised to the model input (padding -1), ids ``[B]`` and the
    letterbox geometry ``[B, 4, 2]``; boxes are mapped back to original pixels. Rows with a
    class code ``<= -2`` (ignored regions: COCO ``iscrowd``, VOC ``difficult``; see
    ``keras_csp.data.boxes``) become ``iscrowd=1`` annotations of class ``-2 - code``, which
    pycocotools ignores: they count neither as misses nor make matching detections false
    positives.
    """

    def __init__(self, category_ids, class_names=None):
        self.category_ids = [int(c) for c in category_ids]
        names = class_names or [str(c) for c in self.category_ids]
        self.categories = [{"id": c, "name": str(n)} for c, n in zip(self.category_ids, names)]
        self.images = []
        self.annotations = []
        self._seen = set()

    def add(self, boxes, image_ids, image_info):
        boxes = np.asarray(boxes, np.float64)
        info = np.asarray(image_info, np.float64)
        geometry = Letterbox.from_info(info)
        pixels = geometry.boxes_to_original(boxes[..., :4]).numpy()  # float64, clipped
        for b, image_id in enumerate(np.asarray(image_ids).reshape(-1)):
            image_id = int(image_id)
            if image_id in self._seen:
                continue
            self._seen.add(image_id)
            height, width = geometry.original_hw[b]
            self.images.append({"id": image_id, "width": int(round(width)), "height": int(round(height))})
            for row, (x0, y0, x1, y1) in zip(boxes[b], pixels[b]):
                crowd = row[4] <= -2
                if row[4] < 0 and not crowd:  # padding
                    continue
                cls = int(-2 - row[4]) if crowd else int(row[4])
                if x1 <= x0 or y1 <= y0:
                    continue
                self.annotations.append({
                    "image_id": image_id, "category_id": self.category_ids[cls],
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "iscrowd": int(crowd),
                })  # fmt: skip

    def ground_truth(self):
        return coco_dict(self.images, self.annotations, self.categories)


def detections_to_coco(boxes, scores, classes, num_detections, image_ids, category_ids):
    """Detector outputs of one batch -> COCO result dicts.

    Args:
      boxes: ``[B, K, 4]`` xyxy in original-image pixels; scores ``[B, K]``; classes
        ``[B, K]`` contiguous (``-1`` padding); num_detections ``[B]``.
      image_ids: ``[B]`` dataset image ids; category_ids: dataset id of each contiguous class.
    """
    boxes, scores = np.asarray(boxes, np.float64), np.asarray(scores, np.float64)
    classes, counts = np.asarray(classes, np.int64), np.asarray(num_detections, np.int64).reshape(-1)
    ids = np.asarray(category_ids, np.int64)
    out = []
    for b, image_id in enumerate(np.asarray(image_ids).reshape(-1)):
        for k in range(int(counts[b])):
            c = int(classes[b, k])
            if c < 0 or c >= len(ids):
                continue
            x0, y0, x1, y1 = (float(v) for v in boxes[b, k])
            if x1 <= x0 or y1 <= y0:
                continue
            out.append({
                "image_id": int(image_id), "category_id": int(ids[c]),
                "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                "score": round(float(scores[b, k]), 5),
            })  # fmt: skip
    return out


@dataclasses.dataclass
class COCOResult:
    """What ``evaluate_coco`` measured.

    Attributes:
      stats: ``{"AP": ..., "AP50": ..., ..., "ARl": ...}`` (``STAT_NAMES``; -1 where
        pycocotools has nothing to measure, e.g. no large objects).
      per_class: one dict per category: ``category_id``, ``name``, ``num_gt``, ``AP``,
        ``AP50`` (-1 for a category without ground truth).
      summary: pycocotools' printed summary.
      num_images, num_detections: what was evaluated.
      num_failed_images: images of the source that failed to decode and are therefore not
        in ``num_images`` (the AP is over the others); also a line of ``summary``.
      precision: ``COCOeval.eval["precision"]`` ``[T, R, K, A, M]`` (for PR curves), or None.
      recall_thresholds, iou_thresholds: its axes.
      detections, image_ids, ground_truth: what was scored (set by ``evaluate_detector``, so
        the run's pictures reuse its last evaluation instead of predicting again); not
        serialized, and None once a newer evaluation replaced it in a callback.
    """

    stats: dict
    per_class: list
    summary: str = ""
    num_images: int = 0
    num_detections: int = 0
    precision: object = None
    recall_thresholds: object = None
    iou_thresholds: object = None
    num_failed_images: int = 0
    detections: list = dataclasses.field(default=None, repr=False, compare=False)
    image_ids: list = dataclasses.field(default=None, repr=False, compare=False)
    ground_truth: dict = dataclasses.field(default=None, repr=False, compare=False)

    def logs(self, prefix="val_"):
        """The stats as Keras log entries (``LOGGED_STATS``): ``{"val_AP": ..., ...}``."""
        return {f"{prefix}{k}": float(self.stats[k]) for k in LOGGED_STATS}

    def table(self):
        """Per-class AP as a fixed-width text table."""
        width = max([5] + [len(r["name"]) for r in self.per_class])
        lines = [f"{'class':<{width}}  {'id':>4}  {'gt':>6}  {'AP':>6}  {'AP50':>6}"]
        for r in self.per_class:
            ap = "   n/a" if r["AP"] < 0 else f"{r['AP']:6.3f}"
            ap50 = "   n/a" if r["AP50"] < 0 else f"{r['AP50']:6.3f}"
            lines.append(f"{r['name']:<{width}}  {r['category_id']:>4}  {r['num_gt']:>6}  {ap}  {ap50}")
        return "\n".join(lines)

    def to_json(self):
        return {"stats": self.stats, "per_class": self.per_class, "num_images": self.num_images,
                "num_detections": self.num_detections, "num_failed_images": self.num_failed_images}


def _mean_valid(values):
    values = np.asarray(values)
    values = values[values > -1]
    return float(values.mean()) if values.size else -1.0


def evaluate_coco(ground_truth, detections, image_ids=None):
    """Score ``detections`` (COCO result dicts) against ``ground_truth`` with pycocotools.

    Args:
      ground_truth: a COCO instances dict or the path of its JSON.
      detections: list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
      image_ids: images to evaluate (default: every image of ``ground_truth``); images the
        evaluation never saw must be left out, or their objects count as missed.

    Returns a :class:`COCOResult`.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:
        raise ImportError("COCO evaluation needs pycocotools: pip install 'keras_csp[coco]'") from err

    if not isinstance(ground_truth, dict):
        ground_truth = load_ground_truth(ground_truth)
    gt = coco_dict(ground_truth["images"], ground_truth["annotations"], ground_truth["categories"])
    gt["info"] = ground_truth.get("info", gt["info"])
    known_images = {im["id"] for im in gt["images"]}
    ids = sorted(known_images if image_ids is None else {int(i) for i in image_ids})
    unknown = sorted(set(ids) - known_images)
    if unknown:
        raise ValueError(f"image ids {unknown[:5]} are not in the ground truth ({len(known_images)} images)")
    known_cats = {c["id"] for c in gt["categories"]}
    bad = sorted({d["category_id"] for d in detections} - known_cats)
    if bad:
        raise ValueError(f"detections use category ids {bad} that the ground truth lacks {sorted(known_cats)}")
    id_set = set(ids)
    detections = [d for d in detections if d["image_id"] in id_set]

    coco_gt = COCO()
    coco_gt.dataset = gt
    _quiet(coco_gt.createIndex)
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt["categories"]}
    cat_ids = sorted(known_cats)
    num_gt = {c: 0 for c in cat_ids}
    for ann in gt["annotations"]:
        if ann["image_id"] in id_set and not ann.get("iscrowd", 0):
            num_gt[ann["category_id"]] = num_gt.get(ann["category_id"], 0) + 1

    if not detections:
        stats = {k: (0.0 if sum(num_gt.values()) else -1.0) for k in STAT_NAMES}
        per_class = [{"category_id": c, "name": names[c], "num_gt": num_gt[c],
                      "AP": 0.0 if num_gt[c] else -1.0, "AP50": 0.0 if num_gt[c] else -1.0} for c in cat_ids]
        return COCOResult(stats, per_class, "no detections", len(ids), 0)

    coco_dt, _ = _quiet(coco_gt.loadRes, copy.deepcopy(detections))
    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    evaluator.params.imgIds = ids
    _, text1 = _quiet(evaluator.evaluate)
    _, text2 = _quiet(evaluator.accumulate)
    _, summary = _quiet(evaluator.summarize)
    stats = {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    per_class = []
    for k, c in enumerate(evaluator.params.catIds):
        per_class.append({
            "category_id": int(c), "name": names[c], "num_gt": int(num_gt.get(c, 0)),
            "AP": _mean_valid(precision[:, :, k, 0, -1]),
            "AP50": _mean_valid(precision[0, :, k, 0, -1]),
        })  # fmt: skip
    return COCOResult(
        stats, per_class, summary, len(ids), len(detections), precision,
        np.asarray(evaluator.params.recThrs), np.asarray(evaluator.params.iouThrs),
    )


def finite_or_none(value):
    """JSON-friendly number (None for NaN / inf)."""
    return None if value is None or not math.isfinite(value) else float(value)


__all__ = [
    "COCOResult", "GroundTruthBuilder", "LOGGED_STATS", "STAT_NAMES", "coco_dict", "detections_to_coco",
    "evaluate_coco", "load_ground_truth",
]

"""Detection matching in NumPy: the confusion matrix with a background class, and P / R / F1
against the confidence threshold.

Conventions (those of Ultralytics' validation pictures, so numbers read the same):

- ``matrix[predicted, true]``, shape ``[C + 1, C + 1]``; index ``C`` is *background*. A
  missed object counts in row ``C`` (predicted background), a detection matching no object
  in column ``C`` (true background).
- Confusion matching is class-agnostic: detections scoring above ``conf_threshold`` and
  objects pair one-to-one by decreasing IoU, pairs need IoU above ``iou_threshold`` (0.45
  and 0.25 by default). A pair of different classes is a confusion.
- P / R / F1 curves match per class (a detection can only be right for its own class):
  detections by decreasing score take the unmatched object of their class with the highest
  IoU, at least ``iou_threshold`` (0.5), as VOC and COCO do.

Boxes are ``[N, 4]`` xyxy in any one unit per image (pixels or normalised).
"""

import numpy as np

CONF_THRESHOLD = 0.25
MATRIX_IOU = 0.45
CURVE_IOU = 0.5


def box_iou(a, b):
    """IoU of every box of ``a`` ``[N, 4]`` with every box of ``b`` ``[M, 4]`` (xyxy): ``[N, M]``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _pairs_by_iou(iou, threshold):
    """One-to-one ``(row, column)`` pairs of ``iou`` above ``threshold``, best IoU first."""
    rows, cols = np.nonzero(iou > threshold)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_rows, used_cols, pairs = set(), set(), []
    for r, c in zip(rows[order], cols[order]):
        if r in used_rows or c in used_cols:
            continue
        used_rows.add(r)
        used_cols.add(c)
        pairs.append((int(r), int(c)))
    return pairs


class ConfusionMatrix:
    """Counts of (predicted, true) class pairs over images, background included.

    ``update(...)`` once per image; ``matrix`` holds the counts; ``normalized()`` divides each
    column (a true class) by its total, so a column reads "where the objects of this class
    went". Rows and columns are ``class_names + ["background"]``.
    """

    def __init__(self, num_classes, class_names=None, iou_threshold=MATRIX_IOU, conf_threshold=CONF_THRESHOLD):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be at least 1; received {num_classes!r}")
        self.num_classes = int(num_classes)
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        self.class_names = [str(n) for n in names]
        self.iou_threshold = float(iou_threshold)
        self.conf_threshold = float(conf_threshold)
        self.matrix = np.zeros((self.num_classes + 1, self.num_classes + 1), np.int64)

    @property
    def labels(self):
        return self.class_names + ["background"]

    def _check(self, classes, what):
        classes = np.asarray(classes, np.int64).reshape(-1)
        bad = classes[(classes < 0) | (classes >= self.num_classes)]
        if bad.size:
            raise ValueError(f"{what} class {int(bad[0])} is outside 0..{self.num_classes - 1}")
        return classes

    def update(self, gt_boxes, gt_classes, det_boxes, det_classes, det_scores):
        """Add one image: objects ``gt_boxes [N, 4]`` / ``gt_classes [N]`` and detections
        ``det_boxes [M, 4]`` / ``det_classes [M]`` / ``det_scores [M]`` (same box unit)."""
        gt_classes = self._check(gt_classes, "ground-truth")
        det_classes = self._check(det_classes, "detection")
        det_scores = np.asarray(det_scores, np.float64).reshape(-1)
        det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        if not (len(det_boxes) == len(det_classes) == len(det_scores)):
            raise ValueError(f"detections: {len(det_boxes)} boxes, {len(det_classes)} classes, {len(det_scores)} scores")
        if len(gt_boxes) != len(gt_classes):
            raise ValueError(f"ground truth: {len(gt_boxes)} boxes for {len(gt_classes)} classes")
        keep = det_scores > self.conf_threshold
        det_boxes, det_classes = det_boxes[keep], det_classes[keep]
        background = self.num_classes
        pairs = _pairs_by_iou(box_iou(gt_boxes, det_boxes), self.iou_threshold)
        matched_gt = {g for g, _ in pairs}
        matched_det = {d for _, d in pairs}
        for g, d in pairs:
            self.matrix[det_classes[d], gt_classes[g]] += 1
        for g, c in enumerate(gt_classes):
            if g not in matched_gt:
                self.matrix[background, c] += 1
        for d, c in enumerate(det_classes):
            if d not in matched_det:
                self.matrix[c, background] += 1
        return self

    def normalized(self):
        """Each column divided by its sum (columns with no count stay 0)."""
        totals = self.matrix.sum(axis=0, keepdims=True).astype(np.float64)
        return np.divide(self.matrix, totals, out=np.zeros(self.matrix.shape), where=totals > 0)

    def true_positives(self):
        """Per class: detections of the right class on an object of it (the diagonal)."""
        return np.diag(self.matrix)[: self.num_classes].copy()

    def to_csv(self):
        """The counts as CSV text: header ``predicted \\ true`` then one row per predicted class."""
        names = [n.replace(",", " ") for n in self.labels]
        lines = ["predicted \\ true," + ",".join(names)]
        for name, row in zip(names, self.matrix):
            lines.append(name + "," + ",".join(str(int(v)) for v in row))
        return "\n".join(lines) + "\n"


def match_detections(gt_boxes, gt_classes, det_boxes, det_classes, det_scores, iou_threshold=CURVE_IOU):
    """Per-detection true-positive flags of one image, matching within each class.

    Detections, by decreasing score, each take the still unmatched object of their class with
    the highest IoU, when that IoU is at least ``iou_threshold``. Returns a bool ``[M]`` in the
    order of the detections given.
    """
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    gt_classes = np.asarray(gt_classes, np.int64).reshape(-1)
    det_classes = np.asarray(det_classes, np.int64).reshape(-1)
    det_scores = np.asarray(det_scores, np.float64).reshape(-1)
    tp = np.zeros(len(det_classes), bool)
    if not len(gt_boxes) or not len(det_classes):
        return tp
    iou = box_iou(det_boxes, gt_boxes)
    iou[det_classes[:, None] != gt_classes[None, :]] = -1.0
    taken = np.zeros(len(gt_boxes), bool)
    for d in np.argsort(-det_scores, kind="stable"):
        candidates = np.where(taken, -1.0, iou[d])
        g = int(np.argmax(candidates))
        if candidates[g] >= iou_threshold:
            taken[g] = True
            tp[d] = True
    return tp


def confidence_curves(scores, true_positive, classes, num_gt, thresholds=None):
    """Precision, recall and F1 of each class at each confidence threshold.

    Args:
      scores, true_positive, classes: one entry per detection over the whole set (from
        :func:`match_detections`).
      num_gt: objects per class ``[C]``.
      thresholds: confidences (default 0..1 in 101 steps); a detection counts at threshold
        ``t`` when its score is at least ``t``.

    Returns a dict: ``thresholds [T]``, ``precision``, ``recall``, ``f1`` ``[C, T]``. Where a
    class has no detection at or above ``t`` its precision is 1 (nothing claimed, nothing
    wrong) and its recall 0; a class without objects has recall and F1 NaN.
    """
    thresholds = np.linspace(0.0, 1.0, 101) if thresholds is None else np.asarray(thresholds, np.float64)
    scores = np.asarray(scores, np.float64).reshape(-1)
    true_positive = np.asarray(true_positive, bool).reshape(-1)
    classes = np.asarray(classes, np.int64).reshape(-1)
    num_gt = np.asarray(num_gt, np.float64).reshape(-1)
    shape = (len(num_gt), len(thresholds))
    precision, recall = np.ones(shape), np.zeros(shape)
    for c in range(len(num_gt)):
        mine = classes == c
        order = np.argsort(scores[mine], kind="stable")
        s, tp_sorted = scores[mine][order], true_positive[mine][order]
        # detections with score >= t are those from index searchsorted(s, t) on
        start = np.searchsorted(s, thresholds, side="left")
        tp_above = np.concatenate([np.cumsum(tp_sorted[::-1])[::-1], [0]])[start]
        count = len(s) - start
        precision[c] = np.where(count > 0, tp_above / np.maximum(count, 1), 1.0)
        recall[c] = tp_above / num_gt[c] if num_gt[c] > 0 else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    f1 = np.where((precision + recall) > 0, f1, 0.0)
    f1[np.isnan(recall)] = np.nan
    return {"thresholds": thresholds, "precision": precision, "recall": recall, "f1": f1}


def group_by_image(ground_truth, detections, image_ids=None):
    """COCO ground truth (dict) and result dicts -> ``{image_id: (gt_boxes, gt_cats,
    det_boxes, det_cats, det_scores)}`` with xyxy boxes and category ids; crowd objects are
    left out (COCO ignores them too)."""
    ids = [im["id"] for im in ground_truth["images"]] if image_ids is None else [int(i) for i in image_ids]
    gt = {i: ([], []) for i in ids}
    dt = {i: ([], [], []) for i in ids}
    for ann in ground_truth["annotations"]:
        if ann["image_id"] in gt and not ann.get("iscrowd", 0):
            x, y, w, h = ann["bbox"]
            gt[ann["image_id"]][0].append([x, y, x + w, y + h])
            gt[ann["image_id"]][1].append(ann["category_id"])
    for det in detections:
        if det["image_id"] in dt:
            x, y, w, h = det["bbox"]
            dt[det["image_id"]][0].append([x, y, x + w, y + h])
            dt[det["image_id"]][1].append(det["category_id"])
            dt[det["image_id"]][2].append(det["score"])
    return {
        i: (np.asarray(gt[i][0], np.float64).reshape(-1, 4), np.asarray(gt[i][1], np.int64),
            np.asarray(dt[i][0], np.float64).reshape(-1, 4), np.asarray(dt[i][1], np.int64),
            np.asarray(dt[i][2], np.float64))
        for i in ids
    }  # fmt: skip


def evaluate_matches(ground_truth, detections, image_ids=None, class_names=None, iou_threshold=MATRIX_IOU,
                     conf_threshold=CONF_THRESHOLD, curve_iou=CURVE_IOU, thresholds=None):
    """Confusion matrix and confidence curves of COCO-form detections against a COCO dict.

    Classes are the ground truth's categories in id order (contiguous index = position).
    Returns ``(ConfusionMatrix, curves dict)``; the curves dict also has ``num_gt [C]``.
    """
    categories = sorted(ground_truth["categories"], key=lambda c: c["id"])
    index = {c["id"]: k for k, c in enumerate(categories)}
    names = class_names if class_names is not None else [str(c.get("name", c["id"])) for c in categories]
    matrix = ConfusionMatrix(len(categories), names, iou_threshold, conf_threshold)
    scores, flags, classes = [], [], []
    num_gt = np.zeros(len(categories), np.int64)
    for gt_boxes, gt_cats, det_boxes, det_cats, det_scores in group_by_image(ground_truth, detections,
                                                                             image_ids).values():
        unknown = sorted(set(gt_cats.tolist() + det_cats.tolist()) - set(index))
        if unknown:
            raise ValueError(f"category ids {unknown} are not among the ground truth's {sorted(index)}")
        gt_k = np.asarray([index[c] for c in gt_cats], np.int64)
        det_k = np.asarray([index[c] for c in det_cats], np.int64)
        matrix.update(gt_boxes, gt_k, det_boxes, det_k, det_scores)
        flags.append(match_detections(gt_boxes, gt_k, det_boxes, det_k, det_scores, curve_iou))
        scores.append(det_scores)
        classes.append(det_k)
        num_gt += np.bincount(gt_k, minlength=len(categories))
    cat = (lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype))
    curves = confidence_curves(cat(scores, np.float64), cat(flags, bool), cat(classes, np.int64), num_gt, thresholds)
    curves["num_gt"] = num_gt
    return matrix, curves


__all__ = [
    "CONF_THRESHOLD", "CURVE_IOU", "MATRIX_IOU", "ConfusionMatrix", "box_iou", "confidence_curves",
    "evaluate_matches", "group_by_image", "match_detections",
]

"""Validation pictures, as a user of Ultralytics expects after training or ``val``.

``validation_pictures(model, dataset, out_dir, source)`` runs the detector once over an
evaluation set and writes, from that one pass:

- ``confusion_matrix.png`` / ``confusion_matrix_normalized.png`` (+ ``confusion_matrix.csv``):
  predicted against true class with a background row and column (IoU 0.45, conf 0.25);
- ``P_curve.png``, ``R_curve.png``, ``F1_curve.png``: precision, recall and F1 against the
  confidence threshold, per class and for all classes (their mean), at IoU 0.5;
- ``PR_curve.png``: precision-recall per class at IoU 0.5 (COCO's curve, so the AP in the
  legend is the AP50 reported);
- ``labels.png``: label distribution (objects per class, box centres, box sizes);
- ``val_images.png``: validation images, the labels beside the predictions, class names drawn.

The matching is ``keras_csp.evaluation.confusion`` (NumPy); every figure is written
atomically (``plots.save_figure``).
"""

import dataclasses
import math
import os

import numpy as np

from keras_csp.backend import tf
from keras_csp.evaluation import confusion as cm
from keras_csp.evaluation.detection import detection_function, evaluate_detector
from keras_csp.evaluation.plots import _pyplot, save_figure, write_results_csv
from keras_csp.files import atomic_write_text
from keras_csp.postprocess.geometry import Letterbox
from keras_csp.visualize import class_colour, draw_detections, side_by_side

PICTURES = ("confusion_matrix.png", "confusion_matrix_normalized.png", "P_curve.png", "R_curve.png",
            "F1_curve.png", "PR_curve.png", "labels.png", "val_images.png")
"""The PNG files ``validation_pictures`` writes."""
_LEGEND_MAX = 12  # more classes: one grey line each, no per-class legend


@dataclasses.dataclass
class Sample:
    """One validation image for the grid: the image (original aspect, display pixels) and the
    labels and detections in its pixels."""

    image_id: int
    image: np.ndarray
    gt_boxes: np.ndarray
    gt_classes: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray


def _finish(fig, path):
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


# --- confusion matrix --------------------------------------------------------------------------

def plot_confusion_matrix(matrix, path, normalize=False):
    """Draw a :class:`~keras_csp.evaluation.confusion.ConfusionMatrix` (counts or column
    fractions); x is the true class, y the predicted one, background last."""
    plt = _pyplot()
    values = matrix.normalized() if normalize else matrix.matrix.astype(np.float64)
    labels = matrix.labels
    n = len(labels)
    side = min(16.0, 3.0 + 0.55 * n)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    shown = np.where(values > 0, values, np.nan)  # empty cells stay white
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1.0 if normalize else max(1.0, np.nanmax(values)))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:
        top = np.nanmax(values) if values.size else 1.0
        for (p, t), v in np.ndenumerate(values):
            if v > 0:
                text = f"{v:.2f}" if normalize else str(int(v))
                ax.text(t, p, text, ha="center", va="center", fontsize=8 if n <= 15 else 6,
                        color="white" if v > 0.6 * top else "black")
    ax.set_xticks(range(n), labels, rotation=90 if n > 8 else 45, ha="center" if n > 8 else "right",
                  fontsize=9 if n <= 20 else 6)
    ax.set_yticks(range(n), labels, fontsize=9 if n <= 20 else 6)
    ax.set(xlabel="True", ylabel="Predicted")
    ax.set_title(f"Confusion matrix{' (normalized by true class)' if normalize else ''}\n"
                 f"IoU > {matrix.iou_threshold:g}, confidence > {matrix.conf_threshold:g}", fontsize=10)
    return _finish(fig, path)


# --- curves -------------------------------------------------------------------------------------

def plot_confidence_curve(curves, key, path, class_names):
    """``key`` (``precision`` / ``recall`` / ``f1``) against confidence: a thin line per class
    with objects and a thick line for their mean, labelled with its best value."""
    plt = _pyplot()
    x = curves["thresholds"]
    values = curves[key]
    have = np.asarray(curves["num_gt"]) > 0
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    many = have.sum() > _LEGEND_MAX
    for c in np.flatnonzero(have):
        ax.plot(x, values[c], linewidth=1, color="grey" if many else None, alpha=0.5 if many else 0.9,
                label=None if many else str(class_names[c]))
    title = {"precision": "Precision", "recall": "Recall", "f1": "F1"}[key]
    if have.any():
        mean = np.nanmean(values[have], axis=0)
        best = int(np.nanargmax(mean)) if key != "recall" else 0
        ax.plot(x, mean, linewidth=3, color="tab:blue",
                label=f"all classes {mean[best]:.2f} at {x[best]:.3f}")
    else:
        ax.text(0.5, 0.5, "no objects in this set", ha="center", transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="Confidence", ylabel=title,
           title=f"{title}-confidence curve (IoU {cm.CURVE_IOU:g})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    return _finish(fig, path)


def plot_pr_curve(result, path, class_names=None):
    """Precision against recall at IoU 0.5 per class from a ``COCOResult`` (its 101-point
    curves), each labelled with its AP50, and all classes' mean as the thick line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    rows = [(k, r) for k, r in enumerate(result.per_class) if r["num_gt"] > 0]
    names = class_names or [r["name"] for r in result.per_class]
    if result.precision is not None and rows:
        recall = result.recall_thresholds
        t = int(np.argmin(np.abs(np.asarray(result.iou_thresholds) - 0.5)))
        curves = []
        many = len(rows) > _LEGEND_MAX
        for k, row in rows:
            p = np.asarray(result.precision[t, :, k, 0, -1], np.float64)
            p = np.where(p < 0, 0.0, p)
            curves.append(p)
            ax.plot(recall, p, linewidth=1, color="grey" if many else None, alpha=0.5 if many else 0.9,
                    label=None if many else f"{names[k]} {row['AP50']:.3f}")
        ax.plot(recall, np.mean(curves, axis=0), linewidth=3, color="tab:blue",
                label=f"all classes {result.stats['AP50']:.3f} mAP@0.5")
    else:
        ax.text(0.5, 0.5, "no detections" if rows else "no objects in this set", ha="center",
                transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="Recall", ylabel="Precision", title="Precision-recall curve (IoU 0.5)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    return _finish(fig, path)


# --- labels ---------------------------------------------------------------------------------------

def labels_from_ground_truth(ground_truth):
    """``(boxes [N, 4] xyxy normalised to each image, classes [N] contiguous)`` of a COCO dict
    (categories in id order), crowd objects left out."""
    sizes = {im["id"]: (float(im["width"]), float(im["height"])) for im in ground_truth["images"]}
    index = {c["id"]: k for k, c in enumerate(sorted(ground_truth["categories"], key=lambda c: c["id"]))}
    boxes, classes = [], []
    for ann in ground_truth["annotations"]:
        if ann.get("iscrowd", 0) or ann["image_id"] not in sizes:
            continue
        w, h = sizes[ann["image_id"]]
        x, y, bw, bh = ann["bbox"]
        boxes.append([x / w, y / h, (x + bw) / w, (y + bh) / h])
        classes.append(index[ann["category_id"]])
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64)


def labels_from_source(source):
    """The labels of a file source (``source.records``: YOLO txt, COCO, VOC) without decoding
    an image, as :func:`labels_from_ground_truth`; None for a source without records."""
    records = getattr(source, "records", None)
    if not records:
        return None
    boxes = np.concatenate([np.asarray(r.boxes, np.float64).reshape(-1, 4) for r in records])
    classes = np.concatenate([np.asarray(r.classes, np.int64).reshape(-1) for r in records])
    return boxes, classes


def plot_labels(boxes, classes, class_names, path, title=None):
    """Label distribution: objects per class, box centres (x, y) and box sizes (w, h), all
    normalised to the image."""
    plt = _pyplot()
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    n = len(class_names)
    counts = np.bincount(classes, minlength=n)[:n]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), gridspec_kw={"width_ratios": [1.5, 1, 1]})
    colours = [np.asarray(class_colour(k)) / 255.0 for k in range(n)]
    axes[0].bar(range(n), counts, color=colours, edgecolor="black", linewidth=0.5)
    axes[0].set_xticks(range(n), class_names, rotation=90 if n > 6 else 30, ha="center" if n > 6 else "right",
                       fontsize=9 if n <= 20 else 6)
    if n <= 20:
        for k, v in enumerate(counts):
            axes[0].text(k, v, str(int(v)), ha="center", va="bottom", fontsize=8)
    axes[0].set(ylabel="objects", title=f"objects per class ({len(classes)} in all)")
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    for ax, xy, (xl, yl), name in ((axes[1], centre, ("x", "y"), "box centres"),
                                   (axes[2], size, ("width", "height"), "box sizes")):
        if len(xy):
            from matplotlib.colors import LogNorm

            ax.hist2d(xy[:, 0], xy[:, 1], bins=25, range=[[0, 1], [0, 1]], cmap="Blues", cmin=1, norm=LogNorm())
        else:
            ax.text(0.5, 0.5, "no boxes", ha="center", transform=ax.transAxes)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"{xl} (fraction of the image)", ylabel=yl, title=name)
        ax.set_aspect("equal")
    axes[1].invert_yaxis()  # image coordinates: y grows downwards
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


# --- image grid -----------------------------------------------------------------------------------

def collect_samples(dataset, detect, num_images=8):
    """The first ``num_images`` images of an evaluation dataset with their labels and the
    detections of ``detect`` (a :func:`~keras_csp.evaluation.detection.detection_function`),
    in pixels of the model input with the letterbox padding cropped off."""
    samples = []
    for images, meta in dataset:
        if len(samples) >= num_images:
            break
        if images.dtype == tf.uint8:
            images = tf.cast(images, tf.float32) / 255.0
        out = {k: v.numpy() for k, v in detect(images, meta["image_info"]).items()}
        pixels, infos = images.numpy(), meta["image_info"].numpy()
        gts, ids = meta["boxes"].numpy(), meta["image_id"].numpy()
        for b in range(len(pixels)):
            if len(samples) >= num_images:
                break
            geometry = Letterbox.from_info(infos[b])
            (in_h, in_w), (sy, sx), (oy, ox) = geometry.input_hw, geometry.scale, geometry.offset
            (height, width) = geometry.original_hw
            ch, cw = max(1, int(round(height * sy))), max(1, int(round(width * sx)))
            top, left = int(round(oy)), int(round(ox))
            crop = np.clip(np.round(pixels[b, top:top + ch, left:left + cw] * 255.0), 0, 255).astype(np.uint8)
            rows = gts[b][gts[b][:, 4] >= 0]
            gt_px = rows[:, :4] * [in_w, in_h, in_w, in_h] - [left, top, left, top]
            k = int(out["num_detections"][b])
            det_px = out["boxes"][b, :k] * [sx, sy, sx, sy]
            samples.append(Sample(int(ids[b]), crop, gt_px, rows[:, 4].astype(np.int64), det_px,
                                  out["classes"][b, :k].astype(np.int64), out["scores"][b, :k]))
    return samples


def _captioned(image, text, font_size=13):
    """``image`` under a white strip with ``text`` (widened to fit the text)."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    strip = font_size + 8
    width = max(image.size[0], int(ImageDraw.Draw(image).textlength(text, font=font)) + 6)
    out = Image.new("RGB", (width, image.size[1] + strip), (255, 255, 255))
    out.paste(image, (0, strip))
    ImageDraw.Draw(out).text((3, 3), text, fill=(0, 0, 0), font=font)
    return out


def _zoomed(sample, display):
    """The sample's image scaled to ``display`` pixels on its long side, boxes with it."""
    from PIL import Image

    height, width = sample.image.shape[:2]
    zoom = display / max(height, width)
    size = (max(1, round(width * zoom)), max(1, round(height * zoom)))
    image = np.asarray(Image.fromarray(np.asarray(sample.image, np.uint8)).resize(size, Image.BILINEAR))
    return image, np.asarray(sample.gt_boxes, np.float64) * zoom, np.asarray(sample.boxes, np.float64) * zoom


def plot_image_grid(samples, class_names, path, conf_threshold=cm.CONF_THRESHOLD, columns=2, display=320,
                    max_drawn=40):
    """``val_images.png``: per image, its labels beside its predictions (score above
    ``conf_threshold``, at most the ``max_drawn`` best, the caption says how many there are),
    class names drawn; ``columns`` pairs per row, each image scaled to ``display`` pixels on
    its long side."""
    from PIL import Image

    if not samples:
        raise ValueError("no validation images to draw")
    cells = []
    for s in samples:
        scores = np.asarray(s.scores, np.float64)
        shown = int((scores > conf_threshold).sum())
        best = np.argsort(-scores, kind="stable")[:max_drawn]  # an untrained model's hundreds: the best only
        image, gt_boxes, boxes = _zoomed(s, display)
        labels = _captioned(draw_detections(image, gt_boxes, s.gt_classes, None, class_names),
                            f"image {s.image_id}: labels ({len(s.gt_classes)})")
        count = f"{shown}, best {max_drawn} drawn" if shown > max_drawn else str(shown)
        preds = _captioned(draw_detections(image, boxes[best], np.asarray(s.classes)[best], scores[best], class_names,
                                           conf_threshold), f"predictions > {conf_threshold:g} ({count})")
        cells.append(side_by_side([labels, preds], gap=4))
    columns = max(1, min(columns, len(cells)))
    rows = math.ceil(len(cells) / columns)
    cw, ch = max(c.size[0] for c in cells), max(c.size[1] for c in cells)
    gap = 12
    grid = Image.new("RGB", (columns * cw + (columns - 1) * gap, rows * ch + (rows - 1) * gap), (235, 235, 235))
    for i, cell in enumerate(cells):
        grid.paste(cell, ((i % columns) * (cw + gap), (i // columns) * (ch + gap)))
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    grid.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


# --- all of them ------------------------------------------------------------------------------------

def write_pictures(out_dir, ground_truth, detections, result, samples=(), image_ids=None, labels=None,
                   iou_threshold=cm.MATRIX_IOU, conf_threshold=cm.CONF_THRESHOLD, title=None):
    """Write the validation pictures of one evaluation into ``out_dir``.

    Args:
      ground_truth: COCO dict; detections: COCO result dicts (the evaluation's, score >
        0.001); result: their ``COCOResult``; samples: :class:`Sample` s for the image grid.
      labels: ``(boxes, classes)`` for ``labels.png`` (default: the ground truth's), e.g.
        the training set's (:func:`labels_from_source`).

    Returns ``{name: path}`` and the :class:`ConfusionMatrix` as ``(paths, matrix)``.
    """
    os.makedirs(out_dir, exist_ok=True)
    matrix, curves = cm.evaluate_matches(ground_truth, detections, image_ids, None, iou_threshold, conf_threshold)
    names = matrix.class_names
    join = lambda name: os.path.join(out_dir, name)  # noqa: E731
    paths = {
        "confusion_matrix.png": plot_confusion_matrix(matrix, join("confusion_matrix.png")),
        "confusion_matrix_normalized.png": plot_confusion_matrix(matrix, join("confusion_matrix_normalized.png"), True),
    }
    atomic_write_text(join("confusion_matrix.csv"), matrix.to_csv())
    for key, name in (("precision", "P_curve.png"), ("recall", "R_curve.png"), ("f1", "F1_curve.png")):
        paths[name] = plot_confidence_curve(curves, key, join(name), names)
    paths["PR_curve.png"] = plot_pr_curve(result, join("PR_curve.png"), names)
    boxes, classes = labels if labels is not None else labels_from_ground_truth(ground_truth)
    paths["labels.png"] = plot_labels(boxes, classes, names, join("labels.png"), title)
    if samples:
        paths["val_images.png"] = plot_image_grid(samples, names, join("val_images.png"), conf_threshold)
    return paths, matrix


def validation_pictures(model, dataset, out_dir, source=None, ground_truth=None, category_ids=None,
                        class_names=None, nms=None, max_batches=None, num_images=8, labels=None, title=None,
                        evaluation=None, detect=None):
    """Evaluate ``model`` on ``dataset`` (COCO mAP) and write the validation pictures.

    One pass over the set for the numbers and the pictures, one more over its first
    ``num_images`` images for the grid. ``labels``: see :func:`write_pictures`.
    ``evaluation``: a ``COCOResult`` of this model on this set that kept its detections (a
    training run's final one): the pictures are drawn from it, without the pass. ``detect``: a
    traced :func:`~keras_csp.evaluation.detection.detection_function` of the model to reuse.
    Returns ``(COCOResult, {name: path}, ConfusionMatrix)``.
    """
    detect = detect or detection_function(model, nms)
    if evaluation is None or evaluation.detections is None:
        evaluation = evaluate_detector(model, dataset, source, ground_truth, category_ids, class_names, nms,
                                       max_batches=max_batches, detect=detect)
    result, detections = evaluation, evaluation.detections
    image_ids, ground_truth = evaluation.image_ids, evaluation.ground_truth
    samples = collect_samples(dataset, detect, num_images) if num_images else []
    if title is None and getattr(source, "name", None):
        title = f"labels of {source.name}"
    paths, matrix = write_pictures(out_dir, ground_truth, detections, result, samples, image_ids, labels,
                                   title=title)
    return result, paths, matrix


def write_run_pictures(out_dir, history, model=None, val_dataset=None, val_source=None, train_source=None,
                       max_batches=None, evaluation=None, detect=None):
    """End of ``keras-csp train``: ``results.csv`` from ``history`` and, with a validation
    set, the validation pictures of the final model (labels.png from the training labels when
    the training source lists them). Without matplotlib only the CSV is written (logged).
    ``evaluation`` / ``detect``: the run's final evaluation and its detection function
    (:func:`validation_pictures`), so the set is not predicted and scored a second time.
    Returns ``{name: path}``."""
    import logging

    paths = {"results.csv": write_results_csv(history, os.path.join(out_dir, "results.csv"))}
    if model is None or val_dataset is None:
        return paths
    labels = labels_from_source(train_source) if train_source is not None else None
    title = f"labels of {getattr(train_source if labels is not None else val_source, 'name', 'the data')}"
    try:
        _, pictures, _ = validation_pictures(model, val_dataset, out_dir, val_source, max_batches=max_batches,
                                             labels=labels, title=title, evaluation=evaluation, detect=detect)
    except ImportError as err:  # matplotlib is an extra
        logging.getLogger(__name__).warning("validation pictures not drawn: %s", err)
        return paths
    paths.update(pictures)
    return paths


__all__ = [
    "PICTURES", "write_run_pictures", "Sample", "collect_samples", "labels_from_ground_truth", "labels_from_source", "plot_confidence_curve",
    "plot_confusion_matrix", "plot_image_grid", "plot_labels", "plot_pr_curve", "validation_pictures", "write_pictures",
]

"""Rebuild a trained detector from a run folder or from explicit flags, and use it on images."""

import glob
import json
import os

import numpy as np

WEIGHT_CHOICES = ("best", "final", "last")


def read_run(run_dir):
    """``run.json`` of a training run folder (model, classes, anchors, input size)."""
    path = os.path.join(os.fspath(run_dir), "run.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir}: not a keras-csp training run (no run.json)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_weights(run_dir, which="best"):
    """Path of the ``best`` / ``final`` / ``last`` weights of a run (falling back in that order)."""
    order = [which] + [w for w in WEIGHT_CHOICES if w != which]
    for name in order:
        path = os.path.join(os.fspath(run_dir), f"{name}.weights.h5")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{run_dir}: no {'/'.join(WEIGHT_CHOICES)}.weights.h5 found")


def load_detector(run=None, weights=None, model=None, num_classes=None, image_size=None, anchors=None,
                  class_names=None):
    """A detector and its class names, from a run folder and/or explicit settings.

    Args:
      run: a training run folder (``run.json`` gives model, classes, anchors, input size).
      weights: ``best`` / ``final`` / ``last`` of the run, or a path (Keras ``.weights.h5``
        or Darknet ``.weights``); explicit values override the run's.
      model, num_classes, image_size, anchors: as ``keras-csp train``.
      class_names: list of names, or a file with one name per line.

    Returns ``(detector, info)`` where ``info`` has ``class_names``, ``category_ids``,
    ``image_size``.
    """
    from keras_csp.training.models import build_model, parse_anchors

    info = read_run(run) if run else {}
    model = model or info.get("model")
    num_classes = num_classes or info.get("num_classes")
    image_size = image_size or info.get("image_size")
    anchors = anchors or info.get("anchors")
    missing = [n for n, v in (("model", model), ("num_classes", num_classes), ("image_size", image_size)) if not v]
    if missing:
        raise ValueError(f"cannot rebuild the detector: give --run or {', '.join('--' + m.replace('_', '-') for m in missing)}")
    if isinstance(class_names, str):
        with open(class_names, encoding="utf-8") as f:
            class_names = [line.strip() for line in f if line.strip()]
    names = class_names or info.get("class_names") or [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    if weights in (None, *WEIGHT_CHOICES):
        if not run:
            raise ValueError("give --weights PATH (or --run DIR to use its best/final weights)")
        weights = run_weights(run, weights or "best")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"weights file {weights!r} not found")
    detector = build_model(model, int(num_classes), int(image_size),
                           anchors=parse_anchors(anchors) if isinstance(anchors, str) else anchors,
                           head_options=info.get("head_options") if model == info.get("model") else None,
                           weights=weights)
    out = {"class_names": names, "category_ids": info.get("category_ids") or list(range(num_classes)),
           "image_size": int(image_size), "weights": weights, "model": model}
    return detector, out


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def expand_images(paths):
    """Files from a list of files, folders (their images) and glob patterns, sorted."""
    found = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            found += [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif any(ch in path for ch in "*?["):
            found += sorted(glob.glob(path))
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise FileNotFoundError(f"image {path!r} not found")
    if not found:
        raise ValueError(f"no images found in {list(paths)}")
    return found


def read_image(path):
    """An image file as RGB uint8 ``[H, W, 3]``."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def predict_files(detector, paths, out_dir, class_names, score_threshold=0.25, nms=None, image_size=None):
    """Detect objects in image files; write ``<stem>.png`` with the boxes drawn and
    ``detections.json`` into ``out_dir``. Returns the list of per-image records."""
    from keras_csp.detectors import InferenceModel, NMSConfig
    from keras_csp.training.checkpoints import atomic_write_text
    from keras_csp.visualize import save_detections

    config = NMSConfig.coerce(nms).replace(score_threshold=score_threshold) if nms is not None else \
        NMSConfig(score_threshold=score_threshold)
    infer = InferenceModel(detector, input_size=image_size, nms=config, batch_size=4)
    files = expand_images(paths)
    records = []
    os.makedirs(out_dir, exist_ok=True)
    for start in range(0, len(files), 16):
        chunk = files[start:start + 16]
        images = [read_image(p) for p in chunk]
        result = infer(images)
        for i, (path, image) in enumerate(zip(chunk, images)):
            n = int(result["num_detections"][i])
            boxes, scores, classes = result["boxes"][i, :n], result["scores"][i, :n], result["classes"][i, :n]
            stem = os.path.splitext(os.path.basename(path))[0]
            png = save_detections(os.path.join(out_dir, f"{stem}.png"), image, boxes, classes, scores, class_names)
            records.append({
                "image": path, "output": png,
                "detections": [{"class": int(c), "name": class_names[int(c)], "score": round(float(s), 4),
                                "box_xyxy": [round(float(v), 2) for v in b]} for b, s, c in zip(boxes, scores, classes)],
            })  # fmt: skip
    atomic_write_text(os.path.join(out_dir, "detections.json"), json.dumps(records, indent=1))
    return records


__all__ = ["expand_images", "load_detector", "predict_files", "read_image", "read_run", "run_weights"]

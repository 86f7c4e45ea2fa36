"""Rebuild a trained detector from a run folder, a complete ``.keras`` file or explicit flags,
and use it on images.

A training run writes ``best.keras`` and ``final.keras`` beside its weights: the whole
detector (classes, anchors, NMS settings), which ``keras.saving.load_model(path,
safe_mode=True)`` gives back without this package's training code. ``restore_detector`` takes
those, or rebuilds the model from ``run.json`` and a ``.weights.h5`` for older runs."""

import glob
import json
import os
import warnings

import numpy as np

from keras_csp.backend import keras
from keras_csp.data.yolo_txt import read_names
from keras_csp.detectors import InferenceModel, NMSConfig  # also registers the detector classes
from keras_csp.training.checkpoints import atomic_write_text
from keras_csp.training.models import build_model, parse_anchors
from keras_csp.training.precision import global_policy
from keras_csp.visualize import save_detections

WEIGHT_CHOICES = ("best", "final", "last")
KERAS_FILES = ("best", "final")  # the complete detectors a run writes (``<name>.keras``)


def _atomic_save_model(model, path):
    tmp = f"{path}.tmp-{os.getpid()}.keras"
    model.save(tmp)
    os.replace(tmp, path)
    return path


def float32_config(config):
    """``config`` (a Keras model config) with every mixed dtype policy (``mixed_bfloat16``,
    ``mixed_float16``: what ``--mixed-precision auto`` trains with on bf16 CPUs and GPUs) replaced
    by float32, so a model rebuilt from it computes as the deployable detector should: TFLite
    has no bf16 kernels, and a served model must not round its outputs to bf16."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            name = value.get("config", {}).get("name") if key == "dtype" and isinstance(value, dict) else None
            out[key] = "float32" if isinstance(name, str) and name.startswith("mixed_") else float32_config(value)
        return out
    if isinstance(config, (list, tuple)):
        return type(config)(float32_config(v) for v in config)
    return config


def save_detector_files(model, run_dir, class_names=None, which=KERAS_FILES):
    """Write ``<run_dir>/<name>.keras`` for each ``<name>.weights.h5`` present (``best``,
    ``final``): a fresh, uncompiled float32 copy of ``model`` (trained in any precision) holding
    those weights and the class names, so that the file alone is the deployable detector.
    Returns the paths written."""
    config = float32_config(model.get_config())
    with global_policy("float32"):  # also for layers a layer makes itself
        fresh = type(model).from_config(config)
        if not fresh.built:
            fresh.build(model.detector.inputs[0].shape)
    if class_names is not None and hasattr(fresh, "set_class_names"):
        fresh.set_class_names(class_names)
    written = []
    for name in which:
        weights = os.path.join(os.fspath(run_dir), f"{name}.weights.h5")
        if os.path.isfile(weights):
            fresh.load_weights(weights)
            written.append(_atomic_save_model(fresh, os.path.join(os.fspath(run_dir), f"{name}.keras")))
    return written


def load_keras_detector(path):
    """A ``.keras`` detector file (as a run writes) loaded with ``safe_mode=True``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} not found")
    return keras.saving.load_model(path, compile=False, safe_mode=True)


def _is_keras_file(path):
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith(".keras")


def weights_only_hint(path):
    """The message for a ``.weights.h5`` given where a model was expected."""
    folder = os.path.dirname(os.fspath(path)) or "."
    stem = os.path.basename(os.fspath(path)).split(".")[0]
    which = f" --weights {stem}" if stem in WEIGHT_CHOICES else ""
    return (f"{path} holds weights only, not a model: give the run folder (--run {folder}{which}) or a complete "
            f"model file such as {os.path.join(folder, 'final.keras')}")


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


def restore_detector(run=None, weights=None, model=None, num_classes=None, image_size=None, anchors=None,
                     class_names=None):
    """A detector and its class names, from a run folder and/or explicit settings.

    Args:
      run: a training run folder (``run.json`` gives model, classes, anchors, input size;
        its ``best.keras`` / ``final.keras`` are loaded when present), or a ``.keras`` file.
      weights: ``best`` / ``final`` / ``last`` of the run, or a path (a complete ``.keras``
        detector, Keras ``.weights.h5`` or Darknet ``.weights``); explicit values override the run's.
      model, num_classes, image_size, anchors: as ``keras-csp train``.
      class_names: list of names, or a file with one name per line.

    Returns ``(detector, info)`` where ``info`` has ``class_names``, ``category_ids``,
    ``image_size``.
    """
    keras_file = next((p for p in (run, weights, model) if _is_keras_file(p)), None)
    if run and keras_file is None and os.path.isfile(os.fspath(run)):
        if os.fspath(run).endswith(".h5"):
            raise ValueError(weights_only_hint(run))
        raise ValueError(f"--run {run}: expected a training run folder (with run.json) or a .keras model file")
    if keras_file is None and run and (weights is None or weights in KERAS_FILES):
        candidate = os.path.join(os.fspath(run), f"{weights or 'best'}.keras")
        if os.path.isfile(candidate) and not (model or num_classes or anchors):
            keras_file = candidate
    if keras_file is not None:
        return _from_keras_file(keras_file, class_names, image_size)
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
    if hasattr(detector, "set_class_names"):
        detector.set_class_names(names)
    out = {"class_names": names, "category_ids": info.get("category_ids") or list(range(num_classes)),
           "image_size": int(image_size), "weights": weights, "model": model}
    return detector, out


def _read_names_arg(class_names):
    if isinstance(class_names, (str, os.PathLike)):
        return read_names(class_names)
    return None if class_names is None else [str(n) for n in class_names]


def _from_keras_file(path, class_names=None, image_size=None):
    """``(detector, info)`` of a complete ``.keras`` detector file; ``run.json`` beside it (a
    run folder) supplies the dataset's category ids."""
    detector = load_keras_detector(path)
    if not hasattr(detector, "heads"):
        raise ValueError(f"{path}: expected a keras_csp detector; found a {type(detector).__name__}")
    num_classes = detector.heads[0].num_classes
    names = _read_names_arg(class_names) or list(getattr(detector, "class_names", None) or [])
    run_json = os.path.join(os.path.dirname(os.path.abspath(path)), "run.json")
    info = {}
    if os.path.isfile(run_json):
        with open(run_json, encoding="utf-8") as f:
            info = json.load(f)
    names = names or info.get("class_names") or [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for the {num_classes} classes of {path}")
    if hasattr(detector, "set_class_names"):
        detector.set_class_names(names)
    size = detector.detector.inputs[0].shape[1] or image_size or info.get("image_size")
    if image_size and size and int(image_size) != int(size):
        raise ValueError(f"{path} takes {size}x{size} inputs; --image-size {image_size} cannot change a saved model")
    ids = info.get("category_ids") if info.get("num_classes") == num_classes else None
    return detector, {"class_names": names, "category_ids": ids or list(range(num_classes)),
                      "image_size": int(size) if size else None, "weights": path, "model": path}


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


def load_detector(*args, **kwargs):
    """Deprecated name of :func:`restore_detector` (``keras_csp.darknet.load_detector`` builds a
    detector from a Darknet cfg)."""
    warnings.warn("keras_csp.training.restore.load_detector is deprecated; use restore_detector.",
                  DeprecationWarning, stacklevel=2)
    return restore_detector(*args, **kwargs)


__all__ = ["expand_images", "float32_config", "load_detector", "load_keras_detector", "predict_files", "read_image", "read_run",
           "restore_detector", "run_weights", "save_detector_files", "weights_only_hint"]

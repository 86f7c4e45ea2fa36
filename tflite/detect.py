#!/usr/bin/env python3
"""Detect objects with a keras_csp .tflite file: images, a folder or a video -> boxes + pictures.

Needs only ai-edge-litert (or tflite-runtime), NumPy and Pillow (video files: OpenCV, or an
animated GIF with Pillow alone). Reads the JSON sidecar next to the model for the input
size, letterbox, anchors and thresholds.

    python detect.py model.tflite photos/ --out results/ --labels model.labels.txt
    python detect.py model.tflite clip.mp4 --out frames/ --gpu-delegate ./libgpu_delegate.so

Writes ``detections.json`` (one record per image or frame, boxes in pixels xyxy) and, unless
``--no-draw``, annotated JPEGs into ``--out``.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from PIL import Image, ImageDraw, ImageSequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import yolo_numpy  # noqa: E402

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
          (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]


def _video_frames(path):
    if path.lower().endswith(".gif"):
        with Image.open(path) as gif:
            for number, frame in enumerate(ImageSequence.Iterator(gif)):
                yield f"{os.path.basename(path)}#{number}", np.asarray(frame.convert("RGB"))
        return
    try:
        import cv2
    except ImportError:
        raise SystemExit(f"Reading {path} needs OpenCV (pip install opencv-python-headless); "
                         "images, folders and GIFs need only Pillow.") from None
    capture = cv2.VideoCapture(path)
    number = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        yield f"{os.path.basename(path)}#{number}", frame[:, :, ::-1].copy()
        number += 1
    capture.release()


def iter_inputs(sources):
    """(name, RGB uint8 array) for every image, image in a folder, or video frame."""
    for source in sources:
        if os.path.isdir(source):
            for name in sorted(os.listdir(source)):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    yield from iter_inputs([os.path.join(source, name)])
        elif source.lower().endswith(VIDEO_EXTENSIONS):
            yield from _video_frames(source)
        elif os.path.isfile(source):
            with Image.open(source) as image:
                yield os.path.basename(source), np.asarray(image.convert("RGB"))
        else:
            raise SystemExit(f"No such image, folder or video: {source}")


def draw(image, result, labels=None):
    """An annotated copy of ``image`` (RGB array) as a PIL image."""
    picture = Image.fromarray(image)
    pen = ImageDraw.Draw(picture)
    for box, score, cls in zip(result["boxes"], result["scores"], result["classes"]):
        color = COLORS[int(cls) % len(COLORS)]
        pen.rectangle([float(v) for v in box], outline=color, width=2)
        name = labels[cls] if labels and 0 <= cls < len(labels) else str(int(cls))
        pen.text((float(box[0]) + 2, float(box[1]) + 1), f"{name} {score:.2f}", fill=color)
    return picture


def read_labels(path):
    if not path:
        return None
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument("inputs", nargs="+", help="images, folders of images or video files")
    parser.add_argument("--sidecar", help="JSON sidecar (default: MODEL with .json)")
    parser.add_argument("--labels", help="class names, one per line (default: from sidecar)")
    parser.add_argument("--out", default="detections", help="output folder")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--gpu-delegate", help="path of the TFLite GPU delegate library")
    parser.add_argument("--score", type=float, help="score threshold (default: sidecar)")
    parser.add_argument("--iou", type=float, help="NMS IoU threshold (default: sidecar)")
    parser.add_argument("--max-detections", type=int, help="boxes per image (default: sidecar)")
    parser.add_argument("--no-draw", action="store_true", help="write only detections.json")
    args = parser.parse_args(argv)

    model = yolo_numpy.TFLiteModel(args.model, args.sidecar, args.threads, args.gpu_delegate)
    labels_path = args.labels
    if labels_path is None and model.sidecar.get("labels"):
        labels_path = os.path.join(os.path.dirname(os.path.abspath(args.model)),
                                   model.sidecar["labels"])
    labels = read_labels(labels_path)
    os.makedirs(args.out, exist_ok=True)
    records = []
    for name, image in iter_inputs(args.inputs):
        start = time.perf_counter()
        result = yolo_numpy.detect(model, image, args.iou, args.score, args.max_detections)
        elapsed = (time.perf_counter() - start) * 1000
        records.append({
            "image": name,
            "size": list(image.shape[:2]),
            "milliseconds": round(elapsed, 2),
            "detections": [
                {"box": [round(float(v), 2) for v in box], "score": round(float(score), 4),
                 "class": int(cls),
                 **({"label": labels[cls]} if labels and 0 <= cls < len(labels) else {})}
                for box, score, cls in zip(result["boxes"], result["scores"], result["classes"])
            ],
        })
        print(f"{name}: {len(result['scores'])} boxes in {elapsed:.1f} ms")
        if not args.no_draw:
            stem = (os.path.splitext(name)[0] if "#" not in name
                    else name.replace(".", "_").replace("#", "_"))
            draw(image, result, labels).save(os.path.join(args.out, f"{stem}.jpg"), quality=90)
    with open(os.path.join(args.out, "detections.json"), "w", encoding="utf-8") as handle:
        json.dump(records, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Draw detections on images with Pillow: a box per object, its class name and score."""

import colorsys
import os

import numpy as np

_GOLDEN = 0.618033988749895


def class_colour(index):
    """A bright colour (r, g, b) for class ``index``, far from its neighbours' colours."""
    h = (int(index) * _GOLDEN) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _as_uint8(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"image must be [height, width, 3] RGB; received shape {image.shape}")
    image = image[..., :3]
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and image.max() <= 1.0:
            image = image * 255.0
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image


def draw_detections(image, boxes, classes, scores=None, class_names=None, score_threshold=0.0,
                    line_width=None):
    """Return a copy of ``image`` (uint8 or float [0, 1] ``[H, W, 3]``) with the detections
    drawn, as a ``PIL.Image``.

    Args:
      boxes: ``[N, 4]`` xyxy pixels of ``image``; classes: ``[N]`` (negative = padding,
        skipped); scores: ``[N]`` or None; class_names: names by class index.
      score_threshold: detections scoring at or below it are not drawn.
      line_width: box outline width (default: from the image size).
    """
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(_as_uint8(image))
    draw = ImageDraw.Draw(canvas)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    scores = None if scores is None else np.asarray(scores, np.float64).reshape(-1)
    width = line_width or max(1, round(max(canvas.size) / 250))
    try:
        font = ImageFont.load_default(size=max(10, round(max(canvas.size) / 45)))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    order = np.argsort(scores) if scores is not None else np.arange(len(boxes))
    for i in order:  # best drawn last (on top)
        c = int(classes[i])
        if c < 0 or (scores is not None and scores[i] <= score_threshold):
            continue
        x0, y0, x1, y1 = boxes[i]
        if not (x1 > x0 and y1 > y0):
            continue
        colour = class_colour(c)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        label = name if scores is None else f"{name} {scores[i]:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left, bottom - top
        ty = y0 - th - 2 if y0 - th - 2 >= 0 else y0
        tx = max(0, min(x0, canvas.size[0] - tw - 4))  # keep the label inside the image
        draw.rectangle([tx, ty, tx + tw + 4, ty + th + 2], fill=colour)
        draw.text((tx + 2 - left, ty + 1 - top), label, fill=(0, 0, 0), font=font)
    return canvas


def save_detections(path, image, boxes, classes, scores=None, class_names=None, score_threshold=0.0):
    """Draw the detections (see :func:`draw_detections`) and write a PNG to ``path``
    (atomically); returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    draw_detections(image, boxes, classes, scores, class_names, score_threshold).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def side_by_side(images, gap=8, background=(255, 255, 255)):
    """Join ``PIL`` images (or arrays) left to right into one image."""
    from PIL import Image

    images = [im if hasattr(im, "size") else Image.fromarray(_as_uint8(im)) for im in images]
    width = sum(im.size[0] for im in images) + gap * (len(images) - 1)
    height = max(im.size[1] for im in images)
    out = Image.new("RGB", (width, height), background)
    x = 0
    for im in images:
        out.paste(im.convert("RGB"), (x, 0))
        x += im.size[0] + gap
    return out


__all__ = ["class_colour", "draw_detections", "save_detections", "side_by_side"]

"""A seeded synthetic detection dataset written to disk as COCO JSON and YOLO txt.

Eight shape classes in random colours and textures, sizes from a few pixels to most of the
image, overlapping and occluding each other, on textured, cluttered backgrounds. Boxes are
those of the visible pixels; objects less than 40% visible are not drawn. Category ids have
gaps on purpose (like COCO's), so the id mapping is exercised. The same seed and options
give byte-identical files (each image has its own generator seeded by ``(seed, index)``).

It is the built-in default dataset of the demo and the tests: no download, and hard enough
that an untrained (or a trivial) detector scores near zero.
"""

import hashlib
import json
import math
import os
import shutil
import tempfile

import numpy as np

from keras_csp.data.coco import CocoSource, write_coco_json
from keras_csp.data.yolo_txt import YoloTxtSource

SHAPE_CLASSES = ("circle", "rectangle", "triangle", "star", "cross", "ring", "hexagon", "crescent")
CATEGORY_IDS = (1, 2, 3, 5, 7, 8, 10, 11)
GENERATOR_VERSION = 1
MIN_VISIBLE = 0.4  # objects less visible than this are not drawn
_SUPERSAMPLE = 2


def _polygon(kind, rng):
    """Outline(s) of a shape in unit coordinates [-1, 1]: list of (points [n, 2], fill 0/1)."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)
    if kind == "circle":
        return [(circle, 1)]
    if kind == "rectangle":
        return [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 1)]
    if kind == "triangle":
        a = np.deg2rad([-90, 30, 150])
        return [(np.stack([np.cos(a), np.sin(a)], axis=1), 1)]
    if kind == "star":
        a = np.deg2rad(np.arange(10) * 36 - 90)
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.35, 0.5))
        return [(np.stack([r * np.cos(a), r * np.sin(a)], axis=1), 1)]
    if kind == "cross":
        k = rng.uniform(0.25, 0.4)
        pts = [[-k, -1], [k, -1], [k, -k], [1, -k], [1, k], [k, k], [k, 1], [-k, 1], [-k, k], [-1, k], [-1, -k], [-k, -k]]
        return [(np.array(pts, float), 1)]
    if kind == "ring":
        return [(circle, 1), (circle * rng.uniform(0.45, 0.7), 0)]
    if kind == "hexagon":
        a = np.deg2rad(np.arange(6) * 60)
        return [(np.stack([np.cos(a), np.sin(a)], axis=1), 1)]
    if kind == "crescent":
        shift = rng.uniform(0.35, 0.6)
        return [(circle, 1), (circle * 0.95 + [shift, -0.1], 0)]
    raise ValueError(kind)


def _render_mask(kind, w, h, angle, rng):
    """Soft mask (float32 in [0, 1]) of a shape ``w x h`` rotated by ``angle``, with its
    local canvas; returns ``(mask [H', W'], (x_offset, y_offset) of the canvas centre)``."""
    from PIL import Image, ImageDraw

    side = int(math.ceil(max(w, h) * 1.05)) + 2
    big = side * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    cos, sin = math.cos(angle), math.sin(angle)
    for points, fill in _polygon(kind, rng):
        p = points * [w / 2, h / 2]
        p = np.stack([p[:, 0] * cos - p[:, 1] * sin, p[:, 0] * sin + p[:, 1] * cos], axis=1)
        p = (p + side / 2) * _SUPERSAMPLE
        draw.polygon([tuple(v) for v in p], fill=255 * fill)
    mask = np.asarray(canvas.reduce(_SUPERSAMPLE), np.float32) / 255.0
    return mask


def _random_colour(rng):
    import colorsys

    h, s, v = rng.uniform(), rng.uniform(0.2, 1.0), rng.uniform(0.25, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255


def _texture(rng, h, w, kind=None):
    """A float32 ``[h, w, 3]`` texture: solid, gradient, stripes, checker or smooth noise."""
    kind = kind or rng.choice(["solid", "gradient", "stripes", "checker", "noise"])
    c1, c2 = _random_colour(rng), _random_colour(rng)
    if kind == "solid":
        return np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    proj = xx * math.cos(angle) + yy * math.sin(angle)
    if kind == "gradient":
        t = (proj - proj.min()) / max(1e-6, proj.max() - proj.min())
    elif kind == "stripes":
        period = rng.uniform(3, 24)
        t = (np.sin(proj * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == "checker":
        cell = rng.uniform(4, 32)
        other = -xx * math.sin(angle) + yy * math.cos(angle)
        t = ((np.floor(proj / cell) + np.floor(other / cell)) % 2).astype(np.float32)
    else:  # smooth noise
        from PIL import Image

        cells = rng.integers(2, 12)
        grid = rng.uniform(0, 255, (cells, cells)).astype(np.float32)
        t = np.asarray(Image.fromarray(grid, "F").resize((w, h), Image.BICUBIC), np.float32) / 255.0
        t = np.clip(t, 0, 1)
    return (c1 * (1 - t[..., None]) + c2 * t[..., None]).astype(np.float32)


def _clutter(rng, image):
    """Draw random lines, arcs and dots (non-objects) onto a uint8 image in place."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    h, w = image.shape[:2]
    for _ in range(rng.integers(5, 40)):
        colour = tuple(int(c) for c in _random_colour(rng))
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        kind = rng.integers(3)
        if kind == 0:
            x1, y1 = x0 + rng.normal(0, w / 6), y0 + rng.normal(0, h / 6)
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 4)))
        elif kind == 1:
            r = rng.uniform(4, min(h, w) / 4)
            start = rng.uniform(0, 360)
            draw.arc([x0 - r, y0 - r, x0 + r, y0 + r], start, start + rng.uniform(30, 200), fill=colour, width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(1, 3)
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
    image[...] = np.asarray(pil)


def render_image(rng, height, width, max_objects=12, min_object=8, clutter=True):
    """Draw one image; returns ``(image uint8 [h, w, 3], objects)``, objects being
    ``(class_index, [x_min, y_min, x_max, y_max] pixels, visible_area)`` of visible pixels.

    ``clutter=False`` draws the plain variant: one texture for the background, no distractor
    lines, arcs or dots, and solid-coloured shapes (the demo's set: learnable in minutes).
    """
    background = _texture(rng, height, width)
    if clutter and rng.uniform() < 0.5:
        alpha = rng.uniform(0.2, 0.6)
        background = background * (1 - alpha) + _texture(rng, height, width) * alpha
    image = np.clip(background, 0, 255).astype(np.uint8)
    if clutter and rng.uniform() < 0.7:
        _clutter(rng, image)
    n = 0 if rng.uniform() < 0.05 else int(rng.integers(1, max_objects + 1))
    max_size = 0.6 * min(height, width)
    candidates = []
    for _ in range(n):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        kind = SHAPE_CLASSES[cls]
        size = math.exp(rng.uniform(math.log(min_object), math.log(max(min_object + 1, max_size))))
        aspect = math.exp(rng.uniform(-0.9, 0.9)) if kind == "rectangle" else math.exp(rng.uniform(-0.2, 0.2))
        w, h = size * math.sqrt(aspect), size / math.sqrt(aspect)
        angle = rng.uniform(0, 2 * np.pi) if kind != "rectangle" or rng.uniform() < 0.3 else 0.0
        mask = _render_mask(kind, w, h, angle, rng)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        x0, y0 = int(round(cx - mask.shape[1] / 2)), int(round(cy - mask.shape[0] / 2))
        full = np.zeros((height, width), np.float32)
        xs, ys = slice(max(0, x0), min(width, x0 + mask.shape[1])), slice(max(0, y0), min(height, y0 + mask.shape[0]))
        if xs.start >= xs.stop or ys.start >= ys.stop:
            continue
        full[ys, xs] = mask[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        candidates.append((cls, full, float(mask.sum())))
    # Front to back: keep an object only if enough of it shows past the ones above it.
    cover = np.zeros((height, width), np.float32)
    kept = []
    for cls, full, total in reversed(candidates):
        visible = full * (1.0 - cover)
        if total <= 0 or visible.sum() / total < MIN_VISIBLE:
            continue
        ys, xs = np.nonzero(visible > 0.5)
        if len(xs) == 0 or xs.max() - xs.min() < 2 or ys.max() - ys.min() < 2:
            continue
        cover = np.maximum(cover, full)
        box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        kept.append((cls, full, box, float((visible > 0.5).sum())))
    canvas = image.astype(np.float32)
    for cls, full, box, area in reversed(kept):  # back to front, each whole (occluded parts too)
        rows, cols = np.nonzero(full.any(axis=1))[0], np.nonzero(full.any(axis=0))[0]
        region = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        rh, rw = region[0].stop - region[0].start, region[1].stop - region[1].start
        fill = _texture(rng, rh, rw, "solid" if not clutter or rng.uniform() < 0.6 else None)
        alpha = full[region][..., None]
        canvas[region] = canvas[region] * (1 - alpha) + fill * alpha
    noise = rng.uniform(0, 10)
    canvas += rng.normal(0, noise, canvas.shape).astype(np.float32)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    objects = [(cls, box, area) for cls, _, box, area in kept]
    return image, objects


def write_synthetic_dataset(out_dir, num_images=64, seed=0, image_size=None, min_side=256, max_side=512,
                            max_objects=12, min_object=8, image_format="jpg", quality=90, clutter=True):
    """Write the synthetic dataset to ``out_dir`` (created; existing files overwritten).

    Layout: ``images/000001.jpg ...``, ``annotations.json`` (COCO instances),
    ``labels/000001.txt ...`` with ``train.txt`` and ``classes.names`` (YOLO txt), and
    ``manifest.json`` (the options, written last). ``image_size=(h, w)`` fixes the size,
    otherwise each side is drawn from ``[min_side, max_side]``. Returns a dict of paths.
    """
    from PIL import Image

    if num_images <= 0:
        raise ValueError(f"`num_images` must be positive; received {num_images!r}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"`image_format` must be 'jpg' or 'png'; received {image_format!r}")
    if image_size is None and not 32 <= min_side <= max_side:
        raise ValueError(f"need 32 <= min_side <= max_side; received {min_side}, {max_side}")
    out_dir = os.fspath(out_dir)
    for sub in ("images", "labels"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    images, annotations, lines = [], [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, index])
        if image_size is None:
            height, width = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
        else:
            height, width = image_size
        image, objects = render_image(rng, height, width, max_objects, min_object, clutter)
        image_id = index + 1
        stem = f"{image_id:06d}"
        file_name = f"{stem}.{image_format}"
        path = os.path.join(out_dir, "images", file_name)
        if image_format == "jpg":
            Image.fromarray(image).save(path, quality=quality)
        else:
            Image.fromarray(image).save(path)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        rows = []
        for cls, (x0, y0, x1, y1), area in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": CATEGORY_IDS[cls],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": area, "iscrowd": 0,
            })  # fmt: skip
            rows.append(
                f"{cls} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}\n"
            )
        with open(os.path.join(out_dir, "labels", f"{stem}.txt"), "w", encoding="utf-8") as f:
            f.writelines(rows)
        lines.append(f"images/{file_name}\n")
    categories = [{"id": i, "name": n, "supercategory": "shape"} for i, n in zip(CATEGORY_IDS, SHAPE_CLASSES)]
    paths = _paths(out_dir)
    write_coco_json(paths["coco_json"], images, annotations, categories,
                    {"description": f"keras_csp synthetic shapes, seed {seed}"})
    with open(paths["yolo_list"], "w", encoding="utf-8") as f:
        f.writelines(lines)
    with open(paths["names"], "w", encoding="utf-8") as f:
        f.write("".join(f"{n}\n" for n in SHAPE_CLASSES))
    manifest = _manifest(num_images, seed, image_size, min_side, max_side, max_objects, min_object, image_format, quality,
                         clutter)
    with open(paths["manifest"], "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return paths


def _manifest(num_images, seed, image_size, min_side, max_side, max_objects, min_object, image_format, quality,
              clutter=True):
    manifest = {
        "generator_version": GENERATOR_VERSION, "num_images": num_images, "seed": seed,
        "image_size": list(image_size) if image_size else None, "min_side": min_side, "max_side": max_side,
        "max_objects": max_objects, "min_object": min_object, "image_format": image_format, "quality": quality,
    }  # fmt: skip
    if not clutter:  # the default set's manifest (and cache folder) stays as it was
        manifest["clutter"] = False
    return manifest


def default_directory(manifest):
    """Cache folder for a synthetic set: ``$KERAS_HOME`` (default ``~/.keras``) /
    ``keras_csp/synthetic-<hash of the options>``."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    digest = hashlib.sha1(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(home, "keras_csp", f"synthetic-{digest}")


def ensure_synthetic_dataset(directory=None, num_images=64, seed=0, image_size=None, min_side=256, max_side=512,
                             max_objects=12, min_object=8, image_format="jpg", quality=90, clutter=True):
    """Write the synthetic set unless ``directory`` already holds it with these options;
    returns the paths dict of ``write_synthetic_dataset``. Writes to a temporary folder
    first, so an interrupted run leaves nothing half-written behind."""
    manifest = _manifest(num_images, seed, image_size, min_side, max_side, max_objects, min_object, image_format, quality,
                         clutter)
    directory = os.fspath(directory) if directory is not None else default_directory(manifest)
    manifest_path = os.path.join(directory, "manifest.json")
    if os.path.isfile(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            if json.load(f) == json.loads(json.dumps(manifest)):
                return _paths(directory)
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
    try:
        write_synthetic_dataset(tmp, num_images, seed, image_size, min_side, max_side, max_objects, min_object,
                                image_format, quality, clutter)
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return _paths(directory)


def _paths(directory):
    return {
        "root": directory,
        "images": os.path.join(directory, "images"),
        "coco_json": os.path.join(directory, "annotations.json"),
        "yolo_list": os.path.join(directory, "train.txt"),
        "names": os.path.join(directory, "classes.names"),
        "manifest": os.path.join(directory, "manifest.json"),
    }


def synthetic_source(directory=None, num_images=64, seed=0, format="coco", verify="header", **options):
    """The synthetic set as a source (written first if needed, see ``ensure_synthetic_dataset``):
    ``format="coco"`` gives a ``CocoSource``, ``"yolo"`` a ``YoloTxtSource``."""
    paths = ensure_synthetic_dataset(directory, num_images, seed, **options)
    if format == "coco":
        return CocoSource(paths["coco_json"], paths["images"], verify=verify, name=f"synthetic(seed={seed})")
    if format == "yolo":
        return YoloTxtSource(paths["yolo_list"], names=paths["names"], verify=verify, name=f"synthetic(seed={seed})")
    raise ValueError(f"`format` must be 'coco' or 'yolo'; received {format!r}")

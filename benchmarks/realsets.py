"""Small detection sets of real objects on real photos, built from what pip packages ship.

Not our synthetic shapes: every object is a crop of a real photograph, segmented from it,
and every background is a crop of another photograph. Sources: scikit-image's sample
images (``skimage.data``) and scikit-learn's (``load_sample_images``, ``load_digits``).

- ``coins``: one class, many small objects. The 24 coins of ``skimage.data.coins()``
  (segmented with Otsu's threshold and connected components), scaled and rotated by 90 degrees,
  pasted 4-20 at a time on backgrounds; tight boxes matter (touching coins).
- ``photo-objects``: five classes of larger objects with real texture: the cat's head
  (``chelsea``), the astronaut, the coffee cup (``coffee``), the rocket (``rocket``) and a
  coin; cut out with hand-fixed rectangles refined by a colour-distance mask, pasted 1-5 at
  a time at random scale and aspect on backgrounds.
- ``digits``: ten classes, scikit-learn's 8x8 handwritten digits (1797 real scans) upscaled
  and alpha-blended onto photos; small, low-contrast objects.

Backgrounds: random crops of brick, grass, gravel, the Hubble deep field, immunohistochemistry,
moon, camera, page, text, retina, China and flower, with colour jitter. Objects that would
overlap another by more than 30% of their area are re-placed, so every box is visible.

    python benchmarks/realsets.py OUT --set coins --train 400 --val 100 --size 320

writes ``OUT/images/*.jpg``, ``OUT/labels/*.txt`` (YOLO format), ``train.txt``, ``val.txt``,
``classes.txt``, ``data.yaml`` (Ultralytics) and ``obj.data`` (Darknet). Needs scikit-image and
scikit-learn (a benchmark environment; not dependencies of keras_csp).
"""

import argparse
import os

import numpy as np
from PIL import Image

SETS = ("coins", "photo-objects", "digits")


def _skimage():
    try:
        import skimage.data
        import skimage.filters
        import skimage.measure
    except ModuleNotFoundError as err:
        raise SystemExit("benchmarks/realsets.py needs scikit-image and scikit-learn: "
                         "pip install scikit-image scikit-learn") from err
    return skimage


def _rgb(image):
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, -1)
    if image.dtype != np.uint8:
        image = (255 * (image - image.min()) / max(np.ptp(image), 1e-6)).astype(np.uint8)
    return image[..., :3]


def backgrounds():
    """Background photographs (uint8 RGB)."""
    sk = _skimage()
    from sklearn.datasets import load_sample_images

    names = ("brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "moon",
             "camera", "page", "text", "retina")
    photos = [_rgb(getattr(sk.data, n)()) for n in names]
    photos += [_rgb(im) for im in load_sample_images().images]
    return photos


def _coin_cutouts():
    """(rgba crops) of the 24 coins of skimage's coins photo."""
    sk = _skimage()
    image = sk.data.coins()
    mask = image > sk.filters.threshold_otsu(image)
    labels = sk.measure.label(mask)
    cutouts = []
    for region in sk.measure.regionprops(labels):
        if region.area < 300:
            continue
        y0, x0, y1, x1 = region.bbox
        crop = _rgb(image)[y0:y1, x0:x1]
        alpha = (labels[y0:y1, x0:x1] == region.label).astype(np.uint8) * 255
        cutouts.append(np.dstack([crop, alpha]))
    return cutouts


def _rect_cutout(image, box, tolerance=None):
    """An RGBA cutout of ``box`` (y0, x0, y1, x1); with ``tolerance``, pixels close to the
    box border's median colour (the backdrop) become transparent."""
    y0, x0, y1, x1 = box
    crop = _rgb(image)[y0:y1, x0:x1]
    alpha = np.full(crop.shape[:2], 255, np.uint8)
    if tolerance is not None:
        border = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
        distance = np.linalg.norm(crop.astype(np.float32) - np.median(border, 0), axis=-1)
        alpha = np.where(distance > tolerance, 255, 0).astype(np.uint8)
    # Trim to the opaque part so that the box is tight.
    ys, xs = np.nonzero(alpha)
    return np.dstack([crop, alpha])[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _photo_objects():
    sk = _skimage()
    coins = _coin_cutouts()
    return {
        "cat": [_rect_cutout(sk.data.chelsea(), (20, 110, 290, 330))],
        "astronaut": [_rect_cutout(sk.data.astronaut(), (0, 130, 300, 350))],
        "cup": [_rect_cutout(sk.data.coffee(), (30, 80, 330, 480), tolerance=60)],
        "rocket": [_rect_cutout(sk.data.rocket(), (40, 260, 420, 400), tolerance=70)],
        "coin": coins,
    }


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = {str(k): [] for k in range(10)}
    for image, target in zip(digits.images, digits.target):
        gray = (255 * image / 16.0).astype(np.uint8)
        alpha = np.where(gray > 40, 255, 0).astype(np.uint8)
        ys, xs = np.nonzero(alpha)
        rgba = np.dstack([np.stack([255 - gray] * 3, -1), alpha])[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        out[str(target)].append(rgba)
    return out


def catalogue(name):
    """{class name: [RGBA cutouts]} of set ``name`` and its (min, max) objects per image and
    object side as a fraction of the image side."""
    if name == "coins":
        return {"coin": _coin_cutouts()}, (4, 20), (0.06, 0.2)
    if name == "photo-objects":
        return _photo_objects(), (1, 5), (0.15, 0.55)
    if name == "digits":
        return _digits(), (2, 8), (0.08, 0.25)
    raise ValueError(f"Unknown set {name!r}; sets: {SETS}.")


def _overlap(box, boxes):
    """Largest share of ``box``'s area covered by any of ``boxes`` (or of theirs by it)."""
    worst = 0.0
    for other in boxes:
        w = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
        h = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
        inter = w * h
        small = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
        worst = max(worst, inter / max(small, 1e-6))
    return worst


def render(rng, photos, objects, counts, scales, size):
    """One image (uint8 [size, size, 3]) and its boxes [(class index, x0, y0, x1, y1)]."""
    photo = photos[rng.integers(len(photos))]
    side = int(min(photo.shape[:2]) * rng.uniform(0.5, 1.0))
    y = rng.integers(0, photo.shape[0] - side + 1)
    x = rng.integers(0, photo.shape[1] - side + 1)
    canvas = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
    canvas = np.asarray(canvas).astype(np.float32) * rng.uniform(0.7, 1.2) + rng.uniform(-20, 20, 3)
    canvas = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    classes = sorted(objects)
    boxes = []
    for _ in range(rng.integers(counts[0], counts[1] + 1)):
        k = rng.integers(len(classes))
        cut = objects[classes[k]][rng.integers(len(objects[classes[k]]))]
        cut = np.rot90(cut, rng.integers(4)) if classes[k] in ("coin",) else cut
        if rng.random() < 0.5:
            cut = cut[:, ::-1]
        long_side = size * rng.uniform(*scales) * np.exp(rng.uniform(-0.15, 0.15))
        h, w = cut.shape[:2]
        ratio = long_side / max(h, w)
        aspect = np.exp(rng.uniform(-0.2, 0.2))
        nw, nh = max(4, int(w * ratio * aspect)), max(4, int(h * ratio / aspect))
        if nw >= size or nh >= size:
            continue
        for _attempt in range(20):
            x0, y0 = int(rng.integers(0, size - nw)), int(rng.integers(0, size - nh))
            box = (x0, y0, x0 + nw, y0 + nh)
            if _overlap(box, [b[1:] for b in boxes]) <= 0.3:
                break
        else:
            continue
        piece = Image.fromarray(np.ascontiguousarray(cut)).resize((nw, nh), Image.BILINEAR)
        rgb = np.asarray(piece)[..., :3].astype(np.float32) * rng.uniform(0.8, 1.2)
        piece = Image.fromarray(np.dstack([np.clip(rgb, 0, 255).astype(np.uint8), np.asarray(piece)[..., 3]]))
        canvas.paste(piece.convert("RGB"), (x0, y0), piece.getchannel("A"))
        alpha = np.asarray(piece.getchannel("A")) > 127
        ys, xs = np.nonzero(alpha)
        if len(xs) == 0:
            continue
        boxes.append((k, x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1))
    return np.asarray(canvas), boxes


def write_set(out, name, train=400, val=100, size=320, seed=0):
    """Write set ``name`` to ``out`` (YOLO txt layout, data.yaml, obj.data); returns ``out``."""
    objects, counts, scales = catalogue(name)
    photos = backgrounds()
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    os.makedirs(os.path.join(out, "labels"), exist_ok=True)
    lists = {"train": [], "val": []}
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            image, boxes = render(rng, photos, objects, counts, scales, size)
            stem = f"{split}_{i:05d}"
            path = os.path.abspath(os.path.join(out, "images", stem + ".jpg"))
            Image.fromarray(image).save(path, quality=92)
            with open(os.path.join(out, "labels", stem + ".txt"), "w") as f:
                for k, x0, y0, x1, y1 in boxes:
                    f.write(f"{k} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} "
                            f"{(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}\n")
            lists[split].append(path)
    classes = sorted(objects)
    for split, paths in lists.items():
        with open(os.path.join(out, f"{split}.txt"), "w") as f:
            f.write("\n".join(paths) + "\n")
    with open(os.path.join(out, "classes.txt"), "w") as f:
        f.write("\n".join(classes) + "\n")
    root = os.path.abspath(out)
    with open(os.path.join(out, "data.yaml"), "w") as f:
        f.write(f"path: {root}\ntrain: train.txt\nval: val.txt\nnames:\n")
        f.write("".join(f"  {i}: {c}\n" for i, c in enumerate(classes)))
    with open(os.path.join(out, "obj.data"), "w") as f:
        f.write(f"classes = {len(classes)}\ntrain = {root}/train.txt\nvalid = {root}/val.txt\n"
                f"names = {root}/classes.txt\n")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--set", default="photo-objects", choices=SETS)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_set(args.out, args.set, args.train, args.val, args.size, args.seed)
    print(args.out)


if __name__ == "__main__":
    main()

"""Calibration images for full-integer quantization, checked before the converter sees them.

int8 post-training quantization picks every activation's range from what the model
computes on these samples, so they must be real images of the user's domain, letterboxed
exactly as at inference. ``DEFAULT_SAMPLES`` (200) letterboxed images from the training or
validation set are enough for the ranges to settle (TFLite's own guidance is 100 to 500);
fewer than ``MIN_SAMPLES`` raise.
"""

import glob
import os

import numpy as np

from keras_csp.postprocess.geometry import letterbox

DEFAULT_SAMPLES = 200
MIN_SAMPLES = 8
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _as_array(value, where):
    try:
        import tensorflow as tf

        if isinstance(value, tf.Tensor):
            value = value.numpy()
    except ImportError:  # pragma: no cover
        pass
    array = np.asarray(value)
    if array.dtype == object:
        raise ValueError(f"representative_data {where} is not an image array; got {value!r:.80}.")
    return array


def _images_of(element, where):
    """The image batch inside one element: an array, (images, ...) tuple or {'image(s)': ...}."""
    if isinstance(element, dict):
        for key in ("images", "image", "inputs"):
            if key in element:
                return _as_array(element[key], where)
        raise ValueError(
            f"representative_data {where} is a dict without an 'images'/'image' key; keys: "
            f"{sorted(element)}."
        )
    if isinstance(element, (tuple, list)) and element and not np.isscalar(element[0]) and (
            np.ndim(element[0]) >= 3):
        return _as_array(element[0], where)
    return _as_array(element, where)


def _iterate(data):
    if callable(data) and not hasattr(data, "__iter__"):
        data = data()
    if isinstance(data, np.ndarray):
        yield from (data if data.ndim == 4 else [data])
        return
    yield from data


def calibration_samples(data, input_size, limit=DEFAULT_SAMPLES):
    """Up to ``limit`` samples ``[1, H, W, 3]`` float32 in [0, 1] from ``data``.

    ``data``: an array ``[N, H, W, 3]``, a list of images, a ``tf.data.Dataset`` or any
    iterable (or a callable returning one) of images, image batches, ``(images, labels)``
    tuples or ``{'images': ...}`` dicts. uint8 images are divided by 255. Raises
    ``ValueError`` naming the sample when a shape, type or range is wrong.
    """
    height, width = input_size
    samples = []
    for number, element in enumerate(_iterate(data)):
        where = f"element {number}"
        images = _images_of(element, where)
        given = images.shape
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1:] != (height, width, 3):
            raise ValueError(
                f"representative_data {where} has shape {given}; the export input is "
                f"(batch, {height}, {width}, 3). Letterbox calibration images to the export "
                "size (calibration_images(folder, input_size) does it)."
            )
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 255.0
        elif not np.issubdtype(images.dtype, np.floating):
            raise ValueError(
                f"representative_data {where} has dtype {images.dtype}; give uint8 pixels or "
                "float32 in [0, 1]."
            )
        images = images.astype(np.float32)
        if not np.all(np.isfinite(images)) or images.min() < -0.01 or images.max() > 1.01:
            raise ValueError(
                f"representative_data {where} has values in [{images.min():.3g}, "
                f"{images.max():.3g}]; the models take float images in [0, 1] (divide 0-255 "
                "pixels by 255)."
            )
        for image in images:
            samples.append(np.clip(image, 0.0, 1.0)[None])
            if len(samples) >= limit:
                return samples
    if len(samples) < MIN_SAMPLES:
        raise ValueError(
            f"representative_data gave {len(samples)} image(s); int8 calibration needs at "
            f"least {MIN_SAMPLES} (about {DEFAULT_SAMPLES} real images are recommended)."
        )
    return samples


def image_files(source):
    """Image paths from a folder (sorted, recursive), a glob pattern or a list of paths."""
    if isinstance(source, (list, tuple)):
        return [os.fspath(p) for p in source]
    source = os.fspath(source)
    if os.path.isdir(source):
        found = []
        for root, _, names in os.walk(source):
            found += [os.path.join(root, n) for n in names
                      if n.lower().endswith(IMAGE_EXTENSIONS)]
        return sorted(found)
    return sorted(glob.glob(source))


def calibration_images(source, input_size, limit=DEFAULT_SAMPLES):
    """Letterboxed float32 images ``[N, H, W, 3]`` in [0, 1] from image files.

    ``source`` is a folder, glob or list of files; images are spread over the whole list
    (every k-th file) when there are more than ``limit``. Uses the same letterbox as the
    exported SavedModel signature.
    """
    from PIL import Image

    files = image_files(source)
    if not files:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {source!r}.")
    step = max(1, len(files) // limit)
    images = []
    for path in files[::step][:limit]:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        boxed, _ = letterbox(pixels, input_size)
        images.append(boxed.numpy())
    return np.stack(images)

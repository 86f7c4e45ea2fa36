"""Image files: cheap checks in Python when a source is built, decoding in the graph.

TensorFlow's decoders raise on a bad file, which would end an epoch. So every file source
first checks its images here (existence, header, format, colour mode, a truncated tail), and
the in-graph loader keeps a last safety net (``ignore_errors`` with counters) for whatever
still fails to decode.
"""

import concurrent.futures
import dataclasses
import os

from keras_csp.backend import tf

SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
"""What ``tf.io.decode_image`` reads; other formats (TIFF, ...) are skipped, not converted."""

VERIFY_MODES = ("none", "exists", "header", "full")
"""How much each image is checked when a source is built, cheapest first:
``none`` (nothing; the in-graph safety net still counts failures), ``exists`` (the file is
there), ``header`` (default: the header opens with Pillow, format and colour mode are ones
TF decodes, and a file whose end marker is missing is fully decoded to confirm), ``full``
(every image fully decoded with Pillow: slow on big sets)."""

_CONVERSIONS = {
    "1": "1-bit converted to RGB",
    "L": "grayscale converted to RGB",
    "LA": "grayscale+alpha converted to RGB (alpha dropped)",
    "P": "palette converted to RGB",
    "PA": "palette+alpha converted to RGB (alpha dropped)",
    "RGBA": "RGBA converted to RGB (alpha dropped)",
    "CMYK": "CMYK converted to RGB",
    "I;16": "16-bit grayscale converted to 8-bit RGB",
    "I;16B": "16-bit grayscale converted to 8-bit RGB",
    "I;16L": "16-bit grayscale converted to 8-bit RGB",
    "I": "16-bit grayscale converted to 8-bit RGB",
}
_PLAIN_MODES = ("RGB", "YCbCr")


@dataclasses.dataclass
class ImageCheck:
    """Outcome of checking one image file: ``reason`` is None when it is usable."""

    path: str
    reason: str = None
    detail: str = ""
    size: tuple = None  # (height, width) when the header was read
    conversion: str = None


def _tail_is_complete(path, fmt):
    """Whether the file ends with its format's end marker (a cheap truncation test)."""
    markers = {"JPEG": b"\xff\xd9", "PNG": b"IEND", "GIF": b";"}
    marker = markers.get(fmt)
    if marker is None:
        return True
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1024))
        tail = f.read()
    return marker in tail


def _png_bit_depth(path):
    with open(path, "rb") as f:
        head = f.read(26)
    return head[24] if len(head) >= 26 else 8


def check_image(path, verify="header"):
    """Check one image file as ``verify`` (see ``VERIFY_MODES``) says; returns an ``ImageCheck``."""
    result = ImageCheck(path=path)
    if verify == "none":
        return result
    if not os.path.isfile(path):
        result.reason = "missing file"
        return result
    if verify == "exists":
        return result
    from PIL import Image  # local: Pillow is only needed when sources are built

    try:
        with Image.open(path) as im:
            fmt, mode, (width, height) = im.format, im.mode, im.size
            result.size = (height, width)
            if fmt not in SUPPORTED_FORMATS:
                result.reason = "unsupported image format"
                result.detail = f"{fmt} (TensorFlow decodes {', '.join(SUPPORTED_FORMATS)})"
                return result
            if mode not in _PLAIN_MODES and mode not in _CONVERSIONS:
                result.reason = "unsupported colour mode"
                result.detail = mode
                return result
            if width <= 0 or height <= 0:
                result.reason = "unreadable image"
                result.detail = f"size {width}x{height}"
                return result
            if verify == "full" or not _tail_is_complete(path, fmt):
                im.load()
    except FileNotFoundError:
        result.reason = "missing file"
    except Exception as e:  # Pillow raises many types for bad data
        result.reason = "corrupt or unreadable image"
        result.detail = f"{type(e).__name__}: {e}"
        return result
    if result.reason is None:
        if mode in _CONVERSIONS:
            result.conversion = _CONVERSIONS[mode]
        elif fmt == "PNG" and _png_bit_depth(path) == 16:
            result.conversion = "16-bit RGB converted to 8-bit"
    return result


def check_images(paths, verify="header", workers=None):
    """``check_image`` over many files with a thread pool (the work is mostly I/O)."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"`verify` must be one of {VERIFY_MODES}; received {verify!r}")
    paths = list(paths)
    if verify in ("none", "exists") or len(paths) < 64:
        return [check_image(p, verify) for p in paths]
    workers = workers or min(32, 4 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: check_image(p, verify), paths, chunksize=64))


def decode_image(data):
    """Decode JPEG/PNG/GIF/BMP/WebP bytes to uint8 RGB ``[H, W, 3]`` in the graph.

    Grayscale, palette and 16-bit images are converted; an alpha channel is dropped;
    an animated GIF gives its first frame.
    """
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def load_image(path):
    """Read and decode one image file in the graph (see ``decode_image``)."""
    return decode_image(tf.io.read_file(path))

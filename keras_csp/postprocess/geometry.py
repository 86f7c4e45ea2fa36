"""The letterbox and its inverse: one geometry object from the original image to the model input.

A letterbox resizes an image keeping its aspect ratio (bilinear, half-pixel centres, no
antialiasing, of the 0-255 values, rounded to uint8 levels) so that it fits the model input,
and centres it on grey ``PAD_VALUE``. :class:`Letterbox` records where the image landed, in
one convention used by the data pipelines, evaluation, ``Detector.predict``, the exported
graphs and ``tflite/yolo_numpy.py`` (its NumPy twin has the same fields)::

    input_pixel = original_pixel * scale + offset        per axis, (y, x) order

Its fields are float tensors ``[..., 2]`` in (y, x) order, with or without a batch dimension;
``to_info()`` stacks them into the ``image_info [..., 4, 2]`` tensor that ``tf.data`` carries
(rows: original (h, w), input (h, w), scale (y, x), offset (y, x)) and ``from_info`` reads it
back. Everything runs in a ``tf.function``, in ``tf.data`` and in a TFLite graph.
"""

from keras_csp.backend import tf

PAD_VALUE = 114
"""Grey level of letterbox / mosaic padding (Darknet and Ultralytics use 114 = 0.447)."""


def _xyxy(pair):
    """A (y, x) pair ``[..., 2]`` -> ``[..., 1, 4]`` = (x, y, x, y), to broadcast over boxes."""
    # gather + expand_dims, not pair[..., ::-1] / [..., None, :]: tf2onnx mistranslates those.
    return tf.expand_dims(tf.gather(pair, [1, 0, 1, 0], axis=-1), -2)


class Letterbox:
    """Where an original image sits in the model input (see the module docstring).

    Args (float tensors ``[..., 2]``, (y, x) order):
      original_hw: the original image's height and width in pixels.
      input_hw: the model input's height and width in pixels.
      scale: input pixels per original pixel.
      offset: input pixels of padding above and left of the image.
    """

    __slots__ = ("input_hw", "offset", "original_hw", "scale")

    def __init__(self, original_hw, input_hw, scale, offset):
        self.original_hw = original_hw
        self.input_hw = input_hw
        self.scale = scale
        self.offset = offset

    @classmethod
    def fit(cls, original_hw, input_hw):
        """The letterbox of an image of ``original_hw`` (ints ``[2]``) into ``input_hw`` (h, w).

        The image is resized by ``r = min(h / H0, w / W0)`` to ``round(H0 * r), round(W0 * r)``
        pixels and centred (padding split with the extra pixel at the bottom / right).
        """
        resized, top_left = _fit(original_hw, input_hw)
        original = tf.cast(original_hw, tf.float32)
        return cls(original, tf.cast(tf.stack(input_hw), tf.float32),
                   tf.cast(resized, tf.float32) / original, tf.cast(top_left, tf.float32))

    @classmethod
    def from_info(cls, image_info):
        """Read an ``image_info [..., 4, 2]`` tensor (or array): see ``to_info``."""
        return cls(image_info[..., 0, :], image_info[..., 1, :], image_info[..., 2, :],
                   image_info[..., 3, :])

    def to_info(self):
        """``image_info [..., 4, 2]`` float32: original (h, w), input (h, w), scale, offset."""
        fields = (self.original_hw, self.input_hw, self.scale, self.offset)
        return tf.stack([tf.cast(f, tf.float32) for f in fields], axis=-2)

    def _field(self, value, dtype):
        return tf.cast(value, dtype)

    @property
    def resized_hw(self):
        """The image's (h, w) inside the input: ``round(original_hw * scale)`` whole pixels."""
        return tf.round(tf.cast(self.original_hw, tf.float32) * tf.cast(self.scale, tf.float32))

    def boxes_to_input(self, boxes):
        """Boxes normalised to the original image -> normalised to the model input.

        ``boxes [..., N, 4+]`` xyxy; extra columns (a class) pass through unchanged.
        """
        boxes = tf.convert_to_tensor(boxes)
        dtype = boxes.dtype
        size = self._field(self.resized_hw, dtype)
        input_hw = self._field(self.input_hw, dtype)
        mul = _xyxy(size / input_hw)
        add = _xyxy(self._field(self.offset, dtype) / input_hw)
        return tf.concat([boxes[..., :4] * mul + add, boxes[..., 4:]], axis=-1)

    def boxes_to_original(self, boxes, normalized=True):
        """Undo the letterbox: model-input xyxy boxes ``[..., N, 4+]`` -> pixel xyxy
        ``[..., N, 4]`` of the original image, clipped to it.

        ``boxes`` are normalised to the input (``normalized=False``: in input pixels); any
        float dtype is kept (float64 ground truth stays float64).
        """
        boxes = tf.convert_to_tensor(boxes)
        dtype = boxes.dtype
        pixels = boxes[..., :4]
        if normalized:
            pixels = pixels * _xyxy(self._field(self.input_hw, dtype))
        out = (pixels - _xyxy(self._field(self.offset, dtype))) / _xyxy(self._field(self.scale, dtype))
        return tf.clip_by_value(out, tf.zeros([], dtype), _xyxy(self._field(self.original_hw, dtype)))

    def __repr__(self):
        return (f"Letterbox(original_hw={self.original_hw!r}, input_hw={self.input_hw!r}, "
                f"scale={self.scale!r}, offset={self.offset!r})")


def _fit(original_hw, input_hw):
    """int32 ``(resized (h, w), offset (top, left))`` of the letterbox of ``original_hw``."""
    height, width = input_hw
    hw = tf.cast(original_hw, tf.float32)
    ratio = tf.minimum(height / hw[0], width / hw[1])
    resized = tf.cast(tf.round(hw * ratio), tf.int32)
    resized = tf.clip_by_value(resized, 1, tf.cast(tf.stack([height, width]), tf.int32))
    return resized, (tf.cast(tf.stack([height, width]), tf.int32) - resized) // 2


def letterbox(images, input_hw, pad_value=PAD_VALUE, dtype=tf.float32):
    """Letterbox ``images`` (``[H0, W0, 3]`` or ``[B, H0, W0, 3]``, uint8 or floats in [0, 1]).

    ``input_hw``: an int (square) or ``(height, width)`` of the model input. Returns
    ``(images, Letterbox)``: float32 in [0, 1] (``dtype=tf.uint8``: the 0-255 levels as
    uint8) of shape ``[..., height, width, 3]``, and the geometry (fields ``[2]``: every image
    of a batch has one size).
    """
    if isinstance(input_hw, int):
        input_hw = (input_hw, input_hw)
    height, width = input_hw
    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    batch = images[None] if single else images
    pixels = tf.cast(batch, tf.float32)
    if images.dtype != tf.uint8:
        pixels = pixels * 255.0
    original_hw = tf.shape(batch)[1:3]
    resized_hw, top_left = _fit(original_hw, (height, width))
    resized = tf.image.resize(pixels, resized_hw, method="bilinear", antialias=False)
    resized = tf.clip_by_value(tf.round(resized), 0.0, 255.0)
    top, left = top_left[0], top_left[1]
    padded = tf.pad(resized, [[0, 0], [top, height - resized_hw[0] - top],
                              [left, width - resized_hw[1] - left], [0, 0]],
                    constant_values=float(pad_value))
    padded = tf.ensure_shape(padded, [None, height, width, 3])
    if dtype == tf.uint8:
        padded = tf.cast(padded, tf.uint8)
    else:
        padded = padded / 255.0
    original = tf.cast(original_hw, tf.float32)
    geometry = Letterbox(original, tf.constant([float(height), float(width)]),
                         tf.cast(resized_hw, tf.float32) / original, tf.cast(top_left, tf.float32))
    return (padded[0] if single else padded), geometry


def as_letterbox(value):
    """A ``Letterbox`` from a ``Letterbox`` or an ``image_info [..., 4, 2]`` tensor (None stays)."""
    if value is None or isinstance(value, Letterbox):
        return value
    return Letterbox.from_info(tf.cast(value, tf.float32))


__all__ = ["PAD_VALUE", "Letterbox", "as_letterbox", "letterbox"]

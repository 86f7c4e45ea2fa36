"""Darknet-specific layers: [upsample], [scale_channels], [reorg], [softmax] and [yolo].

Each computes exactly what Darknet's forward pass computes, keeps tensors at rank <= 4 and
uses ops the TFLite GPU delegate runs (RESIZE_NEAREST_NEIGHBOR, MUL, SPACE_TO_DEPTH, ...).
"""

import numpy as np

from keras_csp.backend import keras, register, tf


def _nearest_upsample(inputs, height, width, stride):
    """Nearest-neighbour x``stride`` of ``[B, H, W, C]``, with the block-sum gradient."""

    @tf.custom_gradient
    def upsample(x):
        size = tf.stack([height * stride, width * stride])
        y = tf.raw_ops.ResizeNearestNeighbor(images=x, size=size, align_corners=False, half_pixel_centers=False)

        def grad(dy):
            shape = tf.shape(dy)
            blocks = tf.reshape(dy, [shape[0], height, stride, width, stride, shape[3]])
            return tf.reduce_sum(blocks, axis=[2, 4])

        return y, grad

    return upsample(inputs)


@register
class NearestUpsample2D(keras.layers.Layer):
    """Darknet ``[upsample] stride=s``: nearest-neighbour x``s``, times ``scale``.

    Uses ``ResizeNearestNeighbor`` (no align_corners, no half-pixel centres), so TFLite
    gets a single RESIZE_NEAREST_NEIGHBOR op rather than the reshape + tile that
    ``UpSampling2D`` lowers to. Its gradient is the sum over each ``s x s`` block (a reshape and
    a sum, which XLA compiles; TensorFlow's ``ResizeNearestNeighborGrad`` has no XLA kernel on
    the CPU, so a ``jit_compile`` training step would fail on it).
    """

    def __init__(self, stride=2, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        if int(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = int(stride)
        self.scale = float(scale)

    def call(self, inputs):
        height, width = inputs.shape[1], inputs.shape[2]
        if height is None or width is None:
            dynamic = tf.shape(inputs)
            height, width = dynamic[1], dynamic[2]
        outputs = _nearest_upsample(inputs, height, width, self.stride)
        if self.scale != 1.0:
            outputs = outputs * self.scale
        return outputs

    def compute_output_shape(self, input_shape):
        scaled = [None if d is None else d * self.stride for d in input_shape[1:3]]
        return (input_shape[0], scaled[0], scaled[1], input_shape[3])

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "scale": self.scale}


@register
class ScaleChannels(keras.layers.Layer):
    """Darknet ``[scale_channels]``: ``features * scales`` with ``scales`` of shape 1x1xC.

    Called on ``[features, scales]`` (squeeze-and-excitation's rescale step).
    """

    def call(self, inputs):
        features, scales = inputs
        return features * scales

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@register
class Reorg(keras.layers.Layer):
    """Darknet ``[reorg] stride=s`` (AlexeyAB's, not ``reorg_old``): space-to-depth.

    Output channel ``(dy * s + dx) * C + c`` holds input channel ``c`` at offset (dy, dx),
    the same order as ``tf.nn.space_to_depth``.
    """

    def __init__(self, stride, **kwargs):
        super().__init__(**kwargs)
        if int(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = int(stride)

    def call(self, inputs):
        if self.stride == 1:
            return inputs
        return tf.nn.space_to_depth(inputs, self.stride)

    def compute_output_shape(self, input_shape):
        s = self.stride
        spatial = [None if d is None else d // s for d in input_shape[1:3]]
        channels = None if input_shape[3] is None else input_shape[3] * s * s
        return (input_shape[0], spatial[0], spatial[1], channels)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@register
class DarknetSoftmax(keras.layers.Layer):
    """Darknet ``[softmax] groups=G temperature=T``.

    Darknet's softmax runs over the layer's flattened CHW output split into ``groups``
    equal parts; for the usual 1x1xC classifier output that is a softmax over channels.
    """

    def __init__(self, groups=1, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)
        self.temperature = float(temperature)
        if self.groups < 1 or self.temperature <= 0:
            raise ValueError(
                f"groups must be >= 1 and temperature > 0, got {groups} and {temperature}"
            )

    def call(self, inputs):
        x = inputs / self.temperature if self.temperature != 1.0 else inputs
        height, width, channels = x.shape[1], x.shape[2], x.shape[3]
        if height == 1 and width == 1 and self.groups == 1:
            return tf.nn.softmax(x, axis=-1)
        chw = tf.transpose(x, [0, 3, 1, 2])
        grouped = tf.reshape(chw, [-1, self.groups, channels * height * width // self.groups])
        probs = tf.reshape(tf.nn.softmax(grouped, axis=-1), [-1, channels, height, width])
        return tf.transpose(probs, [0, 2, 3, 1])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "temperature": self.temperature}


def yolo_channel_affine(num_anchors, num_classes, scale_x_y=1.0, new_coords=False):
    """Per-channel constants of Darknet's [yolo] forward: ``out = raw*x + a*sigmoid(x) + b``.

    Channels are anchor-major ``[x, y, w, h, obj, cls...]``. Without ``new_coords``, x, y,
    obj and classes go through the sigmoid and w, h stay raw; with it nothing does. Then
    ``x, y = scale_x_y * v - (scale_x_y - 1) / 2``.
    """
    per_anchor = 5 + num_classes
    raw = np.zeros(num_anchors * per_anchor, np.float32)
    gain = np.zeros_like(raw)
    bias = np.zeros_like(raw)
    for anchor in range(num_anchors):
        base = anchor * per_anchor
        if new_coords:
            raw[base : base + per_anchor] = 1.0
        else:
            gain[base : base + per_anchor] = 1.0
            raw[base + 2 : base + 4] = 1.0
            gain[base + 2 : base + 4] = 0.0
        for offset in (0, 1):
            index = base + offset
            if new_coords:
                raw[index] = scale_x_y
            else:
                gain[index] = scale_x_y
            bias[index] = -0.5 * (scale_x_y - 1.0)
    return raw, gain, bias


@register
class DarknetYolo(keras.layers.Layer):
    """Darknet's ``[yolo]`` forward pass on ``[B, H, W, A*(5+C)]`` logits.

    The detector's raw outputs are this layer's input; this layer gives what Darknet's
    [yolo] layer outputs (for checks against Darknet and for decoding), at rank 4.
    """

    def __init__(self, num_anchors, num_classes, scale_x_y=1.0, new_coords=False, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = int(num_anchors)
        self.num_classes = int(num_classes)
        self.scale_x_y = float(scale_x_y)
        self.new_coords = bool(new_coords)

    def call(self, inputs):
        expected = self.num_anchors * (5 + self.num_classes)
        if inputs.shape[-1] != expected:
            raise ValueError(
                f"{self.name}: expected {expected} channels for {self.num_anchors} anchors and "
                f"{self.num_classes} classes, got {inputs.shape[-1]}"
            )
        raw, gain, bias = (
            tf.constant(v, dtype=inputs.dtype)
            for v in yolo_channel_affine(
                self.num_anchors, self.num_classes, self.scale_x_y, self.new_coords
            )
        )
        outputs = inputs * raw + bias
        if not self.new_coords:
            outputs = outputs + tf.math.sigmoid(inputs) * gain
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "num_anchors": self.num_anchors,
            "num_classes": self.num_classes,
            "scale_x_y": self.scale_x_y,
            "new_coords": self.new_coords,
        }

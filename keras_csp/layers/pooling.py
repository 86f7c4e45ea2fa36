"""Darknet's window pooling and channel Maxout as Keras layers (rank <= 4, TFLite GPU ops).

Darknet pads a pool by ``padding`` (default ``size - 1``) split as ``padding // 2`` before
the image, starts window ``i`` at ``i * stride - padding // 2``, ignores positions outside
the image and produces ``(n + padding - size) // stride + 1`` outputs. For 2x2/2 and the
stride-1 SPP pools that is TF's "same"; for an odd kernel with stride 2 (the ResNet stem's
3x3/2) it is not, and TF's "same" would shift every window by one pixel.
"""

from keras_csp.backend import keras, register, tf


def darknet_pool_output_size(extent, size, stride, padding):
    """Output length of a Darknet pool along one axis of length ``extent``."""
    return (extent + padding - size) // stride + 1


def _plan(extent, size, stride, padding):
    """How TF pools reproduce one axis: (same_matches, slice_offset or None).

    A stride-1 "same" pool puts window ``j`` at ``j - (size - 1) // 2``; Darknet's window
    ``i`` starts at ``i * stride - padding // 2``, so Darknet's outputs are every
    ``stride``-th output of that pool from ``offset``, when those all lie inside the image.
    """
    out = darknet_pool_output_size(extent, size, stride, padding)
    tf_out = -(-extent // stride)
    tf_before = max((tf_out - 1) * stride + size - extent, 0) // 2
    same = tf_out == out and tf_before == padding // 2
    offset = (size - 1) // 2 - padding // 2
    if offset < 0 or (out - 1) * stride + offset > extent - 1:
        offset = None
    return same, offset


@register
class DarknetPool2D(keras.layers.Layer):
    """Darknet ``[maxpool]`` (``mode="max"``) or ``[local_avgpool]`` (``mode="avg"``).

    ``padding`` is Darknet's total padding per axis (None: ``pool_size - 1``). Positions
    outside the image never win a max and do not count in an average, as in Darknet. Uses
    one TF pool with "same" padding when that matches, else a stride-1 "same" pool and a
    strided slice, so the TFLite graph holds only MAX/AVERAGE_POOL_2D and STRIDED_SLICE.
    """

    def __init__(self, pool_size, strides=None, padding=None, mode="max", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("max", "avg"):
            raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
        self.pool_size = int(pool_size)
        if strides is None:
            strides = self.pool_size
        if isinstance(strides, int):
            strides = (strides, strides)
        self.strides = tuple(int(s) for s in strides)
        self.padding = self.pool_size - 1 if padding is None else int(padding)
        self.mode = mode
        if self.pool_size < 1 or min(self.strides) < 1 or self.padding < 0:
            raise ValueError(
                f"pool_size and strides must be >= 1 and padding >= 0, got pool_size="
                f"{pool_size}, strides={strides}, padding={padding}"
            )

    def _static_hw(self, shape):
        height, width = shape[1], shape[2]
        if height is None or width is None:
            raise ValueError(
                f"{self.name}: Darknet pooling needs a static height and width, got {tuple(shape)}"
            )
        return int(height), int(width)

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        out = [None, None]
        for axis, extent in enumerate((height, width)):
            if extent is not None:
                out[axis] = darknet_pool_output_size(
                    extent, self.pool_size, self.strides[axis], self.padding
                )
        return (input_shape[0], out[0], out[1], input_shape[3])

    def _pool(self, x, strides, padding):
        size = [1, self.pool_size, self.pool_size, 1]
        strides = [1, strides[0], strides[1], 1]
        if self.mode == "max":
            return tf.nn.max_pool2d(x, size, strides, padding)
        return tf.nn.avg_pool2d(x, size, strides, padding)

    def call(self, inputs):
        height, width = self._static_hw(inputs.shape)
        plans = [
            _plan(extent, self.pool_size, self.strides[axis], self.padding)
            for axis, extent in enumerate((height, width))
        ]
        if all(same for same, _ in plans):
            return self._pool(inputs, self.strides, "SAME")
        if all(offset is not None for _, offset in plans):
            pooled = self._pool(inputs, (1, 1), "SAME")
            out_h, out_w = self.compute_output_shape(inputs.shape)[1:3]
            begin = [0, plans[0][1], plans[1][1], 0]
            end = [0, begin[1] + (out_h - 1) * self.strides[0] + 1,
                   begin[2] + (out_w - 1) * self.strides[1] + 1, 0]
            strides = [1, self.strides[0], self.strides[1], 1]
            return tf.strided_slice(pooled, begin, end, strides, begin_mask=0b1001, end_mask=0b1001)
        return self._padded_pool(inputs, height, width)

    def _padded_pool(self, inputs, height, width):
        """General case: explicit padding, then a VALID pool (never for the authors' cfgs)."""
        out_h, out_w = self.compute_output_shape(inputs.shape)[1:3]
        before = self.padding // 2
        pads = [[0, 0], [0, 0], [0, 0], [0, 0]]
        for axis, (extent, out) in enumerate(((height, out_h), (width, out_w))):
            after = (out - 1) * self.strides[axis] + self.pool_size - extent - before
            pads[axis + 1] = [before, max(after, 0)]
        if self.mode == "max":
            padded = tf.pad(inputs, pads, constant_values=inputs.dtype.min)
            pooled = self._pool(padded, self.strides, "VALID")
        else:
            ones = tf.pad(tf.ones_like(inputs[:1, :, :, :1]), pads)
            total = self._pool(tf.pad(inputs, pads), self.strides, "VALID")
            count = self._pool(ones, self.strides, "VALID")
            pooled = total / count
        return pooled[:, :out_h, :out_w, :]

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
            "mode": self.mode,
        }


@register
class ChannelMaxout(keras.layers.Layer):
    """Darknet ``[maxpool] maxpool_depth=1 out_channels=K``: channel Maxout.

    Output channel ``g`` is the maximum of input channels ``g, g + K, g + 2K, ...`` (the
    last group may be partial), computed with slices and ``maximum`` only, never a rank-5
    reshape, so it runs on the TFLite GPU delegate.
    """

    def __init__(self, out_channels, **kwargs):
        super().__init__(**kwargs)
        if int(out_channels) < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.out_channels = int(out_channels)

    def call(self, inputs):
        channels = inputs.shape[-1]
        k = self.out_channels
        if channels is None:
            raise ValueError(f"{self.name}: the channel count must be static")
        if channels < k:
            raise ValueError(f"{self.name}: out_channels={k} exceeds the {channels} input channels")
        result = inputs[..., :k]
        for start in range(k, channels, k):
            chunk = inputs[..., start : min(start + k, channels)]
            width = chunk.shape[-1]
            if width == k:
                result = tf.maximum(result, chunk)
            else:
                head = tf.maximum(result[..., :width], chunk)
                result = tf.concat([head, result[..., width:]], axis=-1)
        return result

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels}

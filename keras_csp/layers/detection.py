"""Layers of the detector necks and heads: SPP, spatial attention, Maxout, upsampling, decode.

Every tensor stays at rank <= 4 and every op is a TFLite builtin the mobile GPU delegate
runs (MAX_POOL_2D, CONCATENATION, MUL, LOGISTIC, EXP, RESHAPE, RESIZE_NEAREST_NEIGHBOR).
``Maxout`` is :class:`~keras_csp.layers.pooling.ChannelMaxout` (Darknet's ``maxpool_depth``)
and ``Upsample`` is :class:`~keras_csp.layers.darknet_ops.NearestUpsample2D`, re-exported
under the names the detectors use rather than written twice.
"""

from keras_csp.backend import keras, register, tf
from keras_csp.layers.darknet_ops import NearestUpsample2D
from keras_csp.layers.pooling import ChannelMaxout
from keras_csp.ops.decode import MAX_LOG_WH, decode_head  # noqa: F401  (MAX_LOG_WH: one, in ops)
from keras_csp.ops.head_spec import HeadSpec

# Channel Maxout (Goodfellow et al. 2013) as EFM uses it: output channel g is the max of
# input channels g, g + K, g + 2K, ... (Darknet's [maxpool] maxpool_depth=1 out_channels=K).
Maxout = ChannelMaxout
# Nearest-neighbour upsampling that converts to one RESIZE_NEAREST_NEIGHBOR op.
Upsample = NearestUpsample2D


@register
class SPP(keras.layers.Layer):
    """Spatial pyramid pooling of YOLOv3-SPP / PANet-SPP: stride-1 "same" max-pools, concat.

    Output channels are ``[pool_k_last, ..., pool_k_first, inputs]``: with the default
    ``(5, 9, 13)`` that is ``[max13, max9, max5, x]``, Darknet's ``[route] layers=-1,-3,-5,-6``.
    Darknet pads max-pools with -inf, which is TF's "same" max-pool at stride 1.
    """

    def __init__(self, pool_sizes=(5, 9, 13), **kwargs):
        super().__init__(**kwargs)
        sizes = tuple(int(s) for s in pool_sizes)
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"pool_sizes must be positive ints; received {pool_sizes!r}")
        self.pool_sizes = sizes

    def call(self, inputs):
        pooled = [
            tf.nn.max_pool2d(inputs, size, 1, "SAME") for size in reversed(self.pool_sizes)
        ]
        return tf.concat(pooled + [inputs], axis=-1)

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        out = None if channels is None else channels * (len(self.pool_sizes) + 1)
        return tuple(input_shape[:-1]) + (out,)

    def get_config(self):
        return {**super().get_config(), "pool_sizes": list(self.pool_sizes)}


@register
class SpatialAttention(keras.layers.Layer):
    """Spatial attention gate: ``features * gate`` (``gate`` broadcast over channels if 1).

    Called on ``[features, gate]``. The point-wise SAM of CSPNet / YOLOv4 is
    ``x * sigmoid(conv1x1(x))`` and ThunderNet's SAM (used by CEM(SAM)) is
    ``f_cem * sigmoid(bn(conv1x1(f_rpn)))``; both are a conv block that computes ``gate``
    followed by this layer (``keras_csp.detectors.necks.spatial_attention`` builds them).
    The conv stays a regular conv block so profiling counts it and Darknet ``[sam]`` weights
    load. ``activation="sigmoid"`` applies the sigmoid here when the gate is a logit.
    """

    def __init__(self, activation=None, **kwargs):
        super().__init__(**kwargs)
        if activation not in (None, "sigmoid"):
            raise ValueError(f"activation must be None or 'sigmoid'; received {activation!r}")
        self.activation = activation

    def call(self, inputs):
        features, gate = inputs
        if self.activation == "sigmoid":
            gate = tf.math.sigmoid(gate)
        return features * gate

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


@register
class YoloDecode(keras.layers.Layer):
    """Raw YOLO head outputs to ``boxes [B, N, 4]`` and ``scores [B, N, C]`` at rank <= 4.

    Called on the list of per-scale logits ``[B, H, W, A*(5+C)]`` in the order of ``heads``
    (``HeadSpec`` objects or their config dicts). ``boxes`` are normalised ``[x_min, y_min,
    x_max, y_max]`` of the model input, ``scores`` are objectness x class probability;
    ``N`` runs over scales, then cells row-major, then anchors: it runs
    ``keras_csp.ops.decode_head`` (without the training-time straight-through gradient). With
    static map sizes the grid and anchors are constants, so the TFLite graph holds only
    RESHAPE, STRIDED_SLICE, LOGISTIC, EXP, MUL, ADD, SUB, DIV, MINIMUM and CONCATENATION: no
    Flex op, nothing above rank 4.
    ``input_size`` ``(height, width)`` in pixels overrides ``H * stride`` for anchor scaling.
    """

    def __init__(self, heads, input_size=None, **kwargs):
        super().__init__(**kwargs)
        self._heads = tuple(HeadSpec.coerce(h) for h in heads)
        if not self._heads:
            raise ValueError("YoloDecode needs at least one head spec; received none.")
        classes = {h.num_classes for h in self._heads}
        if len(classes) != 1:
            raise ValueError(f"All heads must have the same num_classes; received {sorted(classes)}.")
        self.input_size = None if input_size is None else tuple(int(v) for v in input_size)

    @property
    def heads(self):
        return self._heads

    def _decode_one(self, logits, head):
        height, width, channels = logits.shape[1], logits.shape[2], logits.shape[3]
        if channels != head.channels:
            raise ValueError(
                f"{self.name}: head with stride {head.stride} expects {head.channels} channels "
                f"({head.num_anchors} anchors, {head.num_classes} classes); received {channels}."
            )
        if height is None or width is None:
            raise ValueError(
                f"{self.name}: decoding needs static map sizes; received {tuple(logits.shape)}. "
                "Build the detector with a fixed input_shape."
            )
        decoded = decode_head(logits, head, self.input_size, straight_through=False)
        return decoded["boxes"], decoded["objectness"][..., None] * decoded["class_probs"]

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        if len(inputs) != len(self._heads):
            raise ValueError(
                f"{self.name}: received {len(inputs)} head outputs for {len(self._heads)} heads."
            )
        decoded = [self._decode_one(x, h) for x, h in zip(inputs, self._heads)]
        if len(decoded) == 1:
            return {"boxes": decoded[0][0], "scores": decoded[0][1]}
        return {
            "boxes": tf.concat([d[0] for d in decoded], axis=1),
            "scores": tf.concat([d[1] for d in decoded], axis=1),
        }

    def compute_output_shape(self, input_shape):
        shapes = input_shape if isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple)) else [input_shape]
        total = 0
        for shape, head in zip(shapes, self._heads):
            if shape[1] is None or shape[2] is None:
                total = None
                break
            total += shape[1] * shape[2] * head.num_anchors
        classes = self._heads[0].num_classes
        return {"boxes": (shapes[0][0], total, 4), "scores": (shapes[0][0], total, classes)}

    def get_config(self):
        return {
            **super().get_config(),
            "heads": [h.get_config() for h in self._heads],
            "input_size": None if self.input_size is None else list(self.input_size),
        }


__all__ = ["MAX_LOG_WH", "Maxout", "SPP", "SpatialAttention", "Upsample", "YoloDecode"]

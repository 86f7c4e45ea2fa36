"""The Darknet convolution block: symmetric padding, conv, batch norm, activation."""

from keras_csp.backend import keras, register, tf
from keras_csp.layers.activations import activation_layer
from keras_csp.layers.merge import RepeatChannels
from keras_csp.layers.normalization import batch_norm

BN_EPSILON = 1e-5  # Darknet's batch-norm epsilon (Keras' default is 1e-3)


def darknet_padding(size, stride):
    """Darknet's ``pad=1`` padding (``size // 2`` on every side), as a Keras padding choice.

    Returns ``("same", 0)`` when TF's "same" gives the same numbers (odd kernel, stride 1)
    and ``("valid", size // 2)`` otherwise: TF's "same" pads bottom/right only for stride 2.
    """
    if stride == 1 and size % 2 == 1:
        return "same", 0
    return "valid", size // 2


@register
class GroupedConv2D(keras.layers.Conv2D):
    """``Conv2D`` with ``groups > 1`` run by TensorFlow's native grouped convolution.

    Keras 3 compiles every grouped conv with XLA on the TensorFlow backend, which on CPU is
    2-8x slower than ``tf.nn.conv2d`` (oneDNN runs grouped convs natively); measured in
    ``benchmarks/grouped_conv.py``. Weights and config are those of ``Conv2D``.
    """

    def convolution_op(self, inputs, kernel):
        return tf.nn.conv2d(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=self.padding.upper(),
            dilations=list(self.dilation_rate),
        )


def conv_bn_act(
    x,
    filters,
    size,
    stride=1,
    groups=1,
    activation="leaky",
    batch_normalize=True,
    name="conv",
    registry=None,
):
    """Apply Darknet's ``[convolutional]`` block to ``x``.

    Layers are named ``{name}_pad``, ``{name}_conv``, ``{name}_bn`` and ``{name}_act``.
    ``registry``, a list, receives ``name`` so weight converters can walk the convs in
    the order of the Darknet cfg. When ``groups`` equals the input channels the conv is a
    Keras ``DepthwiseConv2D`` (``filters = groups * depth_multiplier``), as mobile GPUs want.
    """
    padding, pad = darknet_padding(size, stride)
    if pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    if groups > 1 and groups == x.shape[-1]:
        x = _depthwise(x, filters, size, stride, padding, batch_normalize, name)
    else:
        conv_class = GroupedConv2D if groups > 1 else keras.layers.Conv2D
        x = conv_class(
            filters,
            size,
            strides=stride,
            padding=padding,
            groups=groups,
            use_bias=not batch_normalize,
            name=f"{name}_conv",
        )(x)
    if batch_normalize:
        x = batch_norm(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    act = activation_layer(activation, f"{name}_act")
    if act is not None:
        x = act(x)
    if registry is not None:
        registry.append(name)
    return x


def _depthwise(x, filters, size, stride, padding, batch_normalize, name):
    """Darknet's groups == channels conv as a ``DepthwiseConv2D`` of multiplier 1; a depth
    multiplier > 1 repeats each channel first (same result and Darknet's kernel order), as
    the TFLite GPU delegate runs a multiplier > 1 only on a 1-channel input."""
    groups = x.shape[-1]
    if filters % groups:
        raise ValueError(
            f"{name}: a depthwise conv needs filters to be a multiple of groups; got filters="
            f"{filters}, groups={groups}"
        )
    if filters > groups:
        x = RepeatChannels(filters // groups, name=f"{name}_repeat")(x)
    return keras.layers.DepthwiseConv2D(
        size, strides=stride, padding=padding, depth_multiplier=1, use_bias=not batch_normalize,
        name=f"{name}_conv",
    )(x)

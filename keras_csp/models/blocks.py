"""The block kinds of the small and mobile backbones, for :func:`~keras_csp.models.stages.build_stage`.

Each builder applies one block of a :class:`~keras_csp.models.stages.StageSpec` run to ``x``
and appends its conv blocks to ``registry`` in the order a Darknet cfg would list them:

- ``basic``: ResNet-10's block, 3x3 -> 3x3 linear, Darknet ``[shortcut]``, activation.
- ``dense``: DenseNet's layer, [1x1 ``hidden``] -> 3x3 ``growth``, output ``[new, x]``
  (the ``[route] layers=-1,-3`` order of the Darknet densenet201 cfg).
- ``two_way_dense``: PeleeNet's two-way dense layer (Wang et al. 2018): 1x1 ``hidden`` ->
  3x3 ``growth/2`` and 1x1 ``hidden`` -> 3x3 ``growth/2`` -> 3x3 ``growth/2``; output
  ``[x, branch1, branch2]`` as in PeleeNet.
- ``inverted``: MobileNetV2's inverted residual, [1x1 ``hidden``] -> 3x3 depthwise
  (``depth_multiplier``) -> 1x1 ``out`` linear, added to ``x`` when the shapes agree.
- ``elastic`` (``darknet`` / ``bottleneck`` blocks with ``elastic=True``): the Elastic
  (Wang et al. 2019) form of the -elastic cfgs; the input's two channel halves go through
  two half-width branches, the second at half resolution (2x2 max-pool ... x2 upsample).

Also here: :func:`squeeze_excite` and :class:`PeleeStem`. The partial split of a stage by
channels is :class:`keras_csp.layers.ChannelRange` (importable from here too, as before).
"""

import dataclasses

from keras_csp.backend import keras
from keras_csp.layers import (
    ChannelRange, DarknetShortcut, NearestUpsample2D, activation_layer, conv_bn_act,
)


def squeeze_excite(x, squeeze, activation, name, registry):
    """Squeeze-and-excitation (Hu et al. 2018) as Darknet writes it (enetb0.cfg): global
    average pool, 1x1 ``squeeze`` conv with bias and ``activation``, 1x1 conv with bias and
    logistic, channel-wise scaling of ``x``."""
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = conv_bn_act(s, squeeze, 1, activation=activation, batch_normalize=False,
                    name=f"{name}_reduce", registry=registry)
    s = conv_bn_act(s, x.shape[-1], 1, activation="logistic", batch_normalize=False,
                    name=f"{name}_expand", registry=registry)
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])


def basic_block(x, spec, activation, stride, name, registry):
    y = conv_bn_act(x, spec.hidden, 3, stride, activation=activation, name=f"{name}_conv1", registry=registry)
    y = conv_bn_act(y, spec.out, 3, activation="linear", name=f"{name}_conv2", registry=registry)
    if tuple(x.shape[1:]) == tuple(y.shape[1:]):
        y = keras.layers.Add(name=f"{name}_add")([y, x])
    else:
        y = DarknetShortcut(name=f"{name}_add")([y, x])
    return activation_layer(activation, f"{name}_out")(y)


def dense_layer(x, spec, activation, stride, name, registry):
    y = x
    if spec.hidden:
        y = conv_bn_act(y, spec.hidden, 1, activation=activation, name=f"{name}_conv1", registry=registry)
    y = conv_bn_act(y, spec.growth, 3, activation=activation, name=f"{name}_conv2", registry=registry)
    if spec.se:
        y = squeeze_excite(y, spec.se, activation, f"{name}_se", registry)
    return keras.layers.Concatenate(name=f"{name}_concat")([y, x])


def two_way_dense_layer(x, spec, activation, stride, name, registry):
    half = spec.growth // 2
    b1 = conv_bn_act(x, spec.hidden, 1, activation=activation, name=f"{name}_branch1a", registry=registry)
    b1 = conv_bn_act(b1, half, 3, activation=activation, name=f"{name}_branch1b", registry=registry)
    b2 = conv_bn_act(x, spec.hidden, 1, activation=activation, name=f"{name}_branch2a", registry=registry)
    b2 = conv_bn_act(b2, half, 3, activation=activation, name=f"{name}_branch2b", registry=registry)
    b2 = conv_bn_act(b2, half, 3, activation=activation, name=f"{name}_branch2c", registry=registry)
    if spec.se:
        new = keras.layers.Concatenate(name=f"{name}_new")([b1, b2])
        new = squeeze_excite(new, spec.se, activation, f"{name}_se", registry)
        return keras.layers.Concatenate(name=f"{name}_concat")([x, new])
    return keras.layers.Concatenate(name=f"{name}_concat")([x, b1, b2])


def inverted_block(x, spec, activation, stride, name, registry):
    y = x
    width = x.shape[-1]
    if spec.hidden:
        y = conv_bn_act(y, spec.hidden, 1, activation=activation, name=f"{name}_expand", registry=registry)
        width = spec.hidden
    y = conv_bn_act(y, width * spec.depth_multiplier, 3, stride, width, activation, name=f"{name}_dw",
                    registry=registry)
    y = conv_bn_act(y, spec.out, 1, activation="linear", name=f"{name}_project", registry=registry)
    if tuple(x.shape[1:]) == tuple(y.shape[1:]):
        y = keras.layers.Add(name=f"{name}_add")([y, x])
    return y


def _elastic_branch(x, spec, activation, name, registry):
    half_out = spec.out // 2
    if spec.block == "darknet":
        y = conv_bn_act(x, spec.hidden, 1, activation=activation, name=f"{name}_conv1", registry=registry)
        return conv_bn_act(y, half_out, 3, 1, spec.groups, activation, name=f"{name}_conv2", registry=registry)
    y = conv_bn_act(x, spec.hidden, 1, activation=activation, name=f"{name}_conv1", registry=registry)
    y = conv_bn_act(y, spec.hidden, 3, 1, spec.groups, activation, name=f"{name}_conv2", registry=registry)
    return conv_bn_act(y, half_out, 1, activation="linear", name=f"{name}_conv3", registry=registry)


def _check_even(x, name):
    for side in x.shape[1:3]:
        if side is not None and side % 2:
            raise ValueError(
                f"{name}: elastic blocks run a half-resolution branch and need even feature "
                f"sizes, got {tuple(x.shape[1:3])}; use an input size that is a multiple of "
                "twice the stride of the last elastic stage."
            )


def elastic_dense_layer(x, spec, activation, name, registry):
    """Elastic dense layer (allenai/elastic's ``_DenseLayerElastic`` in Darknet terms): two
    1x1 ``hidden`` -> 3x3 ``growth`` branches on the whole input, the second between a 2x2/2
    max-pool and a x2 nearest upsample, summed; output ``[new, x]`` as "dense"."""
    _check_even(x, name)
    a = conv_bn_act(x, spec.hidden, 1, activation=activation, name=f"{name}_a_conv1", registry=registry)
    a = conv_bn_act(a, spec.growth, 3, activation=activation, name=f"{name}_a_conv2", registry=registry)
    b = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"{name}_b_pool")(x)
    b = conv_bn_act(b, spec.hidden, 1, activation=activation, name=f"{name}_b_conv1", registry=registry)
    b = conv_bn_act(b, spec.growth, 3, activation=activation, name=f"{name}_b_conv2", registry=registry)
    b = NearestUpsample2D(2, name=f"{name}_b_up")(b)  # RESIZE_NEAREST_NEIGHBOR, GPU-delegate safe
    new = keras.layers.Add(name=f"{name}_sum")([a, b])
    return keras.layers.Concatenate(name=f"{name}_concat")([new, x])


def elastic_block(x, spec, activation, stride, name, registry):
    """Elastic residual block, exactly as the -elastic cfgs: ``[route] groups=2 group_id=0``
    -> branch; ``group_id=1`` -> 2x2/2 max-pool -> branch -> x2 nearest upsample; concat;
    ``[shortcut]`` with the block input (linear for darknet blocks, activation after the
    add for bottlenecks). Dense layers go to :func:`elastic_dense_layer`."""
    if spec.block == "dense":
        return elastic_dense_layer(x, spec, activation, name, registry)
    if spec.block not in ("darknet", "bottleneck"):
        raise ValueError(f"{name}: elastic=True applies to darknet, bottleneck and dense blocks, not {spec.block!r}")
    channels = x.shape[-1]
    if channels % 2:
        raise ValueError(f"{name}: an elastic block needs an even channel count, got {channels}")
    _check_even(x, name)
    half = channels // 2
    a = ChannelRange(0, half, name=f"{name}_split1")(x)
    a = _elastic_branch(a, spec, activation, f"{name}_a", registry)
    b = ChannelRange(half, channels, name=f"{name}_split2")(x)
    b = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"{name}_b_pool")(b)
    b = _elastic_branch(b, spec, activation, f"{name}_b", registry)
    b = NearestUpsample2D(2, name=f"{name}_b_up")(b)  # RESIZE_NEAREST_NEIGHBOR, GPU-delegate safe
    y = keras.layers.Concatenate(name=f"{name}_concat")([a, b])
    if tuple(x.shape[1:]) == tuple(y.shape[1:]):
        y = keras.layers.Add(name=f"{name}_add")([y, x])
    else:
        y = DarknetShortcut(name=f"{name}_add")([y, x])
    if spec.block == "bottleneck":
        y = activation_layer(activation, f"{name}_out")(y)
    return y


BLOCK_BUILDERS = {
    "basic": basic_block,
    "dense": dense_layer,
    "two_way_dense": two_way_dense_layer,
    "inverted": inverted_block,
}


@dataclasses.dataclass(frozen=True)
class PeleeStem:
    """PeleeNet's stem block (stride 4): 3x3/2 conv; a 1x1 -> 3x3/2 branch next to a 2x2/2
    max-pool of it; concatenation ``[pool, branch]``; 1x1 conv to ``filters``."""

    filters: int = 32

    def build(self, x, activation, name, registry):
        f = self.filters
        x = conv_bn_act(x, f, 3, 2, activation=activation, name=f"{name}_conv1", registry=registry)
        branch = conv_bn_act(x, f // 2, 1, activation=activation, name=f"{name}_conv2a", registry=registry)
        branch = conv_bn_act(branch, f, 3, 2, activation=activation, name=f"{name}_conv2b", registry=registry)
        pool = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"{name}_pool")(x)
        x = keras.layers.Concatenate(name=f"{name}_concat")([pool, branch])
        return conv_bn_act(x, f, 1, activation=activation, name=f"{name}_conv3", registry=registry)

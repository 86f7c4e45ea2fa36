"""Darknet cfg -> Keras functional model.

Every Keras layer made for Darknet layer ``i`` is named ``layer{i:03d}_...``; a conv block
is ``layer{i:03d}`` in :func:`keras_csp.layers.conv_bn_act`'s scheme (``_conv``, ``_bn``,
``_act``), so the named backbones and this builder share the weight assignment code.
"""

import operator
import re
import warnings
from dataclasses import dataclass

import keras_csp.darknet.spec as S
from keras_csp.backend import keras
from keras_csp.layers.activations import activation_layer
from keras_csp.layers.conv import BN_EPSILON, GroupedConv2D, conv_bn_act
from keras_csp.layers.darknet_ops import (
    DarknetSoftmax,
    DarknetYolo,
    NearestUpsample2D,
    Reorg,
    ScaleChannels,
)
from keras_csp.layers.merge import ChannelRange, DarknetShortcut
from keras_csp.layers.normalization import batch_norm
from keras_csp.layers.pooling import ChannelMaxout, DarknetPool2D


def block_name(index):
    """The Keras name prefix of Darknet layer ``index``."""
    return f"layer{index:03d}"


@dataclass
class BuiltGraph:
    """Symbolic tensors of every Darknet layer, before choosing the model outputs."""

    network: S.Network
    inputs: object
    tensors: list  # Keras tensor of each Darknet layer's output


def _act(x, name, prefix):
    layer = activation_layer(name, f"{prefix}_act")
    return x if layer is None else layer(x)


def _conv(spec, x, name, shared_layers, share_target):
    """A [convolutional]: conv_bn_act for Darknet's usual case, else the same layers by hand.

    ``shared_layers`` maps layer indices to their (Conv2D, BatchNormalization) objects;
    ``share_target`` says a later layer reuses this one's (so its objects are kept).
    """
    standard = (
        spec.share_index is None
        and not share_target
        and spec.stride_y == spec.stride_x
        and spec.padding == spec.size // 2
    )
    if standard:
        return conv_bn_act(
            x,
            spec.filters,
            spec.size,
            stride=spec.stride_y,
            groups=spec.groups,
            activation=spec.activation,
            batch_normalize=spec.batch_normalize,
            name=name,
        )
    if spec.padding:
        x = keras.layers.ZeroPadding2D(spec.padding, name=f"{name}_pad")(x)
    if spec.share_index is not None:
        conv, bn = shared_layers[spec.share_index]
    else:
        conv_class = GroupedConv2D if spec.groups > 1 else keras.layers.Conv2D
        conv = conv_class(
            spec.filters,
            spec.size,
            strides=(spec.stride_y, spec.stride_x),
            padding="valid",
            groups=spec.groups,
            use_bias=not spec.batch_normalize,
            name=f"{name}_conv",
        )
        bn = None
        if spec.batch_normalize:
            bn = batch_norm(epsilon=BN_EPSILON, name=f"{name}_bn")
        shared_layers[spec.index] = (conv, bn)
    x = conv(x)
    if bn is not None:
        x = bn(x)
    return _act(x, spec.activation, name)


def _connected(spec, x, name):
    if x.shape[1] != 1 or x.shape[2] != 1:
        x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    else:
        x = keras.layers.Reshape((spec.input_shape[2],), name=f"{name}_flatten")(x)
    x = keras.layers.Dense(spec.output, use_bias=not spec.batch_normalize, name=f"{name}_dense")(x)
    if spec.batch_normalize:
        x = batch_norm(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    x = _act(x, spec.activation, name)
    return keras.layers.Reshape((1, 1, spec.output), name=f"{name}_reshape")(x)


def _route(spec, tensors, name):
    parts = []
    for position, source in enumerate(spec.inputs):
        tensor = tensors[source]
        if spec.groups > 1:  # channels group_id * w : (group_id + 1) * w, w = channels // groups
            width = tensor.shape[-1] // spec.groups
            tensor = ChannelRange(spec.group_id * width, (spec.group_id + 1) * width,
                                  name=f"{name}_slice{position}")(tensor)
        parts.append(tensor)
    if len(parts) == 1:
        return parts[0]
    return keras.layers.Concatenate(axis=-1, name=f"{name}_route")(parts)


def _shortcut(spec, tensors, name):
    x = tensors[spec.inputs[0]]
    for position, source in enumerate(spec.inputs[1:]):
        skip = tensors[source]
        suffix = "" if len(spec.inputs) == 2 else str(position)
        if tuple(skip.shape[1:]) == tuple(x.shape[1:]):
            x = keras.layers.Add(name=f"{name}_add{suffix}")([x, skip])
        else:
            x = DarknetShortcut(name=f"{name}_shortcut{suffix}")([x, skip])
    return _act(x, spec.activation, name)


def _layer(spec, tensors, name, shared_layers, share_targets):
    """The Keras output tensor of one Darknet layer; ``tensors[-1]`` is the image."""
    x = tensors[spec.index - 1]
    if isinstance(spec, S.ConvSpec):
        return _conv(spec, x, name, shared_layers, spec.index in share_targets)
    if isinstance(spec, S.ConnectedSpec):
        return _connected(spec, x, name)
    if isinstance(spec, S.BatchNormSpec):
        return batch_norm(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    if isinstance(spec, S.RouteSpec):
        return _route(spec, tensors, name)
    if isinstance(spec, S.ShortcutSpec):
        return _shortcut(spec, tensors, name)
    if isinstance(spec, S.PoolSpec):
        if spec.maxpool_depth:
            return ChannelMaxout(spec.out_channels, name=f"{name}_maxout")(x)
        return DarknetPool2D(
            spec.size,
            (spec.stride_y, spec.stride_x),
            spec.padding,
            mode=spec.mode,
            name=f"{name}_{spec.mode}pool",
        )(x)
    if isinstance(spec, S.GlobalAvgPoolSpec):
        return keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_avgpool")(x)
    if isinstance(spec, S.UpsampleSpec):
        return NearestUpsample2D(spec.stride, spec.scale, name=f"{name}_upsample")(x)
    if isinstance(spec, S.SoftmaxSpec):
        return DarknetSoftmax(spec.groups, spec.temperature, name=f"{name}_softmax")(x)
    if isinstance(spec, S.DropoutSpec):
        return keras.layers.Dropout(spec.probability, name=f"{name}_dropout")(x)
    if isinstance(spec, S.ScaleChannelsSpec):
        y = ScaleChannels(name=f"{name}_scale")([tensors[spec.inputs[1]], x])
        return _act(y, spec.activation, name)
    if isinstance(spec, S.SamSpec):
        y = keras.layers.Multiply(name=f"{name}_sam")([tensors[spec.inputs[1]], x])
        return _act(y, spec.activation, name)
    if isinstance(spec, S.ReorgSpec):
        return Reorg(spec.stride, name=f"{name}_reorg")(x)
    if isinstance(spec, S.YoloSpec):
        return DarknetYolo(
            len(spec.mask), spec.classes, spec.scale_x_y, spec.new_coords, name=f"{name}_yolo"
        )(x)
    if isinstance(spec, S.CostSpec):
        return x
    raise spec.error(f"layer type [{spec.type}] has no Keras builder")  # pragma: no cover


def build_graph(network, input_tensor=None, progress=None):
    """Create the Keras layers of every Darknet layer of ``network`` (a :class:`Network`)."""
    if input_tensor is None:
        input_tensor = keras.Input(shape=network.input_shape, name="image")
    elif tuple(input_tensor.shape[1:]) != tuple(network.input_shape):
        raise ValueError(
            f"input_tensor has shape {tuple(input_tensor.shape)}, but {network.path} at this "
            f"size needs (batch, {network.height}, {network.width}, {network.channels})"
        )
    share_targets = {
        spec.share_index for spec in network.layers if getattr(spec, "share_index", None) is not None
    }
    tensors, shared_layers = {-1: input_tensor}, {}
    for spec in network.layers:
        name = block_name(spec.index)
        x = _layer(spec, tensors, name, shared_layers, share_targets)
        got = tuple(x.shape[1:])
        if got != tuple(spec.output_shape):
            raise spec.error(
                f"the Keras layer gives shape {got} but Darknet's is {tuple(spec.output_shape)}"
            )
        tensors[spec.index] = x
        if progress is not None:
            progress(spec)
    ordered = [tensors[index] for index in range(len(network.layers))]
    return BuiltGraph(network=network, inputs=input_tensor, tensors=ordered)


def default_outputs(network):
    """Darknet layers a model outputs by default.

    Detectors: the inputs of their [yolo] layers (raw logits, the library's detector
    contract), largest map first. Classifiers: the last layer.
    """
    yolo = network.yolo_layers
    if yolo:
        ordered = sorted(yolo, key=lambda spec: (-spec.input_shape[0], spec.index))
        return [spec.index - 1 for spec in ordered]
    return [len(network.layers) - 1]


def output_indices(network, outputs=None):
    """Checked Darknet layer indices for a model's outputs (default :func:`default_outputs`)."""
    if outputs is None:
        return default_outputs(network)
    indices = []
    for index in outputs:
        try:
            index = operator.index(index)
        except TypeError:
            index = None
        if index is None or not 0 <= index < len(network.layers):
            raise ValueError(
                f"outputs must be Darknet layer indices in [0, {len(network.layers)}), got "
                f"{list(outputs)!r}"
            )
        indices.append(index)
    if not indices:
        raise ValueError("outputs must name at least one Darknet layer")
    return indices


def model_from_graph(graph, indices, name=None):
    """A keras.Model from the graph's input to the outputs of Darknet layers ``indices``."""
    tensors = [graph.tensors[index] for index in indices]
    outputs = tensors[0] if len(tensors) == 1 else tensors
    return keras.Model(graph.inputs, outputs, name=name or model_name(graph.network))


def model_from_cfg(cfg, input_size=None, outputs=None, input_tensor=None, name=None, progress=None):
    """Build the Keras functional model of a Darknet cfg (path, text, Cfg or Network).

    ``input_size=(h, w)`` overrides the [net] size; ``outputs`` is a list of Darknet layer
    indices whose outputs the model returns (default :func:`default_outputs`). Weights
    are Keras' initial values; see :func:`keras_csp.darknet.load` for Darknet weights.
    """
    network = cfg if isinstance(cfg, S.Network) else S.infer_network(cfg, input_size)
    indices = output_indices(network, outputs)
    return model_from_graph(build_graph(network, input_tensor, progress), indices, name)


def build_model(*args, **kwargs):
    """Deprecated name of :func:`model_from_cfg` (``build_model`` is also training's detector
    builder, ``keras_csp.training.models.build_model``)."""
    warnings.warn("keras_csp.darknet.build_model is deprecated; use keras_csp.darknet.model_from_cfg.",
                  DeprecationWarning, stacklevel=2)
    return model_from_cfg(*args, **kwargs)


def model_name(network):
    """A valid Keras / TF scope name from the cfg's file name ("darknet" for cfg text)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", network.name).strip("_")
    if not name or network.path == "<cfg>":
        return "darknet"
    return name if name[0].isalpha() else f"darknet_{name}"

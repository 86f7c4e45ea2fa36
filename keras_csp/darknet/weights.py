"""Darknet ``.weights`` files: read, write, and map onto Keras layers all-or-nothing.

File layout (all little-endian): int32 major, minor, revision; ``seen`` as uint64 when
``major * 10 + minor >= 2`` else uint32; then float32 values layer by layer in cfg order:

- ``[convolutional]`` with batch norm: biases, scales, rolling_mean, rolling_variance,
  weights (out, in / groups, k, k); without: biases, weights.
- ``[connected]``: biases, weights (out, in) with ``in`` in CHW order (stored (in, out) when
  major or minor > 1000), then scales, rolling_mean, rolling_variance with batch norm.
- ``[batchnorm]``: biases, scales, rolling_mean, rolling_variance.

Sizes are checked against what the model needs before anything is assigned, and every
Keras value is prepared and shape-checked before the first ``set_weights``, so a bad file
changes nothing.
"""

import os
import struct
from dataclasses import dataclass, field

import numpy as np

import keras_csp.darknet.spec as S
from keras_csp.backend import keras
from keras_csp.darknet.builder import block_name
from keras_csp.darknet.order import darknet_order

_FLOAT = np.dtype("<f4")


@dataclass
class DarknetWeights:
    """A ``.weights`` file in memory: its header and every float after it."""

    major: int = 0
    minor: int = 2
    revision: int = 5
    seen: int = 0
    values: np.ndarray = field(default_factory=lambda: np.zeros(0, _FLOAT))
    path: str = None
    tail: bytes = b""  # 1-3 stray bytes after the last whole float (a truncated file)

    @property
    def seen_is_64bit(self):
        return self.major * 10 + self.minor >= 2

    @property
    def header_bytes(self):
        return 12 + (8 if self.seen_is_64bit else 4)

    @property
    def transposed(self):
        """Darknet stores [connected] weights as (in, out) in files from these versions."""
        return self.major > 1000 or self.minor > 1000

    def to_bytes(self):
        header = struct.pack("<iii", self.major, self.minor, self.revision)
        header += struct.pack("<Q" if self.seen_is_64bit else "<I", self.seen)
        return header + np.ascontiguousarray(self.values, _FLOAT).tobytes() + self.tail


def read_weights(path):
    """Read a Darknet ``.weights`` file (header and all floats) without interpreting layers."""
    path = os.fspath(path)
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 16:
        raise ValueError(
            f"{path}: {len(data)} bytes is too short for a Darknet weights header (16 or 20 bytes)"
        )
    major, minor, revision = struct.unpack_from("<iii", data, 0)
    weights = DarknetWeights(major, minor, revision, path=path)
    start = weights.header_bytes
    if len(data) < start:
        raise ValueError(f"{path}: {len(data)} bytes is too short for its {start}-byte header")
    weights.seen = struct.unpack_from("<Q" if weights.seen_is_64bit else "<I", data, 12)[0]
    body = len(data) - start
    whole = body - body % 4
    weights.values = np.frombuffer(data, _FLOAT, count=whole // 4, offset=start)
    weights.tail = data[start + whole :]
    return weights


def write_weights(path, weights):
    """Write a :class:`DarknetWeights` to ``path`` (the exact bytes :func:`read_weights` read)."""
    with open(os.fspath(path), "wb") as handle:
        handle.write(weights.to_bytes())


# ---------------------------------------------------------------------------------------
# What each layer holds
# ---------------------------------------------------------------------------------------


@dataclass
class ParamLayer:
    """One Darknet layer that holds floats in a .weights file, and its Keras block name.

    ``kind`` is "conv", "connected" or "batchnorm"; ``filters`` the output channels;
    ``in_channels`` the conv input channels per group (conv), or the input (H, W, C) of a
    connected layer; ``size`` the conv kernel size.
    """

    kind: str
    name: str
    filters: int
    in_channels: object = None
    size: int = 1
    batch_normalize: bool = False
    where: str = ""

    def fields(self, transposed=False):
        """(field name, Darknet shape) in file order."""
        n = self.filters
        if self.kind == "batchnorm":
            return [("biases", (n,)), ("scales", (n,)), ("rolling_mean", (n,)),
                    ("rolling_variance", (n,))]
        if self.kind == "connected":
            inputs = int(np.prod(self.in_channels))
            shape = (inputs, n) if transposed else (n, inputs)
            out = [("biases", (n,)), ("weights", shape)]
            if self.batch_normalize:
                out += [("scales", (n,)), ("rolling_mean", (n,)), ("rolling_variance", (n,))]
            return out
        kernel = ("weights", (n, self.in_channels, self.size, self.size))
        if self.batch_normalize:
            return [("biases", (n,)), ("scales", (n,)), ("rolling_mean", (n,)),
                    ("rolling_variance", (n,)), kernel]
        return [("biases", (n,)), kernel]

    def count(self):
        return sum(int(np.prod(shape)) for _, shape in self.fields())


def param_layers_from_network(network, names=None):
    """ParamLayers of a :class:`~keras_csp.darknet.spec.Network`, named as the builder names."""
    layers = []
    for spec in network.layers:
        if not spec.weight_floats:
            continue
        name = names[spec.index] if names else block_name(spec.index)
        where = spec.where()
        if isinstance(spec, S.ConvSpec):
            layers.append(ParamLayer("conv", name, spec.filters, spec.input_shape[2] // spec.groups,
                                     spec.size, spec.batch_normalize, where))
        elif isinstance(spec, S.ConnectedSpec):
            layers.append(ParamLayer("connected", name, spec.output, tuple(spec.input_shape), 1,
                                     spec.batch_normalize, where))
        elif isinstance(spec, S.BatchNormSpec):
            layers.append(ParamLayer("batchnorm", name, spec.input_shape[2], where=where))
    return layers


def _find_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def param_layers_from_model(model, block_names):
    """ParamLayers read off a Keras model whose conv blocks follow conv_bn_act's naming.

    Block ``name`` is ``{name}_conv`` (Conv2D, DepthwiseConv2D, or a Dense standing for a
    1x1 conv) plus ``{name}_bn`` when batch-normalised; or ``{name}_dense`` (+ ``_bn``) for
    a Darknet [connected] layer.
    """
    layers = []
    for name in block_names:
        conv = _find_layer(model, f"{name}_conv")
        dense = _find_layer(model, f"{name}_dense")
        bn = _find_layer(model, f"{name}_bn")
        where = f"block {name!r}"
        if conv is None and dense is None:
            raise ValueError(
                f"model {model.name!r} has no layer {name}_conv or {name}_dense for block {name!r}"
            )
        if conv is not None:
            kernel = _kernel(conv)
            if isinstance(conv, keras_dense()):
                inputs, filters = kernel.shape
                layers.append(ParamLayer("conv", name, filters, inputs, 1, bn is not None, where))
            elif isinstance(conv, keras_depthwise()):
                k, _, channels, multiplier = kernel.shape
                layers.append(ParamLayer("conv", name, channels * multiplier, 1, k, bn is not None,
                                         where))
            else:
                k, _, per_group, filters = kernel.shape
                layers.append(ParamLayer("conv", name, filters, per_group, k, bn is not None, where))
        else:
            in_shape = dense.input.shape[1:]
            flatten = _find_layer(model, f"{name}_flatten")
            if flatten is not None:
                in_shape = flatten.input.shape[1:]
            in_shape = tuple(int(d) for d in in_shape)
            if len(in_shape) == 1:
                in_shape = (1, 1, in_shape[0])
            filters = _kernel(dense).shape[1]
            layers.append(ParamLayer("connected", name, filters, in_shape, 1, bn is not None, where))
    return layers


def keras_dense():
    return keras.layers.Dense


def keras_depthwise():
    return keras.layers.DepthwiseConv2D


def _kernel(layer):
    for variable in layer.weights:
        if len(variable.shape) >= 2:
            return variable
    raise ValueError(f"layer {layer.name!r} has no kernel")


# ---------------------------------------------------------------------------------------
# Splitting a file into per-layer arrays
# ---------------------------------------------------------------------------------------


def _count_error(weights, layers, needed, source):
    found = weights.values.size
    origin = f"{weights.path}" if weights.path else "the weights"
    stray = f" (plus {len(weights.tail)} stray bytes)" if weights.tail else ""
    message = (
        f"{origin} holds {found:,} floats{stray} after its {weights.header_bytes}-byte header, "
        f"but {source} needs {needed:,} floats for {len(layers)} layers with weights"
    )
    if found < needed:
        offset = 0
        for layer in layers:
            if offset + layer.count() > found:
                message += (
                    f"; the file runs out inside {layer.where} (which needs floats "
                    f"{offset:,} to {offset + layer.count():,})"
                )
                break
            offset += layer.count()
        message += ": it is truncated or was written for another cfg"
    else:
        message += (
            f"; {found - needed:,} floats are left over after the last layer "
            f"({layers[-1].where if layers else 'none'}): the file was written for another cfg"
        )
    return ValueError(message)


def split_weights(weights, layers, source="the model", allow_extra=False):
    """Cut ``weights.values`` into one {field: array} dict per ParamLayer, checking it all.

    Raises ValueError when the float count differs (naming how many are needed and found
    and where the file runs out), or when values are impossible for the layer they land in
    (negative variances, NaN), which means the file belongs to another cfg.
    """
    needed = sum(layer.count() for layer in layers)
    found = weights.values.size
    extra = found > needed or bool(weights.tail)
    if found < needed or (extra and not allow_extra):
        raise _count_error(weights, layers, needed, source)
    arrays, offset = [], 0
    for layer in layers:
        parts = {}
        for name, shape in layer.fields(weights.transposed):
            size = int(np.prod(shape))
            parts[name] = weights.values[offset : offset + size].reshape(shape)
            offset += size
        _check_values(layer, parts, weights)
        arrays.append(parts)
    return arrays


def _check_values(layer, parts, weights):
    origin = weights.path or "the weights"
    for name, values in parts.items():
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{origin}: {name} of {layer.where} contains NaN or infinity")
    variance = parts.get("rolling_variance")
    if variance is not None and np.any(variance < 0):
        raise ValueError(
            f"{origin}: rolling_variance of {layer.where} has negative values (min "
            f"{float(variance.min()):.4g}): the file does not match this cfg's layers"
        )


# ---------------------------------------------------------------------------------------
# Darknet arrays <-> Keras weights
# ---------------------------------------------------------------------------------------


def _bn_values(parts):
    # Keras BatchNormalization weights: gamma, beta, moving_mean, moving_variance.
    return [parts["scales"], parts["biases"], parts["rolling_mean"], parts["rolling_variance"]]


def _conv_kernel_to_keras(layer, keras_layer, weights):
    """Darknet (out, in/groups, k, k) -> the kernel layout of ``keras_layer``."""
    n, per_group, k, _ = weights.shape
    if isinstance(keras_layer, keras_dense()):
        return weights.reshape(n, per_group).T
    if isinstance(keras_layer, keras_depthwise()):
        # tf_keras names the kernel `depthwise_kernel`, Keras 3 `kernel`.
        kernel = getattr(keras_layer, "depthwise_kernel", None)
        channels, multiplier = (keras_layer.kernel if kernel is None else kernel).shape[2:]
        return weights.reshape(channels, multiplier, k, k).transpose(2, 3, 0, 1)
    return weights.transpose(2, 3, 1, 0)


def _conv_kernel_from_keras(keras_layer, kernel):
    if isinstance(keras_layer, keras_dense()):
        return kernel.T[:, :, None, None]
    if isinstance(keras_layer, keras_depthwise()):
        k, _, channels, multiplier = kernel.shape
        return kernel.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, k, k)
    return kernel.transpose(3, 2, 0, 1)


def _connected_to_keras(layer, weights, transposed):
    if transposed:
        weights = weights.T
    h, w, c = layer.in_channels
    n = layer.filters
    return weights.reshape(n, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, n)


def _connected_from_keras(layer, kernel):
    h, w, c = layer.in_channels
    n = layer.filters
    return kernel.reshape(h, w, c, n).transpose(3, 2, 0, 1).reshape(n, c * h * w)


def _keras_layers(model, layer):
    """(main keras layer or None, BN layer or None) for a ParamLayer, checked to exist."""
    if layer.kind == "batchnorm":
        main = None
    else:
        suffix = "_dense" if layer.kind == "connected" else "_conv"
        main = _find_layer(model, f"{layer.name}{suffix}")
        if main is None:
            raise ValueError(f"{layer.where}: model {model.name!r} has no layer {layer.name}{suffix}")
    bn = _find_layer(model, f"{layer.name}_bn")
    if (layer.batch_normalize or layer.kind == "batchnorm") and bn is None:
        raise ValueError(f"{layer.where}: model {model.name!r} has no layer {layer.name}_bn")
    if layer.kind != "batchnorm" and not layer.batch_normalize:
        bn = None
    return main, bn


def keras_assignments(model, layers, arrays, transposed=False):
    """[(keras layer, [values])] for every ParamLayer, shape-checked against the model."""
    plan = []
    for layer, parts in zip(layers, arrays):
        main, bn = _keras_layers(model, layer)
        if main is not None:
            if layer.kind == "connected":
                kernel = _connected_to_keras(layer, parts["weights"], transposed)
            else:
                kernel = _conv_kernel_to_keras(layer, main, parts["weights"])
            values = [kernel] if layer.batch_normalize else [kernel, parts["biases"]]
            plan.append((main, values, layer))
        if bn is not None:
            plan.append((bn, _bn_values(parts), layer))
    for keras_layer, values, layer in plan:
        expected = [tuple(v.shape) for v in keras_layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise ValueError(
                f"{layer.where}: Keras layer {keras_layer.name!r} has weights of shapes "
                f"{expected}, but the Darknet values give {got}"
            )
    return plan


def assign(plan):
    """Set every planned value; call only after :func:`keras_assignments` succeeded."""
    for keras_layer, values, _ in plan:
        keras_layer.set_weights([np.asarray(v, np.float32) for v in values])


def _blocks_of(model, block_names):
    if block_names is not None:
        return block_names
    return darknet_order(model)


def load_arrays(model, layers, weights, source="the model", allow_extra=False):
    """Validate ``weights`` against ``layers`` and assign them to ``model``, all-or-nothing."""
    arrays = split_weights(weights, layers, source, allow_extra)
    plan = keras_assignments(model, layers, arrays, weights.transposed)
    assign(plan)
    return weights


def load_conv_weights(model, block_names, weights_path, allow_extra=False, allow_trailing=None):
    """Load a Darknet ``.weights`` file into the conv blocks ``block_names`` of ``model``.

    ``block_names`` lists the model's Darknet conv blocks in cfg order, each made of
    ``{name}_conv`` and, when batch-normalised, ``{name}_bn`` (conv_bn_act's naming);
    ``None`` takes the order the model keeps (:func:`~keras_csp.darknet.darknet_order`:
    keras_csp backbones and detectors, built or reloaded from ``.keras``).
    A file with fewer floats, or more (unless ``allow_extra``, e.g. a backbone without the
    classifier; ``allow_trailing`` is the same flag), raises ValueError saying how many
    floats were expected and found, and nothing is assigned. Returns the
    :class:`DarknetWeights` read.
    """
    if allow_trailing is not None:
        allow_extra = allow_trailing
    layers = param_layers_from_model(model, _blocks_of(model, block_names))
    weights = read_weights(weights_path)
    return load_arrays(model, layers, weights, f"model {model.name!r}", allow_extra)


def extract_arrays(model, layers, transposed=False):
    """Darknet-ordered float32 arrays of ``layers`` taken from ``model``'s weights."""
    chunks = []
    for layer in layers:
        main, bn = _keras_layers(model, layer)
        values = {}
        if main is not None:
            kernel = np.asarray(main.weights[0])
            if layer.kind == "connected":
                dark = _connected_from_keras(layer, kernel)
                values["weights"] = dark.T if transposed else dark
            else:
                values["weights"] = _conv_kernel_from_keras(main, kernel)
            if not layer.batch_normalize:
                values["biases"] = np.asarray(main.weights[1])
        if bn is not None:
            gamma, beta, mean, variance = (np.asarray(v) for v in bn.weights)
            values.update(scales=gamma, biases=beta, rolling_mean=mean, rolling_variance=variance)
        for name, shape in layer.fields(transposed):
            chunks.append(np.asarray(values[name], _FLOAT).reshape(-1))
            if values[name].size != int(np.prod(shape)):
                raise ValueError(f"{layer.where}: {name} has {values[name].size} values, not {shape}")
    return np.concatenate(chunks) if chunks else np.zeros(0, _FLOAT)


def save_conv_weights(model, block_names, path, header=None):
    """Write the conv blocks ``block_names`` of ``model`` as a Darknet ``.weights`` file
    (``None``: the model's own order, as in :func:`load_conv_weights`)."""
    layers = param_layers_from_model(model, _blocks_of(model, block_names))
    header = header or DarknetWeights()
    out = DarknetWeights(header.major, header.minor, header.revision, header.seen)
    out.values = extract_arrays(model, layers, out.transposed)
    write_weights(path, out)
    return out

"""``load(cfg, weights)``: a Darknet cfg and its .weights as a Keras model, and the reverse."""

import warnings

from keras_csp.backend import keras
from keras_csp.darknet.builder import build_graph, model_from_graph, output_indices
from keras_csp.darknet.cfg import CfgError
from keras_csp.darknet.order import darknet_order
from keras_csp.darknet.spec import Network, infer_network
from keras_csp.darknet.weights import (
    DarknetWeights,
    assign,
    extract_arrays,
    keras_assignments,
    param_layers_from_model,
    param_layers_from_network,
    read_weights,
    split_weights,
    write_weights,
)
from keras_csp.postprocess.nms import darknet_nms


def _network(cfg, input_size):
    if isinstance(cfg, Network):
        if input_size is not None and tuple(input_size) != (cfg.height, cfg.width):
            raise ValueError("input_size cannot change an already inferred Network")
        return cfg
    return infer_network(cfg, input_size)


def load(cfg, weights=None, input_size=None, outputs=None, allow_extra=False, progress=None,
         name=None):
    """Build the Keras model of Darknet ``cfg`` and load ``weights`` (a .weights path).

    The weights file is read and checked against the cfg (float count, values) before any
    Keras layer is created. ``input_size=(h, w)`` overrides the cfg's size; ``outputs``
    lists Darknet layer indices to return (default: the [yolo] inputs of a detector, largest
    map first, or the last layer of a classifier). ``allow_extra`` accepts trailing floats.
    ``progress``, if given, is called with each layer spec as it is built.
    """
    network = _network(cfg, input_size)
    indices = output_indices(network, outputs)  # bad outputs fail before reading a file
    layers = param_layers_from_network(network)
    arrays = darknet = None
    if weights is not None:
        darknet = weights if isinstance(weights, DarknetWeights) else read_weights(weights)
        arrays = split_weights(darknet, layers, network.path, allow_extra)
    graph = build_graph(network, progress=progress)
    model = model_from_graph(graph, indices, name)
    if darknet is not None:
        target = model
        if not _holds_all(model, layers):
            # Some weighted layers feed no requested output: assign through a model of the
            # whole graph, whose layers the returned model shares.
            target = keras.Model(graph.inputs, graph.tensors)
        assign(keras_assignments(target, layers, arrays, darknet.transposed))
    return model


def _holds_all(model, layers):
    names = {layer.name for layer in model.layers}
    for layer in layers:
        suffix = {"conv": "_conv", "connected": "_dense", "batchnorm": "_bn"}[layer.kind]
        if f"{layer.name}{suffix}" not in names:
            return False
    return True


def save_weights(model, cfg, path, header=None, input_size=None):
    """Write the weights of a model of ``cfg`` as a Darknet ``.weights`` file.

    ``model`` is built from ``cfg`` (its layers named by cfg index), or is a keras_csp
    backbone or detector of that cfg (built, or reloaded from ``.keras``): its conv blocks,
    in the order it keeps (:func:`~keras_csp.darknet.darknet_order`), take the cfg's weighted
    layers one by one, and any shape that differs from the cfg's raises ``ValueError``.
    """
    network = _network(cfg, input_size)
    layers = param_layers_from_network(network)
    if not _holds_all(model, layers):
        layers = param_layers_from_network(network, _cfg_names(model, network, layers))
    header = header or DarknetWeights()
    out = DarknetWeights(header.major, header.minor, header.revision, header.seen)
    out.values = extract_arrays(model, layers, out.transposed)
    write_weights(path, out)
    return out


def _cfg_names(model, network, layers):
    """Darknet layer index -> the name of ``model``'s block in that place of the cfg, each
    block checked to have the cfg layer's kind, filters, inputs, size and batch norm."""
    ours = param_layers_from_model(model, darknet_order(model))
    if len(ours) != len(layers):
        raise ValueError(f"model {model.name!r} has {len(ours)} conv blocks in Darknet order; "
                         f"{network.path} has {len(layers)} weighted layers.")
    for mine, theirs in zip(ours, layers):
        if _shape(mine) != _shape(theirs):
            raise ValueError(f"{theirs.where}: {_shape(theirs)} in the cfg, but block "
                             f"{mine.name!r} of model {model.name!r} is {_shape(mine)}.")
    weighted = [spec.index for spec in network.layers if spec.weight_floats]
    return dict(zip(weighted, (layer.name for layer in ours)))


def _shape(layer):
    inputs = tuple(layer.in_channels) if isinstance(layer.in_channels, (tuple, list)) else layer.in_channels
    return {"kind": layer.kind, "filters": layer.filters, "inputs": inputs, "size": layer.size,
            "batch_normalize": layer.batch_normalize}


def head_specs(cfg, input_size=None):
    """The ``HeadSpec`` of each ``[yolo]`` layer of ``cfg``, largest map first (the order of
    :func:`load`'s outputs): anchors of the mask, the section's whole anchor list as the
    matching pool (``matching_anchors`` / ``anchor_indices``), the loss and NMS options.
    A CfgError names the cfg file, line and option a detector cannot honour."""
    network = _network(cfg, input_size)
    if not network.yolo_layers:
        raise ValueError(
            f"{network.path} has no [yolo] layer: it is not a detector; use keras_csp.darknet.load()."
        )
    return network.head_specs()


def cfg_nms(cfg, nms=None, input_size=None):
    """The ``NMSConfig`` Darknet uses for ``cfg``: the ``nms_kind`` / ``beta_nms`` of its last
    ``[yolo]`` layer (Darknet reads the network's last layer), on top of which a dict ``nms``
    sets other fields; an ``NMSConfig`` ``nms`` is used as it is. Warns when the sections
    disagree (Darknet silently takes the last)."""
    network = _network(cfg, input_size)
    layers = network.yolo_layers
    if not layers:
        raise ValueError(f"{network.path} has no [yolo] layer: it has no NMS settings.")
    last = layers[-1]
    kinds = {(spec.nms_kind, spec.beta_nms) for spec in layers}
    if len(kinds) > 1:
        warnings.warn(
            f"{network.path}: the [yolo] layers disagree on nms_kind/beta_nms "
            f"({sorted(kinds)}); Darknet uses the last one's, {last.where()}: "
            f"nms_kind={last.nms_kind}, beta_nms={last.beta_nms}",
            stacklevel=2,
        )
    try:
        return darknet_nms(last.nms_kind, last.beta_nms, nms)
    except ValueError as err:
        key = "nms_kind" if "nms_kind" in str(err) else None
        raise CfgError(f"layer {last.index} [yolo]: {err}", last.path,
                       last.option_lines.get(key, last.line), key) from None


def load_detector(cfg, weights=None, input_size=None, allow_extra=False, nms=None, name=None):
    """A Darknet detector cfg (and optional ``.weights``) as a trainable keras_csp ``Detector``.

    The network is :func:`load`'s (outputs: the inputs of the ``[yolo]`` layers, largest map
    first) and each ``[yolo]`` section becomes the ``HeadSpec`` of its output
    (:func:`head_specs`: anchors, mask, the whole anchor list as Darknet's matching pool,
    classes, scale_x_y, new_coords and the loss options), so ``compile`` / ``fit`` /
    ``predict`` work as for the named detectors and train as Darknet does. ``predict``'s
    NMS is the cfg's ``nms_kind`` / ``beta_nms`` (:func:`cfg_nms`; ``nms`` as there).
    """
    from keras_csp.detectors.detector import Detector  # lazy: cycle (detectors.detector -> darknet/__init__ -> here)

    network = _network(cfg, input_size)
    heads = head_specs(network)  # every [yolo] option checked before any Keras layer exists
    nms_config = cfg_nms(network, nms)
    model = load(network, weights, allow_extra=allow_extra, name=name)
    return Detector(model, heads, nms=nms_config, name=name or f"{model.name}_detector")

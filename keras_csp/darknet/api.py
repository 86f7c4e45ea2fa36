"""``load(cfg, weights)``: a Darknet cfg and its .weights as a Keras model, and the reverse."""

from keras_csp.darknet.builder import build_graph, model_from_graph, output_indices
from keras_csp.darknet.spec import Network, infer_network
from keras_csp.darknet.weights import (
    DarknetWeights,
    assign,
    extract_arrays,
    keras_assignments,
    param_layers_from_network,
    read_weights,
    split_weights,
    write_weights,
)


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
    from keras_csp.backend import keras

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
    """Write the weights of a model built from ``cfg`` as a Darknet ``.weights`` file."""
    network = _network(cfg, input_size)
    layers = param_layers_from_network(network)
    header = header or DarknetWeights()
    out = DarknetWeights(header.major, header.minor, header.revision, header.seen)
    out.values = extract_arrays(model, layers, out.transposed)
    write_weights(path, out)
    return out


def load_detector(cfg, weights=None, input_size=None, allow_extra=False, nms=None, name=None):
    """A Darknet detector cfg (and optional ``.weights``) as a trainable keras_csp ``Detector``.

    The network is :func:`load`'s (outputs: the inputs of the ``[yolo]`` layers, largest map
    first) and each ``[yolo]`` section becomes the ``HeadSpec`` of its output (anchors, mask,
    classes, scale_x_y, new_coords and the loss options), so ``compile`` / ``fit`` /
    ``predict`` work as for the named detectors.
    """
    from keras_csp.detectors.detector import Detector
    from keras_csp.ops.head_spec import HeadSpec

    network = _network(cfg, input_size)
    if not network.yolo_layers:
        raise ValueError(f"{network.path} has no [yolo] layer: it is not a detector; use keras_csp.darknet.load().")
    model = load(cfg, weights, input_size=input_size, allow_extra=allow_extra, name=name)
    by_index = {spec.index: spec for spec in network.yolo_layers}
    heads = [
        HeadSpec.from_darknet(by_index[head["layer"]].options, head["stride"])
        for head in network.heads()
    ]
    return Detector(model, heads, nms=nms, name=name or f"{model.name}_detector")

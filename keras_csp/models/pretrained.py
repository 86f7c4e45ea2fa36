"""Weights for the backbones: a Keras weights file, a Darknet ``.weights`` file, or a name
the weights registry resolves (``"imagenet"``, a registered entry; see keras_csp.weights)."""

import os

import keras_csp.weights as weights_registry
from keras_csp.darknet.order import darknet_order
from keras_csp.darknet.weights import load_conv_weights


def is_weights_argument(weights):
    """True for what a builder's ``weights=`` accepts (checked before building the model)."""
    if weights is None or isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (
        os.path.exists(weights) or weights == "imagenet" or weights in weights_registry.names())


def resolve_imagenet(model_name, activation):
    """Path of the authors' ImageNet weights for this model (fetched or found in the cache),
    or a clear error naming the file and where to put it."""
    entry = weights_registry.find(model_name, "imagenet", activation=activation)
    if entry is None:
        have = sorted({f"{e.model} ({e.model_kwargs.get('activation', 'leaky')})" for e in
                       map(weights_registry.get, weights_registry.names()) if e.alias == "imagenet"})
        raise ValueError(
            f"No ImageNet weights were published for {model_name} with activation={activation!r}; "
            f"available: {have}.")
    return weights_registry.fetch(entry)


def load(model, weights, model_name, activation="leaky", include_top=True):
    """Load ``weights`` (a path, "imagenet" or a registered name) into a keras_csp backbone."""
    if weights == "imagenet":
        resolve_imagenet(model_name, activation)  # a clear error for models without any
    path, entry = weights_registry.resolve(weights, model_name, activation=activation)
    if entry is not None and entry.format == "keras":
        model.load_weights(path)
        return model
    if path.endswith(".weights") or (entry is not None and entry.format == "darknet"):
        # Darknet files hold the classifier last: a model without the top reads the backbone
        # blocks and leaves the classifier's floats unread.
        load_conv_weights(model, darknet_order(model), path, allow_extra=not include_top)
    else:
        model.load_weights(path)
    return model

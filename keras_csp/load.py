"""One ``load_weights(model, weights)`` for every keras_csp model and every weights format.

A detector (a :class:`~keras_csp.detectors.YOLOTask`) takes the blocks of a Darknet file that
fit, re-creating prediction convs trained for other classes (``detectors.transfer``); a
backbone takes a Darknet file in its cfg order (without its classifier top, the file's
classifier is left unread). Both take Keras weights files and the names of ``keras_csp.weights``.
"""

from keras_csp.detectors.task import YOLOTask
from keras_csp.detectors.transfer import load_pretrained
from keras_csp.models import pretrained


def _has_top(model):
    """Whether a backbone ends with its classifier (the ``predictions`` conv / dense layer)."""
    return any(layer.name.startswith("predictions") for layer in model.layers)


def load_weights(model, weights, name=None, activation="leaky", verbose=True):
    """Load ``weights`` into ``model`` and return ``model``.

    Args:
      model: a keras_csp detector or backbone.
      weights: a Keras weights file (``.weights.h5``, ``.h5``, ``.keras``), a Darknet file
        (``.weights``, ``.conv.N``) or a name of ``keras_csp.weights`` (``"coco"``,
        ``"conv.29"``, ``"imagenet"``, a registered entry), looked up for ``name``.
      name: the registered model name the weights names belong to (``"YOLOv4"``,
        ``"CSPDarknet53"``); a backbone defaults to its own ``model.name``.
      activation: a backbone's activation, to pick among ImageNet weights published per
        activation (``csdarknet53-omega``: ``"mish"``).
      verbose: print the blocks of a Darknet file a detector did not take.

    A detector keeps the report of what was loaded as ``model.transfer_report`` (None for
    Keras files, which load all or nothing).
    """
    if isinstance(model, YOLOTask):
        model.transfer_report = load_pretrained(model, weights, model=name, verbose=verbose)
        return model
    return pretrained.load(model, weights, name or model.name, activation=activation, include_top=_has_top(model))


__all__ = ["load_weights"]

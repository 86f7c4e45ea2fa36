"""The Darknet cfg order of a model's conv blocks, read off the model itself.

A Darknet ``.weights`` file is the conv blocks' floats in cfg order, so loading or writing one
needs that order. Models built from a cfg name each block after its cfg index
(``layer012_conv``: :func:`keras_csp.darknet.block_name`), so their names give it. The named
backbones and detectors name blocks after their place in the architecture
(``stage2_block1_conv1``); their builders list the blocks in cfg order and the model keeps the
list as ``darknet_blocks``, a part of its config (:class:`DarknetBlocksModel`), so the order
survives ``.keras`` save and load.
"""

import re

from keras_csp.backend import LEGACY_KERAS, keras, register

_CFG_BLOCK = re.compile(r"^layer(\d{3,})_(conv|dense)$")


@register
class DarknetBlocksModel(keras.Model):
    """A functional model that keeps its conv blocks' Darknet cfg order in its config.

    ``DarknetBlocksModel(inputs, outputs, name=None, darknet_blocks=())``: a
    ``keras.Model(inputs, outputs)`` plus ``darknet_blocks``, the block names (each made of
    ``{name}_conv`` or ``{name}_dense``, and ``{name}_bn`` when batch-normalised) in the order
    of the Darknet cfg. ``get_config`` holds the list, so a reloaded model has it too.
    """

    # Keras serializes a Functional subclass as a graph only when its constructor has
    # Functional's own arguments, which differ between Keras 3 and tf_keras.
    if LEGACY_KERAS:
        def __init__(self, inputs, outputs, name=None, trainable=True, **kwargs):
            blocks = kwargs.pop("darknet_blocks", ())
            super().__init__(inputs, outputs, name=name, trainable=trainable, **kwargs)
            self.darknet_blocks = tuple(blocks)
    else:
        def __init__(self, inputs, outputs, name=None, **kwargs):
            blocks = kwargs.pop("darknet_blocks", ())
            super().__init__(inputs, outputs, name=name, **kwargs)
            self.darknet_blocks = tuple(blocks)

    def get_config(self):
        config = super().get_config()
        config["darknet_blocks"] = list(self.darknet_blocks)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        blocks = config.pop("darknet_blocks", ())
        model = super().from_config(config, custom_objects=custom_objects)
        model.darknet_blocks = tuple(blocks)
        return model


_RAISE = object()


def darknet_order(model, default=_RAISE):
    """The names of ``model``'s conv blocks in Darknet cfg order, as a tuple.

    ``model`` is a keras_csp backbone or detector network (a :class:`DarknetBlocksModel`,
    built or reloaded from ``.keras``), a :class:`~keras_csp.detectors.Detector`, a model
    built from a cfg (blocks named ``layer{index:03d}``; a cfg's standalone ``[batchnorm]``
    layers are not blocks: write such models with :func:`keras_csp.darknet.save_weights`
    and the cfg), or any model given a ``darknet_blocks`` attribute.
    ``keras.models.clone_model`` rebuilds a model from its constructor and drops the order.
    Without an order this returns ``default`` if given, else raises ``ValueError``.
    """
    blocks = tuple(getattr(model, "darknet_blocks", None) or ())
    if blocks:
        return blocks
    indexed = sorted(
        (int(match.group(1)), match.group(0).rsplit("_", 1)[0])
        for match in (_CFG_BLOCK.match(layer.name) for layer in getattr(model, "layers", ()))
        if match
    )
    if indexed:
        return tuple(name for _, name in indexed)
    if default is not _RAISE:
        return default
    raise ValueError(
        f"Model {getattr(model, 'name', model)!r} has no Darknet block order: it is neither a "
        "keras_csp backbone or detector (built, or reloaded from a .keras file) nor a model "
        "built from a Darknet cfg."
    )


def blocks_present(model, blocks):
    """The blocks of ``blocks`` (in their order) whose conv or dense layer is in ``model``."""
    names = {layer.name for layer in model.layers}
    return tuple(b for b in blocks if f"{b}_conv" in names or f"{b}_dense" in names)

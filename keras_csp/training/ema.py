"""Exponential moving average of the weights, kept by the optimizer (``use_ema=True``).

The optimizer updates the average in-graph after every step, it is saved with the optimizer
state (so a resumed run keeps it) and ``fit`` writes it into the model when training ends.
``EMASwap`` puts the average into the model at the end of each epoch, so the evaluation and
the best-model checkpoint of that epoch see the averaged weights, and swaps the training
weights back before the next epoch. Order in the callback list: backups first (they must
save the training weights), then ``EMASwap``, then evaluation and checkpoints.
"""

from keras_csp.backend import keras, tf


def _base_optimizer(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def ema_pairs(model):
    """``(model variable, its average)`` pairs of ``model.optimizer`` (built, ``use_ema=True``)."""
    optimizer = _base_optimizer(model.optimizer)
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not getattr(optimizer, "use_ema", False) or averages is None:
        raise ValueError("the optimizer keeps no moving average; build it with use_ema=True (make_optimizer(ema=...))")
    # Keras 3 keeps the variables it was built with; tf_keras builds on model.trainable_variables.
    variables = getattr(optimizer, "_trainable_variables", None) or model.trainable_variables
    if len(variables) != len(averages):
        raise ValueError(
            f"cannot pair the optimizer's {len(averages)} moving averages with {len(variables)} model variables"
        )
    return [(v, a) for v, a in zip(variables, averages) if a is not None]


def _raw(variable):
    value = getattr(variable, "value", None)
    if value is not None and not callable(value):
        return value  # Keras 3 variable -> its tf.Variable
    return variable


def _swap(pairs):
    for variable, average in pairs:
        v, a = _raw(variable), _raw(average)
        kept = tf.identity(v)
        v.assign(a)
        a.assign(kept)


def _copy_model_to_average(pairs):
    for variable, average in pairs:
        _raw(average).assign(_raw(variable))


class EMASwap(keras.callbacks.Callback):
    """Evaluate and checkpoint with the averaged weights at each epoch end.

    At the end of an epoch the model gets the averaged weights (the training weights are
    parked in the average's slot); at the start of the next epoch they are swapped back.
    After the last epoch (or when training stops early) both hold the average, so the
    model ends with the averaged weights whether or not ``fit`` finalizes them.
    """

    def __init__(self):
        super().__init__()
        self._swapped = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._swapped:
            _swap(ema_pairs(self.model))
            self._swapped = False

    def on_epoch_end(self, epoch, logs=None):
        pairs = ema_pairs(self.model)
        _swap(pairs)
        self._swapped = True
        epochs = (self.params or {}).get("epochs")
        if self.model.stop_training or (epochs is not None and epoch + 1 >= epochs):
            _copy_model_to_average(pairs)


def apply_ema(model):
    """Write the optimizer's moving average into ``model`` (what ``fit`` does at its end)."""
    for variable, average in ema_pairs(model):
        _raw(variable).assign(_raw(average))


__all__ = ["EMASwap", "apply_ema", "ema_pairs"]

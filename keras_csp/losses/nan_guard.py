"""A ``TerminateOnNaN``-style callback that says where training went non-finite."""

import logging
import math

import numpy as np

from keras_csp.backend import keras

logger = logging.getLogger(__name__)


def _non_finite(value):
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False  # not a number (a string, a dict): nothing to check
    return array.size > 0 and not np.all(np.isfinite(array))


class NaNGuard(keras.callbacks.Callback):
    """Stop ``fit`` at the first training batch whose logs hold a NaN or an Inf.

    Unlike ``keras.callbacks.TerminateOnNaN`` it checks every logged value (the loss and
    its ``box_loss``/``obj_loss``/``cls_loss`` parts), and names the epoch, the batch in
    the epoch and the global step (batches since training began, 0-based) in its message
    and in ``self.failure``. With ``steps_per_execution > 1`` Keras reports only the last
    batch of each execution, so the batch named is that one.

    Args:
      monitor: names of log entries to check; ``None`` checks them all.
      raise_error: raise ``FloatingPointError`` instead of only stopping training.
    """

    def __init__(self, monitor=None, raise_error=False):
        super().__init__()
        self.monitor = None if monitor is None else tuple(monitor)
        self.raise_error = raise_error
        self.failure = None
        self._epoch = 0
        self._steps_before_epoch = 0
        self._last_batch = -1

    def on_train_begin(self, logs=None):
        self.failure = None
        self._steps_before_epoch = 0
        self._last_batch = -1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._last_batch = -1

    def on_epoch_end(self, epoch, logs=None):
        self._steps_before_epoch += self._last_batch + 1

    def on_train_batch_end(self, batch, logs=None):
        self._last_batch = batch
        logs = logs or {}
        keys = self.monitor if self.monitor is not None else tuple(logs)
        bad = [k for k in keys if k in logs and _non_finite(logs[k])]
        if not bad or self.failure is not None:
            return
        step = self._steps_before_epoch + batch
        values = {k: float(np.asarray(logs[k], dtype=np.float64).ravel()[0]) for k in bad}
        shown = ", ".join(f"{k}={'nan' if math.isnan(v) else v}" for k, v in values.items())
        message = (
            f"NaNGuard: non-finite {shown} at epoch {self._epoch + 1}, batch {batch} "
            f"(global step {step}); stopping training."
        )
        self.failure = {"epoch": self._epoch, "batch": batch, "step": step, "values": values, "message": message}
        logger.error(message)
        print(message)
        self.model.stop_training = True
        if self.raise_error:
            raise FloatingPointError(message)


__all__ = ["NaNGuard"]

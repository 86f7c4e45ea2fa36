"""Small callbacks of a training run: the learning rate in the logs, and the run log
(``history.json``, ``history.csv`` and ``curves.png``, rewritten atomically every epoch and
kept across resumed runs)."""

import csv
import io
import json
import logging
import math
import os

from keras_csp.backend import keras
from keras_csp.evaluation.plots import plot_history
from keras_csp.training.checkpoints import atomic_write_text


def current_learning_rate(optimizer):
    """The learning rate the optimizer uses at its current step, as a float."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    rate = getattr(optimizer, "_learning_rate", None)
    if rate is None:
        rate = optimizer.learning_rate
    if callable(rate) and not hasattr(rate, "numpy"):
        rate = rate(optimizer.iterations)
    return float(rate.numpy() if hasattr(rate, "numpy") else rate)


class LearningRateLogger(keras.callbacks.Callback):
    """Add ``learning_rate`` (the rate of the epoch's last step) to each epoch's logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)


class CloseMosaic(keras.callbacks.Callback):
    """Ultralytics' ``close_mosaic``: no mosaics in the last ``epochs`` epochs of the run, so the
    detector ends on whole images, as it will see them.

    ``rate`` is the float32 ``tf.Variable`` the training pipeline reads as its mosaic probability
    (``detection_dataset(mosaic=rate)``); it is set at every epoch's start (``on`` before the last
    epochs, 0 in them), so a resumed run gets the right rate. ``total_epochs`` is the run's length
    or a callable giving it (a time budget's planned epochs; None while not yet planned). Each
    epoch's logs (``history``, ``results.csv``) get ``mosaic``, the rate it trained with.
    """

    before_evaluation = True  # in the logs before the run log writes them (training/run.py)

    def __init__(self, rate, epochs, total_epochs, on=1.0, log=print):
        super().__init__()
        self.rate, self.epochs, self.total_epochs, self.on, self.log = rate, int(epochs), total_epochs, float(on), log
        self.closed_at = None  # the first epoch without mosaics

    def on_epoch_begin(self, epoch, logs=None):
        total = self.total_epochs() if callable(self.total_epochs) else self.total_epochs
        closed = total is not None and epoch >= total - self.epochs
        self.rate.assign(0.0 if closed else self.on)
        if closed and self.closed_at is None:
            self.closed_at = epoch
            if self.log:
                self.log(f"close_mosaic: epochs {epoch + 1}-{total} train without mosaics")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["mosaic"] = float(self.rate.numpy())


def _number(value):
    """``(is a number, finite value or None)``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return False, None
    return True, (value if math.isfinite(value) else None)


class RunLog(keras.callbacks.Callback):
    """Keep the run's per-epoch logs in ``history.json`` / ``history.csv`` and draw
    ``curves.png`` (losses, COCO AP, learning rate) after every epoch.

    A resumed run reads ``history.json`` back, so the files and the curves cover the whole
    run; an epoch run twice (killed after its logs, before its backup) keeps its last logs.
    """

    def __init__(self, directory, curves=True, title=None):
        super().__init__()
        self.directory = os.fspath(directory)
        self.curves = curves
        self.title = title
        self.json_path = os.path.join(self.directory, "history.json")
        self.csv_path = os.path.join(self.directory, "history.csv")
        self.curves_path = os.path.join(self.directory, "curves.png")
        self.epochs = {}
        if os.path.isfile(self.json_path):
            with open(self.json_path, encoding="utf-8") as f:
                self.epochs = {int(e): logs for e, logs in json.load(f).get("epochs", {}).items()}

    def history(self):
        """``{name: [value per epoch]}`` over all epochs so far (None where missing)."""
        keys = sorted({k for logs in self.epochs.values() for k in logs})
        order = sorted(self.epochs)
        return {k: [self.epochs[e].get(k) for e in order] for k in keys}

    def on_epoch_end(self, epoch, logs=None):
        numbers = {k: _number(v) for k, v in (logs or {}).items()}
        self.epochs[epoch + 1] = {k: value for k, (ok, value) in numbers.items() if ok}
        self.write()

    def write(self):
        os.makedirs(self.directory, exist_ok=True)
        payload = {"epochs": {str(e): self.epochs[e] for e in sorted(self.epochs)}}
        atomic_write_text(self.json_path, json.dumps(payload, indent=1))
        keys = sorted({k for logs in self.epochs.values() for k in logs})
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["epoch"] + keys)
        for e in sorted(self.epochs):
            writer.writerow([e] + ["" if self.epochs[e].get(k) is None else self.epochs[e][k] for k in keys])
        atomic_write_text(self.csv_path, buffer.getvalue())
        if self.curves and self.epochs:
            try:
                plot_history(self.history(), self.curves_path, self.title)
            except ImportError as err:  # no matplotlib: the CSV / JSON logs are enough
                logging.getLogger(__name__).warning("training curves not drawn: %s", err)
                self.curves = False


__all__ = ["CloseMosaic", "LearningRateLogger", "RunLog", "current_learning_rate"]

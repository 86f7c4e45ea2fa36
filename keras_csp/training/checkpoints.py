"""Checkpoints that a kill can never leave half-written: resumable backups and best/last weights.

Every file is written under a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on POSIX and Windows), and a backup's pointer file is updated only
after the backup it points to is complete. A run killed at any instant therefore restarts
from the last complete backup.

``BackupAndResume`` saves the whole training state (model weights, batch-norm statistics,
optimizer slots, the step counter that drives the learning-rate schedule, and with
``ema=`` the ``ModelEMA``: its averages and update count) with ``tf.train.Checkpoint`` at each
epoch end, in Keras 3 and in tf_keras.
Keras' own ``BackupAndRestore`` writes in place (and its weights and epoch files apart).
"""

import glob
import json
import logging
import math
import os
import shutil
import tempfile

from keras_csp.backend import LEGACY_KERAS, keras, tf
from keras_csp.files import atomic_write_text  # noqa: F401  (imported from here by the training modules)

logger = logging.getLogger(__name__)

POINTER = "latest.json"


def atomic_save_weights(model, path):
    """``model.save_weights(path)`` through a temporary file in the same folder."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = ".weights.h5" if path.endswith(".weights.h5") else os.path.splitext(path)[1] or ".h5"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _optimizer_of(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("BackupAndResume needs a compiled model (it saves the optimizer state too)")
    return optimizer


def _build_optimizer(model):
    """Create the optimizer's slots now, so a checkpoint can be restored into them."""
    optimizer = _optimizer_of(model)
    inner = getattr(optimizer, "inner_optimizer", None)
    if LEGACY_KERAS:
        target = inner or optimizer
        if not getattr(target, "_variables", None) or len(target.variables) <= 1:
            target.build(model.trainable_variables)
        return
    if not optimizer.built:
        strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
        with strategy.scope():
            optimizer.build(model.trainable_variables)


class BackupAndResume(keras.callbacks.Callback):
    """Back up the training state at each epoch end; resume from it when training restarts.

    Args:
      backup_dir: a folder used only by this run's backups.
      keep: complete backups kept (older ones are deleted after a newer one is in place).
      delete_on_success: remove the backups when ``fit`` completes all its epochs.
      ema: the run's ``ModelEMA``, saved and restored with the model (put this callback
        before ``EMASwap``, so the backup holds the training weights, not the average).

    Use it first in the callback list. ``restore()`` loads the latest backup into the
    (compiled) model and returns the number of finished epochs, which is what to pass as
    ``fit(initial_epoch=...)``; in Keras 3 ``on_train_begin`` does both by itself if
    ``restore()`` was not called. Epochs whose logs are not finite are not backed up.
    """

    def __init__(self, backup_dir, keep=2, delete_on_success=False, ema=None):
        super().__init__()
        if not backup_dir:
            raise ValueError("`backup_dir` must be a folder path")
        if int(keep) < 1:
            raise ValueError(f"`keep` must be >= 1; received {keep!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.keep = int(keep)
        self.delete_on_success = delete_on_success
        self.ema = ema
        self.restored_epoch = None
        self._epochs = None

    # -- files ----------------------------------------------------------------------------
    def _checkpoint(self):
        parts = {"model": self.model, "optimizer": _optimizer_of(self.model)}
        if self.ema is not None:
            if self.ema.swapped:  # the backup must hold the training weights and the average apart
                raise RuntimeError("BackupAndResume ran while the model held the EMA average; put it before EMASwap")
            parts["ema"] = self.ema
        return tf.train.Checkpoint(**parts)

    def latest(self):
        """``(epoch, checkpoint prefix)`` of the latest complete backup, or ``None``."""
        pointer = os.path.join(self.backup_dir, POINTER)
        candidates = []
        if os.path.isfile(pointer):
            try:
                with open(pointer, encoding="utf-8") as f:
                    state = json.load(f)
                candidates.append((int(state["epoch"]), os.path.join(self.backup_dir, state["dir"])))
            except (OSError, ValueError, KeyError) as err:
                logger.warning("%s unreadable (%s); scanning the backups", pointer, err)
        for folder in glob.glob(os.path.join(self.backup_dir, "epoch-*")):
            state_file = os.path.join(folder, "state.json")
            if os.path.isfile(state_file):
                with open(state_file, encoding="utf-8") as f:
                    candidates.append((int(json.load(f)["epoch"]), folder))
        candidates = [(e, d) for e, d in candidates if os.path.isfile(os.path.join(d, "state.json"))]
        if not candidates:
            return None
        epoch, folder = max(candidates)
        return epoch, os.path.join(folder, "ckpt")

    def restore(self, model=None):
        """Load the latest backup into the model; returns the finished epochs (0 if none)."""
        if model is not None:
            self.set_model(model)
        found = self.latest()
        self.restored_epoch = 0
        if found is None:
            return 0
        epoch, prefix = found
        _build_optimizer(self.model)
        if self.ema is not None:
            self.ema.swapped = False  # the backup overwrites the model and the averages alike
        status = self._checkpoint().read(prefix)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as err:
            raise ValueError(
                f"the backup {prefix} does not fit this model, optimizer or EMA (were they changed since it "
                f"was written, or EMA switched on or off? start in another output folder, or delete "
                f"{self.backup_dir}): {err}"
            ) from None
        self.restored_epoch = epoch
        logger.info("resumed from %s (epoch %d)", prefix, epoch)
        print(f"Resuming from the backup of epoch {epoch} in {self.backup_dir}")
        return epoch

    def save(self, epoch):
        """Write the backup of ``epoch`` finished epochs (atomically) and prune old ones."""
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=self.backup_dir)
        name = f"epoch-{epoch:06d}"
        final = os.path.join(self.backup_dir, name)
        try:
            self._checkpoint().write(os.path.join(tmp, "ckpt"))
            atomic_write_text(os.path.join(tmp, "state.json"), json.dumps({"epoch": epoch}))
            if os.path.isdir(final):  # re-saving an epoch (after a resume): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        atomic_write_text(os.path.join(self.backup_dir, POINTER), json.dumps({"epoch": epoch, "dir": name}))
        self._prune(epoch)

    def _prune(self, epoch):
        folders = glob.glob(os.path.join(self.backup_dir, "epoch-*"))
        done = sorted(f for f in folders if os.path.isfile(os.path.join(f, "state.json")))
        stale = [f for f in folders if f not in done]  # not written by save(): never complete
        for folder in stale + done[: max(0, len(done) - self.keep)]:
            shutil.rmtree(folder, ignore_errors=True)
        for folder in glob.glob(os.path.join(self.backup_dir, ".tmp-*")):  # left by a kill
            shutil.rmtree(folder, ignore_errors=True) if os.path.isdir(folder) else os.remove(folder)

    # -- callback -------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._epochs = (self.params or {}).get("epochs")
        if self.restored_epoch is None:
            epoch = self.restore()
            if epoch and not LEGACY_KERAS:
                self.model._initial_epoch = epoch  # Keras 3 fit reads it after on_train_begin
            elif epoch:
                logger.warning(
                    "tf_keras cannot move fit's first epoch from a callback: the state of epoch %d is "
                    "restored, but pass fit(initial_epoch=backup.restore(model)) to skip the done epochs", epoch)

    def on_epoch_end(self, epoch, logs=None):
        bad = [k for k, v in (logs or {}).items() if isinstance(v, float) and k.endswith("loss") and not math.isfinite(v)]
        if bad:
            logger.warning("epoch %d: %s not finite; no backup written", epoch + 1, bad)
            return
        self.save(epoch + 1)

    def on_train_end(self, logs=None):
        finished = self._epochs is not None and not self.model.stop_training
        if self.delete_on_success and finished and os.path.isdir(self.backup_dir):
            shutil.rmtree(self.backup_dir, ignore_errors=True)


class WeightsCheckpoint(keras.callbacks.Callback):
    """Keep ``last.weights.h5`` (every epoch) and ``best.weights.h5`` (best ``monitor``).

    Like ``keras.callbacks.ModelCheckpoint(save_best_only=True, save_weights_only=True)`` but
    written atomically, with ``best.json`` recording the epoch and value. NaN values of the
    monitor (epochs without an evaluation) never count as best.

    Args:
      directory: output folder.
      monitor: log entry to compare (``val_AP`` with a ``COCOEvalCallback`` before this one).
      mode: ``"max"`` or ``"min"``.
      save_last: also write ``last.weights.h5`` each epoch.
    """

    def __init__(self, directory, monitor="val_AP", mode="max", save_last=True):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"`mode` must be 'max' or 'min'; received {mode!r}")
        self.directory = os.fspath(directory)
        self.monitor = monitor
        self.mode = mode
        self.save_last = save_last
        self.best = None
        self.best_path = os.path.join(self.directory, "best.weights.h5")
        self.last_path = os.path.join(self.directory, "last.weights.h5")
        self._load_best()

    def _load_best(self):
        record = os.path.join(self.directory, "best.json")
        if os.path.isfile(record):  # a resumed run keeps the best of before the interruption
            with open(record, encoding="utf-8") as f:
                saved = json.load(f)
            if saved.get("monitor") == self.monitor:
                self.best = saved.get("value")

    def _better(self, value):
        if value is None or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_last:
            atomic_save_weights(self.model, self.last_path)
        value = logs.get(self.monitor)
        value = None if value is None else float(value)
        if self._better(value):
            self.best = value
            atomic_save_weights(self.model, self.best_path)
            atomic_write_text(
                os.path.join(self.directory, "best.json"),
                json.dumps({"monitor": self.monitor, "value": value, "epoch": epoch + 1}),
            )


__all__ = ["BackupAndResume", "WeightsCheckpoint", "atomic_save_weights", "atomic_write_text"]

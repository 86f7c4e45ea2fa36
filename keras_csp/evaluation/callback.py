"""``COCOEvalCallback``: COCO mAP during ``fit``, logged as ``val_AP``, ``val_AP50``, ...

Put it before ``ModelCheckpoint`` / the checkpoint callbacks in the list: Keras hands every
callback the same ``logs`` dict, so what this one adds at the end of an epoch is what the
later callbacks (best-model checkpoints, CSV, TensorBoard, History, the progress bar) see.
Epochs without an evaluation log no ``val_*`` entries (no ``val_AP: nan`` on the console;
the run log leaves those cells empty, and "best" only compares evaluated epochs).
With a ``ModelEMA`` (``ema=``) the averaged weights are evaluated: swapped in for the
evaluation and back after it, unless an earlier ``EMASwap`` has put them in already.
"""

import json
import logging
import os
import time

from keras_csp.backend import keras
from keras_csp.evaluation.detection import detection_function, evaluate_detector, ground_truth_for
from keras_csp.files import atomic_write_text

logger = logging.getLogger(__name__)


class COCOEvalCallback(keras.callbacks.Callback):
    """Evaluate COCO AP every ``every`` epochs (and after the last) on an evaluation set.

    Args:
      dataset: ``detection_dataset(source, training=False, ...)``: unshuffled, every image.
      source: its source (category ids, class names, the COCO JSON ground truth if any).
      every: evaluate every this many epochs (the last epoch is always evaluated).
      nms: NMS settings for the evaluation (default ``EVAL_NMS``).
      prefix: log-name prefix (``val_`` gives ``val_AP``, ``val_AP50``, ...).
      out_dir: if given, ``coco_eval.json`` (the latest stats and per-class AP) and
        ``per_class_ap.txt`` are written there after each evaluation.
      max_batches: evaluate only this many batches (quick checks).
      verbose: print a one-line summary after each evaluation.
      ema: optional ``ModelEMA`` of the model: evaluate its averaged weights.

    ``self.results`` maps each evaluated epoch (1-based) to its ``COCOResult``, and
    ``self.seconds`` to the time the evaluation took. :meth:`final` is the evaluation of the
    weights the model ended with (the run's pictures reuse it) and :attr:`detect` its traced
    detection function.
    """

    def __init__(self, dataset, source=None, every=1, nms=None, prefix="val_", out_dir=None,
                 ground_truth=None, max_batches=None, verbose=1, ema=None):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"`every` must be a positive number of epochs; received {every!r}")
        self.dataset = dataset
        self.source = source
        self.every = int(every)
        self.nms = nms
        self.prefix = prefix
        self.out_dir = out_dir
        self.max_batches = max_batches
        self.verbose = verbose
        self.ema = ema
        self.results = {}
        self.seconds = {}
        self._ground_truth = ground_truth if ground_truth is not None else ground_truth_for(source)
        self._detect = None
        self._epochs = None
        self._latest_evaluated = False  # whether the last epoch that ended was evaluated
        self._requested = set()  # epochs (1-based) evaluated besides the interval's

    def on_train_begin(self, logs=None):
        self._epochs = (self.params or {}).get("epochs")
        self._detect = None  # the model may have been rebuilt or recompiled

    def evaluate(self):
        """Evaluate the model now; returns the ``COCOResult``."""
        if self._detect is None:
            self._detect = detection_function(self.model, self.nms)
        swap = self.ema is not None and not self.ema.swapped
        if swap:
            self.ema.use_average()
        try:
            return evaluate_detector(
                self.model, self.dataset, self.source, ground_truth=self._ground_truth, nms=self.nms,
                max_batches=self.max_batches, detect=self._detect,
            )
        finally:
            if swap:
                self.ema.use_training_weights()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        last = self._epochs is not None and epoch + 1 >= self._epochs
        last = last or bool(getattr(self.model, "stop_training", False))  # stopped early (a time budget)
        self._latest_evaluated = False
        if (epoch + 1) % self.every and not last and epoch + 1 not in self._requested:
            return
        start = time.perf_counter()
        result = self.evaluate()
        for older in self.results.values():  # only the latest keeps its detections (memory)
            older.detections = older.image_ids = older.ground_truth = None
        self.results[epoch + 1] = result
        self._latest_evaluated = True
        logs.update(result.logs(self.prefix))
        seconds = time.perf_counter() - start
        self.seconds[epoch + 1] = seconds
        if self.verbose:
            s = result.stats
            print(
                f"\nEpoch {epoch + 1}: COCO {self.prefix}AP {s['AP']:.4f}  AP50 {s['AP50']:.4f}  "
                f"AP75 {s['AP75']:.4f}  ({result.num_images} images, {result.num_detections} "
                f"detections, {seconds:.1f} s)"
            )
        if self.out_dir:
            self._write(epoch + 1, result)

    def request(self, epoch):
        """Evaluate the end of ``epoch`` (1-based) too, whatever the interval (a time budget
        times one evaluation early instead of guessing what the final one costs)."""
        self._requested.add(int(epoch))

    @property
    def latest_evaluated(self):
        """Whether the last epoch that ended was evaluated."""
        return self._latest_evaluated

    @property
    def detect(self):
        """The traced detection function of the evaluations (None before the first)."""
        return self._detect

    def final(self):
        """The ``COCOResult`` of the last epoch when that epoch was evaluated (with its
        detections), else None: the weights the model ended with were not evaluated."""
        if not self._latest_evaluated or not self.results:
            return None
        result = self.results[max(self.results)]
        return result if result.detections is not None else None

    def _write(self, epoch, result):
        os.makedirs(self.out_dir, exist_ok=True)
        payload = dict(result.to_json(), epoch=epoch)
        atomic_write_text(os.path.join(self.out_dir, "coco_eval.json"), json.dumps(payload, indent=1))
        atomic_write_text(os.path.join(self.out_dir, "per_class_ap.txt"), result.table() + "\n")


__all__ = ["COCOEvalCallback"]

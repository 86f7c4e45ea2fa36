"""Training with ``model.fit``: the ``keras-csp train`` run, schedules, optimizers, EMA,
``tf.distribute``, resumable backups, and the demo.

- ``train(config)``: a whole run (``keras-csp train``); see :mod:`keras_csp.training.run`.
- ``DarknetSchedule`` (burn-in, then steps / poly / cosine): :mod:`.schedules`.
- ``make_optimizer`` / ``DarknetSGD`` (Darknet's weight decay): :mod:`.optimizers`.
- ``ModelEMA`` / ``EMASwap``: an average of all weights (BN statistics included), evaluated
  and checkpointed: :mod:`.ema`.
- ``make_strategy`` (default / mirrored / multi_worker / tpu): :mod:`.strategy`.
- ``BackupAndResume`` / ``WeightsCheckpoint`` (atomic files): :mod:`.checkpoints`.
- ``run_demo``: the README's demo: :mod:`.demo`.
"""

from keras_csp.training.checkpoints import BackupAndResume, WeightsCheckpoint
from keras_csp.training.config import TrainConfig, make_config
from keras_csp.training.ema import EMASwap, ModelEMA, apply_ema
from keras_csp.training.optimizers import DarknetAdam, DarknetSGD, make_optimizer
from keras_csp.training.run import TrainResult, train
from keras_csp.training.schedules import DarknetSchedule, coco_schedule, imagenet_schedule
from keras_csp.training.strategy import make_strategy

__all__ = [
    "BackupAndResume", "DarknetAdam", "DarknetSGD", "DarknetSchedule", "EMASwap", "ModelEMA", "TrainConfig",
    "TrainResult", "WeightsCheckpoint", "apply_ema", "coco_schedule", "imagenet_schedule",
    "make_config", "make_optimizer", "make_strategy", "train",
]

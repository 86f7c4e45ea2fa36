"""``train(config)``: a whole training run with ``model.fit``, as ``keras-csp train`` does it.

data -> model (in the strategy's scope) -> optimizer + schedule -> callbacks -> ``fit`` ->
final weights, evaluation, report files. Outputs in ``config.out``:

- ``config.yaml`` (resolved options) and ``run.json`` (classes, anchors: what
  ``keras-csp evaluate/predict --run`` need to rebuild the model);
- ``best.keras`` / ``final.keras``: the complete detectors (classes, anchors, NMS), loadable
  with ``keras.saving.load_model(path, safe_mode=True)`` (``save_keras``);
- ``best.weights.h5`` (best ``val_AP``; best loss without a validation set), ``last.weights.h5``,
  ``final.weights.h5`` (after the last epoch; with ``ema`` all three hold the averaged weights);
- ``history.json`` / ``history.csv`` / ``curves.png``; ``tensorboard/``; ``results.csv`` (one row per
  epoch) and the validation pictures (``confusion_matrix.png``, ``P/R/F1/PR_curve.png``,
  ``labels.png``, ``val_images.png``: ``keras_csp.evaluation.pictures``);
- ``eval/``: ``coco_eval.json``, ``per_class_ap.txt``, PR-curve PNGs;
- ``backup/``: the resumable state (a restarted run continues from it).
"""

import dataclasses
import json
import logging
import math
import os
import time

from keras_csp.backend import keras, tf
from keras_csp.data import NO_AUGMENT, AugmentConfig, detection_dataset
from keras_csp.data.dataset_files import open_detection_source, read_dataset_file
from keras_csp.data.yolo_txt import read_names
from keras_csp.detectors.detector import network_of
from keras_csp.evaluation import COCOEvalCallback, write_pr_curves
from keras_csp.evaluation.pictures import write_run_pictures
from keras_csp.losses import NaNGuard
from keras_csp.training.budget import MAX_PLANNED_EPOCHS, BudgetPlan, TimeBudget
from keras_csp.training.callbacks import CloseMosaic, LearningRateLogger, RunLog
from keras_csp.training.checkpoints import BackupAndResume, WeightsCheckpoint, atomic_save_weights, atomic_write_text
from keras_csp.training.config import TrainConfig, make_config, save_yaml
from keras_csp.training.ema import EMASwap, ModelEMA
from keras_csp.training.models import (
    anchors_from_dataset,
    build_model,
    model_levels,
    parse_anchors,
    scaled_default_anchors,
)
from keras_csp.training.optimizers import make_optimizer
from keras_csp.training.precision import global_policy, resolve_policy
from keras_csp.training.restore import save_detector_files
from keras_csp.training.schedules import DarknetSchedule
from keras_csp.training.strategy import check_global_batch, is_chief, make_strategy, output_dir, shard_by_data

logger = logging.getLogger(__name__)

LIGHT_AUGMENT = dict(mosaic=0.0, mixup=0.0, scale=0.25, translate=0.1, aspect=0.1, flip=0.5,
                     hsv_h=0.0, hsv_s=0.3, hsv_v=0.3)


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the trained model, the per-epoch history of the whole run,
    the output folder, the final COCO evaluation (or None) and the resolved settings."""

    model: object
    history: dict
    out_dir: str
    evaluation: object = None
    config: object = None
    run_info: dict = None
    eval_seconds: dict = None


def augment_config(config):
    """The ``AugmentConfig`` of ``config.augment`` (``default`` / ``light`` / ``none``)."""
    if config.augment == "none":
        return NO_AUGMENT
    if config.augment == "light":
        return AugmentConfig(**LIGHT_AUGMENT)
    return AugmentConfig()


def resolve_sources(config):
    """``(train source, validation source or None)`` from the config strings (or objects):
    ``data`` (a Darknet ``.data`` / Ultralytics ``data.yaml``) gives both splits (``val``
    overrides its validation split); ``names`` names the classes of YOLO txt data."""
    names = getattr(config, "names", None)
    if getattr(config, "data", None):
        dataset = read_dataset_file(config.data)
        if names is not None:
            dataset.names = read_names(names)
        train = dataset.source("train")
        if config.val:
            val = open_detection_source(config.val, training=False, names=names or train.class_names)
        else:
            val = dataset.source("val") if dataset.val else None
        return train, val
    train = open_detection_source(config.train, training=True, names=names)
    val = None
    if config.val:
        same_names = names if names is not None else (train.class_names if _is_yolo(config.val) else None)
        val = open_detection_source(config.val, training=False, names=same_names)
    return train, val


def _is_yolo(spec):
    """Whether ``spec`` is YOLO txt data (a list ``.txt`` or a folder without VOC annotations)."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    text = os.fspath(spec)
    return text.endswith(".txt") or (os.path.isdir(text) and not os.path.isdir(os.path.join(text, "Annotations")))


def _multi_scale(text):
    if not text:
        return None
    low, high = (int(v) for v in str(text).replace(",", " ").split())
    return low, high


def make_datasets(config, train_source, val_source, strategy=None, resume_epoch=0, mosaic_rate=None):
    """``(training dataset (repeated), steps per epoch, evaluation dataset or None)``.

    ``mosaic_rate``: a float32 ``tf.Variable`` the pipeline reads as its mosaic probability
    instead of the config's (``close_mosaic``: a callback sets it). A run resumed after ``resume_epoch`` epochs draws its shuffles and augmentations from
    another seed (a fresh iterator would otherwise replay the first epochs' draws); with
    ``shuffle=False`` and ``augment="none"`` the data order is the same in every epoch.
    """
    train_ds = detection_dataset(
        train_source, image_size=config.image_size, batch_size=config.batch_size,
        augment=augment_config(config), mosaic=config.mosaic if mosaic_rate is None else mosaic_rate,
        mixup=config.mixup,
        multi_scale=_multi_scale(config.multi_scale), max_boxes=config.max_boxes,
        seed=config.seed + 7919 * resume_epoch, cache=config.cache, shuffle=config.shuffle,
    )
    steps = config.steps_per_epoch or max(1, len(train_source) // config.batch_size)
    train_ds = train_ds.repeat()
    if strategy is not None and strategy.extended._in_multi_worker_mode():
        train_ds = shard_by_data(train_ds)
    val_ds = None
    if val_source is not None:
        pixels = len(val_source) * config.image_size**2 * 3
        val_ds = detection_dataset(
            val_source, image_size=config.image_size, batch_size=min(config.batch_size, 16),
            training=False, max_boxes=config.max_boxes, cache=pixels < 2**30,
        )
    return train_ds, steps, val_ds


def resolve_anchors(config, train_source, num_classes=None):
    """Anchors from ``config.anchors``: None (the model's own), ``auto`` (k-means on the
    training boxes at the input size), ``scaled`` (YOLOv3's scaled to the input) or pairs."""
    if not config.anchors:
        return None
    if config.anchors in ("auto", "scaled"):
        levels = model_levels(config.model, num_classes or train_source.num_classes, config.image_size)
    if config.anchors == "auto":
        ds = detection_dataset(train_source, image_size=config.image_size, batch_size=32, training=False,
                               max_boxes=config.max_boxes)
        return anchors_from_dataset(ds, config.image_size, levels)
    if config.anchors == "scaled":
        return scaled_default_anchors(config.image_size, levels)
    return parse_anchors(config.anchors)


def anchors_text(anchors):
    """Per-level anchors as the ``--anchors`` text (``"w,h, w,h; w,h, ..."``)."""
    if anchors is None:
        return None
    return "; ".join(", ".join(f"{w:g},{h:g}" for w, h in level) for level in anchors)


def backbone_layers(model):
    """Layers of the detector's backbone (everything the ``P{n}`` outputs are computed by)."""
    backbone = model.backbone  # shares the detector's layers
    return [layer for layer in backbone.layers if layer.weights]


def set_bn_momentum(model, momentum):
    """Set the momentum of every batch-norm layer of ``model`` (nested models included);
    returns how many layers changed."""
    count = 0
    stack = list(getattr(network_of(model), "layers", []))
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []) or [])
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            count += 1
    return count


def _compile(model, config, total_steps, start_step=0, ema=None, adjustable=False):
    burn_in = config.burn_in if config.burn_in is not None else min(1000, total_steps // 10)
    policy = {"steps": "steps", "poly": "poly", "cosine": "cosine", "constant": "constant"}.get(config.schedule)
    if policy is None:
        raise ValueError(f"config `schedule` must be steps, poly, cosine or constant; received {config.schedule!r}")
    schedule = DarknetSchedule(config.learning_rate, max(1, total_steps), policy, burn_in=burn_in,
                               adjustable=adjustable)
    optimizer = make_optimizer(config.optimizer, schedule, config.momentum, config.weight_decay, ema,
                               config.clipnorm)
    model.compile(optimizer=optimizer, loss=config.loss, steps_per_execution=config.steps_per_execution)
    # Built here, not by the first step: a first call that creates the optimizer's variables has
    # tf.function trace the train step twice (the quick demo detector's first step: 8.4 against
    # 4.5 s built, 2-core AMD EPYC; benchmarks/fit_overheads.py).
    model.optimizer.build(model.trainable_variables)
    if start_step:
        model.optimizer.iterations.assign(start_step)
    return schedule


def _callbacks(config, model, out, chief, val_ds, val_source, backup_dir, extra, ema=None):
    callbacks = [NaNGuard(), LearningRateLogger()]
    backup = BackupAndResume(backup_dir, ema=ema) if config.backup else None
    if backup:
        callbacks.append(backup)
    if ema is not None:  # after the backup (training weights), before evaluation and checkpoints (the average)
        callbacks.append(EMASwap(ema))
    early = [c for c in extra if getattr(c, "before_evaluation", False)]  # e.g. the time budget's Deadline
    callbacks.extend(early)
    evaluator = None
    if val_ds is not None and chief:
        evaluator = COCOEvalCallback(val_ds, val_source, every=config.eval_every or 1,
                                     out_dir=os.path.join(out, "eval"), max_batches=config.eval_batches,
                                     verbose=config.verbose)
        callbacks.append(evaluator)
        for callback in early:  # the time budget sets the evaluation interval when eval_every is unset
            if hasattr(callback, "attach_evaluator"):
                callback.attach_evaluator(evaluator)
    monitor, mode = ("val_AP", "max") if evaluator else ("loss", "min")
    callbacks.append(WeightsCheckpoint(out, monitor=monitor, mode=mode))
    callbacks.append(RunLog(out, title=f"{config.model} on {val_source.name if val_source else 'train'}"))
    if config.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            logger.warning("TensorBoard logs skipped: the tensorboard package is not installed (pip install tensorboard)")
        else:
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"), write_graph=False))
    callbacks.extend(c for c in extra if c not in early)
    return callbacks, backup, evaluator


def _setup(config):
    strategy = make_strategy(config.strategy, config.cpu_devices)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = resolve_policy(config.mixed_precision)  # "auto": bf16 on AMX CPUs, fp16 on GPUs
    if policy != "none":
        keras.mixed_precision.set_global_policy(policy)
    return strategy


def _resume_epoch(out, phases):
    found = [BackupAndResume(os.path.join(out, name)).latest() for name in phases]
    return max([f[0] for f in found if f] + [0])


def train(config=None, extra_callbacks=(), train_source=None, val_source=None, detector=None, **options):
    """Train a detector as ``config`` (a ``TrainConfig``, or options as keywords) says.

    ``train_source`` / ``val_source`` may be given as source objects instead of the
    ``config.train`` / ``config.val`` strings, and ``detector`` as a built detector instead
    of building ``config.model`` (it must be that model: ``run.json`` records the name).
    Restarting the same call after a crash resumes from ``<out>/backup``. With ``time``
    (minutes; ``train(time=15)``) the epochs are planned from the measured speed instead
    (``training/budget.py``). Returns a :class:`TrainResult`.
    """
    if config is None:
        config = make_config(**options)
    elif options:
        config = dataclasses.replace(config, **options)
    config = TrainConfig(**config.to_dict()).validate() if isinstance(config, TrainConfig) else make_config(**config)
    with global_policy():  # the policy is global: do not leak mixed precision into the caller's models
        if config.time:  # epochs planned from the measured speed (training/budget.py)
            return train_within(config, extra_callbacks=extra_callbacks, train_source=train_source,
                                val_source=val_source, detector=detector)
        return _train(config, extra_callbacks, train_source, val_source, detector)


def _train(config, extra_callbacks, train_source, val_source, detector):
    strategy = _setup(config)
    check_global_batch(config.batch_size, strategy)
    chief = is_chief()
    out = output_dir(config.out)
    os.makedirs(out, exist_ok=True)

    if train_source is None or (config.val and val_source is None):
        resolved_train, resolved_val = resolve_sources(config)
        train_source = train_source or resolved_train
        val_source = val_source or resolved_val
    num_classes = config.num_classes or train_source.num_classes
    if num_classes != train_source.num_classes:
        raise ValueError(f"config `num_classes` is {num_classes}; the training data has {train_source.num_classes}")
    phase_dirs = ["backup"] if not config.freeze_backbone_epochs else ["backup-phase1", "backup-phase2"]
    resume = _resume_epoch(out, phase_dirs) if config.backup else 0
    mosaic_rate = _mosaic_rate(config)
    train_ds, steps, val_ds = make_datasets(config, train_source, val_source, strategy, resume, mosaic_rate)
    anchors = resolve_anchors(config, train_source, num_classes)
    resolved = dataclasses.replace(config, num_classes=num_classes, anchors=anchors_text(anchors) or config.anchors,
                                   steps_per_epoch=steps)
    info = {
        "model": config.model, "num_classes": num_classes, "image_size": config.image_size,
        "anchors": anchors_text(anchors), "head_options": config.head_options, "class_names": list(train_source.class_names),
        "category_ids": [int(c) for c in train_source.category_ids], "steps_per_epoch": steps,
        "replicas": strategy.num_replicas_in_sync, "strategy": config.strategy,
    }  # fmt: skip
    if chief:
        save_yaml(resolved, os.path.join(out, "config.yaml"))
        atomic_write_text(os.path.join(out, "run.json"), json.dumps(info, indent=1))

    model = detector
    if model is None:
        with strategy.scope():
            model = build_model(config.model, num_classes, config.image_size, anchors=anchors,
                                head_options=config.head_options, backbone_weights=config.backbone_weights,
                                weights=config.weights)
    if config.bn_momentum is not None:
        set_bn_momentum(model, config.bn_momentum)
    ema = None
    if config.ema:
        ema = ModelEMA(model, config.ema, config.ema_tau)
    total = config.epochs * steps
    phases = [(config.freeze_backbone_epochs, True)] if config.freeze_backbone_epochs else []
    phases.append((config.epochs, False))
    history, evaluator, start = {}, None, 0
    frozen = backbone_layers(model) if config.freeze_backbone_epochs else []
    for index, (end, freeze) in enumerate(phases):
        for layer in frozen:
            layer.trainable = not freeze
        backup_dir = os.path.join(out, phase_dirs[index])
        planners = [c for c in extra_callbacks if hasattr(c, "attach_schedule")]  # the time budget
        with strategy.scope():
            schedule = _compile(model, config, total, start_step=start * steps, ema=ema, adjustable=bool(planners))
        for planner in planners:
            planner.attach_schedule(schedule)
        extra = list(extra_callbacks)
        if mosaic_rate is not None:  # after the time budget, which plans the run's length first
            extra.append(_close_mosaic(config, mosaic_rate, planners, steps))
        callbacks, backup, evaluator = _callbacks(config, model, out, chief, val_ds, val_source, backup_dir,
                                                  extra, ema=ema)
        initial = backup.restore(model) if backup else 0
        initial = max(initial, start)
        if initial < end:
            fit = model.fit(train_ds, epochs=end, initial_epoch=initial, steps_per_epoch=steps, shuffle=False,
                            callbacks=callbacks, verbose=config.verbose)
            for k, v in fit.history.items():
                history.setdefault(k, []).extend(v)
            if model.stop_training:
                break
        start = end

    if ema is not None:
        ema.use_average()  # also when a finished run is restarted and fit had nothing left to do
    if chief:
        atomic_save_weights(model, os.path.join(out, "final.weights.h5"))
        if config.save_keras:  # the complete detectors: best.keras, final.keras (training/restore.py)
            save_detector_files(model, out, info["class_names"])
    evaluation = None
    if evaluator is not None and evaluator.results:
        evaluation = evaluator.results[max(evaluator.results)]
        if chief:
            write_pr_curves(evaluation, os.path.join(out, "eval"))
    run_log = next((c for c in callbacks if type(c).__name__ == "RunLog"), None)
    full_history = run_log.history() if run_log is not None else history
    if chief:  # results.csv and the validation pictures of the final model (evaluation/pictures.py)
        final = evaluator.final() if evaluator is not None else None  # the final weights' evaluation
        write_run_pictures(out, full_history, model, val_ds, val_source, train_source, config.eval_batches,
                           evaluation=final, detect=evaluator.detect if final is not None else None)
    seconds = dict(evaluator.seconds) if evaluator is not None else {}
    for source in (train_source, val_source):  # boxes cut by max_boxes (warned once when first seen)
        if source is not None and source.report.num_cut_boxes:
            logger.warning("%s", source.report.summary())
    return TrainResult(model, full_history, out, evaluation, resolved, info, seconds)


def _mosaic_rate(config):
    """The variable the pipeline reads as its mosaic probability when ``close_mosaic`` is on and
    the run draws mosaics; else None (the config's fixed probability)."""
    rate = config.mosaic if config.mosaic is not None else augment_config(config).mosaic
    if not config.close_mosaic or not rate > 0:
        return None
    return tf.Variable(float(rate), trainable=False, dtype=tf.float32, name="mosaic_rate")


def _close_mosaic(config, rate, planners, steps):
    total = config.epochs
    if planners:  # a time budget: its planned epochs once it has planned
        budget = planners[0]

        def total():
            return math.ceil(budget.planned_steps / steps) if budget.planned_steps else None

    return CloseMosaic(rate, config.close_mosaic, total, on=float(rate.numpy()))


def _burn_in(config, steps):
    """The warm-up: the config's, else Darknet's 1000 steps or a quarter of an epoch, whichever
    is shorter (a whole epoch of warm-up left the 2-minute quick demo with its learning rate
    decaying as soon as warm-up ended: AP50 0.012, untrained 0.011)."""
    return config.burn_in if config.burn_in is not None else min(1000, max(1, steps // 4))


def _run_json(out_dir):
    """(path of run.json, its contents or None)."""
    path = os.path.join(out_dir, "run.json")
    if not os.path.isfile(path):
        return path, None
    with open(path, encoding="utf-8") as f:
        return path, json.load(f)


def train_within(config, minutes=None, max_epochs=None, extra_callbacks=(), train_source=None,
                 val_source=None, detector=None, log=print):
    """Train ``config`` (a ``TrainConfig``) for ``minutes`` (default ``config.time``) of wall time
    in one ``fit``, its length planned by ``training.budget.TimeBudget``.

    ``max_epochs`` caps the plan (the demo's ``--epochs``). A restarted run (a backup and a
    plan in ``run.json``) continues to its recorded plan. Returns the ``TrainResult`` of the
    run, with ``run_info["time_budget"]`` the ``BudgetPlan`` as a dict.
    """
    max_epochs = MAX_PLANNED_EPOCHS if max_epochs is None else max_epochs
    minutes = float(minutes if minutes is not None else config.time)
    if not minutes > 0:
        raise ValueError(f"config `time` must be a positive number of minutes; received {minutes!r}")
    start = time.perf_counter()
    deadline = start + minutes * 60.0
    if train_source is None or (config.val and val_source is None):
        resolved_train, resolved_val = resolve_sources(config)
        train_source = train_source or resolved_train
        val_source = val_source or resolved_val
    steps = config.steps_per_epoch or max(1, len(train_source) // config.batch_size)
    out = output_dir(config.out)
    recorded = (_run_json(out)[1] or {}).get("time_budget") if config.backup and _resume_epoch(out, ["backup", "backup-phase1", "backup-phase2"]) else None
    planned = recorded.get("planned_steps") if recorded else None
    if planned:
        log(f"resuming a time-budget run: {planned} steps planned")
    val_batches = math.ceil(len(val_source) / min(config.batch_size, 16)) if val_source is not None else 0
    if config.eval_batches:
        val_batches = min(val_batches, config.eval_batches)

    def record(planned_steps):  # a killed run resumes to the same plan
        path, info = _run_json(out)
        if info is not None:
            info["time_budget"] = {"minutes": minutes, "steps_per_epoch": steps, "planned_steps": int(planned_steps)}
            atomic_write_text(path, json.dumps(info, indent=1))

    budget = TimeBudget(deadline, steps, config.eval_every, max_steps=max_epochs * steps, planned_steps=planned,
                        eval_estimate=10.0 + 0.5 * val_batches, log=log, record=record)
    run = dataclasses.replace(config, time=None, epochs=int(max_epochs), burn_in=_burn_in(config, steps))
    # run.py builds an adjustable schedule and hands it to the callback (TimeBudget.attach_schedule)
    result = train(run, extra_callbacks=[budget, *extra_callbacks], train_source=train_source,
                   val_source=val_source, detector=detector)
    plan = BudgetPlan(minutes, steps, seconds_per_step=round(budget.seconds_per_step() or 0.0, 4),
                      eval_seconds=round(budget.eval_seconds, 2) if budget.eval_seconds is not None else None,
                      eval_every=budget.eval_every, planned_steps=budget.planned_steps, replans=max(0, len(budget.plans) - 1),
                      steps_run=budget.step, epochs_run=len(result.history.get("loss", [])),
                      stopped_at=budget.stopped_at, mid_epoch=budget.mid_epoch,
                      train_seconds=round(time.perf_counter() - start, 1))
    plan.planned_epochs = round(plan.planned_steps / steps, 2) if plan.planned_steps else None
    log(plan.describe())
    path, info = _run_json(out)
    if info is not None:
        info["time_budget"] = dataclasses.asdict(plan)
        atomic_write_text(path, json.dumps(info, indent=1))
    if result.run_info is not None:
        result.run_info["time_budget"] = dataclasses.asdict(plan)
    return result


__all__ = ["TrainResult", "augment_config", "make_datasets", "resolve_anchors", "resolve_sources", "train",
           "train_within"]

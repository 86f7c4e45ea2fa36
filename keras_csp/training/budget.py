"""Training to a time budget: epochs planned from this machine's measured speed, the
learning-rate schedule spanning the planned run, and the deadline respected.

``train_within`` runs epoch 1 at a constant learning rate (after burn-in) with a
``StepTimer``, plans how many epochs fit from its median step time, its evaluation time and
the set-up time, then resumes the same run from its backup for the planned epochs with the
configured schedule (so the decay lands inside the budget). A ``Deadline`` callback ends
training early when the machine turns out slower than planned: after the epoch that leaves
no room for another, or mid-epoch once the time (less the final evaluation) is up; the
epoch it stops at is evaluated. ``keras-csp train --time``, ``train(time=...)`` and
``keras-csp demo`` use this one mechanism.
"""

import dataclasses
import json
import math
import os
import time

import numpy as np

from keras_csp.backend import keras

# A whole epoch takes a little longer than steps x the median step time of epoch 1 (data
# pipeline, callbacks, slow steps); a busier machine is caught by the Deadline callback.
EPOCH_OVERHEAD = 1.05
# The most epochs a time budget plans (``--time`` replaces ``--epochs``, as Ultralytics' time=).
MAX_PLANNED_EPOCHS = 10000


class StepTimer(keras.callbacks.Callback):
    """Records when each training batch ends (to time this machine)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())

    def seconds_per_step(self):
        """Median seconds per step after the first two (tracing, the first cache fill); None
        when too few steps ran."""
        steady = np.diff(self.times[2:])
        return float(np.median(steady)) if len(steady) else None

    def first_step_end(self):
        return self.times[0] if self.times else None


class Deadline(keras.callbacks.Callback):
    """Ends training before ``deadline`` (a ``time.perf_counter()`` value).

    At an epoch's end it stops when another epoch (its evaluation included, every
    ``eval_every`` epochs) and the final evaluation (``reserve`` seconds) would not fit; within
    an epoch it stops once less than ``reserve`` seconds are left. It runs before the COCO
    evaluation callback (``before_evaluation``), which then evaluates the epoch it stopped at.
    ``stopped_at`` is that epoch (1-based), ``mid_epoch`` whether it was cut short.
    """

    before_evaluation = True

    def __init__(self, deadline, reserve=0.0, eval_every=1):
        super().__init__()
        self.deadline = float(deadline)
        self.reserve = float(reserve)
        self.eval_every = max(1, int(eval_every))
        self.started = None
        self.epoch = 0
        self.stopped_at = None
        self.mid_epoch = False

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.stopped_at is None and time.perf_counter() + self.reserve > self.deadline:
            self.stopped_at, self.mid_epoch = self.epoch + 1, True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped_at is not None:
            return
        now = time.perf_counter()
        evaluating_now = self.reserve if (epoch + 1) % self.eval_every == 0 else 0.0
        if now + evaluating_now + (now - self.started) + self.reserve > self.deadline:
            self.stopped_at = epoch + 1
            self.model.stop_training = True


def plan_epochs(budget, used, steps, step_seconds, eval_seconds, eval_every, max_epochs, setup_seconds=0.0):
    """Epochs (the first, already run, included) that fit ``budget`` seconds after ``used``:
    each epoch costs ``steps x step_seconds`` (plus ``EPOCH_OVERHEAD``) and its share of an
    evaluation every ``eval_every`` epochs; the last evaluation and a second set-up (the run
    resumes once) are reserved."""
    per_epoch = steps * step_seconds * EPOCH_OVERHEAD + eval_seconds / max(1, eval_every)
    remaining = budget - used - eval_seconds - setup_seconds
    if per_epoch <= 0:
        return int(max_epochs)
    return int(max(1, min(max_epochs, 1 + math.floor(remaining / per_epoch))))


@dataclasses.dataclass
class BudgetPlan:
    """What the time budget measured and decided (written to ``run.json`` as ``time_budget``)."""

    minutes: float
    steps_per_epoch: int
    seconds_per_step: float
    eval_seconds: float
    setup_seconds: float
    planned_epochs: int
    epochs_run: int = 0
    stopped_at: int = None
    mid_epoch: bool = False
    train_seconds: float = None

    def describe(self):
        return (f"time budget {self.minutes:g} min: {self.seconds_per_step:.3f} s per step x {self.steps_per_epoch} "
                f"steps per epoch, {self.eval_seconds:.1f} s per evaluation, {self.setup_seconds:.1f} s set-up "
                f"-> {self.planned_epochs} epochs")


def _burn_in(config, steps):
    """The warm-up both phases share: the config's, else Darknet's 1000 steps or a quarter of
    an epoch, whichever is shorter (a whole epoch of warm-up left the 2-minute quick demo with
    its learning rate decaying as soon as warm-up ended: AP50 0.012, untrained 0.011)."""
    return config.burn_in if config.burn_in is not None else min(1000, max(1, steps // 4))


def _update_run_json(out_dir, plan):
    from keras_csp.training.checkpoints import atomic_write_text

    path = os.path.join(out_dir, "run.json")
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    info["time_budget"] = dataclasses.asdict(plan)
    atomic_write_text(path, json.dumps(info, indent=1))


def _recorded_plan(out_dir):
    path = os.path.join(out_dir, "run.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        recorded = json.load(f).get("time_budget")
    return BudgetPlan(**recorded) if recorded else None


def train_within(config, minutes=None, max_epochs=MAX_PLANNED_EPOCHS, extra_callbacks=(), train_source=None,
                 val_source=None, detector=None, log=print):
    """Train ``config`` (a ``TrainConfig``) for ``minutes`` (default ``config.time``) of wall time.

    ``max_epochs`` caps the plan (the demo's ``--epochs``). A restarted run (its backup past
    epoch 1 and a plan in ``run.json``) continues to the recorded plan. Returns the
    ``TrainResult`` of the run, with ``run_info["time_budget"]`` the ``BudgetPlan`` as a dict.
    """
    from keras_csp.training.run import resolve_sources, train
    from keras_csp.training.strategy import output_dir

    minutes = float(minutes if minutes is not None else config.time)
    if not minutes > 0:
        raise ValueError(f"config `time` must be a positive number of minutes; received {minutes!r}")
    budget = minutes * 60.0
    start = time.perf_counter()
    deadline = start + budget
    if train_source is None or (config.val and val_source is None):
        resolved_train, resolved_val = resolve_sources(config)
        train_source = train_source or resolved_train
        val_source = val_source or resolved_val
    steps = config.steps_per_epoch or max(1, len(train_source) // config.batch_size)
    base = dataclasses.replace(config, time=None, burn_in=_burn_in(config, steps), backup=True)
    extra = list(extra_callbacks)
    out = output_dir(config.out)

    plan = _recorded_plan(out)
    first = None
    if plan is None:
        timer = StepTimer()
        guard = Deadline(deadline)
        first_config = dataclasses.replace(base, epochs=1, schedule="constant", eval_every=1, save_keras=False,
                                           freeze_backbone_epochs=min(config.freeze_backbone_epochs, 1))
        first = train(first_config, extra_callbacks=[timer, guard, *extra], train_source=train_source,
                      val_source=val_source, detector=detector)
        used = time.perf_counter() - start
        step_seconds = timer.seconds_per_step() or used / steps
        eval_seconds = max(first.eval_seconds.values()) if first.eval_seconds else 0.0
        first_end = timer.first_step_end()
        setup = max(0.0, (first_end - start) - step_seconds) if first_end is not None else 0.0
        planned = 1 if guard.stopped_at else plan_epochs(budget, used, steps, step_seconds, eval_seconds,
                                                         config.eval_every, max_epochs, setup)
        plan = BudgetPlan(minutes, steps, round(step_seconds, 4), round(eval_seconds, 2), round(setup, 2), planned,
                          epochs_run=1, stopped_at=guard.stopped_at, mid_epoch=guard.mid_epoch)
        log(plan.describe())
        _update_run_json(out, plan)
        detector = first.model
    else:  # a restarted run: the rest of the recorded plan, in the time this call was given
        log(f"resuming a time-budget run: {plan.planned_epochs} epochs planned")
    result = first
    if plan.planned_epochs > 1 and not plan.stopped_at or first is None:
        guard = Deadline(deadline, reserve=plan.eval_seconds, eval_every=config.eval_every)
        later = dataclasses.replace(base, epochs=max(1, plan.planned_epochs))
        result = train(later, extra_callbacks=[guard, *extra], train_source=train_source, val_source=val_source,
                       detector=detector)
        if guard.stopped_at is not None:
            plan.stopped_at, plan.mid_epoch = guard.stopped_at, guard.mid_epoch
            where = "during" if guard.mid_epoch else "after"
            log(f"time budget: stopped {where} epoch {guard.stopped_at} of {plan.planned_epochs}")
    if result is first and config.save_keras:  # no second phase: epoch 1 is the run
        from keras_csp.training.restore import save_detector_files

        save_detector_files(first.model, out, first.run_info["class_names"])
    plan.epochs_run = len(result.history.get("loss", [])) or plan.epochs_run
    plan.train_seconds = round(time.perf_counter() - start, 1)
    _update_run_json(out, plan)
    if result.run_info is not None:
        result.run_info["time_budget"] = dataclasses.asdict(plan)
    return result


__all__ = ["BudgetPlan", "Deadline", "EPOCH_OVERHEAD", "StepTimer", "plan_epochs", "train_within"]

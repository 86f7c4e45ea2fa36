"""Training to a time budget in one run: the length planned from this machine's measured
speed, the learning-rate schedule stretched to fit it, and the deadline respected.

``training.run.train_within`` runs one ``fit``. Its ``TimeBudget`` callback times the first steady steps,
sets the schedule's total steps to what fits before the deadline (the work at epoch ends,
evaluations and checkpoints, measured as it happens and reserved), re-plans at each epoch end
until the decay is near, and stops at the planned step; the epoch it stops in is evaluated.
A ``Deadline`` guard stops earlier when the machine turns slower than planned.
``keras-csp train --time``, ``train(time=...)`` and ``keras-csp demo`` use this one mechanism.
(It replaced a first version that timed a whole epoch and then restarted the run: a second
set-up and cache fill, and plans in whole epochs; the full demo used 10.3 of its 14 minutes.)
"""

import dataclasses
import math
import time

import numpy as np

from keras_csp.backend import keras

# The most epochs a time budget plans (``--time`` replaces ``--epochs``, as Ultralytics' time=).
MAX_PLANNED_EPOCHS = 10000
# Step time is planned with this margin (slow steps, the pipeline, callbacks).
STEP_MARGIN = 1.03
# Seconds kept after ``fit`` for what a run writes at its end (final weights, best.keras /
# final.keras, the PR curves and the validation pictures, drawn from the final evaluation):
# measured 12 s on the 2-core CPU from the last backup to the last picture in the full demo
# (its detector at 128, 200 val images; `keras-csp demo --out /tmp/demo8`). It was ~60 s past
# the deadline, unreserved, when the pictures predicted and scored the set again (a --time 6
# run at 320 took 7.0 minutes).
FINISH_SECONDS = 15.0
# With ``eval_every`` left unset, a time budget evaluates as often as keeps the evaluations under
# this share of the training time. Evaluating every epoch took 155 of the 847 s of a 15-minute
# run at 320 (coins, 12 steps of 0.63 s per epoch and ~2 s per COCO evaluation of 100 images,
# AMD EPYC 2 cores): 18 % of the budget not spent learning; under 10 % the same run got 1162
# steps instead of 936 and mAP@0.5:0.95 0.804 instead of 0.784 (recipe.py).
EVAL_SHARE = 0.1


def plan_steps(step, seconds_left, step_seconds, steps_per_epoch, eval_every, eval_seconds, epoch_end_seconds,
               max_steps):
    """The run's total steps when ``step`` steps are done and ``seconds_left`` remain: each
    step costs ``step_seconds``; every epoch end crossed costs ``epoch_end_seconds``, or
    ``eval_seconds`` every ``eval_every`` epochs; the final evaluation is reserved."""
    per_eval = steps_per_epoch * max(1, int(eval_every))

    def seconds(end):  # from `step` to `end`: steps, the epoch ends crossed, the final evaluation
        evals = (end - 1) // per_eval - step // per_eval
        ends = (end - 1) // steps_per_epoch - step // steps_per_epoch
        return (end - step) * step_seconds + evals * eval_seconds + (ends - evals) * epoch_end_seconds + eval_seconds

    low, high = step + 1, step + 1 + max(0, math.floor((seconds_left - eval_seconds) / step_seconds))
    while low < high:  # the last end that fits (seconds() only grows)
        middle = (low + high + 1) // 2
        low, high = (middle, high) if seconds(middle) <= seconds_left else (low, middle - 1)
    return int(min(max_steps, low))


def eval_interval(eval_seconds, epoch_seconds, share=EVAL_SHARE):
    """The fewest epochs between evaluations that keep ``eval_seconds`` under ``share`` of
    the time: ``ceil(eval_seconds / (share * epoch_seconds))``, at least 1."""
    if not epoch_seconds or epoch_seconds <= 0:
        return 1
    return max(1, math.ceil(eval_seconds / (share * epoch_seconds) - 1e-9))


class TimeBudget(keras.callbacks.Callback):
    """Plans the run's length from the measured speed and holds the schedule to it.

    After ``measure_steps`` steady steps it sets the schedule's total steps (``plan_steps``)
    and re-plans at every epoch end while under ``replan_until`` of the plan, with the epoch-end
    work measured so far (an evaluation before the first one is measured: ``eval_estimate``
    seconds; the epoch end after the first plan is evaluated to time one, via the evaluator's
    ``request``, when no evaluation was timed yet). It stops training at the planned step, or
    once less than the final evaluation's time is left; ``finish_seconds`` before ``deadline``
    are kept for the run's last files. A resumed run keeps its recorded ``planned_steps``. Runs
    before the COCO evaluation callback (``before_evaluation``), which then evaluates the epoch
    it stopped in.

    ``eval_every=None`` (auto): with each plan the evaluator attached by ``attach_evaluator``
    is set to evaluate every ``eval_interval`` epochs (evaluations under ``EVAL_SHARE`` of the
    time); none before the steps are timed. The last epoch is evaluated either way.
    """

    before_evaluation = True

    def __init__(self, deadline, steps_per_epoch, eval_every=1, max_steps=None, eval_estimate=10.0,
                 planned_steps=None, measure_steps=20, replan_until=0.7, log=print, record=None,
                 finish_seconds=FINISH_SECONDS):
        super().__init__()
        self.deadline = float(deadline) - float(finish_seconds)  # when fit must be done: the end's files after
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.auto_eval = eval_every is None
        self.eval_every = 1 if eval_every is None else max(1, int(eval_every))
        self.evaluator = None  # the COCO evaluation callback whose interval auto sets
        self.max_steps = int(max_steps or MAX_PLANNED_EPOCHS * self.steps_per_epoch)
        self.eval_estimate = float(eval_estimate)
        self.planned_steps = int(planned_steps) if planned_steps else None
        self.fixed = self.planned_steps is not None
        self.measure_steps = int(measure_steps)
        self.replan_until = float(replan_until)
        self.log = log
        self.record = record  # called with the planned steps whenever they change (run.json)
        self.schedule = None
        self.step = 0
        self.durations = []  # seconds per step, epoch ends excluded
        self.eval_seconds = None  # measured epoch-end time with an evaluation
        self.epoch_end_seconds = 0.0  # ... and without one
        self.plans = []  # (step, planned total) each time the plan was made
        self.epoch = 0
        self.stopped_at = None
        self.mid_epoch = False
        self._last = None  # when the last batch ended
        self._epoch_ended = None  # that the previous epoch ended
        self._batches = 0  # batches since this fit began
        self._began, self._first_step = None, 0  # when, and at which step, this fit began

    def attach_schedule(self, schedule):
        """The adjustable ``DarknetSchedule`` the plan is written into (run.py calls this)."""
        self.schedule = schedule
        if self.planned_steps:
            schedule.set_total_steps(self.planned_steps)
            if self.record:
                self.record(self.planned_steps)

    def attach_evaluator(self, evaluator):
        """The COCO evaluation callback (run.py hands it over); with auto, its interval is set
        here: no evaluation before the steps are timed (the last epoch's is always made)."""
        self.evaluator = evaluator
        if self.auto_eval and evaluator is not None:
            self.eval_every = evaluator.every = MAX_PLANNED_EPOCHS

    def _set_eval_interval(self, step_seconds):
        """auto: the evaluator's interval from the step and evaluation times measured so far."""
        if not self.auto_eval or self.evaluator is None:
            return
        every = eval_interval(self._reserve(), self.steps_per_epoch * step_seconds + self.epoch_end_seconds)
        if every != self.evaluator.every and self.log:
            self.log(f"time budget: evaluating every {every} epochs ({self._reserve():.1f} s per evaluation, "
                     f"under {EVAL_SHARE:.0%} of the time)")
        self.eval_every = self.evaluator.every = every

    def seconds_per_step(self):
        """The median of the last 200 steady steps (before any: the mean since ``fit`` began)."""
        recent = self.durations[-200:]
        if recent:
            return float(np.median(recent))
        done = self.step - self._first_step
        return (self._last - self._began) / done if done > 0 and self._began is not None else None

    def _reserve(self):
        return self.eval_seconds if self.eval_seconds is not None else self.eval_estimate

    def _plan(self, now):
        step_seconds = self.seconds_per_step() * STEP_MARGIN
        self._set_eval_interval(step_seconds)
        planned = plan_steps(self.step, self.deadline - now, step_seconds, self.steps_per_epoch, self.eval_every,
                             self._reserve(), self.epoch_end_seconds, self.max_steps)
        planned = max(planned, self.step + 1)
        if planned != self.planned_steps:
            first = self.planned_steps is None
            self.planned_steps = planned
            if self.schedule is not None:
                self.schedule.set_total_steps(planned)
            self.plans.append((self.step, planned))
            if self.record:
                self.record(planned)
            if first and self.log:
                self.log(f"time budget: {step_seconds / STEP_MARGIN:.3f} s per step -> {planned} steps "
                         f"({planned / self.steps_per_epoch:.1f} epochs of {self.steps_per_epoch})")

    def on_train_begin(self, logs=None):
        self.step = self._first_step = int(self.model.optimizer.iterations.numpy())
        self._last = self._began = time.perf_counter()
        self._batches = 0

    def on_epoch_begin(self, epoch, logs=None):
        now = time.perf_counter()
        self.epoch = epoch
        if self._epoch_ended is not None:  # the previous epoch's end: evaluation, checkpoints
            spent = now - self._epoch_ended
            evaluated = self.evaluator.latest_evaluated if self.evaluator is not None else epoch % self.eval_every == 0
            if evaluated:
                self.eval_seconds = max(spent, self.eval_seconds or 0.0)
            else:
                self.epoch_end_seconds = max(spent, self.epoch_end_seconds)
            unplanned = self.planned_steps is None and self.durations  # an epoch shorter than measure_steps
            if not self.fixed and (unplanned or self.planned_steps and self.step < self.replan_until * self.planned_steps):
                self._plan(now)
            elif self.fixed and self.durations:  # a resumed run keeps its plan; the interval is re-set
                self._set_eval_interval(self.seconds_per_step() * STEP_MARGIN)
        self._last = now

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        step = int(self.model.optimizer.iterations.numpy())
        self._batches += 1
        if step > self.step and self._batches > 2:  # not the first two (tracing, the first cache fill)
            self.durations.append((now - self._last) / (step - self.step))
        self.step, self._last = step, now
        if not self.fixed and self.planned_steps is None and len(self.durations) >= self.measure_steps:
            self._plan(now)
        if self.stopped_at is None:
            reached = self.planned_steps is not None and step >= self.planned_steps
            if reached or now + self._reserve() > self.deadline:
                if self.planned_steps is None and not self.fixed:  # out of time before a plan: say so
                    self._plan(now)
                self.stopped_at = self.epoch + 1
                self.mid_epoch = step % self.steps_per_epoch != 0
                self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self._epoch_ended = time.perf_counter()
        if (self.evaluator is not None and self.eval_seconds is None and self.planned_steps is not None
                and not self.model.stop_training):
            # No evaluation timed yet: time one now rather than plan the final one on the guess
            # (eval_estimate), which the plan keeps in reserve to the end. The guess, 10 s plus
            # 0.5 s a batch, was 13.5 s where the quick demo's evaluations took ~2 s.
            self.evaluator.request(epoch + 1)


@dataclasses.dataclass
class BudgetPlan:
    """What the time budget measured and decided (written to ``run.json`` as ``time_budget``)."""

    minutes: float
    steps_per_epoch: int
    seconds_per_step: float = None
    eval_seconds: float = None
    eval_every: int = None
    planned_steps: int = None
    planned_epochs: float = None
    replans: int = 0
    steps_run: int = 0
    epochs_run: int = 0
    stopped_at: int = None
    mid_epoch: bool = False
    train_seconds: float = None

    def describe(self):
        return (f"time budget {self.minutes:g} min: {self.steps_run} of {self.planned_steps} planned steps "
                f"({self.seconds_per_step} s per step, {self.eval_seconds} s per evaluation every {self.eval_every} "
                f"epochs) in "
                f"{self.train_seconds} s")


__all__ = ["BudgetPlan", "EVAL_SHARE", "FINISH_SECONDS", "MAX_PLANNED_EPOCHS", "TimeBudget", "eval_interval",
           "plan_steps"]

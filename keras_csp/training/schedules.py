"""Learning-rate schedules of the paper's Darknet cfgs, with Darknet's burn-in.

Darknet (``get_current_rate`` in network.c) first ramps the rate up as
``lr * (step / burn_in) ** burn_in_power`` (power 4 by default), then follows the policy:

- ``"steps"``: multiply by ``scales`` at ``steps`` (the COCO detector cfgs: x0.1 at 80% and
  90% of ``max_batches``);
- ``"poly"``: ``lr * (1 - step / total_steps) ** power`` (the ImageNet classifier cfgs,
  ``power=4``);
- ``"cosine"`` (SGDR-style, no restarts) and ``"constant"``, for convenience.

Steps are optimizer updates (Darknet's "iterations"). ``steps`` may be fractions of
``total_steps`` (``(0.8, 0.9)``) or absolute step numbers.
"""

import math

from keras_csp.backend import keras, register, tf

POLICIES = ("steps", "poly", "cosine", "constant")


@register
class DarknetSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Darknet's learning-rate policy with burn-in, as a Keras schedule.

    Args:
      learning_rate: the cfg's ``learning_rate`` (peak rate after burn-in).
      total_steps: the cfg's ``max_batches``: optimizer steps of the whole run.
      policy: ``"steps"``, ``"poly"``, ``"cosine"`` or ``"constant"``.
      burn_in: steps of the warm-up ramp (0: none).
      burn_in_power: exponent of the ramp (Darknet's ``power`` default, 4).
      steps: where ``"steps"`` multiplies by ``scales``: fractions of ``total_steps``
        (all < 1) or absolute step numbers.
      scales: one factor per entry of ``steps`` (or one for all).
      power: exponent of ``"poly"``.
      min_ratio: floor of ``"cosine"`` / ``"poly"`` as a fraction of ``learning_rate``.
      adjustable: hold ``total_steps`` in a variable so ``set_total_steps`` can re-plan the
        run's length after the training step is traced (the time budget, training/budget.py).
    """

    def __init__(self, learning_rate, total_steps, policy="steps", burn_in=1000, burn_in_power=4.0,
                 steps=(0.8, 0.9), scales=0.1, power=4.0, min_ratio=0.0, adjustable=False):
        super().__init__()
        if policy not in POLICIES:
            raise ValueError(f"`policy` must be one of {POLICIES}; received {policy!r}")
        if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
            raise ValueError(f"`learning_rate` must be a positive number; received {learning_rate!r}")
        if int(total_steps) < 1:
            raise ValueError(f"`total_steps` must be >= 1; received {total_steps!r}")
        if int(burn_in) < 0:
            raise ValueError(f"`burn_in` must be >= 0; received {burn_in!r}")
        steps = [float(s) for s in (steps or ())]
        if any(s <= 0 for s in steps) or steps != sorted(steps):
            raise ValueError(f"`steps` must be increasing positive numbers; received {steps!r}")
        scales = [float(scales)] * len(steps) if isinstance(scales, (int, float)) else [float(s) for s in scales]
        if len(scales) != len(steps):
            raise ValueError(f"`scales` needs one factor per step ({len(steps)}); received {scales!r}")
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.policy = policy
        self.burn_in = int(burn_in)
        self.burn_in_power = float(burn_in_power)
        self.steps = steps
        self.scales = scales
        self.power = float(power)
        self.min_ratio = float(min_ratio)
        self._planned = tf.Variable(float(self.total_steps), trainable=False, name="planned_steps") if adjustable else None

    def set_total_steps(self, total_steps):
        """Re-plan the run's length; the traced schedule reads it (needs ``adjustable=True``)."""
        if self._planned is None:
            raise ValueError("set_total_steps needs a schedule built with adjustable=True")
        if int(total_steps) < 1:
            raise ValueError(f"`total_steps` must be >= 1; received {total_steps!r}")
        self.total_steps = int(total_steps)
        self._planned.assign(float(self.total_steps))

    def boundaries(self):
        """The ``"steps"`` boundaries as absolute step numbers."""
        fractions = all(s < 1 for s in self.steps)
        return [int(round(s * self.total_steps)) if fractions else int(s) for s in self.steps]

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        base = tf.constant(self.learning_rate, tf.float32)
        total = tf.identity(self._planned) if self._planned is not None else float(self.total_steps)
        progress = tf.clip_by_value(step / total, 0.0, 1.0)
        floor = self.min_ratio * self.learning_rate
        if self.policy == "steps":
            rate = base
            fractions = all(s < 1 for s in self.steps)
            for at, scale in zip(self.steps, self.scales):  # boundaries() as tensors of the (planned) total
                rate = tf.where(step >= (tf.round(at * total) if fractions else at), rate * scale, rate)
        elif self.policy == "poly":
            rate = floor + (base - floor) * tf.pow(1.0 - progress, self.power)
        elif self.policy == "cosine":
            rate = floor + (base - floor) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        else:
            rate = base
        if self.burn_in > 0:
            ramp = base * tf.pow(tf.minimum(step / float(self.burn_in), 1.0), self.burn_in_power)
            rate = tf.where(step < float(self.burn_in), ramp, rate)
        return rate

    def get_config(self):
        return {
            "learning_rate": self.learning_rate, "total_steps": self.total_steps, "policy": self.policy,
            "burn_in": self.burn_in, "burn_in_power": self.burn_in_power, "steps": list(self.steps),
            "scales": list(self.scales), "power": self.power, "min_ratio": self.min_ratio,
        }  # fmt: skip


def coco_schedule(learning_rate, total_steps, burn_in=1000):
    """The detector cfgs' schedule: burn-in, then x0.1 at 80% and at 90% of the steps."""
    return DarknetSchedule(learning_rate, total_steps, "steps", burn_in, steps=(0.8, 0.9), scales=0.1)


def imagenet_schedule(learning_rate, total_steps, burn_in=1000, power=4.0):
    """The classifier cfgs' schedule: burn-in, then polynomial decay with power 4."""
    return DarknetSchedule(learning_rate, total_steps, "poly", burn_in, steps=(), power=power)


__all__ = ["DarknetSchedule", "POLICIES", "coco_schedule", "imagenet_schedule"]

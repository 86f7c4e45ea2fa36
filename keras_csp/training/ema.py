"""Model EMA: an exponential moving average of every floating-point weight of a model.

``ModelEMA`` keeps a shadow copy of all the model's float variables, trainable or not, so the
batch-norm moving mean and variance are averaged together with the weights they belong to
(an average of the kernels evaluated with the raw model's BN statistics is a model that was
never trained). After optimizer step ``n`` (1, 2, ...)::

    d_n = decay * (1 - exp(-n / tau));   shadow = d_n * shadow + (1 - d_n) * weight

The ramp makes the first updates follow the weights closely (``d_1`` is ~0), so the average
forgets the random initial weights within ``tau`` steps instead of dragging them along (the
constant-momentum EMA of Keras' optimizers starts from the step-0 copy and does not).

Where it lives:

- the update runs inside the compiled train step, right after the optimizer's update
  (``make_optimizer(ema=...)`` / ``ModelEMA.attach``), in graph mode, on every replica: the
  shadows are created in the model's ``tf.distribute`` strategy with the same (local,
  per-replica) update rule as the BN moving statistics, so each replica averages its own copy;
- ``BackupAndResume(ema=...)`` saves and restores the shadows and the update count with the
  model and optimizer, so a killed run resumes exactly;
- ``EMASwap`` puts the average into the model at each epoch end (after the backup, before the
  evaluation and the checkpoints: those see the average) and the training weights back at the
  next epoch start. After ``fit`` the model holds the average; the training weights wait in
  the shadows (a later ``fit`` with the same ``ModelEMA`` swaps them back first).
"""

import math

from keras_csp.backend import keras, tf


def _raw(variable):
    """The ``tf.Variable`` behind a Keras 3 variable (tf_keras variables already are one)."""
    value = getattr(variable, "value", None)
    if value is not None and not callable(value) and isinstance(value, tf.Variable):
        return value
    return variable


def _is_float(variable):
    return tf.as_dtype(variable.dtype).is_floating


def _strategy_of(model):
    return getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()


def ema_decay(updates, decay, tau):
    """``decay * (1 - exp(-updates / tau))`` as a Python float (``tau`` 0: constant ``decay``)."""
    return float(decay) * (1.0 - math.exp(-float(updates) / tau)) if tau else float(decay)


class _Untracked:
    """Plain holder: what tf.Module must not track (the model and its variables)."""

    def __init__(self, model):
        self.model = model
        self.variables = ()


class ModelEMA(tf.Module):
    """Exponential moving average of all floating-point variables of ``model``.

    Args:
      model: a built Keras model (its ``weights``: kernels, biases, BN gamma / beta and the
        BN moving mean / variance; integer variables such as seed states are left out).
      decay: the asymptotic decay ``d`` (YOLOv5: 0.9999 for 100k+ step runs; 0.998, an average
        over ~500 steps, measured best for runs of a few hundred to a few thousand steps in
        ``benchmarks/ema.py``).
      tau: steps of the warm-up ramp ``1 - exp(-n / tau)`` (YOLOv5: 2000; here 100); 0: no ramp.

    Create it after the model is built (inside the strategy's scope or not: the shadows are
    always made in the model's strategy). It is a ``tf.Module``: put it in a
    ``tf.train.Checkpoint`` to save it (``BackupAndResume(ema=...)`` does).
    """

    def __init__(self, model, decay=0.998, tau=100.0, name="model_ema"):
        super().__init__(name=name)
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"`decay` must be in (0, 1); received {decay!r}")
        if float(tau) < 0:
            raise ValueError(f"`tau` must be >= 0 (0: no warm-up ramp); received {tau!r}")
        if not model.weights:
            raise ValueError("ModelEMA needs a built model: it has no weights yet (call it on an input or build it)")
        self.decay = float(decay)
        self.tau = float(tau)
        self._refs = _Untracked(model)  # the model is checkpointed on its own, not as a part of the EMA
        seen, variables = set(), []
        for variable in model.weights:
            raw = _raw(variable)
            if _is_float(raw) and id(raw) not in seen:
                seen.add(id(raw))
                variables.append(raw)
        self._refs.variables = tuple(variables)
        strategy = _strategy_of(model)
        with strategy.scope():
            self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates",
                                       aggregation=tf.VariableAggregation.NONE)
            self.shadows = [
                tf.Variable(v.read_value(), trainable=False, name=f"ema_{i}", aggregation=tf.VariableAggregation.NONE)
                for i, v in enumerate(self._variables)
            ]
        self.swapped = False  # True while the model holds the average and the shadows the training weights
        self._swap_fn = None
        self._copy_fn = None

    @property
    def model(self):
        return self._refs.model

    @property
    def _variables(self):
        return self._refs.variables

    @property
    def num_variables(self):
        """How many variables are averaged (all float weights, BN statistics included)."""
        return len(self._variables)

    def __len__(self):
        return len(self._variables)

    # -- in the train step ------------------------------------------------------------------
    def current_decay(self, updates):
        """``d_n`` as a float32 tensor for update count ``updates`` (a tensor)."""
        n = tf.cast(updates, tf.float32)
        if not self.tau:
            return tf.fill([], tf.constant(self.decay, tf.float32))
        return self.decay * (1.0 - tf.exp(-n / self.tau))

    def update(self):
        """One EMA step: ``shadow = d * shadow + (1 - d) * weight`` for every variable.

        Call it in the train step after the optimizer's update (the optimizers of
        ``make_optimizer`` do, once attached); in a replica context each replica updates its
        own shadows from its own weights, with no communication.
        """
        count = self.updates.read_value() + 1
        self.updates.assign(count)
        d = self.current_decay(count)
        for variable, shadow in zip(self._variables, self.shadows):
            # d * s + (1 - d) * v  ==  s - (1 - d) * (s - v): one fused update per variable
            step = tf.cast(1.0 - d, shadow.dtype) * (shadow.read_value() - tf.cast(variable, shadow.dtype))
            shadow.assign_sub(step)
        return count

    def attach(self, optimizer):
        """Have ``optimizer`` (one of ``make_optimizer``'s, or a loss-scale wrapper of one) run
        ``update()`` after each of its steps."""
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        if not hasattr(inner, "attach_model_ema"):
            raise TypeError(
                f"{type(inner).__name__} cannot update a ModelEMA; use an optimizer of make_optimizer "
                "(DarknetSGD, DarknetAdam, CSPAdamW)"
            )
        inner.attach_model_ema(self)
        return optimizer

    # -- swapping ---------------------------------------------------------------------------
    def _per_replica(self, fn):
        strategy = _strategy_of(self.model)

        @tf.function(autograph=False)
        def run():
            strategy.run(fn)

        return run

    def _swap_local(self):
        for variable, shadow in zip(self._variables, self.shadows):
            kept = tf.identity(variable.read_value())
            variable.assign(shadow.read_value())
            shadow.assign(kept)

    def _copy_local(self):
        for variable, shadow in zip(self._variables, self.shadows):
            shadow.assign(variable.read_value())

    def swap(self):
        """Exchange the model's weights and the shadows (on every replica, in a tf.function)."""
        if self._swap_fn is None:
            self._swap_fn = self._per_replica(self._swap_local)
        self._swap_fn()
        self.swapped = not self.swapped

    def use_average(self):
        """Make the model hold the average (the training weights go to the shadows); no-op if
        it already does."""
        if not self.swapped:
            self.swap()

    def use_training_weights(self):
        """Put the training weights back into the model; no-op if they are there."""
        if self.swapped:
            self.swap()

    def reset(self):
        """Restart the average from the model's current weights (update count 0)."""
        self.use_training_weights()
        if self._copy_fn is None:
            self._copy_fn = self._per_replica(self._copy_local)
        self._copy_fn()
        self.updates.assign(0)

    def averages(self):
        """The averaged values, NumPy arrays in the order of ``model.weights``' float variables
        (the first replica's copy)."""
        holders = self._variables if self.swapped else self.shadows
        return [h.numpy() for h in holders]


class EMASwap(keras.callbacks.Callback):
    """Evaluate and checkpoint with the averaged weights: swap them in at each epoch end and the
    training weights back at the next epoch start.

    Put it after ``BackupAndResume`` (the backup must hold the training weights and the
    shadows as they are) and before the evaluation and checkpoint callbacks. After ``fit`` the
    model holds the average.
    """

    def __init__(self, ema):
        super().__init__()
        if not isinstance(ema, ModelEMA):
            raise TypeError(f"EMASwap needs a ModelEMA; received {type(ema).__name__}")
        self.ema = ema

    def on_train_begin(self, logs=None):
        self.ema.use_training_weights()

    def on_epoch_begin(self, epoch, logs=None):
        self.ema.use_training_weights()

    def on_epoch_end(self, epoch, logs=None):
        self.ema.use_average()

    def on_train_end(self, logs=None):
        self.ema.use_average()


def apply_ema(ema):
    """Put the average of ``ema`` (a ``ModelEMA``) into its model, keeping the training
    weights in the shadows (``ema.use_training_weights()`` undoes it)."""
    ema.use_average()
    return ema.model


__all__ = ["EMASwap", "ModelEMA", "apply_ema", "ema_decay"]

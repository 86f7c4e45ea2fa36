"""Optimizers: SGD with Darknet's weight decay, Adam, AdamW, optionally updating a model EMA.

Darknet's update (``update_convolutional_layer``) adds ``decay * w`` to the gradient of the
conv / connected weights only (not biases, not batch-norm scales), then applies momentum::

    v = momentum * v - lr * (grad + decay * w);   w = w + v

i.e. an L2 penalty coupled with the gradient (it goes through the momentum), which is not
Keras' ``weight_decay`` (decoupled, and on every variable). ``DarknetSGD`` does exactly that;
``"adam"`` uses the same coupled decay (Darknet's ``adam=1``), ``"adamw"`` the decoupled one
of Loshchilov & Hutter with biases and batch-norm parameters excluded.

Each of them can update a ``ModelEMA`` (:mod:`keras_csp.training.ema`) after every step,
inside the compiled train step (``make_optimizer(ema=...)``).
"""

from keras_csp.backend import LEGACY_KERAS, keras, register, tf
from keras_csp.training.ema import ModelEMA

OPTIMIZERS = ("sgd", "adam", "adamw")


def is_decayed(variable):
    """Whether Darknet decays ``variable``: conv / dense kernels (``kernel``,
    ``depthwise_kernel``), not biases, batch-norm parameters or anything else."""
    name = variable.name.split("/")[-1].split(":")[0]
    return name.endswith("kernel")


def _value(variable):
    value = getattr(variable, "value", variable)
    return value() if callable(value) else value


def _with_coupled_decay(base):
    """A subclass of optimizer ``base`` adding ``l2_decay * w`` to the kernels' gradients."""

    class CoupledDecay(base):
        def __init__(self, *args, l2_decay=5e-4, **kwargs):
            super().__init__(*args, **kwargs)
            if not isinstance(l2_decay, (int, float)) or l2_decay < 0:
                raise ValueError(f"`l2_decay` must be a number >= 0; received {l2_decay!r}")
            self.l2_decay = float(l2_decay)

        def update_step(self, gradient, variable, *args, **kwargs):
            if self.l2_decay and is_decayed(variable) and not isinstance(gradient, tf.IndexedSlices):
                gradient = gradient + self.l2_decay * tf.cast(_value(variable), gradient.dtype)
            return super().update_step(gradient, variable, *args, **kwargs)

        def get_config(self):
            config = super().get_config()
            config["l2_decay"] = self.l2_decay
            return config

    return CoupledDecay


class _EMAHolder:
    """Keeps the attached EMAs out of the optimizer's tracked state (they are checkpointed
    on their own, with ``BackupAndResume(ema=...)``)."""

    def __init__(self):
        self.emas = []


def _with_model_ema(base):
    """A subclass of optimizer ``base`` that runs ``ema.update()`` for each attached
    ``ModelEMA`` right after applying the gradients (in the train step's graph)."""

    class WithModelEMA(base):
        def attach_model_ema(self, ema):
            holder = self.__dict__.get("_csp_ema_holder")
            if holder is None:
                holder = _EMAHolder()
                object.__setattr__(self, "_csp_ema_holder", holder)
            if ema not in holder.emas:
                holder.emas.append(ema)

        @property
        def model_emas(self):
            holder = self.__dict__.get("_csp_ema_holder")
            return tuple(holder.emas) if holder else ()

        if LEGACY_KERAS:

            def apply_gradients(self, grads_and_vars, *args, **kwargs):
                result = super().apply_gradients(grads_and_vars, *args, **kwargs)
                for ema in self.model_emas:
                    ema.update()
                return result

        else:

            def apply(self, grads, trainable_variables=None):
                result = super().apply(grads, trainable_variables)
                for ema in self.model_emas:
                    ema.update()
                return result

    return WithModelEMA


@register
class DarknetSGD(_with_model_ema(_with_coupled_decay(keras.optimizers.SGD))):
    """SGD with momentum and Darknet's weight decay (coupled L2 on kernels only).

    Args:
      learning_rate: a float or a schedule (``DarknetSchedule``).
      momentum: Darknet's ``momentum`` (0.9 in the paper's cfgs).
      l2_decay: Darknet's ``decay`` (0.0005 in the paper's cfgs).
      **kwargs: other ``keras.optimizers.SGD`` arguments (``clipnorm``, ...).
    """

    def __init__(self, learning_rate=0.001, momentum=0.9, l2_decay=5e-4, **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, l2_decay=l2_decay, **kwargs)


@register
class DarknetAdam(_with_model_ema(_with_coupled_decay(keras.optimizers.Adam))):
    """Adam with Darknet's coupled L2 decay on kernels (Darknet's ``adam=1``)."""

    def __init__(self, learning_rate=0.001, l2_decay=5e-4, **kwargs):
        super().__init__(learning_rate=learning_rate, l2_decay=l2_decay, **kwargs)


@register
class CSPAdamW(_with_model_ema(keras.optimizers.AdamW)):
    """``keras.optimizers.AdamW`` that can update a ``ModelEMA`` after each step."""


def make_optimizer(name="sgd", learning_rate=0.001, momentum=0.9, weight_decay=5e-4, ema=None,
                   clipnorm=None):
    """An optimizer by name.

    Args:
      name: ``"sgd"`` (:class:`DarknetSGD`), ``"adam"`` (:class:`DarknetAdam`) or
        ``"adamw"`` (``keras.optimizers.AdamW``, decay decoupled, not on biases / BN).
      learning_rate: float or schedule.
      momentum: SGD momentum (Adam's beta_1 stays 0.9).
      weight_decay: Darknet's ``decay`` for sgd / adam; AdamW's decay rate for adamw.
      ema: a ``ModelEMA`` to update after every step (None: none).
      clipnorm: optional per-variable gradient norm clip.
    """
    if ema is not None and not isinstance(ema, ModelEMA):
        raise TypeError(
            f"`ema` must be a ModelEMA (keras_csp.training.ema.ModelEMA(model, decay, tau)) or None; received {ema!r}"
        )
    kwargs = {}
    if clipnorm:
        kwargs["clipnorm"] = float(clipnorm)
    if name == "sgd":
        optimizer = DarknetSGD(learning_rate, momentum=momentum, l2_decay=weight_decay, **kwargs)
    elif name == "adam":
        optimizer = DarknetAdam(learning_rate, l2_decay=weight_decay, **kwargs)
    elif name == "adamw":
        optimizer = CSPAdamW(learning_rate, weight_decay=weight_decay, **kwargs)
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    else:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
    if ema is not None:
        ema.attach(optimizer)
    return optimizer


__all__ = ["CSPAdamW", "DarknetAdam", "DarknetSGD", "OPTIMIZERS", "is_decayed", "make_optimizer"]

"""Quantization-aware training and pruning with tensorflow-model-optimization (tfmot).

tfmot 0.8 works on tf_keras (Keras 2) models only and rejects Keras 3 models, so run this
with ``TF_USE_LEGACY_KERAS=1`` set before TensorFlow or keras_csp is imported: the same
model code then builds tf_keras models. The flow::

    TF_USE_LEGACY_KERAS=1 python train_qat.py
      model = build(...); model.load_weights(float_weights)
      qat_model = quantize_aware(model)          # fake-quant wrappers, BN folded
      qat_model.compile(...); qat_model.fit(...)  # a few epochs at a low learning rate
      to_tflite(qat_model, "model_int8.tflite", quantize="qat")

keras_csp's custom layers get their own ``QuantizeConfig``: layers that compute new values
(Mish, DarknetShortcut, ScaleChannels, DarknetSoftmax, SpatialAttention, the decode layers)
quantize their output, grouped convs quantize kernel and output like ``Conv2D``, and layers
that only move, pick or max-pool values (ChannelSlice, ChannelRange, NearestUpsample2D,
Reorg, DarknetPool2D, SPP, ChannelMaxout, RepeatChannels, and the ``P{n}`` Identity layers)
keep their input's quantization.
"""

from keras_csp.backend import LEGACY_KERAS, keras

_NOT_LEGACY = (
    "tensorflow-model-optimization needs tf_keras (Keras 2) models; it rejects Keras 3 "
    "models. Set TF_USE_LEGACY_KERAS=1 before importing TensorFlow or keras_csp, build the "
    "model again with the same code, load its weights, then call {function}."
)


def _tfmot():
    if not LEGACY_KERAS:
        raise RuntimeError(_NOT_LEGACY.format(function="this function"))
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError:  # pragma: no cover - optional dependency
        raise ImportError("QAT and pruning need tensorflow-model-optimization: pip install "
                          "'keras_csp[tfmot]'.") from None
    return tfmot


def _check_model(model, function):
    _tfmot()
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{function} needs a tf_keras Model; received {type(model).__module__}."
            f"{type(model).__name__}. " + _NOT_LEGACY.format(function=function)
        )


def _configs():
    """QuantizeConfig classes for keras_csp's layers (defined lazily: tfmot is optional)."""
    tfmot = _tfmot()
    quantizers = tfmot.quantization.keras.quantizers
    base = tfmot.quantization.keras.QuantizeConfig

    class OutputQuantizeConfig(base):
        """Quantize only the layer's output (8-bit, asymmetric, moving-average range)."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False,
                                                      symmetric=False, narrow_range=False)]

        def get_config(self):
            return {}

    class PassThroughQuantizeConfig(OutputQuantizeConfig):
        """No fake quantization: the layer moves values, its input's range still holds."""

        def get_output_quantizers(self, layer):
            return []

    return OutputQuantizeConfig, PassThroughQuantizeConfig


def default_quantize_configs():
    """Layer class name -> QuantizeConfig instance for keras_csp's custom layers."""
    output, passthrough = _configs()
    registry = _tfmot().quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    configs = {name: output() for name in ("Mish", "DarknetShortcut", "ScaleChannels",
                                           "DarknetSoftmax", "SpatialAttention", "YoloDecode",
                                           "DarknetYolo")}
    configs.update({name: passthrough() for name in ("ChannelSlice", "ChannelRange",
                                                     "NearestUpsample2D", "Reorg",
                                                     "DarknetPool2D", "SPP", "ChannelMaxout",
                                                     "RepeatChannels", "Identity")})
    # A grouped conv is a Conv2D to tfmot: take Conv2D's own config (per-channel kernel).
    configs["GroupedConv2D"] = registry.get_quantize_config(keras.layers.Conv2D(1, 1))
    return configs


def quantize_aware(model, quantize_configs=None):
    """A quantization-aware copy of ``model`` (tf_keras), weights carried over.

    ``quantize_configs`` maps extra layer class names to ``QuantizeConfig`` instances; a
    custom layer with neither a config here nor tfmot support raises a ``ValueError``
    naming it. Train the result with ``fit`` (it keeps the model's outputs), then export
    with ``to_tflite(model, path, quantize="qat")``.
    """
    _check_model(model, "quantize_aware")
    tfmot = _tfmot()
    qkeras = tfmot.quantization.keras
    configs = {**default_quantize_configs(), **(quantize_configs or {})}
    registry = qkeras.default_8bit.Default8BitQuantizeRegistry()
    unsupported = []

    def annotate(layer):
        name = type(layer).__name__
        if name in configs:
            return qkeras.quantize_annotate_layer(layer, quantize_config=configs[name])
        if isinstance(layer, keras.Model):
            unsupported.append(f"{layer.name} (nested model: flatten it first)")
            return layer
        # BatchNormalization is folded into the conv before it by tfmot's layout transforms.
        if not registry.supports(layer) and not isinstance(layer,
                                                           keras.layers.BatchNormalization):
            unsupported.append(f"{layer.name} ({name})")
            return layer
        return qkeras.quantize_annotate_layer(layer)

    annotated = keras.models.clone_model(model, clone_function=annotate)
    if unsupported:
        raise ValueError(
            "quantize_aware: no QuantizeConfig for layer(s) " + ", ".join(unsupported) +
            "; pass quantize_configs={'LayerClass': QuantizeConfig(...)}."
        )
    scope = {type(c).__name__: type(c) for c in configs.values()}
    scope.update({layer.__class__.__name__: layer.__class__ for layer in model.layers})
    with qkeras.quantize_scope(scope):
        return qkeras.quantize_apply(annotated)


def prune(model, target_sparsity=0.5, begin_step=0, end_step=1000, frequency=100):
    """Magnitude pruning of every Conv2D / Dense kernel; returns ``(model, callbacks)``.

    Sparsity ramps polynomially from 0 at ``begin_step`` to ``target_sparsity`` at
    ``end_step`` (optimizer steps). Pass ``callbacks`` to ``fit``; afterwards call
    ``strip_pruning`` and read ``sparsity(model)``.
    """
    _check_model(model, "prune")
    if not 0.0 < float(target_sparsity) < 1.0:
        raise ValueError(f"target_sparsity must be in (0, 1); received {target_sparsity!r}.")
    if not 0 <= int(begin_step) < int(end_step):
        raise ValueError(f"Need 0 <= begin_step < end_step; received {begin_step}, {end_step}.")
    tfmot = _tfmot()
    sparsity_api = tfmot.sparsity.keras
    schedule = sparsity_api.PolynomialDecay(0.0, float(target_sparsity), int(begin_step),
                                            int(end_step), frequency=int(frequency))
    prunable = (keras.layers.Conv2D, keras.layers.Dense)

    def wrap(layer):
        if type(layer) in prunable:
            return sparsity_api.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    pruned = keras.models.clone_model(model, clone_function=wrap)
    return pruned, [sparsity_api.UpdatePruningStep()]


def strip_pruning(model):
    """The pruned model without its pruning wrappers (export this one)."""
    return _tfmot().sparsity.keras.strip_pruning(model)


def sparsity(model):
    """Fraction of zero weights: ``{"overall": f, "layers": {name: f}}`` over conv/dense kernels."""
    import numpy as np

    layers, zeros, total = {}, 0, 0
    stack = list(model.layers)
    while stack:
        layer = stack.pop(0)
        inner = getattr(layer, "layer", None)  # pruning wrapper
        if inner is not None:
            stack.append(inner)
            continue
        stack.extend(getattr(layer, "layers", []) or [])
        kernel = getattr(layer, "kernel", None)
        if kernel is None or not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            continue
        values = np.asarray(kernel.numpy() if hasattr(kernel, "numpy") else kernel)
        layers[layer.name] = float(np.mean(values == 0))
        zeros += int(np.sum(values == 0))
        total += values.size
    return {"overall": zeros / total if total else 0.0, "layers": layers}

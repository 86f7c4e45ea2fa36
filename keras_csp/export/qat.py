"""Quantization-aware training and pruning with tensorflow-model-optimization (tfmot).

tfmot 0.8 works on tf_keras (Keras 2) models only and rejects Keras 3 models, so run this
with ``TF_USE_LEGACY_KERAS=1`` set before TensorFlow or keras_csp is imported: the same
model code then builds tf_keras models. The flow::

    TF_USE_LEGACY_KERAS=1 python train_qat.py
      model = build(...); model.load_weights(float_weights)
      qat_model = quantize_aware(model, calibration_data=images)  # fake quant, ranges set
      qat_model.compile(...); qat_model.fit(...)  # a few epochs at a low learning rate
      to_tflite(qat_model, "model_int8.tflite", quantize="qat")

keras_csp's custom layers get their own ``QuantizeConfig``: layers that compute new values
(Mish, DarknetShortcut, ScaleChannels, DarknetSoftmax, SpatialAttention, the decode layers)
quantize their output, grouped convs quantize kernel and output like ``Conv2D``, and layers
that only move, pick or max-pool values (ChannelSlice, ChannelRange, NearestUpsample2D,
Reorg, DarknetPool2D, SPP, ChannelMaxout, RepeatChannels, and the ``P{n}`` Identity layers)
keep their input's quantization.

A max-pool whose output fans out to several layers (CSPDenseNet's stage pool feeds both the
dense blocks' slice and the cross-stage slice) gets its own output quantizer: MAX_POOL_2D,
slices and concatenations must keep one scale from input to output in the int8 file, and
without a quantizer of its own the converter cannot give the pool both branches' scales
("'tfl.max_pool_2d' op quantization parameters violate the same scale constraint"). With
it, the converter requantizes after the pool (one QUANTIZE op per such pool). A
BatchNormalization after a layer tfmot cannot fold it into (a GroupedConv2D) quantizes its
output as a scale-and-shift of its own.
"""

import numpy as np

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


def quantize_aware(model, quantize_configs=None, calibration_data=None):
    """A quantization-aware copy of ``model`` (tf_keras), weights carried over.

    ``quantize_configs`` maps extra layer class names to ``QuantizeConfig`` instances; a
    custom layer with neither a config here nor tfmot support raises a ``ValueError``
    naming it. ``calibration_data`` (images, or batches of images or ``(images, ...)``)
    starts every activation range at the float model's (see ``calibrate_ranges``); pass it
    when fine-tuning a trained model. Train the result with ``fit`` (it keeps the model's
    outputs), then export with ``to_tflite(model, path, quantize="qat")``.
    """
    _check_model(model, "quantize_aware")
    tfmot = _tfmot()
    qkeras = tfmot.quantization.keras
    configs = {**default_quantize_configs(), **(quantize_configs or {})}
    output_config = _configs()[0]
    registry = qkeras.default_8bit.Default8BitQuantizeRegistry()
    unsupported = []

    def annotate(layer):
        name = type(layer).__name__
        if isinstance(layer, keras.layers.MaxPooling2D) and name not in (quantize_configs or {}) \
                and len(getattr(layer, "_outbound_nodes", [])) > 1:
            return qkeras.quantize_annotate_layer(layer, quantize_config=output_config())
        if name in configs:
            return qkeras.quantize_annotate_layer(layer, quantize_config=configs[name])
        if isinstance(layer, keras.layers.BatchNormalization) and not _after_conv(layer):
            # tfmot folds BN only into a Conv2D / DepthwiseConv2D before it (by class name);
            # after any other layer (a GroupedConv2D) it is a scale-and-shift of its own.
            return qkeras.quantize_annotate_layer(layer, quantize_config=output_config())
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
    scope[output_config.__name__] = output_config
    scope.update({layer.__class__.__name__: layer.__class__ for layer in model.layers})
    with qkeras.quantize_scope(scope):
        quantized = qkeras.quantize_apply(annotated)
    if calibration_data is not None:
        calibrate_ranges(quantized, model, calibration_data)
    return quantized


def _after_conv(layer):
    """Whether ``layer``'s input comes from a layer tfmot folds a BatchNormalization into."""
    nodes = getattr(layer, "_inbound_nodes", [])
    inbound = nodes[0].inbound_layers if nodes else []
    inbound = inbound if isinstance(inbound, (list, tuple)) else [inbound]
    return len(inbound) == 1 and type(inbound[0]).__name__ in ("Conv2D", "DepthwiseConv2D")


def _image_batches(data, batch_size=8):
    if hasattr(data, "shape") and len(data.shape) == 4:  # one array of images
        data = np.asarray(data, np.float32)
        return [data[i:i + batch_size] for i in range(0, len(data), batch_size)]
    return [np.asarray(b[0] if isinstance(b, (tuple, list)) else b, np.float32) for b in data]


def calibrate_ranges(qat_model, float_model, data, batch_size=8):
    """Set the activation ranges of ``qat_model`` from ``float_model`` run on ``data``.

    tfmot starts each range at [-6, 6] and moves it by a moving average (decay 0.999), so a
    short fine-tune of a trained model runs thousands of steps with clipped or coarse
    activations. Here every output range starts at the min / max over ``data`` of the same
    layer in the float model (widened to include 0), as int8 post-training calibration
    sets them. Weight ranges (also [-6, 6] until the first training step) are set from the
    weights, as tfmot's symmetric weight quantizer would. Returns the number of ranges set.
    """
    _check_model(qat_model, "calibrate_ranges")
    float_layers = {layer.name for layer in float_model.layers}
    targets, tensors = [], []  # (min variable, max variable), float output
    weight_ranges = 0
    for layer in qat_model.layers:
        ranges = {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}
        weight_ranges += _set_weight_ranges(ranges)
        # The output's quantizer: "output_*", or "post_activation_*" of a layer (a conv
        # with its activation) that quantizes its own activation's output.
        low = ranges.get("output_min", ranges.get("post_activation_min"))
        high = ranges.get("output_max", ranges.get("post_activation_max"))
        inner = getattr(layer, "layer", None)
        if low is not None and high is not None and inner is not None and inner.name in float_layers:
            targets.append((low, high))
            tensors.append(float_model.get_layer(inner.name).output)
        elif type(layer).__name__ == "QuantizeLayer":  # the input's quantizer
            low = next((v for k, v in ranges.items() if k.endswith("_min")), None)
            high = next((v for k, v in ranges.items() if k.endswith("_max")), None)
            if low is not None and high is not None:
                targets.append((low, high))
                tensors.append(float_model.inputs[0])
    if not targets:
        return weight_ranges
    probe = keras.Model(float_model.inputs, tensors)
    lows, highs = [], []
    for images in _image_batches(data, batch_size):
        outputs = probe(images, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        lows.append([float(np.min(o)) for o in outputs])
        highs.append([float(np.max(o)) for o in outputs])
    if not lows:
        raise ValueError("calibrate_ranges: calibration data gave no images.")
    for (low, high), lo, hi in zip(targets, np.min(lows, axis=0), np.max(highs, axis=0)):
        low.assign(min(float(lo), 0.0))
        high.assign(max(float(hi), 1e-3))
    return len(targets) + weight_ranges


def _set_weight_ranges(ranges):
    """Symmetric ranges of a wrapper's quantized weights (``<weight>_min`` / ``_max``
    next to ``<weight>``; per output channel or per tensor) from the weights' values.
    ``ranges`` maps a wrapper's variable names (without scope) to its variables."""
    count = 0
    for short, weight in ranges.items():
        low, high = ranges.get(short + "_min"), ranges.get(short + "_max")
        if low is None or high is None or short in ("output", "post_activation"):
            continue
        values = np.asarray(weight.numpy())
        if tuple(low.shape) == ():
            bound = np.float32(np.abs(values).max())
        else:  # per output channel: the last axis (a depthwise kernel's is [.., C, 1]: flatten)
            channels = int(np.prod(low.shape))
            bound = np.abs(values.reshape(-1, channels)).max(axis=0).reshape(low.shape)
        low.assign(-bound)
        high.assign(bound)
        count += 1
    return count


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

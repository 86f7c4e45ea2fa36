"""``keras.applications``-style assembly shared by every backbone: input, stem, stages, top,
feature-pyramid names and weights."""

import dataclasses

import numpy as np

import keras_csp.models.pretrained as pretrained  # noqa: PLR0402  (the module, not the package: no cycle)
from keras_csp.backend import keras, tf
from keras_csp.darknet.order import DarknetBlocksModel
from keras_csp.layers import check_activation, conv_bn_act
from keras_csp.models.stages import apply_partial_ratio, build_stage, check_fusion

POOLINGS = (None, "avg", "max")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """Everything that defines a backbone family member.

    ``stem`` holds StageConvs, the string "maxpool" (Darknet 2x2/2 max-pool) and stem blocks
    (objects with ``build(x, activation, name, registry)``, e.g. PeleeNet's
    :class:`~keras_csp.models.blocks.PeleeStem`); ``levels[i]`` is the pyramid level
    (P{n}: 2**n times smaller than the input) of the output of ``stages[i]``. ``top`` is
    "pool_conv" (global average pool, then the 1x1 classifier conv: most cfgs) or
    "conv_pool" (classifier conv on the feature map, then the pool: the densenet201 cfg).
    """

    name: str
    stem: tuple
    stages: tuple
    levels: tuple
    activation: str = "leaky"
    default_size: int = 256
    top: str = "pool_conv"


def preprocess_input(x):
    """Scale uint8-range RGB images to the [0, 1] float range the Darknet-trained models use.

    Args:
        x: array or tensor of RGB values in [0, 255], channels last.
    Returns:
        float32 values in [0, 1].
    """
    if isinstance(x, (np.ndarray, list, tuple)):
        return np.asarray(x, dtype=np.float32) / 255.0
    return tf.cast(x, tf.float32) / 255.0


def _validate(spec, include_top, weights, classes, input_shape, pooling, activation, fusion):
    if not pretrained.is_weights_argument(weights):
        raise ValueError(
            "The `weights` argument should be None, 'imagenet', a name registered in "
            "keras_csp.weights, or the path to an existing Keras or Darknet weights file; "
            f"received weights={weights!r}."
        )
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(
            "With weights='imagenet' and include_top=True, `classes` must be 1000; "
            f"received classes={classes}."
        )
    if pooling not in POOLINGS:
        raise ValueError(f"The `pooling` argument should be one of {POOLINGS}; received pooling={pooling!r}.")
    check_activation(activation)
    check_fusion(fusion)
    if input_shape is not None:
        if len(input_shape) != 3 or input_shape[-1] != 3:
            raise ValueError(f"`input_shape` must be (height, width, 3); received input_shape={input_shape}.")
        min_size = 2 ** max(spec.levels)
        for side in input_shape[:2]:
            if side is not None and side < min_size:
                raise ValueError(
                    f"{spec.name} downsamples by {min_size}; input height and width must be at "
                    f"least {min_size}, received input_shape={tuple(input_shape)}."
                )


def build_application(
    spec,
    *,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    activation=None,
    fusion="both",
    partial_ratio=0.5,
    name=None,
):
    """Build ``spec`` as a functional model following ``keras.applications`` conventions.

    The stage outputs are named ``P{n}`` (identity layers); see :func:`pyramid_outputs`.
    """
    activation = activation or spec.activation
    inputs = backbone_inputs(spec, include_top, weights, classes, input_tensor, input_shape, pooling,
                             activation, fusion)

    registry = []
    x = inputs
    for i, conv in enumerate(spec.stem, start=1):
        if conv == "maxpool":
            x = keras.layers.MaxPooling2D(2, 2, padding="same", name="stem_pool")(x)
        elif hasattr(conv, "build"):
            x = conv.build(x, activation, f"stem{i}", registry)
        else:
            x = conv_bn_act(
                x, conv.filters, conv.size, conv.stride, conv.groups,
                conv.activation or activation, name=f"stem_conv{i}", registry=registry,
            )
    for i, (stage, level) in enumerate(zip(spec.stages, spec.levels), start=1):
        stage = apply_partial_ratio(stage, partial_ratio)
        x = build_stage(x, stage, activation, f"stage{i}", registry, fusion=fusion)
        x = keras.layers.Identity(name=f"P{level}")(x)

    x = classifier_top(x, include_top, pooling, classes, classifier_activation, registry,
                       conv_first=spec.top == "conv_pool")
    return finish_backbone(inputs, input_tensor, x, name or spec.name, registry, weights, spec.name,
                           activation, include_top)


def backbone_inputs(spec, include_top, weights, classes, input_tensor, input_shape, pooling, activation, fusion):
    """The validated ``images`` input of a builder (keras.applications' input_tensor / input_shape rules)."""
    if input_shape is None and input_tensor is None:
        input_shape = (spec.default_size, spec.default_size, 3) if include_top else (None, None, 3)
    if input_tensor is not None and input_shape is None:
        input_shape = tuple(input_tensor.shape[1:])
    _validate(spec, include_top, weights, classes, input_shape, pooling, activation, fusion)
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="images")
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor
    return keras.Input(tensor=input_tensor, shape=input_shape, name="images")


def classifier_top(x, include_top, pooling, classes, classifier_activation, registry, conv_first=False):
    """Darknet's classifier (1x1 conv ``predictions`` with the average pool after it when
    ``conv_first``, before it otherwise), or the ``pooling`` of a headless backbone."""
    if include_top and conv_first:
        x = conv_bn_act(x, classes, 1, batch_normalize=False, activation="linear", name="predictions", registry=registry)
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif include_top:
        x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x)
        x = conv_bn_act(x, classes, 1, batch_normalize=False, activation="linear", name="predictions", registry=registry)
        x = keras.layers.Flatten(name="predictions_flat")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    if include_top and classifier_activation is not None:
        x = keras.layers.Activation(classifier_activation, name="probabilities")(x)
    return x


def finish_backbone(inputs, input_tensor, outputs, name, registry, weights, model_name, activation, include_top):
    """The functional model, its Darknet block order and its weights (every builder's last step)."""
    model_inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else inputs
    # The conv blocks' Darknet cfg order is part of the model's config (see darknet_order).
    model = DarknetBlocksModel(model_inputs, outputs, name=name, darknet_blocks=registry)
    if weights is not None:
        pretrained.load(model, weights, model_name, activation=activation, include_top=include_top)
    return model


def pyramid_outputs(model):
    """The backbone's multi-scale features as ``{"P2": tensor, ..., "P5": tensor}``.

    ``P{n}`` is the output of the stage that is ``2**n`` times smaller than the input.
    Works on models built here and on models reloaded from ``.keras`` files.
    """
    levels = {}
    for layer in model.layers:
        if layer.name[:1] == "P" and layer.name[1:].isdigit():
            levels[layer.name] = layer.output
    if not levels:
        raise ValueError(f"Model {model.name!r} has no P{{n}} pyramid layers; is it a keras_csp backbone?")
    return dict(sorted(levels.items(), key=lambda kv: int(kv[0][1:])))


def feature_extractor(model, levels=("P3", "P4", "P5")):
    """A model mapping images to ``{level: features}`` for the requested pyramid levels."""
    available = pyramid_outputs(model)
    missing = [lvl for lvl in levels if lvl not in available]
    if missing:
        raise ValueError(f"{model.name} has levels {sorted(available)}; requested {missing} are missing.")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, {lvl: available[lvl] for lvl in levels}, name=f"{model.name}_features")

"""``keras.applications``-style builder functions over backbone spec functions (all families).

A family here is a function ``make_spec(fusion, partial_ratio, **options) -> BackboneSpec``:
the reconstructed CSP nets size their channel-slice splits, partial transitions and fusion
convs from the fusion mode and the partial ratio, so the spec is made per call ("baked").
Families transcribed from a cfg are fixed specs; their builders hand ``fusion`` and
``partial_ratio`` to :func:`build_application` like the big backbones do.
"""

import inspect
import textwrap

from keras_csp.models.application import build_application
from keras_csp.models.stages import check_fusion
from keras_csp.weights import get, names

ARGS_DOC = """
    Args:
        include_top: add the classifier (global average pool and 1x1 conv to `classes`,
            in the order of the Darknet layout).
        {weights_doc}
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: (height, width, 3); default ({size}, {size}, 3) with the top, else
            (None, None, 3). Height and width must be at least the network's stride.
        pooling: with include_top=False, None (4-D features), "avg" or "max".
        classes: number of classes of the top.
        classifier_activation: activation of the top (None returns logits).
        activation: leaky / mish / swish / relu / linear / logistic; default {act}.{act_doc}
        fusion: {fusion_doc}
        partial_ratio: {ratio_doc}{extra_doc}
        name: model name.

    Inputs are RGB floats in [0, 1]. Stage outputs are identity layers named ``P{{n}}``
    (2**n times smaller than the input): use `keras_csp.pyramid_outputs(model)` or
    `keras_csp.feature_extractor(model)`.
    """

FUSION_DOC = {
    "baked": 'Figure 3\'s fusion: "both" (partial transition, concatenation, transition), '
    '"first" (concatenation, transition) or "last" (partial transition, concatenation).',
    "generic": '"both" (the cfg), "first" or "last" (the paper\'s Figure 3 ablation).',
    "none": "accepted for a uniform signature; a plain network has no fusion.",
}
RATIO_DOC = {
    "baked": "share of the stage's channels sent through the blocks (the rest skips "
    "them); 0.5 in the paper's models. Table 1's gamma is the share that skips: 1 - ratio.",
    "generic": "share of channels sent through the blocks (gamma; the cfgs use 0.5).",
    "none": "accepted for a uniform signature; a plain network has no partial split.",
    "fixed": "must be 0.5: the cfg's split convs have fixed widths.",
}


def imagenet_doc(model_name):
    """What ``weights="imagenet"`` does for ``model_name``, from the registry (docstrings)."""
    files = sorted(f"{e.filename} ({e.model_kwargs.get('activation', 'leaky')})"
                   for e in map(get, names(model_name)) if e.alias == "imagenet")
    if not files:
        return '"imagenet" (keras_csp registers no ImageNet weights for this model yet: it fails naming the models that have them)'
    return f'"imagenet" (the authors\' {", ".join(files)}, fetched by the weights registry or read from its cache; offline it fails with instructions)'


def check_fusion_and_ratio(fusion, partial_ratio):
    """Figure 3's fusion strategy and the partial ratio, or a ValueError naming the argument."""
    check_fusion(fusion)
    if not isinstance(partial_ratio, (int, float)) or not 0.0 < partial_ratio < 1.0:
        raise ValueError(f"The `partial_ratio` argument should be in (0, 1); received partial_ratio={partial_ratio!r}.")


def split_width(channels, ratio, where):
    """Channels of a slice split that go through the blocks (at least one on each side)."""
    main = int(round(channels * ratio))
    if not 0 < main < channels:
        raise ValueError(
            f"{where}: partial_ratio={ratio} leaves no channels on one side of the split of "
            f"{channels} channels; use a ratio between {1 / channels:.3f} and {1 - 1 / channels:.3f}."
        )
    return main


def make_builder(model_name, make_spec, summary, *, mode, default_fusion="both", options=None, mish_variant=None):
    """A builder function named ``model_name`` over ``make_spec``.

    ``mode`` says how fusion and partial_ratio reach the network: "baked" (``make_spec``
    sizes the stages from them), "generic" (handed to build_application), "none" (plain
    network: accepted, no effect) or "fixed" (a cfg with fixed split widths: fusion is
    handed on, partial_ratio must be 0.5). ``options`` are extra keyword arguments
    (name -> (default, doc line)) passed on to ``make_spec``; ``mish_variant`` names the
    cfg variant that ``activation="mish"`` gives, for the docstring.
    """
    options = dict(options or {})

    def builder(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        activation=None,
        fusion=default_fusion,
        partial_ratio=0.5,
        name=None,
        **kwargs,
    ):
        unknown = sorted(set(kwargs) - set(options))
        if unknown:
            raise TypeError(f"{model_name}() got unexpected keyword argument(s) {unknown}; options: {sorted(options)}")
        check_fusion_and_ratio(fusion, partial_ratio)
        if mode == "fixed" and partial_ratio != 0.5:
            raise ValueError(
                f"{model_name} is transcribed from a cfg whose split convs have fixed widths; "
                f"partial_ratio must be 0.5, received partial_ratio={partial_ratio}."
            )
        values = {key: kwargs.get(key, default) for key, (default, _) in options.items()}
        if mode == "baked":
            spec = make_spec(fusion=fusion, partial_ratio=partial_ratio, **values)
            fusion, partial_ratio = "both", 0.5
        else:
            spec = make_spec(**values)
        return build_application(
            spec, include_top=include_top, weights=weights, input_tensor=input_tensor,
            input_shape=input_shape, pooling=pooling, classes=classes,
            classifier_activation=classifier_activation, activation=activation,
            fusion=fusion, partial_ratio=partial_ratio, name=name,
        )

    # The signature shows the options as keyword arguments (help(), IDEs, docs).
    params = list(inspect.signature(builder).parameters.values())[:-1]
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=d) for k, (d, _) in options.items()]
    builder.__signature__ = inspect.Signature(params)
    spec = make_spec(**({"fusion": default_fusion, "partial_ratio": 0.5} if mode == "baked" else {}),
                     **{k: d for k, (d, _) in options.items()})
    def wrap(text):
        return textwrap.fill(text, 84, subsequent_indent=" " * 12).lstrip()

    extra = "".join(f"\n        {wrap(f'{k}: {doc}')}" for k, (_, doc) in options.items())
    builder.__name__ = builder.__qualname__ = model_name
    act_doc = ""
    if mish_variant:
        act_doc = f'\n            "mish" gives the cfgs\' `{mish_variant}` variant.'
    builder.__doc__ = summary.rstrip() + "\n" + ARGS_DOC.format(
        size=spec.default_size, act=spec.activation, act_doc=act_doc,
        weights_doc=wrap(f"weights: None, {imagenet_doc(model_name)}, a Darknet ``.weights`` file (conv blocks map "
                         "in cfg order), or a Keras weights file."),
        fusion_doc=wrap("fusion: " + FUSION_DOC["generic" if mode == "fixed" else mode])[len("fusion: "):],
        ratio_doc=wrap("partial_ratio: " + RATIO_DOC[mode])[len("partial_ratio: "):], extra_doc=extra,
    )
    builder.default_fusion = default_fusion
    return builder

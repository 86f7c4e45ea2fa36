"""One stage builder for every family: plain stacks and Cross Stage Partial stages.

A stage is ``down convs -> [split] -> residual blocks -> [transition] -> [concat] -> [fusion]``.
Families (Darknet, ResNet, ResNeXt, ...) differ only by the :class:`StageSpec` values, so the
paper's ablations (partial ratio gamma, fusion first / last, Figure 3 and Table 1) are
arguments, not new code. Conv blocks are created in the order of the authors' Darknet cfgs and
their names are appended to ``registry`` so Darknet ``.weights`` map onto them in order.

The small and mobile backbones use the same builder with more block kinds (see
:mod:`keras_csp.models.blocks`), pooling in ``down``, a channel-slice split, explicit cross /
main convs and several block runs per stage; every new field defaults to the old behaviour.
"""

import dataclasses
import warnings
from typing import Optional, Tuple

import keras_csp.models.blocks as _blocks
from keras_csp.backend import keras
from keras_csp.layers import ChannelRange, DarknetShortcut, activation_layer, conv_bn_act

FUSIONS = ("both", "first", "last")
BLOCKS = ("darknet", "bottleneck") + tuple(_blocks.BLOCK_BUILDERS)
SPLITS = ("conv", "slice")
# Pooling entries allowed in ``StageSpec.down``: Darknet's 2x2/2 max-pool, PeleeNet's 2x2/2
# average pool (both with TF "same" padding, which is Darknet's for 2x2/2).
POOLS = ("maxpool", "avgpool")


@dataclasses.dataclass(frozen=True)
class StageConv:
    """One conv block (:func:`~keras_csp.layers.conv_bn_act`: conv, batch norm, activation) of
    a backbone's stem or stage; ``activation=None`` means the model's activation.

    Not to be confused with :class:`keras_csp.darknet.spec.ConvSpec`, a parsed Darknet
    ``[convolutional]`` section with its shapes.
    """

    filters: int
    size: int = 1
    stride: int = 1
    groups: int = 1
    activation: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """A stage of a backbone, in the terms of the Darknet cfgs.

    Attributes:
        down: convs applied first (e.g. the 3x3 stride-2 conv of a Darknet stage); may also
            hold "maxpool" / "avgpool" (2x2/2 pools).
        num_blocks: residual blocks.
        block: "darknet" (1x1 hidden -> 3x3 out, linear add) or "bottleneck"
            (1x1 -> 3x3 (grouped) -> 1x1 linear, add, activation); or one of
            :data:`keras_csp.models.blocks.BLOCK_BUILDERS` ("basic", "dense",
            "two_way_dense", "inverted").
        hidden, out: block widths; ``groups`` for the 3x3 conv.
        block_stride: stride of the first block's 3x3 conv (plain ResNets downsample there).
        csp: whether the stage is a Cross Stage Partial stage.
        split: (cross, main) widths of the two 1x1 convs that both read the stage input;
            ``cross`` skips the blocks, ``main`` feeds them (cfg order: cross first).
        split_activation: activation of the split convs (None: the model's).
        transition: width of the 1x1 conv after the blocks (fusion "both" and "last"); 0: none.
            Plain stages get it too when it is not 0 (DenseNet / PeleeNet transitions).
        fusion_filters: width of the 1x1 conv after the concatenation ("both" and "first");
            0: none.
        growth: new channels per dense layer ("dense", "two_way_dense").
        depth_multiplier: depthwise multiplier of "inverted" blocks.
        se: squeeze width of a squeeze-and-excitation on each dense layer's new features
            (0: none).
        elastic: run "darknet" / "bottleneck" blocks in the Elastic form of the -elastic
            cfgs (two channel halves, one at half resolution); ``hidden`` is per branch.
        split_mode: "conv" (two 1x1 convs, the cfgs) or "slice" (channels ``[:cross]`` and
            ``[cross:cross+main]`` of the input, Section 3.1's split "through channel").
        cross_convs, main_convs: explicit convs of the cross / main path instead of the
            split (csmobilenet-v2: a depthwise 3x3/2 on the cross path).
        then: further block runs of the main path after this spec's ``num_blocks``; only
            their block fields (num_blocks, block, hidden, out, groups, block_stride,
            growth, depth_multiplier, se, elastic) are read.
    """

    down: Tuple[StageConv, ...] = ()
    num_blocks: int = 1
    block: str = "darknet"
    hidden: int = 32
    out: int = 64
    groups: int = 1
    block_stride: int = 1
    csp: bool = False
    split: Tuple[int, int] = (0, 0)
    split_activation: Optional[str] = None
    transition: int = 0
    fusion_filters: int = 0
    growth: int = 0
    depth_multiplier: int = 1
    se: int = 0
    elastic: bool = False
    split_mode: str = "conv"
    cross_convs: Tuple[StageConv, ...] = ()
    main_convs: Tuple[StageConv, ...] = ()
    then: Tuple["StageSpec", ...] = ()


def __getattr__(name):
    if name == "ConvSpec":  # the old name, one release
        warnings.warn("keras_csp.models.stages.ConvSpec is deprecated; use StageConv.",
                      DeprecationWarning, stacklevel=2)
        return StageConv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _round_width(width, divisor):
    """Round ``width`` to a positive multiple of ``divisor``."""
    return max(divisor, int(round(width / divisor)) * divisor)


def apply_partial_ratio(spec, ratio):
    """Rescale a CSP stage to partial ratio ``ratio`` (gamma: the share of channels that go
    through the blocks; the cfgs use 0.5). Widths stay multiples of 8 and of ``groups``."""
    if not spec.csp or ratio == 0.5:
        return spec
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"partial_ratio must be in (0, 1), got {ratio}")
    if spec.split_mode != "conv" or spec.cross_convs or spec.main_convs:
        raise ValueError(
            "apply_partial_ratio rescales stages split by two 1x1 convs; a channel-slice or "
            "explicit-conv split is rescaled by its family's builder"
        )
    divisor = 8 * spec.groups // _gcd(8, spec.groups)
    main_scale, cross_scale = 2.0 * ratio, 2.0 * (1.0 - ratio)
    cross, main = spec.split
    main = _round_width(main * main_scale, divisor)
    return dataclasses.replace(
        spec,
        split=(_round_width(cross * cross_scale, 8), main),
        hidden=_round_width(spec.hidden * main_scale, divisor),
        out=main if spec.block == "darknet" else _round_width(spec.out * main_scale, divisor),
        transition=_round_width(spec.transition * main_scale, divisor) if spec.transition else 0,
    )


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def residual_block(x, spec, activation, stride, name, registry):
    """A residual block of ``spec.block`` kind; the shortcut follows Darknet's [shortcut]."""
    shortcut = x
    if spec.block == "darknet":
        y = conv_bn_act(x, spec.hidden, 1, activation=activation, name=f"{name}_conv1", registry=registry)
        y = conv_bn_act(y, spec.out, 3, stride, spec.groups, activation, name=f"{name}_conv2", registry=registry)
        out_activation = "linear"
    else:
        y = conv_bn_act(x, spec.hidden, 1, activation=activation, name=f"{name}_conv1", registry=registry)
        y = conv_bn_act(y, spec.hidden, 3, stride, spec.groups, activation, name=f"{name}_conv2", registry=registry)
        y = conv_bn_act(y, spec.out, 1, activation="linear", name=f"{name}_conv3", registry=registry)
        out_activation = activation
    if tuple(shortcut.shape[1:]) == tuple(y.shape[1:]):
        y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    else:
        y = DarknetShortcut(name=f"{name}_add")([y, shortcut])
    if out_activation != "linear":
        y = activation_layer(out_activation, f"{name}_out")(y)
    return y


def _conv(x, conv, activation, name, registry):
    if conv in POOLS:
        pool = keras.layers.MaxPooling2D if conv == "maxpool" else keras.layers.AveragePooling2D
        return pool(2, 2, padding="same", name=name.replace("_down", "_pool"))(x)
    # A DepthwiseConv2D when groups equals the input channels (see conv_bn_act).
    return conv_bn_act(
        x,
        conv.filters,
        conv.size,
        conv.stride,
        conv.groups,
        conv.activation or activation,
        name=name,
        registry=registry,
    )


def _block(x, spec, activation, stride, name, registry):
    """One block of ``spec.block`` kind (residual_block for the cfgs' darknet / bottleneck)."""
    if spec.block not in BLOCKS:
        raise ValueError(f"{name}: block must be one of {BLOCKS}, got {spec.block!r}")
    if spec.elastic:
        return _blocks.elastic_block(x, spec, activation, stride, name, registry)
    if spec.block in _blocks.BLOCK_BUILDERS:
        return _blocks.BLOCK_BUILDERS[spec.block](x, spec, activation, stride, name, registry)
    return residual_block(x, spec, activation, stride, name, registry)


def _blocks_of(x, spec, activation, name, registry):
    """Every block run of the main path: ``spec`` then ``spec.then``, named block1, block2..."""
    index = 0
    for run in (spec,) + tuple(spec.then):
        for b in range(run.num_blocks):
            index += 1
            stride = run.block_stride if b == 0 else 1
            x = _block(x, run, activation, stride, f"{name}_block{index}", registry)
    return x


def _split(x, spec, split_act, name, registry):
    """(cross, main) tensors of a CSP stage, cross first in cfg order."""
    if spec.cross_convs or spec.main_convs:
        cross, main = x, x
        for i, conv in enumerate(spec.cross_convs, start=1):
            suffix = str(i) if len(spec.cross_convs) > 1 else ""
            cross = _conv(cross, conv, split_act, f"{name}_cross{suffix}", registry)
        for i, conv in enumerate(spec.main_convs, start=1):
            suffix = str(i) if len(spec.main_convs) > 1 else ""
            main = _conv(main, conv, split_act, f"{name}_main{suffix}", registry)
        return cross, main
    cross_width, main_width = spec.split
    if spec.split_mode == "slice":
        channels = x.shape[-1]
        if cross_width + main_width != channels:
            raise ValueError(
                f"{name}: a slice split needs cross + main == input channels; got split="
                f"{spec.split} for {channels} channels"
            )
        cross = ChannelRange(0, cross_width, name=f"{name}_cross")(x)
        main = ChannelRange(cross_width, channels, name=f"{name}_main")(x)
        return cross, main
    if spec.split_mode != "conv":
        raise ValueError(f"{name}: split_mode must be one of {SPLITS}, got {spec.split_mode!r}")
    cross = conv_bn_act(x, cross_width, 1, activation=split_act, name=f"{name}_cross", registry=registry)
    main = conv_bn_act(x, main_width, 1, activation=split_act, name=f"{name}_main", registry=registry)
    return cross, main


def check_fusion(fusion):
    """Figure 3's fusion strategy, or a ValueError naming the choices."""
    if fusion not in FUSIONS:
        raise ValueError(f"The `fusion` argument should be one of {FUSIONS}; received fusion={fusion!r}.")


def fuses_first(fusion):
    """Whether the fusion conv after the concatenation exists ("both", "first")."""
    check_fusion(fusion)
    return fusion in ("both", "first")


def partial_widths(fusion, transition, fusion_filters):
    """The ``transition`` / ``fusion_filters`` fields of a partial stage under ``fusion``: the
    part-2 transition (``transition`` wide) for "both" and "last", the fusion conv after the
    concatenation (``fusion_filters`` wide) for "both" and "first"; 0 where it is left out."""
    check_fusion(fusion)
    return {"transition": transition if fusion in ("both", "last") else 0,
            "fusion_filters": fusion_filters if fuses_first(fusion) else 0}


def build_stage(x, spec, activation, name, registry, fusion="both"):
    """Apply one stage to ``x``; see :class:`StageSpec`. ``fusion`` is Figure 3's choice:
    "both" (the cfgs: transition, concat, transition), "first" or "last"."""
    check_fusion(fusion)
    for i, conv in enumerate(spec.down, start=1):
        x = _conv(x, conv, activation, f"{name}_down{i}" if len(spec.down) > 1 else f"{name}_down", registry)
    if not spec.csp:
        x = _blocks_of(x, spec, activation, name, registry)
        if spec.transition:
            x = conv_bn_act(x, spec.transition, 1, activation=activation, name=f"{name}_transition",
                            registry=registry)
        return x

    split_act = spec.split_activation or activation
    cross, main = _split(x, spec, split_act, name, registry)
    main = _blocks_of(main, spec, activation, name, registry)
    if fusion in ("both", "last") and spec.transition:
        main = conv_bn_act(main, spec.transition, 1, activation=activation, name=f"{name}_transition",
                           registry=registry)
    x = keras.layers.Concatenate(name=f"{name}_concat")([main, cross])
    if fusion in ("both", "first") and spec.fusion_filters:
        x = conv_bn_act(x, spec.fusion_filters, 1, activation=activation, name=f"{name}_fusion", registry=registry)
    return x

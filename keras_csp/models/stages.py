"""One stage builder for every family: plain stacks and Cross Stage Partial stages.

A stage is ``down convs -> [split] -> residual blocks -> [transition] -> [concat] -> [fusion]``.
Families (Darknet, ResNet, ResNeXt, ...) differ only by the :class:`StageSpec` values, so the
paper's ablations (partial ratio gamma, fusion first / last, Figure 3 and Table 1) are
arguments, not new code. Conv blocks are created in the order of the authors' Darknet cfgs and
their names are appended to ``registry`` so Darknet ``.weights`` map onto them in order.
"""

import dataclasses
from typing import Optional, Tuple

from keras_csp.backend import keras
from keras_csp.layers import DarknetShortcut, activation_layer, conv_bn_act

FUSIONS = ("both", "first", "last")
BLOCKS = ("darknet", "bottleneck")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One Darknet conv: ``activation=None`` means the model's activation."""

    filters: int
    size: int = 1
    stride: int = 1
    groups: int = 1
    activation: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """A stage of a backbone, in the terms of the Darknet cfgs.

    Attributes:
        down: convs applied first (e.g. the 3x3 stride-2 conv of a Darknet stage).
        num_blocks: residual blocks.
        block: "darknet" (1x1 hidden -> 3x3 out, linear add) or "bottleneck"
            (1x1 -> 3x3 (grouped) -> 1x1 linear, add, activation).
        hidden, out: block widths; ``groups`` for the 3x3 conv.
        block_stride: stride of the first block's 3x3 conv (plain ResNets downsample there).
        csp: whether the stage is a Cross Stage Partial stage.
        split: (cross, main) widths of the two 1x1 convs that both read the stage input;
            ``cross`` skips the blocks, ``main`` feeds them (cfg order: cross first).
        split_activation: activation of the split convs (None: the model's).
        transition: width of the 1x1 conv after the blocks (fusion "both" and "last").
        fusion_filters: width of the 1x1 conv after the concatenation ("both" and "first").
    """

    down: Tuple[ConvSpec, ...] = ()
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


def build_stage(x, spec, activation, name, registry, fusion="both"):
    """Apply one stage to ``x``; see :class:`StageSpec`. ``fusion`` is Figure 3's choice:
    "both" (the cfgs: transition, concat, transition), "first" or "last"."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    for i, conv in enumerate(spec.down, start=1):
        x = _conv(x, conv, activation, f"{name}_down{i}" if len(spec.down) > 1 else f"{name}_down", registry)
    if not spec.csp:
        for b in range(spec.num_blocks):
            stride = spec.block_stride if b == 0 else 1
            x = residual_block(x, spec, activation, stride, f"{name}_block{b + 1}", registry)
        return x

    split_act = spec.split_activation or activation
    cross_width, main_width = spec.split
    cross = conv_bn_act(x, cross_width, 1, activation=split_act, name=f"{name}_cross", registry=registry)
    main = conv_bn_act(x, main_width, 1, activation=split_act, name=f"{name}_main", registry=registry)
    for b in range(spec.num_blocks):
        main = residual_block(main, spec, activation, 1, f"{name}_block{b + 1}", registry)
    if fusion in ("both", "last"):
        main = conv_bn_act(main, spec.transition, 1, activation=activation, name=f"{name}_transition", registry=registry)
    x = keras.layers.Concatenate(name=f"{name}_concat")([main, cross])
    if fusion in ("both", "first"):
        x = conv_bn_act(x, spec.fusion_filters, 1, activation=activation, name=f"{name}_fusion", registry=registry)
    return x

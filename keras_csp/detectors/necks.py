"""Detector necks: how a backbone's feature pyramid becomes the per-scale head inputs.

A neck is a small config object; calling it on ``{"P3": t3, "P4": t4, ...}`` (the backbone's
pyramid, ``P{n}`` = stride ``2**n``) builds its layers and returns ``{level: tensor}``, the
inputs of the 1x1 prediction convs (smallest stride first). Conv blocks are
:func:`keras_csp.layers.conv_bn_act` blocks appended to ``registry`` in the order of the
Darknet cfg, with a :class:`HeadSlot` where the cfg puts a scale's prediction conv, so
the detector can list every block in cfg order and load Darknet ``.weights``.

``FPN`` (YOLOv3, ``fpn`` / ``fpn_spp``) and ``PANet`` (``panet_spp``) follow the authors'
cfgs exactly (yolov3.cfg, yolov3-spp.cfg, cs*-panet-spp.cfg); ``PRN`` follows
yolov3-tiny-prn.cfg and ``TinyFPN`` yolov4-tiny.cfg. ``EFM`` and ``GFM`` are rebuilt from
the paper's text and Figure 6 (no cfg was published): see their docstrings and docs/detectors.md.
"""

import dataclasses
from typing import Optional, Tuple

from keras_csp.backend import keras
from keras_csp.layers import DarknetShortcut, activation_layer, conv_bn_act
from keras_csp.layers.detection import SPP, Maxout, SpatialAttention, Upsample


@dataclasses.dataclass(frozen=True)
class HeadSlot:
    """Marks, in a neck's block registry, where the cfg puts the prediction conv of ``level``."""

    level: str


def level_index(level):
    """``"P4"`` -> 4, with a clear error for anything else."""
    if not (isinstance(level, str) and level[:1] == "P" and level[1:].isdigit()):
        raise ValueError(f"Pyramid levels are named 'P<n>' (stride 2**n); received {level!r}.")
    return int(level[1:])


class _Blocks:
    """Builds named conv blocks of one neck into ``registry`` with the neck's activation."""

    def __init__(self, activation, registry, prefix):
        self.activation = activation
        self.registry = registry
        self.prefix = prefix

    def conv(self, x, filters, size, name, stride=1, activation=None):
        return conv_bn_act(
            x, filters, size, stride, activation=activation or self.activation,
            name=f"{self.prefix}_{name}", registry=self.registry,
        )

    def conv_set(self, x, width, count, name, start=1):
        """YOLOv3's alternating ``1x1 width / 3x3 2*width`` convs (``count`` of them)."""
        for i in range(start, start + count):
            odd = (i - start) % 2 == 0
            x = self.conv(x, width if odd else 2 * width, 1 if odd else 3, f"{name}_conv{i}")
        return x

    def top_set(self, x, width, name, spp):
        """The top level's convs: five alternating convs, or with ``spp`` (yolov3-spp and
        the panet-spp cfgs) three, SPP, and three more (1x1, 3x3, 1x1 each time)."""
        if not spp:
            return self.conv_set(x, width, 5, name)
        x = self.conv_set(x, width, 3, name)
        x = SPP(name=f"{self.prefix}_{name}_spp")(x)
        return self.conv_set(x, width, 3, name, start=4)

    def upsample(self, x, name):
        return Upsample(2, name=f"{self.prefix}_{name}")(x)

    def concat(self, tensors, name):
        return keras.layers.Concatenate(name=f"{self.prefix}_{name}")(tensors)

    def shortcut(self, x, skip, name, activation=None):
        """Darknet ``[shortcut]``: ``act(x + skip)``, ``skip`` cut to ``x``'s channels."""
        if tuple(x.shape[1:]) == tuple(skip.shape[1:]):
            y = keras.layers.Add(name=f"{self.prefix}_{name}")([x, skip])
        else:
            y = DarknetShortcut(name=f"{self.prefix}_{name}")([x, skip])
        act = activation_layer(activation or self.activation, f"{self.prefix}_{name}_act")
        return y if act is None else act(y)

    def slot(self, level):
        if self.registry is not None:
            self.registry.append(HeadSlot(level))


def _check_features(neck, features):
    missing = [lvl for lvl in neck.levels if lvl not in features]
    if missing:
        raise ValueError(
            f"{type(neck).__name__} reads backbone levels {list(neck.levels)}; the backbone "
            f"gives {sorted(features, key=level_index)}, missing {missing}."
        )


def _check_widths(neck, widths, count):
    if len(widths) != count or any(int(w) < 1 for w in widths):
        raise ValueError(
            f"{type(neck).__name__} needs {count} positive widths (one per level, smallest "
            f"stride first); received widths={tuple(widths)}."
        )


@dataclasses.dataclass(frozen=True)
class FPN:
    """YOLOv3's top-down FPN (Figure 6a), as yolov3.cfg; ``spp=True`` is yolov3-spp.cfg.

    Per level from the top (P5): five alternating 1x1 ``w`` / 3x3 ``2w`` convs (with
    ``spp``: three, SPP, three), a 3x3 ``2w`` conv as the head input; the last 1x1 goes down
    through a 1x1 ``w/2`` conv and x2 upsampling, concatenated ``[upsampled, backbone]``
    with the next level. ``widths`` are ``w`` for P3, P4, P5.
    """

    widths: Tuple[int, ...] = (128, 256, 512)
    spp: bool = False
    levels: Tuple[str, ...] = ("P3", "P4", "P5")

    def __call__(self, features, activation="leaky", registry=None, name="neck"):
        _check_features(self, features)
        _check_widths(self, self.widths, len(self.levels))
        b = _Blocks(activation, registry, name)
        outputs = {}
        x = None
        for i in reversed(range(len(self.levels))):
            level, width = self.levels[i], self.widths[i]
            tag = level.lower()
            if x is None:
                x = features[level]
            else:
                x = b.conv(x, width, 1, f"{tag}_reduce")
                x = b.upsample(x, f"{tag}_upsample")
                x = b.concat([x, features[level]], f"{tag}_concat")
            if i == len(self.levels) - 1:
                x = b.top_set(x, width, tag, self.spp)
            else:
                x = b.conv_set(x, width, 5, tag)
            outputs[level] = b.conv(x, 2 * width, 3, f"{tag}_out")
            b.slot(level)
        return {lvl: outputs[lvl] for lvl in self.levels}


@dataclasses.dataclass(frozen=True)
class PANet:
    """PANet (SPP) of the authors' cs*-panet-spp.cfgs: FPN top-down, then bottom-up.

    Top (P5): 1x1 ``w``, 3x3 ``2w``, 1x1 ``w``, SPP, 1x1 ``w``, 3x3 ``2w``, 1x1 ``w``. Down each
    level: 1x1 ``w/2`` and x2 upsampling of the level above, a 1x1 lateral conv of the backbone
    map, concat ``[lateral, upsampled]``, five alternating convs. Then from P3 up: a 3x3 ``2w``
    head-input conv per level, and a 3x3 stride-2 conv concatenated ``[down, top-down]`` with
    the next level and five alternating convs. ``widths`` are ``w`` for P3, P4, P5.
    """

    widths: Tuple[int, ...] = (128, 256, 512)
    spp: bool = True
    levels: Tuple[str, ...] = ("P3", "P4", "P5")

    def __call__(self, features, activation="leaky", registry=None, name="neck"):
        _check_features(self, features)
        _check_widths(self, self.widths, len(self.levels))
        b = _Blocks(activation, registry, name)
        top = len(self.levels) - 1
        lateral_out = {}
        x = features[self.levels[top]]
        tag = self.levels[top].lower()
        x = b.top_set(x, self.widths[top], f"{tag}_td", self.spp)
        lateral_out[top] = x
        for i in reversed(range(top)):
            level, width = self.levels[i], self.widths[i]
            tag = level.lower()
            up = b.conv(x, width, 1, f"{tag}_reduce")
            up = b.upsample(up, f"{tag}_upsample")
            lateral = b.conv(features[level], width, 1, f"{tag}_lateral")
            x = b.concat([lateral, up], f"{tag}_td_concat")
            x = b.conv_set(x, width, 5, f"{tag}_td")
            lateral_out[i] = x
        outputs = {}
        x = lateral_out[0]
        for i in range(len(self.levels)):
            level, width = self.levels[i], self.widths[i]
            tag = level.lower()
            if i > 0:
                down = b.conv(x, width, 3, f"{tag}_down", stride=2)
                x = b.concat([down, lateral_out[i]], f"{tag}_bu_concat")
                x = b.conv_set(x, width, 5, f"{tag}_bu")
            outputs[level] = b.conv(x, 2 * width, 3, f"{tag}_out")
            b.slot(level)
        return outputs


@dataclasses.dataclass(frozen=True)
class PRN:
    """The partial residual head of yolov3-tiny-prn.cfg (Wang et al., ICCVW 2019).

    Top level: ``c = 1x1 w``, ``h = 3x3 w``, output ``act(h + c)``. Every lower level, from
    the 3x3 conv ``h`` of the level above: ``u = up(1x1 w(h))``, ``s = act(u + B[:w])``
    (``B`` the backbone map, its first ``w`` channels: Darknet's shortcut of unequal
    widths), ``h = 3x3 w(s)``, output ``act(act(h + u) + B[:w])``. Two levels (P4, P5) is
    the cfg; ``levels=("P3", "P4", "P5")`` is the paper's PRN-3l. ``widths`` per level,
    smallest stride first (the cfg: 128, 256).
    """

    widths: Tuple[int, ...] = (128, 256)
    levels: Tuple[str, ...] = ("P4", "P5")

    def __call__(self, features, activation="leaky", registry=None, name="neck"):
        _check_features(self, features)
        _check_widths(self, self.widths, len(self.levels))
        b = _Blocks(activation, registry, name)
        top = len(self.levels) - 1
        outputs = {}
        tag = self.levels[top].lower()
        c = b.conv(features[self.levels[top]], self.widths[top], 1, f"{tag}_conv1")
        h = b.conv(c, self.widths[top], 3, f"{tag}_conv2")
        outputs[self.levels[top]] = b.shortcut(h, c, f"{tag}_add")
        b.slot(self.levels[top])
        for i in reversed(range(top)):
            level, width = self.levels[i], self.widths[i]
            tag = level.lower()
            lateral = features[level]
            if lateral.shape[-1] < width:
                raise ValueError(
                    f"PRN adds the first {width} channels of backbone {level}, which has only "
                    f"{lateral.shape[-1]}; use a width <= {lateral.shape[-1]} for {level}."
                )
            u = b.upsample(b.conv(h, width, 1, f"{tag}_reduce"), f"{tag}_upsample")
            s = b.shortcut(u, lateral, f"{tag}_add1")
            h = b.conv(s, width, 3, f"{tag}_conv")
            s = b.shortcut(h, u, f"{tag}_add2")
            outputs[level] = b.shortcut(s, lateral, f"{tag}_add3")
            b.slot(level)
        return {lvl: outputs[lvl] for lvl in self.levels}


@dataclasses.dataclass(frozen=True)
class TinyFPN:
    """The two-level neck of yolov4-tiny.cfg (layers 27-35).

    Top (P5): ``c = 1x1 w5``, head input ``3x3 2*w5 (c)``. P4: ``1x1 w4 (c)``, x2 upsampling,
    concat ``[upsampled, backbone P4]`` (the cfg's ``[route] layers=-1, 23``), head input
    ``3x3 2*w4``. ``widths`` are ``(w4, w5)``; the cfg's are (128, 256).
    """

    widths: Tuple[int, ...] = (128, 256)
    levels: Tuple[str, ...] = ("P4", "P5")

    def __call__(self, features, activation="leaky", registry=None, name="neck"):
        _check_features(self, features)
        _check_widths(self, self.widths, len(self.levels))
        b = _Blocks(activation, registry, name)
        top = len(self.levels) - 1
        tag = self.levels[top].lower()
        x = b.conv(features[self.levels[top]], self.widths[top], 1, f"{tag}_reduce")
        outputs = {self.levels[top]: b.conv(x, 2 * self.widths[top], 3, f"{tag}_out")}
        b.slot(self.levels[top])
        for i in reversed(range(top)):
            level, width = self.levels[i], self.widths[i]
            tag = level.lower()
            x = b.conv(x, width, 1, f"{tag}_reduce")
            x = b.upsample(x, f"{tag}_upsample")
            x = b.concat([x, features[level]], f"{tag}_concat")
            outputs[level] = b.conv(x, 2 * width, 3, f"{tag}_out")
            b.slot(level)
        return {lvl: outputs[lvl] for lvl in self.levels}


def spatial_attention(x, blocks, name, source=None, batch_normalize=True):
    """SAM: ``x * sigmoid(conv1x1(source or x))``, the conv a regular Darknet block.

    With ``source=None`` this is the point-wise SAM of CSPNet / YOLOv4 (``[convolutional]
    activation=logistic`` + ``[sam]``); with ``source`` it is ThunderNet's SAM.
    """
    gate = conv_bn_act(
        source if source is not None else x, x.shape[-1], 1, activation="logistic",
        batch_normalize=batch_normalize, name=f"{blocks.prefix}_{name}_gate",
        registry=blocks.registry,
    )
    return SpatialAttention(name=f"{blocks.prefix}_{name}")([x, gate])


def _fuse_source(x, source, target, width, b, name):
    """One fusion input: backbone map ``x`` of level ``source`` as ``width`` channels at level
    ``target``. The 1x1 conv runs at the coarser of the two resolutions: a finer map is
    max-pooled first (``2**k`` window and stride), a coarser one is upsampled after it
    (nearest, ``2**k``), so no conv ever runs at the finer resolution."""
    step = level_index(source) - level_index(target)
    if step < 0:
        size = 2 ** (-step)
        x = keras.layers.MaxPooling2D(size, size, padding="same", name=f"{b.prefix}_{name}_pool")(x)
    x = b.conv(x, width, 1, f"{name}_conv")
    if step > 0:
        x = Upsample(2 ** step, name=f"{b.prefix}_{name}_upsample")(x)
    return x


def _fusion_head(parts, width, maxout, attention, b, tag):
    """Concat the fused inputs, compress them with Maxout to ``width``, 3x3 conv to
    ``2 * width`` and the optional point-wise SAM: the head input of one level."""
    x = b.concat(parts, f"{tag}_concat") if len(parts) > 1 else parts[0]
    if maxout and len(parts) > 1:
        x = Maxout(width, name=f"{b.prefix}_{tag}_maxout")(x)
    x = b.conv(x, 2 * width, 3, f"{tag}_out")
    if attention == "sam":
        x = spatial_attention(x, b, f"{tag}_sam")
    return x


@dataclasses.dataclass(frozen=True)
class EFM:
    """The Exact Fusion Model (Section 3.2, Figure 6c), rebuilt from the paper's text.

    No cfg was published; this is a reconstruction. Output level ``s`` fuses the backbone
    maps of levels ``s-1, s, s+1`` (an anchor of scale ``s`` is bounded by the fields of
    view of its neighbours), those the backbone has: each goes through a 1x1 ``w`` conv at
    the coarser resolution of the pair and is max-pooled / upsampled to ``s``; the three are
    concatenated and compressed by Maxout to ``w`` channels (``maxout=False``: no Maxout,
    the 3x3 conv reads all ``3w``, the ablation of the memory claim), then a 3x3 ``2w`` conv
    gives the head input. ``attention="sam"``: a point-wise SAM (1x1 conv ``2w``, logistic,
    multiply) after it, EFM(SAM). ``spp=True``: SPP on the top backbone map before its 1x1
    convs, EFM(SPP). ``widths`` (``w`` per output level, smallest stride first) are the only
    free choice; the named detectors pick them to reach the paper's counts (docs/detectors.md).
    """

    widths: Tuple[int, ...] = (64, 112, 224)
    levels: Tuple[str, ...] = ("P3", "P4", "P5")
    maxout: bool = True
    attention: Optional[str] = None
    spp: bool = False

    def __post_init__(self):
        if self.attention not in (None, "sam"):
            raise ValueError(f"EFM attention must be None or 'sam'; received {self.attention!r}.")

    def __call__(self, features, activation="leaky", registry=None, name="neck"):
        _check_features(self, features)
        _check_widths(self, self.widths, len(self.levels))
        b = _Blocks(activation, registry, name)
        top = max(features, key=level_index)
        inputs = dict(features)
        if self.spp:
            inputs[top] = SPP(name=f"{name}_{top.lower()}_spp")(features[top])
        outputs = {}
        for level, width in zip(self.levels, self.widths):
            n = level_index(level)
            tag = level.lower()
            parts = [
                _fuse_source(inputs[src], src, level, width, b, f"{tag}_from_{src.lower()}")
                for src in (f"P{n - 1}", level, f"P{n + 1}") if src in inputs
            ]
            outputs[level] = _fusion_head(parts, width, self.maxout, self.attention, b, tag)
            b.slot(level)
        return outputs


@dataclasses.dataclass(frozen=True)
class GFM:
    """The Global Fusion Model of Figure 6b, the paper's comparison: every output level
    fuses all of ``levels`` (same blocks as :class:`EFM` otherwise). A reconstruction."""

    widths: Tuple[int, ...] = (64, 112, 224)
    levels: Tuple[str, ...] = ("P3", "P4", "P5")
    maxout: bool = True

    def __call__(self, features, activation="leaky", registry=None, name="neck"):
        _check_features(self, features)
        _check_widths(self, self.widths, len(self.levels))
        b = _Blocks(activation, registry, name)
        outputs = {}
        for level, width in zip(self.levels, self.widths):
            tag = level.lower()
            parts = [
                _fuse_source(features[src], src, level, width, b, f"{tag}_from_{src.lower()}")
                for src in self.levels
            ]
            outputs[level] = _fusion_head(parts, width, self.maxout, None, b, tag)
            b.slot(level)
        return outputs


NECKS = {
    "fpn": FPN(),
    "fpn_spp": FPN(spp=True),
    "panet": PANet(spp=False),
    "panet_spp": PANet(),
    "efm": EFM(),
    "efm_sam": EFM(attention="sam"),
    "efm_spp": EFM(spp=True),
    "gfm": GFM(),
    "prn": PRN(),
    "prn_3l": PRN(widths=(128, 128, 256), levels=("P3", "P4", "P5")),
    "tiny_fpn": TinyFPN(),
}


def get_neck(neck):
    """A neck from its name (see ``NECKS``) or any callable with the neck signature."""
    if isinstance(neck, str):
        if neck not in NECKS:
            raise ValueError(f"Unknown neck {neck!r}; known necks: {', '.join(sorted(NECKS))}.")
        return NECKS[neck]
    if not callable(neck):
        raise TypeError(f"`neck` must be a name or a callable; received {type(neck).__name__}.")
    return neck


__all__ = ["EFM", "FPN", "GFM", "HeadSlot", "NECKS", "PANet", "PRN", "TinyFPN", "get_neck",
           "level_index", "spatial_attention"]

"""The paper's small backbones as data: PeleeNet / CSPPeleeNet, the "Reference" nets,
ResNet-10 / CSPResNet-10 and MobileNet-v2 / CSPMobileNet-v2 (Table 3 and the reference
repo's "Small Models").

cfg-exact (same convs in the same order as the authors' cfg, Darknet's counts): DarknetRef
(darknet.cfg), ResNet10 (resnet10.cfg), MobileNetV2 (mobilenet-v2.cfg), CSPMobileNetV2
(csmobilenet-v2.cfg). Reconstructions (no cfg was released; built from Section 3.1 and tuned
only by the choices documented on each builder): PeleeNet, CSPPeleeNet, the four CSP Ref.
nets and CSPResNet10. docs/small_models.md lists targets and measured counts.
"""

import dataclasses
import textwrap

from keras_csp.models.application import BackboneSpec
from keras_csp.models.blocks import PeleeStem
from keras_csp.models.builders import make_builder, split_width
from keras_csp.models.stages import StageConv, StageSpec, fuses_first, partial_widths

# ---------------------------------------------------------------------------------------
# PeleeNet and CSPPeleeNet (Wang et al. 2018; CSPNet Table 1 and Table 3)
# ---------------------------------------------------------------------------------------

PELEE_GROWTH = 32
PELEE_LAYERS = (3, 4, 8, 6)
PELEE_BOTTLENECK = (1, 2, 4, 4)  # bottleneck width multipliers of the dense layers


def pelee_hidden(bottleneck_width, growth=PELEE_GROWTH):
    """Width of a two-way dense layer's 1x1 convs: PeleeNet's ``int(k/2 * w / 4) * 4``."""
    return int(growth // 2 * bottleneck_width / 4) * 4


def _peleenet(csp, fusion="both", partial_ratio=0.5, se=False):
    name = "CSPPeleeNet" if csp else "PeleeNet"
    channels, stages = 32, []
    se_width = PELEE_GROWTH // 2 if se else 0
    for i, (n, width) in enumerate(zip(PELEE_LAYERS, PELEE_BOTTLENECK)):
        out = channels + n * PELEE_GROWTH
        blocks = dict(num_blocks=n, block="two_way_dense", hidden=pelee_hidden(width),
                      growth=PELEE_GROWTH, se=se_width)
        if not csp:
            # Dense block, then PeleeNet's transition (1x1 conv; its 2x2 avg pool opens the next stage).
            stages.append(StageSpec(() if i == 0 else ("avgpool",), transition=out, **blocks))
        else:
            fused = fuses_first(fusion)
            down = () if i == 0 else ("avgpool",) + ((StageConv(channels, 1),) if fused else ())
            main = split_width(channels, partial_ratio, f"{name} stage {i + 1}")
            last = i == len(PELEE_LAYERS) - 1
            stages.append(StageSpec(
                down, csp=True, split=(channels - main, main), split_mode="slice",
                **partial_widths(fusion, main + n * PELEE_GROWTH, out if last else 0), **blocks,
            ))
        channels = out
    return BackboneSpec(name, stem=(PeleeStem(32),), stages=tuple(stages), levels=(2, 3, 4, 5), default_size=224)


_SE = {"se": (False, "add a squeeze-and-excitation (squeeze width growth/2 = 16) on every "
              "dense layer's new features: Table 3's SE(CSP)PeleeNet.")}

PeleeNet = make_builder("PeleeNet", lambda se=False: _peleenet(False, se=se), """\
Instantiate PeleeNet (Wang et al. 2018), the paper's Table 1 / Table 3 baseline (224x224).

    Reconstruction (no cfg published): stem block (3x3/2 conv; 1x1 -> 3x3/2 branch next to a
    2x2/2 max-pool; 1x1 to 32), four stages of two-way dense layers (3, 4, 8, 6 layers,
    growth 32, bottleneck widths 1, 2, 4, 4 -> 1x1 widths 16, 32, 64, 64), each closed by a
    1x1 transition of the same width and a 2x2 average pool. 2.79M kernel weights / 1.016
    BFLOPs (paper: 2.79M / 1.017). activation="swish" and se=True give Table 3's
    PeleeNet-swish and PeleeNet-swish-SE.
""", mode="none", options=_SE)

CSPPeleeNet = make_builder("CSPPeleeNet", lambda fusion, partial_ratio, se=False: _peleenet(
    True, fusion, partial_ratio, se), """\
Instantiate CSPPeleeNet (Section 3.1, Table 1, Table 3), 224x224.

    Reconstruction (no cfg published). Every PeleeNet stage becomes a partial dense stage:
    the stage input is split by channels (Section 3.1, ``[x0', x0'']``; partial_ratio 0.5:
    halves), the second part goes through PeleeNet's two-way dense layers, a partial
    transition (1x1, same width) follows, the result is concatenated with the first part;
    the second transition (fusion) of stages 1-3 runs after PeleeNet's 2x2 average pool,
    as the base layer of the next stage; stage 4 ends with it. Dense layer widths are
    PeleeNet's, without the PyTorch code's "adjust inter_channel" rule (a Darknet cfg has
    fixed widths). This layout reproduces Table 1's CSPPeleeNet column at all three gammas
    (0.784 / 0.892 / 1.012 vs 0.800 / 0.888 / 0.986) and Table 3 (2.84M / 0.892 vs 2.83M
    / 0.888); putting the fusion before the pool, using 1x1-conv splits or "fusion last"
    alone all miss by more than 10%. fusion="first" / "last" give Table 1's other rows
    (see benchmarks/table1_ablation.py). activation="swish" and se=True give
    CSPPeleeNet-swish and SE-CSPPeleeNet-swish.
""", mode="baked", options=_SE)

# ---------------------------------------------------------------------------------------
# The "Reference" nets: Darknet Reference and its CSP dense versions
# ---------------------------------------------------------------------------------------

REF_WIDTHS = (64, 128, 256, 512, 1024)  # darknet.cfg's widths from the stride-4 level on
REF_GROWTH = 32
REF_HIDDEN = 64  # 1x1 width of every dense layer: 2 x growth (DenseNet) / bottleneck 4 (Pelee)


def _darknet_ref():
    widths = (32, 64, 128, 256, 512, 1024)
    stages = tuple(StageSpec(("maxpool", StageConv(w, 3)), num_blocks=0) for w in widths)
    return BackboneSpec("DarknetRef", stem=(StageConv(16, 3),), stages=stages, levels=(1, 2, 3, 4, 5, 6))


def _csp_ref(name, pelee, layers, fusion="both", partial_ratio=0.5):
    if pelee:
        stem = (PeleeStem(32),)  # stride 4
    else:
        stem = (StageConv(16, 3), "maxpool", StageConv(32, 3))  # darknet.cfg's first layers, stride 2
    channels, stages = 32, []
    for i, (n, width) in enumerate(zip(layers, REF_WIDTHS)):
        main = split_width(channels, partial_ratio, f"{name} stage {i + 1}")
        fused = fuses_first(fusion)
        stages.append(StageSpec(
            () if pelee and i == 0 else ("maxpool",),
            num_blocks=n, block="two_way_dense" if pelee else "dense", hidden=REF_HIDDEN,
            growth=REF_GROWTH, csp=True, split=(channels - main, main), split_mode="slice",
            **partial_widths(fusion, main + n * REF_GROWTH, width),
        ))
        channels = width if fused else channels + n * REF_GROWTH
    levels = tuple(range(2, 2 + len(layers)))
    return BackboneSpec(name, stem=stem, stages=tuple(stages), levels=levels, default_size=256)


# Dense layers per stage (stride 4, 8, 16, 32[, 64]); chosen to reach Table 3's counts.
REF_LAYERS = {
    "CSPDenseNetRef": (1, 3, 5, 8, 8),
    "CSPPeleeNetRef": (1, 4, 8, 8, 8),
    "CSPDenseNetbRef": (1, 1, 2, 8),
    "CSPPeleeNetbRef": (1, 2, 8, 8),
}

_REF_DOC = (
    "Reconstruction (no cfg published). Darknet Reference (darknet.cfg) with its 3x3 convs from "
    "the stride-4 level on replaced by CSPDenseNet stages (Figure 2b): 2x2/2 max-pool, channel "
    "split (partial_ratio 0.5: halves), {layer}, a partial transition (1x1, same width), "
    "concatenation with the skipped part, and a 1x1 transition to darknet.cfg's width ({widths}). "
    "Stem: {stem}. Growth 32, 1x1 width 64; {n} dense layers per stage, the only free choice, "
    "picked to reach the paper's {target}: measured {measured}. {b}"
)
_DENSE = ("DenseNet layers (1x1 64 -> 3x3 32, output [new, x] as densenet201.cfg)",
          "darknet.cfg's 3x3 16 conv, 2x2 max-pool, 3x3 32 conv")
_PELEE = ("PeleeNet's two-way dense layers (bottleneck width 4: 1x1 64)", "PeleeNet's stem block (stride 4)")
_B = ('The "b" nets stop at stride 32 (widths up to 512) and are lighter; the paper gives no '
      "detail beyond their counts.")


def _ref_builder(name, pelee, b, target, measured, use):
    layers = REF_LAYERS[name]
    layer, stem = _PELEE if pelee else _DENSE
    body = _REF_DOC.format(
        layer=layer, stem=stem, widths=", ".join(map(str, REF_WIDTHS[: len(layers)])),
        n=", ".join(map(str, layers)), target=target, measured=measured, b=_B if b else "",
    )
    doc = (f"Instantiate {name} (Table 3; {use}), 256x256 like darknet.cfg.\n\n"
           + textwrap.fill(body.strip(), 92, initial_indent="    ", subsequent_indent="    ") + "\n")
    return make_builder(
        name, lambda fusion, partial_ratio: _csp_ref(name, pelee, layers, fusion, partial_ratio), doc, mode="baked"
    )


DarknetRef = make_builder("DarknetRef", _darknet_ref, """\
Instantiate the Darknet Reference model (darknet.cfg; Table 3's baseline of the Ref. nets), 256x256.

    cfg-exact: 3x3 convs of 16 ... 1024 filters, each but the last followed by a 2x2/2
    max-pool; levels P1 ... P6 (stride 64 before the classifier, as the cfg). 7,314,352
    kernel weights / 0.965 BFLOPs (Darknet: 7,314,352 / 0.967).
""", mode="none")
CSPDenseNetRef = _ref_builder("CSPDenseNetRef", False, False, "3.48M / 0.886", "3.48M / 0.898",
                              "CPU / mobile-GPU detection backbone with EFM and PRN heads")
CSPPeleeNetRef = _ref_builder("CSPPeleeNetRef", True, False, "4.10M / 1.103", "4.19M / 1.133",
                              "CPU / mobile-GPU detection backbone with EFM and PRN heads")
CSPDenseNetbRef = _ref_builder("CSPDenseNetbRef", False, True, "1.38M / 0.631", "1.37M / 0.641",
                               "fastest CPU detector backbone, with PRN")
CSPPeleeNetbRef = _ref_builder("CSPPeleeNetbRef", True, True, "2.01M / 0.897", "2.00M / 0.887",
                               "light PeleeNet-style reference backbone")

# ---------------------------------------------------------------------------------------
# ResNet-10 (resnet10.cfg) and CSPResNet-10
# ---------------------------------------------------------------------------------------

RESNET10_WIDTHS = (64, 128, 256, 512)


def _resnet10_stages():
    return [StageSpec((), 1, "basic", hidden=w, out=w, block_stride=1 if i == 0 else 2)
            for i, w in enumerate(RESNET10_WIDTHS)]


def _resnet10():
    return BackboneSpec("ResNet10", stem=(StageConv(64, 7, 2), "maxpool"), stages=tuple(_resnet10_stages()),
                        levels=(2, 3, 4, 5))


def _csp_resnet10(fusion="both", partial_ratio=0.5):
    stages = _resnet10_stages()[:3]
    base = RESNET10_WIDTHS[3] // 2
    main = split_width(base, partial_ratio, "CSPResNet10 stage 4")
    stages.append(StageSpec(
        (StageConv(base, 3, 2),), 1, "basic", hidden=main, out=main, csp=True,
        split=(base - main, main), split_mode="slice",
        **partial_widths(fusion, main, RESNET10_WIDTHS[3]),
    ))
    return BackboneSpec("CSPResNet10", stem=(StageConv(64, 7, 2), "maxpool"), stages=tuple(stages), levels=(2, 3, 4, 5))


ResNet10 = make_builder("ResNet10", _resnet10, """\
Instantiate ResNet-10 (resnet10.cfg; Table 3), 256x256.

    cfg-exact: 7x7/2 conv, 2x2/2 max-pool, four basic blocks (3x3 -> 3x3 linear, Darknet
    [shortcut] from the block input, leaky) of 64 ... 512 filters, the last three with a
    3x3/2 first conv; their shortcut adds the larger input sampled with stride 2 into the
    first channels, as the Darknet of the paper's time did. 5,240,000 kernel weights /
    2.272 BFLOPs (Darknet: 5,240,000 / 2.273).
""", mode="none")

CSPResNet10 = make_builder("CSPResNet10", _csp_resnet10, """\
Instantiate CSPResNet-10 (Table 3), 256x256.

    Reconstruction (no cfg published). ResNet-10 whose stride-32 stage, which holds 68% of
    its kernel weights, is a Cross Stage Partial stage: 3x3/2 conv to 256, channel split
    128 / 128, ResNet-10's basic block on one half, partial transition (1x1 128),
    concatenation and a 1x1 fusion conv back to 512. Stages 1-3 keep ResNet-10's blocks.
    The paper's -48% weights with only -16% BFLOPs leave no room for CSP stages at stride
    4-16 (every such variant we counted lands 9-30% low in BFLOPs). 2.73M / 1.951 BFLOPs
    (paper: 2.73M / 1.905).
""", mode="baked")

# ---------------------------------------------------------------------------------------
# MobileNet-v2 (mobilenet-v2.cfg) and CSPMobileNet-v2 (csmobilenet-v2.cfg)
# ---------------------------------------------------------------------------------------


def _inv(n, hidden, out, stride=1, multiplier=1):
    return StageSpec(num_blocks=n, block="inverted", hidden=hidden, out=out, block_stride=stride,
                     depth_multiplier=multiplier)


def _runs(first, *rest, **fields):
    """A stage whose main path is the block runs ``first, *rest``."""
    return dataclasses.replace(first, then=tuple(rest), **fields)


def _mobilenet_v2():
    # mobilenet-v2.cfg: the 64-filter blocks stay at stride 8 and the 96-filter ones open
    # stride 16 (the paper's MobileNetV2 strides at 64); counts follow the cfg.
    stages = (
        _inv(1, 32, 16),
        _runs(_inv(1, 96, 24, 2), _inv(1, 144, 24)),
        _runs(_inv(1, 144, 32, 2), _inv(2, 192, 32), _inv(1, 192, 64), _inv(3, 384, 64)),
        _runs(_inv(1, 384, 96, 2), _inv(2, 576, 96)),
        _runs(_inv(1, 576, 160, 2), _inv(2, 960, 160), _inv(1, 960, 320), transition=1280),
    )
    return BackboneSpec("MobileNetV2", stem=(StageConv(32, 3, 2),), stages=stages, levels=(1, 2, 3, 4, 5),
                        activation="relu", default_size=224)


def _csp_mobile_stage(expand, main, runs, fusion=0):
    """A csmobilenet-v2 stage: 1x1 expansion, then a depthwise 3x3/2 on the cross path and
    a depthwise-x2 3x3/2 + linear 1x1 (the first inverted block without its residual) on
    the main path, the other blocks, concatenation [main, cross]."""
    first, *rest = runs
    return StageSpec(
        (StageConv(expand, 1),), csp=True, cross_convs=(StageConv(expand, 3, 2, groups=expand),),
        main_convs=(StageConv(2 * expand, 3, 2, groups=expand), StageConv(main, 1, activation="linear")),
        num_blocks=first.num_blocks, block="inverted", hidden=first.hidden, out=first.out,
        depth_multiplier=2, then=tuple(rest), fusion_filters=fusion,
    )


def _csp_mobilenet_v2():
    stage1 = StageSpec(
        csp=True, num_blocks=0, cross_convs=(StageConv(16, 3, groups=16),),
        main_convs=(StageConv(32, 1), StageConv(32, 3, groups=32), StageConv(16, 1, activation="linear")),
    )
    stages = (
        stage1,
        _csp_mobile_stage(48, 24, [_inv(1, 72, 24, multiplier=2)]),
        _csp_mobile_stage(72, 32, [_inv(2, 96, 32, multiplier=2), _inv(1, 96, 64, multiplier=2),
                                       _inv(3, 192, 64, multiplier=2)]),
        _csp_mobile_stage(192, 96, [_inv(2, 288, 96, multiplier=2)]),
        _csp_mobile_stage(288, 160, [_inv(2, 480, 160, multiplier=2), _inv(1, 480, 320, multiplier=2)],
                          fusion=640),
    )
    return BackboneSpec("CSPMobileNetV2", stem=(StageConv(32, 3, 2),), stages=stages, levels=(1, 2, 3, 4, 5),
                        activation="relu", default_size=224)


MobileNetV2 = make_builder("MobileNetV2", _mobilenet_v2, """\
Instantiate MobileNet-v2 as the authors' mobilenet-v2.cfg (reference repo; Table 3 of the README), 224x224.

    cfg-exact: inverted residual blocks (1x1 expansion, 3x3 depthwise, 1x1 linear
    projection, residual add when shapes agree), relu; depthwise convs are Keras
    DepthwiseConv2D. 3,470,784 kernel weights / 0.858 BFLOPs (Darknet: 3,470,784 / 0.859).
""", mode="none")

CSPMobileNetV2 = make_builder("CSPMobileNetV2", _csp_mobilenet_v2, """\
Instantiate CSPMobileNet-v2 as the authors' csmobilenet-v2.cfg, 224x224.

    cfg-exact: each stage expands its input (1x1), then a depthwise 3x3/2 forms the cross
    path while a depth-multiplier-2 depthwise 3x3/2 and a linear 1x1 start the main path of
    inverted residual blocks (depth multiplier 2); the stage ends with the concatenation
    [main, cross] (a 1x1 640 fusion after the last). 2,513,400 kernel weights / 0.764
    BFLOPs (Darknet: 2,513,400 / 0.764).
""", mode="fixed")

"""The big backbones of the paper and their baselines, as data: one StageSpec table each,
transcribed from the authors' Darknet cfgs (csdarknet53, darknet53, csresnet50,
resnet50 (in_progress/darknet/icfg layout), csresnext50, resnext50)."""

from keras_csp.models.application import BackboneSpec
from keras_csp.models.builders import make_builder
from keras_csp.models.stages import StageConv, StageSpec

RESNET_STEM = (StageConv(64, 7, 2), "maxpool")
# CSPResNe(X)t split convs: the model activation in the first and last stage, linear in
# between (as the cfgs).
_RES_SPLIT_ACT = (None, "linear", "linear", None)


def _darknet53(csp):
    stages = []
    for i, (width, blocks) in enumerate(zip((64, 128, 256, 512, 1024), (1, 2, 8, 8, 4))):
        down = (StageConv(width, 3, 2),)
        if not csp:
            stages.append(StageSpec(down, blocks, "darknet", width // 2, width))
            continue
        half = width if i == 0 else width // 2
        stages.append(
            StageSpec(
                down, blocks, "darknet", hidden=width // 2, out=half, csp=True,
                split=(half, half), transition=half, fusion_filters=width,
            )
        )
    return BackboneSpec(
        "CSPDarknet53" if csp else "Darknet53",
        stem=(StageConv(32, 3),),
        stages=tuple(stages),
        levels=(1, 2, 3, 4, 5),
    )


def _resnet(csp, groups):
    """ResNet-50 (groups=1) or ResNeXt-50 (groups=32), plain or CSP, as in the cfgs."""
    name = ("CSP" if csp else "") + ("ResNeXt50" if groups > 1 else "ResNet50")
    outs = (256, 512, 1024, 2048)
    hiddens = (128, 256, 512, 1024) if groups > 1 else (64, 128, 256, 512)
    stages = []
    if not csp:
        for i, blocks in enumerate((3, 4, 6, 3)):
            stages.append(
                StageSpec((), blocks, "bottleneck", hiddens[i], outs[i], groups, block_stride=1 if i == 0 else 2)
            )
    else:
        # CSP: blocks 3/3/5/2, the block keeps its width (ResNeXt) or halves it (ResNet);
        # stage 1 has no down conv (the stem's max-pool downsamples), the others a 3x3/2.
        for i, blocks in enumerate((3, 3, 5, 2)):
            width = outs[i] // 2  # transition / main width
            hidden = width if groups > 1 else width // 2
            if i == 0:
                hidden = 128 if groups > 1 else 64
            down = () if i == 0 else (StageConv(outs[i] // (2 if groups > 1 else 4), 3, 2, groups),)
            fusion = outs[i] if groups > 1 else outs[i] // 2
            stages.append(
                StageSpec(
                    down, blocks, "bottleneck", hidden=hidden, out=width, groups=groups, csp=True,
                    split=(width, width // 2 if i == 0 else width), split_activation=_RES_SPLIT_ACT[i],
                    transition=width, fusion_filters=fusion,
                )
            )
    return BackboneSpec(name, stem=RESNET_STEM, stages=tuple(stages), levels=(2, 3, 4, 5))


SPECS = {
    "CSPDarknet53": _darknet53(csp=True),
    "Darknet53": _darknet53(csp=False),
    "CSPResNet50": _resnet(csp=True, groups=1),
    "ResNet50": _resnet(csp=False, groups=1),
    "CSPResNeXt50": _resnet(csp=True, groups=32),
    "ResNeXt50": _resnet(csp=False, groups=32),
}

_SUMMARY = """Instantiate the {name} architecture of the authors' cfg ({cfg}), {size}x{size}."""

_CFGS = {
    "CSPDarknet53": "csdarknet53.cfg; -gamma and -omega variants",
    "Darknet53": "darknet53.cfg",
    "CSPResNet50": "csresnet50.cfg",
    "ResNet50": "in_progress/darknet/icfg/resnet50-leaky.cfg, the paper's layout",
    "CSPResNeXt50": "csresnext50.cfg; -gamma and -omega variants",
    "ResNeXt50": "resnext50.cfg",
}


def _builder(model_name):
    spec = SPECS[model_name]
    return make_builder(
        model_name, lambda: spec, _SUMMARY.format(name=model_name, cfg=_CFGS[model_name], size=spec.default_size),
        mode="generic", mish_variant="-omega" if model_name in ("CSPDarknet53", "CSPResNeXt50") else None,
    )


CSPDarknet53 = _builder("CSPDarknet53")
Darknet53 = _builder("Darknet53")
CSPResNet50 = _builder("CSPResNet50")
ResNet50 = _builder("ResNet50")
CSPResNeXt50 = _builder("CSPResNeXt50")
ResNeXt50 = _builder("ResNeXt50")

"""Every model of the library by name, so tools and tests can walk the zoo."""

from keras_csp import models

BACKBONES = {
    "CSPDarknet53": models.CSPDarknet53,
    "Darknet53": models.Darknet53,
    "CSPResNet50": models.CSPResNet50,
    "ResNet50": models.ResNet50,
    "CSPResNeXt50": models.CSPResNeXt50,
    "ResNeXt50": models.ResNeXt50,
}
# Names of the reference repo's cfg variants, mapped to (builder, arguments).
VARIANTS = {
    "csdarknet53": ("CSPDarknet53", {}),
    "csdarknet53-gamma": ("CSPDarknet53", {}),
    "csdarknet53-omega": ("CSPDarknet53", {"activation": "mish"}),
    "darknet53": ("Darknet53", {}),
    "csresnet50": ("CSPResNet50", {}),
    "csresnet50-gamma": ("CSPResNet50", {}),
    "csresnet50-omega": ("CSPResNet50", {"activation": "mish"}),
    "resnet50": ("ResNet50", {}),
    "csresnext50": ("CSPResNeXt50", {}),
    "csresnext50-gamma": ("CSPResNeXt50", {}),
    "csresnext50-omega": ("CSPResNeXt50", {"activation": "mish"}),
    "resnext50": ("ResNeXt50", {}),
}
for _act in ("leaky", "mish", "swish", "relu"):
    VARIANTS[f"darknet53-{_act}"] = ("Darknet53", {"activation": _act})
    VARIANTS[f"resnet50-{_act}"] = ("ResNet50", {"activation": _act})
    VARIANTS[f"resnext50-{_act}"] = ("ResNeXt50", {"activation": _act})


def names():
    """All buildable names: builder names and cfg-style variant names."""
    return sorted(BACKBONES) + sorted(VARIANTS)


def build(name, **kwargs):
    """Build a model by builder name (``CSPDarknet53``) or cfg name (``csdarknet53-omega``)."""
    if name in BACKBONES:
        return BACKBONES[name](**kwargs)
    if name in VARIANTS:
        builder, defaults = VARIANTS[name]
        return BACKBONES[builder](**{**defaults, **kwargs})
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(names())}.")

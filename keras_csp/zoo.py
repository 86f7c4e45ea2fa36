"""Every model of the library by name, so tools and tests can walk the zoo.

A face over :mod:`keras_csp.registry`: the backbones register in ``keras_csp.models``, the cfg
variant names below, the detectors in ``keras_csp.detectors.builders``.
"""

import functools

import keras_csp.models as models  # noqa: PLR0402  (the package, not keras_csp/__init__: no cycle)
import keras_csp.registry as registry  # noqa: PLR0402  (the module, not keras_csp/__init__: no cycle)

# Every backbone builder, as keras_csp.models registers them (one list, there).
BACKBONES = {name: getattr(models, name) for name in registry.names("backbone")}
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

# The small and mobile backbones' cfg names of the reference repo and the Table 3 / README
# variants (swish, SE, mish).
VARIANTS.update({
    "darknet": ("DarknetRef", {}),
    "resnet10": ("ResNet10", {}),
    "mobilenet-v2": ("MobileNetV2", {}),
    "csmobilenet-v2": ("CSPMobileNetV2", {}),
    "densenet201": ("DenseNet201", {}),
    "densenet201-elastic": ("DenseNet201Elastic", {}),
    "csdensenet201-elastic": ("CSPDenseNet201Elastic", {}),
    "csdarknet53-elastic": ("CSPDarknet53Elastic", {}),
    "csresnet50-elastic": ("CSPResNet50Elastic", {}),
    "csresnext50-elastic": ("CSPResNeXt50Elastic", {}),
    "peleenet-swish": ("PeleeNet", {"activation": "swish"}),
    "peleenet-swish-se": ("PeleeNet", {"activation": "swish", "se": True}),
    "peleenet-mish": ("PeleeNet", {"activation": "mish"}),
    "csppeleenet-swish": ("CSPPeleeNet", {"activation": "swish"}),
    "csppeleenet-swish-se": ("CSPPeleeNet", {"activation": "swish", "se": True}),
    "csppeleenet-mish": ("CSPPeleeNet", {"activation": "mish"}),
})
# YOLOv4-tiny's backbone: layers 0-26 of yolov4-tiny.cfg.
VARIANTS["csdarknet53-tiny"] = ("CSPDarknet53Tiny", {})
for _act in ("leaky", "mish", "swish", "relu"):
    VARIANTS[f"densenet201-{_act}"] = ("DenseNet201", {"activation": _act})


for _variant, (_builder, _defaults) in VARIANTS.items():
    registry.register(_variant, functools.partial(BACKBONES[_builder], **_defaults), "variant")


def names():
    """All registered names: backbones, cfg-style variant names and detectors."""
    return registry.names("backbone") + registry.names("variant") + registry.names("detector")


def build(name, **kwargs):
    """Build a model by builder name (``CSPDarknet53``), cfg name (``csdarknet53-omega``),
    detector name (``CSPDarknet53-PANet-SPP``), ``BACKBONE+NECK`` or ``module:function``: the
    grammar of :func:`keras_csp.registry.build`. A detector takes no ``include_top``."""
    if registry.kind_of(name) == "detector" or "+" in str(name):
        kwargs.pop("include_top", None)  # detectors have no classifier top
    return registry.build(name, **kwargs)

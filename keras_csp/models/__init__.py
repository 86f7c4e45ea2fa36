"""Backbone builders (keras.applications conventions) and their shared machinery."""

import warnings as _warnings

from keras_csp.models.application import feature_extractor, preprocess_input, pyramid_outputs
from keras_csp.models.families import (
    CSPDarknet53,
    CSPResNet50,
    CSPResNeXt50,
    Darknet53,
    ResNet50,
    ResNeXt50,
)
from keras_csp.models.stages import StageConv, StageSpec, build_stage

__all__ = [
    "CSPDarknet53", "CSPResNet50", "CSPResNeXt50", "Darknet53", "ResNeXt50",
    "ResNet50", "StageConv", "StageSpec", "build_stage", "feature_extractor", "preprocess_input", "pyramid_outputs",
]

# Small and mobile backbones: PeleeNet family, Reference nets, ResNet-10,
# MobileNet-v2, DenseNet-201 and the Elastic variants.
from keras_csp.models.densenet import (  # noqa: E402
    CSPDenseNet201,
    CSPDenseNet201Elastic,
    DenseNet201,
    DenseNet201Elastic,
)
from keras_csp.models.elastic import CSPDarknet53Elastic, CSPResNet50Elastic, CSPResNeXt50Elastic  # noqa: E402
from keras_csp.models.small import (  # noqa: E402
    CSPDenseNetbRef,
    CSPDenseNetRef,
    CSPMobileNetV2,
    CSPPeleeNet,
    CSPPeleeNetbRef,
    CSPPeleeNetRef,
    CSPResNet10,
    DarknetRef,
    MobileNetV2,
    PeleeNet,
    ResNet10,
)

SMALL_BACKBONES = [
    "CSPDarknet53Elastic", "CSPDenseNet201", "CSPDenseNet201Elastic", "CSPDenseNetRef", "CSPDenseNetbRef",
    "CSPMobileNetV2", "CSPPeleeNet", "CSPPeleeNetRef", "CSPPeleeNetbRef", "CSPResNeXt50Elastic",
    "CSPResNet10", "CSPResNet50Elastic", "DarknetRef", "DenseNet201", "DenseNet201Elastic", "MobileNetV2",
    "PeleeNet", "ResNet10",
]
__all__ += SMALL_BACKBONES

# YOLOv4-tiny's backbone, transcribed from yolov4-tiny.cfg.
from keras_csp.models.tiny import CSPDarknet53Tiny  # noqa: E402

__all__ += ["CSPDarknet53Tiny"]

from keras_csp.registry import register as _register

for _name in ["CSPDarknet53", "Darknet53", "CSPResNet50", "ResNet50", "CSPResNeXt50", "ResNeXt50",
              *SMALL_BACKBONES, "CSPDarknet53Tiny"]:
    _register(_name, globals()[_name], "backbone")
del _name


def __getattr__(name):
    if name == "ConvSpec":  # the old name, one release
        _warnings.warn("keras_csp.models.ConvSpec is deprecated; use StageConv.", DeprecationWarning,
                       stacklevel=2)
        return StageConv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

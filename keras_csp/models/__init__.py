"""Backbone builders (keras.applications conventions) and their shared machinery."""

from keras_csp.models.application import feature_extractor, preprocess_input, pyramid_outputs
from keras_csp.models.families import (
    CSPDarknet53,
    CSPResNet50,
    CSPResNeXt50,
    Darknet53,
    ResNet50,
    ResNeXt50,
)
from keras_csp.models.stages import ConvSpec, StageSpec, build_stage

__all__ = [
    "CSPDarknet53", "CSPResNet50", "CSPResNeXt50", "ConvSpec", "Darknet53", "ResNeXt50",
    "ResNet50", "StageSpec", "build_stage", "feature_extractor", "preprocess_input", "pyramid_outputs",
]

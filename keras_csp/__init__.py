"""keras_csp: CSPNet backbones and real-time detectors for Keras 3 / TensorFlow."""

__version__ = "0.1.0"

from keras_csp import layers  # noqa: E402  (registers custom layers)
from keras_csp.models import (  # noqa: E402
    CSPDarknet53,
    CSPResNet50,
    CSPResNeXt50,
    Darknet53,
    ResNet50,
    ResNeXt50,
    feature_extractor,
    preprocess_input,
    pyramid_outputs,
)
from keras_csp.profiling import profile  # noqa: E402
from keras_csp import zoo  # noqa: E402

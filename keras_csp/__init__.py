"""keras_csp: CSPNet backbones and real-time detectors for Keras 3 / TensorFlow."""

__version__ = "0.1.0"

from keras_csp import _quiet  # noqa: E402  (the command's quiet console, set before TensorFlow loads)

if _quiet.is_command_line():
    _quiet.apply()

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
from keras_csp.models import (  # noqa: E402  (small and mobile backbones)
    CSPDarknet53Elastic,
    CSPDenseNet201,
    CSPDenseNet201Elastic,
    CSPDenseNetbRef,
    CSPDenseNetRef,
    CSPMobileNetV2,
    CSPPeleeNet,
    CSPPeleeNetbRef,
    CSPPeleeNetRef,
    CSPResNet10,
    CSPResNet50Elastic,
    CSPResNeXt50Elastic,
    DarknetRef,
    DenseNet201,
    DenseNet201Elastic,
    MobileNetV2,
    PeleeNet,
    ResNet10,
)
from keras_csp.models import CSPDarknet53Tiny  # noqa: E402  (YOLOv4-tiny's backbone)
from keras_csp import detectors  # noqa: E402  (YOLO detectors, necks, NMS)
from keras_csp.load import load_weights  # noqa: E402  (any model, any weights format)

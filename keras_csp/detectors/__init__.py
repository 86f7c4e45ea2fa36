"""YOLO detectors: necks, heads, the paper's named detectors, the training task (the loss
through ``fit``), NMS and inference."""

from keras_csp.detectors.task import YOLOTask
from keras_csp.ops.head_spec import HeadSpec

__all__ = ["HeadSpec", "YOLOTask"]

# Necks, heads, named detectors, NMS and inference.
from keras_csp.detectors import necks  # noqa: E402
from keras_csp.detectors.builders import (  # noqa: E402
    DETECTORS,
    CSPDarknet53PANetSPP,
    CSPDenseNetbRefPRN,
    CSPDenseNetRefEFMSAM,
    CSPDenseNetRefPRN,
    CSPPeleeNetEFMSAM,
    CSPPeleeNetRefEFMSAM,
    CSPPeleeNetRefPRN,
    CSPPeleeNetRefPRN3l,
    CSPResNet50PANetSPP,
    CSPResNeXt50PANetSPP,
    PeleeNetPRN,
    YOLOv3,
    YOLOv3SPP,
    YOLOv4,
    YOLOv4Tiny,
    build_detector,
)
from keras_csp.detectors.detector import Detector, YOLODetector, network_of  # noqa: E402
from keras_csp.detectors.inference import InferenceModel, postprocess, predict_boxes  # noqa: E402
from keras_csp.postprocess.nms import NMSConfig, non_max_suppression  # noqa: E402
from keras_csp.detectors import transfer  # noqa: E402  (fine-tuning from other classes)
from keras_csp.detectors.transfer import load_matching, load_pretrained  # noqa: E402

__all__ += [
    "CSPDarknet53PANetSPP", "CSPDenseNetRefEFMSAM", "CSPDenseNetRefPRN", "CSPDenseNetbRefPRN",
    "CSPPeleeNetEFMSAM", "CSPPeleeNetRefEFMSAM", "CSPPeleeNetRefPRN", "CSPPeleeNetRefPRN3l",
    "CSPResNeXt50PANetSPP", "CSPResNet50PANetSPP", "DETECTORS", "PeleeNetPRN",
    "Detector", "InferenceModel", "NMSConfig", "YOLODetector", "network_of", "YOLOv3", "YOLOv3SPP",
    "build_detector", "necks", "non_max_suppression", "postprocess", "predict_boxes",
    "YOLOv4", "YOLOv4Tiny", "load_matching", "load_pretrained", "transfer",
]

"""YOLO detectors: the training task (loss through ``fit``) and, later, necks and heads."""

from keras_csp.detectors.task import YOLOTask
from keras_csp.ops.head_spec import HeadSpec

__all__ = ["HeadSpec", "YOLOTask"]

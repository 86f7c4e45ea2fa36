"""Training losses: the YOLO loss with Darknet's label assignment, and a NaN guard for fit."""

from keras_csp.losses.nan_guard import NaNGuard
from keras_csp.losses.yolo import YoloLoss, reduce_over_batch
from keras_csp.ops.head_spec import HeadSpec

__all__ = ["HeadSpec", "NaNGuard", "YoloLoss", "reduce_over_batch"]

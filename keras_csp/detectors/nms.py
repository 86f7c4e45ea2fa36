"""Deprecated location: NMS lives in :mod:`keras_csp.postprocess.nms` (this alias stays one release)."""

from keras_csp.postprocess.nms import (  # noqa: F401
    CLASS_SHIFT,
    DARKNET_NMS_KINDS,
    DENSE_MAX_CANDIDATES,
    METHODS,
    NMS_RANGE,
    NMS_TILE,
    NMSConfig,
    builtin_nms,
    cross_overlap,
    darknet_nms,
    non_max_suppression,
    pairwise_overlap,
)

__all__ = ["DENSE_MAX_CANDIDATES", "METHODS", "NMS_TILE", "NMSConfig", "cross_overlap", "darknet_nms",
           "non_max_suppression", "pairwise_overlap"]

"""Post-processing, one of each: the letterbox geometry, NMS settings and kernels, ``postprocess``.

- ``geometry``: :class:`Letterbox` (original image <-> model input, forward and inverse, as
  tensors; ``tflite/yolo_numpy.py`` has its NumPy twin) and :func:`letterbox`.
- ``nms``: :class:`NMSConfig` and the two kernels (``non_max_suppression`` in-graph,
  ``builtin_nms`` for exported files).
- ``decoder``: :func:`postprocess` (decode with ``keras_csp.ops.decode``, score, NMS, undo
  the letterbox), used by detectors, evaluation and export alike.

It imports only TensorFlow and ``keras_csp.ops``, so ``data``, ``evaluation``, ``detectors``
and ``export`` all build on it.
"""

from keras_csp.postprocess.decoder import KERNELS, postprocess
from keras_csp.postprocess.geometry import PAD_VALUE, Letterbox, letterbox
from keras_csp.postprocess.nms import NMSConfig, builtin_nms, darknet_nms, non_max_suppression

__all__ = [
    "KERNELS",
    "PAD_VALUE",
    "Letterbox",
    "NMSConfig",
    "builtin_nms",
    "darknet_nms",
    "letterbox",
    "non_max_suppression",
    "postprocess",
]

"""Detections for images of any size, in the pixels of each original image.

``InferenceModel`` / ``predict_boxes`` letterbox each image to the detector's input
(:func:`keras_csp.postprocess.letterbox`, as ``keras_csp.data`` evaluation pipelines do) and
run :func:`keras_csp.postprocess.postprocess` (re-exported here) with that geometry.
"""

import numpy as np

from keras_csp.backend import tf
from keras_csp.detectors.detector import network_of
from keras_csp.postprocess.decoder import postprocess
from keras_csp.postprocess.geometry import letterbox
from keras_csp.postprocess.nms import NMSConfig


def _as_uint8(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"Each image must be [height, width, 3] RGB; received shape {image.shape}.")
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):
        if image.size and (image.min() < 0.0 or image.max() > 1.0):
            raise ValueError(
                "Float images must hold values in [0, 1]; received values in "
                f"[{image.min():.3g}, {image.max():.3g}]. Pass uint8 for 0-255 images."
            )
        return np.round(image * 255.0).astype(np.uint8)
    raise ValueError(f"Images must be uint8 or float in [0, 1]; received dtype {image.dtype}.")


class InferenceModel:
    """A detector plus its post-processing, for images of any size.

    Args:
      detector: a :class:`~keras_csp.detectors.Detector` (or any model returning raw heads,
        with ``heads`` given).
      input_size: the square side the images are letterboxed to; default the detector's
        static input size (required when the detector's input is dynamic).
      nms: ``NMSConfig`` or dict; default the detector's own.
      heads: head specs, when ``detector`` does not carry them.
      batch_size: images per forward pass.

    Calling it on a list of ``[H, W, 3]`` images (uint8, or float in [0, 1]) or an
    ``[N, H, W, 3]`` array returns numpy arrays ``boxes [N, K, 4]`` (xyxy pixels of each
    original image), ``scores [N, K]``, ``classes [N, K]`` (-1 padding) and
    ``num_detections [N]``.
    """

    def __init__(self, detector, input_size=None, nms=None, heads=None, batch_size=8):
        self.detector = detector
        self.heads = tuple(heads) if heads is not None else tuple(detector.heads)
        config = nms if nms is not None else getattr(detector, "nms_config", None)
        self.nms = NMSConfig.coerce(config)
        network = network_of(detector)
        shape = network.inputs[0].shape
        if input_size is None:
            if shape[1] is None or shape[1] != shape[2]:
                raise ValueError(
                    f"The detector input {tuple(shape)} has no static square size; pass "
                    "input_size=<side in pixels>."
                )
            input_size = int(shape[1])
        if int(input_size) % 32:
            raise ValueError(f"input_size must be a multiple of 32; received {input_size}.")
        self.input_size = int(input_size)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1; received {batch_size}.")
        self.batch_size = int(batch_size)
        self._network = network
        self._run = tf.function(self._forward, reduce_retracing=True)

    def letterbox(self, image):
        """``(input float32 [S, S, 3] in [0, 1], image_info [4, 2])`` for one image."""
        padded, geometry = letterbox(tf.constant(_as_uint8(image)), self.input_size)
        return padded, geometry.to_info()

    def _forward(self, images, image_info):
        raw = self._network(images, training=False)
        return postprocess(raw, self.heads, self.nms, (self.input_size, self.input_size), image_info)

    def __call__(self, images):
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        images = list(images)
        results = []
        for start in range(0, len(images), self.batch_size):
            chunk = [self.letterbox(im) for im in images[start:start + self.batch_size]]
            batch = tf.stack([c[0] for c in chunk])
            info = tf.stack([c[1] for c in chunk])
            results.append({k: v.numpy() for k, v in self._run(batch, info).items()})
        if not results:
            k = self.nms.max_detections
            return {
                "boxes": np.zeros((0, k, 4), np.float32), "scores": np.zeros((0, k), np.float32),
                "classes": np.zeros((0, k), np.int32), "num_detections": np.zeros((0,), np.int32),
            }
        return {key: np.concatenate([r[key] for r in results]) for key in results[0]}


def predict_boxes(detector, images, input_size=None, nms=None, **kwargs):
    """Detections for ``images`` of any size: see :class:`InferenceModel`."""
    return InferenceModel(detector, input_size=input_size, nms=nms, **kwargs)(images)


__all__ = ["InferenceModel", "postprocess", "predict_boxes"]

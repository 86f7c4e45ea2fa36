"""The single place that chooses the Keras implementation.

Keras 3 is the default. With ``TF_USE_LEGACY_KERAS=1`` (needed by
tensorflow-model-optimization for quantization-aware training) the same model
code runs on ``tf_keras``. Model code imports ``keras`` from here and uses raw
``tf`` ops only inside ``Layer.call`` (``keras.ops`` does not exist in tf_keras).
"""

import os

import tensorflow as tf

LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", "0").strip().lower() in ("1", "true", "yes")

if LEGACY_KERAS:
    import tf_keras as keras  # noqa: F401
else:
    import keras  # noqa: F401

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            "keras_csp needs the TensorFlow backend of Keras 3; KERAS_BACKEND is "
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
        )

PACKAGE = "keras_csp"


def register(cls):
    """Register a custom layer for ``.keras`` / H5 serialization under ``keras_csp>Name``."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


__all__ = ["tf", "keras", "LEGACY_KERAS", "register"]

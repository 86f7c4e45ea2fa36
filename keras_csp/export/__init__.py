"""Export to SavedModel and TFLite (fp32, fp16, int8, QAT) and the TFLite GPU-delegate check.

- ``to_saved_model(model, dir, ...)``: a SavedModel with a ``serving_default`` signature
  (float or uint8 input, optional letterbox and NMS).
- ``to_tflite(model, path, quantize=..., ...)``: builtin ops only, never Flex, plus a JSON
  sidecar for apps; the result carries the GPU-delegate report.
- ``check_gpu_compatibility(tflite)``: every op / tensor the GPU delegate cannot run.
- ``qat``: quantization-aware training and pruning with tensorflow-model-optimization
  (tf_keras only: run with ``TF_USE_LEGACY_KERAS=1``).
"""

_LAZY = {
    "to_saved_model": "keras_csp.export.saved_model",
    "to_tflite": "keras_csp.export.tflite",
    "ExportError": "keras_csp.export.tflite",
    "TFLiteExport": "keras_csp.export.tflite",
    "QUANTIZE_MODES": "keras_csp.export.tflite",
    "calibration_images": "keras_csp.export.calibration",
    "calibration_samples": "keras_csp.export.calibration",
    "check_gpu_compatibility": "keras_csp.export.gpu_check",
    "Finding": "keras_csp.export.gpu_check",
    "GpuReport": "keras_csp.export.gpu_check",
}


def __getattr__(name):
    # Lazy, so ``python -m keras_csp.export.gpu_check`` does not import it twice.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_csp.export' has no attribute {name!r}")


__all__ = sorted(_LAZY)

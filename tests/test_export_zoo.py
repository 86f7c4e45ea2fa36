"""The real models export to TFLite with zero GPU-delegate findings: one backbone by default,
every backbone and detector of the zoo behind the slow marker."""

import os

import numpy as np
import pytest

from keras_csp import zoo
from keras_csp.export import to_tflite

SIZE = 64


def _check(model, path, heads=None):
    result = to_tflite(model, path, heads=heads)
    assert result.gpu_report.ok, str(result.gpu_report)
    assert not any(name.startswith("Flex") for name in result.gpu_report.op_counts)
    return result


def test_a_csp_backbone_exports_clean_and_matches_keras(tmp_path):
    model = zoo.build("CSPResNeXt50", weights=None, include_top=False,
                      input_shape=(SIZE, SIZE, 3))
    result = _check(model, tmp_path / "cspresnext50.tflite")
    assert result.gpu_report.op_counts["CONV_2D"] >= 50  # grouped convs stay one CONV_2D
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=result.path).get_signature_runner("serving_default")
    image = np.random.default_rng(0).random((1, SIZE, SIZE, 3), dtype=np.float32)
    got = runner(images=image)["output"]
    want = model(image, training=False).numpy()
    np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max(), rtol=1e-3)


def _distinct_backbones():
    """One zoo name per distinct (builder, arguments): cfg aliases build the same model."""
    seen, names = set(), []
    for name in zoo.names():
        builder, kwargs = zoo.VARIANTS.get(name, (name, {}))
        key = (builder, tuple(sorted(kwargs.items())))
        if key not in seen:
            seen.add(key)
            names.append(name)
    return names


@pytest.mark.slow
@pytest.mark.parametrize("name", _distinct_backbones())
def test_every_backbone_exports_clean(name, tmp_path):
    model = zoo.build(name, weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    _check(model, tmp_path / f"{name}.tflite")


def _detector_names():
    try:
        from keras_csp.detectors import DETECTORS
    except ImportError:
        return []
    return sorted(DETECTORS)


@pytest.mark.slow
@pytest.mark.parametrize("name", _detector_names())
def test_every_detector_exports_clean(name, tmp_path):
    from keras_csp.detectors import build_detector

    detector = build_detector(name, 3, (128, 128, 3))
    result = _check(detector, tmp_path / "detector.tflite")
    assert [o["name"] for o in result.sidecar["outputs"]] == [
        f"stride{h.stride}" for h in detector.heads]
    assert os.path.exists(result.sidecar_path)

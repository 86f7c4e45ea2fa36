"""The named builders load the authors' .weights layout and give Darknet's own outputs."""

import json
import subprocess
import sys

import numpy as np
import pytest

import keras_csp

# vector name -> (builder, {pyramid level: Darknet layer index of that stage's output})
CASES = {
    "csresnext50": ("CSPResNeXt50", {"P2": 19, "P3": 38, "P4": 65}),
    "csdarknet53": ("CSPDarknet53", {"P1": 10, "P2": 23, "P3": 54, "P4": 85}),
    "darknet53": ("Darknet53", {"P1": 4, "P2": 11, "P3": 36, "P4": 61}),
    "resnext50_old": ("ResNeXt50", {}),
}
FAST = ("csresnext50",)


def _weights_for(shared_dir, tmp_path, vector):
    meta = json.loads(str(vector["meta_json"]))
    cfg = next(p for p in (shared_dir / "darknet/cfg").rglob(meta["cfg"].split("/")[-1]))
    path = tmp_path / "seeded.weights"
    subprocess.run(
        [sys.executable, str(shared_dir / "darknet/make_weights.py"), str(cfg), str(path),
         "--seed", str(meta["weights_seed"])],
        check=True, capture_output=True,
    )
    return path


@pytest.mark.parametrize("name", [*FAST, *(pytest.param(n, marks=pytest.mark.slow) for n in CASES if n not in FAST)])
def test_named_builder_with_darknet_weights_matches_darknet(shared_dir, tmp_path, name):
    vector = np.load(shared_dir / "darknet/vectors" / f"{name}.npz")
    builder, levels = CASES[name]
    weights = _weights_for(shared_dir, tmp_path, vector)
    image = vector["input"][None]
    shape = tuple(image.shape[1:])
    try:
        model = getattr(keras_csp, builder)(weights=str(weights), input_shape=shape)
        # Without the top the same file loads the backbone and ignores the classifier.
        backbone = getattr(keras_csp, builder)(weights=str(weights), include_top=False, input_shape=shape)
    finally:
        weights.unlink(missing_ok=True)
    probs = model(image, training=False).numpy()[0]
    reference = vector["output"].reshape(-1)
    assert np.abs(probs - reference).max() <= 1e-3 * np.abs(reference).max()
    assert np.argmax(probs) == np.argmax(reference)
    features = keras_csp.feature_extractor(backbone, tuple(levels))(image, training=False) if levels else {}
    for level, index in levels.items():
        key = f"layer_{index:03d}"
        got = np.asarray(features[level])[0].reshape(-1)
        if key in vector.files:
            ref = vector[key].reshape(-1)
        else:
            got, ref = got[vector[f"{key}_subset_idx"]], vector[f"{key}_subset_values"]
        assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max(), level


def test_truncated_weights_fail_before_assigning(shared_dir, tmp_path):
    vector = np.load(shared_dir / "darknet/vectors/csresnext50.npz")
    weights = _weights_for(shared_dir, tmp_path, vector)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"holds 10,307,409 floats .* needs 20,614,824 floats"):
        keras_csp.CSPResNeXt50(weights=str(weights))

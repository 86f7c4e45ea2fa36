"""Darknet's own outputs (../shared/darknet/vectors) against the Keras models, layer by layer.

Each vector names its cfg (by md5) and the seed-0 weights it was computed with; the test
regenerates those weights with make_weights.py in a temp folder, checks their md5, loads
them with ``keras_csp.darknet.load`` and compares every saved layer within
``1e-3 * max|reference|``. Two vectors run by default, the big ones with ``-m slow``.
"""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from keras_csp.darknet import load

FAST = ("csmobilenet-v2", "csresnext50")
SLOW = ("csdarknet53", "darknet53", "resnext50_old", "csdarknet53-panet-spp")


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _cfg_with_md5(shared_dir, md5):
    for path in sorted((shared_dir / "darknet" / "cfg").rglob("*.cfg")):
        if hashlib.md5(path.read_bytes()).hexdigest() == md5:
            return path
    pytest.fail(f"no cfg in ../shared/darknet/cfg has md5 {md5}")


def _reference(vector, index):
    key = f"layer_{index:03d}"
    shape = tuple(int(d) for d in vector[f"{key}_shape"])
    if key in vector.files:
        return shape, None, vector[key]
    return shape, vector[f"{key}_subset_idx"], vector[f"{key}_subset_values"]


@pytest.mark.parametrize(
    "name", [*FAST, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOW)]
)
def test_keras_model_reproduces_darknet(name, shared_dir, tmp_path):
    vector = np.load(shared_dir / "darknet" / "vectors" / f"{name}.npz")
    meta = json.loads(str(vector["meta_json"]))
    cfg = _cfg_with_md5(shared_dir, meta["cfg_md5"])
    weights = tmp_path / "seeded.weights"
    try:
        subprocess.run(
            [sys.executable, str(shared_dir / "darknet" / "make_weights.py"), str(cfg),
             str(weights), "--seed", str(meta["weights_seed"])],
            check=True, capture_output=True,
        )
        assert _md5(weights) == meta["weights_md5"], "make_weights.py gave other weights"
        indices = [int(i) for i in vector["layer_indices"]]
        model = load(cfg, weights, outputs=indices)
    finally:
        weights.unlink(missing_ok=True)  # 0.1-0.3 GB; never left behind
    outputs = model(vector["input"][None])
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    assert len(outputs) == len(indices)
    for index, output, kind in zip(indices, outputs, vector["layer_types"]):
        output = np.asarray(output)[0]
        shape, subset, reference = _reference(vector, index)
        assert output.shape == shape, (index, kind)
        got = output.reshape(-1)[subset] if subset is not None else output
        error = np.abs(got.reshape(reference.shape) - reference).max()
        assert error <= 1e-3 * np.abs(reference).max(), (index, kind, error)
    final = np.asarray(outputs[-1])[0].reshape(-1)
    if indices[-1] == meta["n_layers"] - 1 and "output" in vector.files:
        reference = vector["output"].reshape(-1)
        assert np.abs(final - reference).max() <= 1e-3 * np.abs(reference).max()

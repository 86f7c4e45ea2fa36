"""Darknet's own outputs (../shared/darknet/vectors) against the Keras models, layer by layer.

Each vector names its cfg (by md5) and the seed-0 weights it was computed with; the test
regenerates those weights with make_weights.py in a temp folder, checks their md5, loads
them with ``keras_csp.darknet.load`` and compares every saved layer within
``1e-3 * max|reference|``. Two vectors run by default, the big ones with ``-m slow``; the
detector vector also runs by default from Darknet's own backbone outputs (its neck and
heads, decoded with the cfg's head specs), the whole network from the image with ``-m slow``.
"""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from keras_csp import darknet
from keras_csp.backend import keras
from keras_csp.darknet import load
from keras_csp.ops import decode_heads

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


def _load_seeded(shared_dir, tmp_path, vector, outputs):
    """The vector's cfg and ``load(cfg, seed-0 weights, outputs=...)`` (weights md5-checked)."""
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
        return cfg, load(cfg, weights, outputs=outputs)
    finally:
        weights.unlink(missing_ok=True)  # 0.1-0.3 GB; never left behind


def _assert_close(got, index, vector, kind=None):
    shape, subset, reference = _reference(vector, index)
    assert got.shape == shape, (index, kind)
    got = got.reshape(-1)[subset] if subset is not None else got
    error = np.abs(got.reshape(reference.shape) - reference).max()
    assert error <= 1e-3 * np.abs(reference).max(), (index, kind, error)


@pytest.mark.parametrize(
    "name", [*FAST, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOW)]
)
def test_keras_model_reproduces_darknet(name, shared_dir, tmp_path):
    vector = np.load(shared_dir / "darknet" / "vectors" / f"{name}.npz")
    meta = json.loads(str(vector["meta_json"]))
    indices = [int(i) for i in vector["layer_indices"]]
    _, model = _load_seeded(shared_dir, tmp_path, vector, indices)
    outputs = model(vector["input"][None])
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    assert len(outputs) == len(indices)
    for index, output, kind in zip(indices, outputs, vector["layer_types"]):
        _assert_close(np.asarray(output)[0], index, vector, kind)
    final = np.asarray(outputs[-1])[0].reshape(-1)
    if indices[-1] == meta["n_layers"] - 1 and "output" in vector.files:
        reference = vector["output"].reshape(-1)
        assert np.abs(final - reference).max() <= 1e-3 * np.abs(reference).max()


def _darknet_boxes(yolo_out, anchors, net_hw):
    """Darknet's get_yolo_box on a [yolo] layer's output (HWC, anchor-major [x, y, w, h,
    obj, cls...]): normalised xyxy, objectness, class probabilities in (row, col, anchor) order."""
    height, width, channels = yolo_out.shape
    parts = yolo_out.reshape(height, width, len(anchors), channels // len(anchors))
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    x = (cols[..., None] + parts[..., 0]) / width
    y = (rows[..., None] + parts[..., 1]) / height
    w = np.exp(parts[..., 2]) * np.array([a[0] for a in anchors]) / net_hw[1]
    h = np.exp(parts[..., 3]) * np.array([a[1] for a in anchors]) / net_hw[0]
    boxes = np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], -1).reshape(-1, 4)
    return boxes, parts[..., 4].reshape(-1), parts[..., 5:].reshape(-1, parts.shape[-1] - 5)


def test_detector_neck_and_heads_reproduce_darknet(shared_dir, tmp_path):
    """The detector vector, fast: csdarknet53-panet-spp's SPP output and PANet neck with its
    three heads (layers 114-161, 23.7 of the 60.1 BFLOPs) run on Darknet's own backbone
    tensors (layers 54, 85, 113) and must give Darknet's [yolo] inputs and outputs; the
    boxes the cfg's head specs decode from them must be the ones Darknet's [yolo] outputs
    give. (The backbone's layers are the csdarknet53 classifier vector's, slow; this whole
    network from the image: ``-m slow`` above.)"""
    vector = np.load(shared_dir / "darknet" / "vectors" / "csdarknet53-panet-spp.npz")
    feeds, compared = (54, 85, 113), (138, 139, 140, 149, 150, 151, 160, 161)
    cfg, model = _load_seeded(shared_dir, tmp_path, vector, [*feeds, *compared])
    neck = keras.Model(model.outputs[: len(feeds)], model.outputs[len(feeds):])
    outputs = neck([vector[f"layer_{i:03d}"][None] for i in feeds])
    outputs = {i: np.asarray(o)[0] for i, o in zip(compared, outputs)}
    for index in compared:
        _assert_close(outputs[index], index, vector)
    heads = darknet.head_specs(cfg)
    assert [h.stride for h in heads] == [8, 16, 32]
    decoded = decode_heads([outputs[i][None] for i in (138, 149, 160)], heads, (416, 416))
    want = [_darknet_boxes(vector[f"layer_{i:03d}"], h.anchors, (416, 416))
            for i, h in zip((139, 150, 161), heads)]
    for key, part in (("boxes", 0), ("objectness", 1), ("class_probs", 2)):
        reference = np.concatenate([w[part] for w in want])
        got = np.asarray(decoded[key])[0]
        assert got.shape == reference.shape, key
        assert np.abs(got - reference).max() <= 1e-3 * np.abs(reference).max(), key

""".weights reader / writer, the mapping onto Keras layers, and bad-file errors."""

import json
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

from keras_csp.darknet import (
    DarknetWeights,
    infer_network,
    load,
    load_conv_weights,
    model_from_cfg,
    read_weights,
    save_conv_weights,
    save_weights,
    write_weights,
)
from keras_csp.darknet.builder import block_name
from keras_csp.darknet.weights import load_arrays, param_layers_from_model, param_layers_from_network


def make_weights(shared_dir, cfg, out):
    script = shared_dir / "darknet" / "make_weights.py"
    subprocess.run([sys.executable, str(script), str(cfg), str(out), "--seed", "0"], check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="module")
def mobilenet(shared_dir, tmp_path_factory):
    """csmobilenet-v2: cfg, its seed-0 weights (10 MB) and Darknet's vector."""
    cfg = shared_dir / "darknet/cfg/reference-repo/csmobilenet-v2.cfg"
    weights = make_weights(shared_dir, cfg, tmp_path_factory.mktemp("w") / "m.weights")
    vector = np.load(shared_dir / "darknet/vectors/csmobilenet-v2.npz")
    yield cfg, weights, vector
    weights.unlink()


def block_names(network):
    return [block_name(spec.index) for spec in network.layers if spec.weight_floats]


def all_weights(model):
    return [np.array(w) for w in model.weights]


# --------------------------------------------------------------------------- the format


def test_read_then_write_gives_the_same_bytes(mobilenet, tmp_path):
    _, path, _ = mobilenet
    weights = read_weights(path)
    assert (weights.major, weights.minor, weights.revision, weights.seen) == (0, 2, 5, 0)
    assert weights.header_bytes == 20 and weights.values.size == (path.stat().st_size - 20) // 4
    write_weights(tmp_path / "copy.weights", weights)
    assert (tmp_path / "copy.weights").read_bytes() == path.read_bytes()


def test_old_header_with_32_bit_seen_round_trips(tmp_path):
    values = np.arange(10, dtype="<f4")
    raw = struct.pack("<iiiI", 0, 1, 0, 123456) + values.tobytes()
    (tmp_path / "old.weights").write_bytes(raw)
    weights = read_weights(tmp_path / "old.weights")
    assert weights.seen == 123456 and weights.header_bytes == 16
    np.testing.assert_array_equal(weights.values, values)
    assert weights.to_bytes() == raw


def test_too_short_header(tmp_path):
    (tmp_path / "bad.weights").write_bytes(struct.pack("<iiiQ", 0, 2, 5, 0)[:10])
    with pytest.raises(ValueError, match=r"10 bytes is too short for a Darknet weights header"):
        read_weights(tmp_path / "bad.weights")


def test_a_file_ending_mid_float_round_trips_but_never_loads(tmp_path):
    raw = struct.pack("<iiiQ", 0, 2, 5, 9) + np.ones(3, "<f4").tobytes() + b"\1\2"
    (tmp_path / "odd.weights").write_bytes(raw)
    weights = read_weights(tmp_path / "odd.weights")
    assert weights.values.size == 3 and weights.tail == b"\1\2"
    assert weights.to_bytes() == raw
    with pytest.raises(ValueError, match=r"holds 3 floats \(plus 2 stray bytes\)"):
        load("[net]\nwidth=1\nheight=1\nchannels=1\n[convolutional]\n", weights)


# ------------------------------------------------------------------------- load / save


def test_model_round_trip_gives_the_same_bytes(mobilenet, tmp_path):
    cfg, path, vector = mobilenet
    model = load(cfg, path)
    out = save_weights(model, cfg, tmp_path / "back.weights", header=read_weights(path))
    assert out.values.size == infer_network(cfg).weight_floats
    assert (tmp_path / "back.weights").read_bytes() == path.read_bytes()


def test_load_conv_weights_interface_gives_darknets_output(mobilenet, tmp_path):
    """The named-backbone path: conv blocks by name, in cfg order."""
    cfg, path, vector = mobilenet
    network = infer_network(cfg)
    model = model_from_cfg(network)
    header = load_conv_weights(model, block_names(network), path)
    assert header.values.size == network.weight_floats
    output = np.asarray(model(vector["input"][None]))[0]
    reference = vector["output"].reshape(output.shape)
    assert np.abs(output - reference).max() <= 1e-3 * np.abs(reference).max()
    save_conv_weights(model, block_names(network), tmp_path / "w.weights", header)
    assert (tmp_path / "w.weights").read_bytes() == path.read_bytes()


def test_truncated_file_fails_before_building_and_names_the_layer(mobilenet, tmp_path):
    cfg, path, _ = mobilenet
    network = infer_network(cfg)
    data = path.read_bytes()
    cut = tmp_path / "cut.weights"
    cut.write_bytes(data[: len(data) // 2])
    found = (len(data) // 2 - 20) // 4
    built = []
    with pytest.raises(ValueError) as info:
        load(cfg, cut, progress=built.append)
    message = str(info.value)
    assert built == []  # no Keras layer was created
    assert f"holds {found:,} floats" in message
    assert f"needs {network.weight_floats:,} floats" in message
    match = re.search(r"runs out inside .*:(\d+): layer (\d+) \[convolutional\]", message)
    assert match, message
    # The named layer is the one whose floats straddle the cut.
    layers, offset = param_layers_from_network(network), 0
    for layer in layers:
        if offset + layer.count() > found:
            break
        offset += layer.count()
    spec = network.layers[int(match.group(2))]
    assert layer.where == spec.where() and int(match.group(1)) == spec.line


def test_truncated_file_leaves_a_model_untouched(mobilenet, tmp_path):
    cfg, path, _ = mobilenet
    network = infer_network(cfg)
    model = model_from_cfg(network)
    before = all_weights(model)
    cut = tmp_path / "cut.weights"
    cut.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match=f"needs {network.weight_floats:,} floats"):
        load_conv_weights(model, block_names(network), cut)
    assert all(np.array_equal(a, b) for a, b in zip(before, all_weights(model)))


def test_oversized_file_is_refused_unless_allowed(mobilenet, tmp_path):
    cfg, path, _ = mobilenet
    big = tmp_path / "big.weights"
    big.write_bytes(path.read_bytes() + np.ones(7, "<f4").tobytes())
    with pytest.raises(ValueError, match=r"7 floats are left over after the last layer"):
        load(cfg, big)
    model = load(cfg, big, allow_extra=True)
    assert model.count_params() == infer_network(cfg).weight_floats


def test_weights_of_another_cfg_are_refused(shared_dir, mobilenet, tmp_path):
    cfg, path, _ = mobilenet
    other = shared_dir / "darknet/cfg/reference-repo/darknet.cfg"
    with pytest.raises(ValueError, match=r"written for another cfg"):
        load(other, path)
    # Same float count, other layout: values land where variances must be positive.
    weights = read_weights(path)
    shuffled = DarknetWeights(values=-np.abs(weights.values[::-1]), path="shuffled.weights")
    with pytest.raises(ValueError, match=r"shuffled.weights: rolling_variance of .*csmobilenet-v2"
                                         r".cfg:\d+: layer 0 \[convolutional\] has negative"):
        load(cfg, shuffled)


def test_a_bad_last_layer_changes_nothing(mobilenet):
    cfg, path, _ = mobilenet
    network = infer_network(cfg)
    model = model_from_cfg(network)
    before = all_weights(model)
    weights = read_weights(path)
    values = weights.values.copy()
    values[-1] = np.nan  # last float of the last conv
    layers = param_layers_from_model(model, block_names(network))
    with pytest.raises(ValueError, match=r"weights of block 'layer079' contains NaN"):
        load_arrays(model, layers, DarknetWeights(values=values))
    assert all(np.array_equal(a, b) for a, b in zip(before, all_weights(model)))


# ------------------------------------------------------------- [connected], [batchnorm]

DENSE_CFG = """
[net]
width=3
height=4
channels=2

[connected]
output=5
batch_normalize=1
activation=leaky

[batchnorm]

[connected]
output=3
activation=linear
"""


def darknet_dense_forward(x, parts):
    """Darknet's forward for DENSE_CFG, from the per-layer arrays (CHW flattening)."""
    first, bn, last = parts
    y = first["weights"] @ x.transpose(2, 0, 1).ravel()
    y = (y - first["rolling_mean"]) / np.sqrt(first["rolling_variance"] + 1e-5)
    y = y * first["scales"] + first["biases"]
    y = np.where(y > 0, y, 0.1 * y)
    y = (y - bn["rolling_mean"]) / np.sqrt(bn["rolling_variance"] + 1e-5) * bn["scales"]
    y = y + bn["biases"]
    return last["weights"] @ y + last["biases"]


@pytest.mark.parametrize("major", [0, 1001], ids=["plain", "transposed"])
def test_connected_and_batchnorm_follow_darknet(tmp_path, major):
    network = infer_network(DENSE_CFG)
    rng = np.random.default_rng(0)
    layers = param_layers_from_network(network)
    parts, chunks = [], []
    for layer in layers:
        fields = {}
        for name, shape in layer.fields():
            values = rng.normal(size=shape).astype(np.float32)
            if name == "rolling_variance":
                values = np.abs(values) + 0.5
            fields[name] = values
        parts.append(fields)
        for name, shape in layer.fields(transposed=major > 1000):
            value = fields[name].T if name == "weights" and major > 1000 and layer.kind == "connected" \
                else fields[name]
            chunks.append(np.ascontiguousarray(value).ravel())
    weights = DarknetWeights(major=major, values=np.concatenate(chunks))
    path = tmp_path / "dense.weights"
    write_weights(path, weights)
    model = load(DENSE_CFG, path)
    x = rng.random((4, 3, 2)).astype(np.float32)
    got = np.asarray(model(x[None]))[0, 0, 0]
    np.testing.assert_allclose(got, darknet_dense_forward(x, parts), rtol=1e-4, atol=1e-5)
    save_weights(model, DENSE_CFG, tmp_path / "back.weights", header=weights)
    assert (tmp_path / "back.weights").read_bytes() == path.read_bytes()


def test_sub_model_outputs_still_load_every_layer(mobilenet):
    """Outputs that skip some weighted layers: the file still loads in full."""
    cfg, path, vector = mobilenet
    model = load(cfg, path, outputs=[0, 15])
    out0, out15 = (np.asarray(t)[0] for t in model(vector["input"][None]))
    for index, out in ((0, out0), (15, out15)):
        reference = vector[f"layer_{index:03d}"]
        assert np.abs(out - reference).max() <= 1e-3 * np.abs(reference).max()
    meta = json.loads(str(vector["meta_json"]))
    assert meta["weights_md5"]  # the vector names the weights it was computed with

"""cfg -> Keras: models agree with Darknet's shape inference; .keras files; the CLI."""

import argparse
import warnings

import numpy as np
import pytest

from keras_csp.backend import keras
from keras_csp.darknet import default_outputs, infer_network, load, model_from_cfg
from keras_csp.darknet.cli import add_darknet_parser, main
from keras_csp.darknet.weights import DarknetWeights, param_layers_from_network

# Small cfgs from ../shared built in the default suite (a few seconds in all); every cfg
# is built in the slow test (about 4 minutes on 2 cores).
SMALL = ("reference-repo/darknet.cfg", "reference-repo/resnet10.cfg",
         "darknet-repo/yolov3-tiny-prn.cfg", "darknet-repo/yolov4-tiny.cfg")
REJECTED = ("csresnet50-elastic-panet-spp.cfg", "csresnext50-elastic-panet-spp.cfg",
            "yolov3-spp-matrix.cfg")


def random_weights(network, seed=0):
    rng = np.random.default_rng(seed)
    chunks = []
    for layer in param_layers_from_network(network):
        for name, shape in layer.fields():
            values = rng.normal(size=shape) * 0.1
            if name == "rolling_variance":
                values = rng.uniform(0.5, 1.5, shape)
            chunks.append(values.astype(np.float32).ravel())
    return DarknetWeights(values=np.concatenate(chunks))


def check_against_spec(network):
    """Every Darknet layer's Keras output has Darknet's shape; params match the file."""
    every = list(range(len(network.layers)))
    model = model_from_cfg(network, outputs=every)
    for spec, tensor in zip(network.layers, model.outputs):
        assert tuple(tensor.shape[1:]) == spec.output_shape, spec.where()
    assert model.count_params() == network.weight_floats
    kernels = sum(int(np.prod(w.shape)) for w in model.weights
                  if len(w.shape) >= 2)  # conv and dense kernels
    assert kernels == network.kernel_weights
    return model


@pytest.mark.parametrize("relative", SMALL)
def test_small_cfgs_build_with_darknet_shapes(relative, shared_dir):
    network = infer_network(shared_dir / "darknet" / "cfg" / relative)
    check_against_spec(network)
    keras.backend.clear_session()


@pytest.mark.slow
def test_every_cfg_builds_with_darknet_shapes(shared_dir):
    paths = sorted((shared_dir / "darknet" / "cfg").rglob("*.cfg"))
    built = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            if path.name in REJECTED:
                continue
            model = check_against_spec(infer_network(path))
            assert model.name
            built += 1
            keras.backend.clear_session()
    assert built == len(paths) - len(REJECTED)


def test_detector_outputs_are_yolo_inputs_largest_map_first(shared_dir):
    network = infer_network(shared_dir / "darknet/cfg/darknet-repo/yolov3-tiny.cfg")
    indices = default_outputs(network)
    yolo = network.yolo_layers
    assert sorted(indices) == sorted(spec.index - 1 for spec in yolo)
    model = model_from_cfg(network)
    heights = [t.shape[1] for t in model.outputs]
    assert heights == sorted(heights, reverse=True) == [26, 13]  # cfg order is 13 then 26
    heads = network.heads()
    assert [h["stride"] for h in heads] == [416 // 26, 416 // 13]
    assert all(t.shape[-1] == len(h["anchors"]) * (5 + h["num_classes"])
               for t, h in zip(model.outputs, heads))


def test_input_size_override_rebuilds_every_shape(shared_dir):
    path = shared_dir / "darknet/cfg/reference-repo/resnet10.cfg"
    network = infer_network(path, input_size=(96, 128))
    model = check_against_spec(network)
    assert model.input_shape == (None, 96, 128, 3)
    assert network.layers[0].output_shape == (48, 64, 64)


TINY = """
[net]
width=24
height=24
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=mish

[maxpool]
size=3
stride=2

[convolutional]
batch_normalize=1
filters=8
size=3
groups=4
stride=1
pad=1
activation=leaky

[route]
layers=-1
groups=2
group_id=1

[upsample]
stride=2

[route]
layers=-1,0

[convolutional]
filters=12
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1
anchors=4,5, 8,9
classes=1
num=2
"""


@pytest.fixture
def tiny(tmp_path):
    network = infer_network(TINY)
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY)
    weights = tmp_path / "tiny.weights"
    weights.write_bytes(random_weights(network, seed=5).to_bytes())
    return cfg, weights


def test_keras_file_round_trip_keeps_outputs(tiny, tmp_path):
    cfg, weights = tiny
    model = load(cfg, weights, outputs=[6, 7])
    x = np.random.default_rng(0).random((2, 24, 24, 3)).astype(np.float32)
    expected = [np.asarray(t) for t in model(x)]
    model.save(tmp_path / "tiny.keras")
    restored = keras.models.load_model(tmp_path / "tiny.keras")
    for got, want in zip(restored(x), expected):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)


def run_cli(*argv):
    return main([str(a) for a in argv])


def test_cli_convert_summary_and_export(tiny, tmp_path, capsys):
    cfg, weights = tiny
    out = tmp_path / "tiny.keras"
    assert run_cli("convert", cfg, weights, out) == 0
    captured = capsys.readouterr()
    network = infer_network(cfg)
    assert f"BFLOPS {network.bflops:.3f}" in captured.out
    assert f"{network.kernel_weights:,} conv weights" in captured.out
    assert f"{len(network.layers)}/{len(network.layers)} layers" in captured.err  # progress bar
    model = keras.models.load_model(out)
    assert model.count_params() == network.weight_floats

    assert run_cli("export", out, cfg, tmp_path / "back.weights") == 0
    assert (tmp_path / "back.weights").read_bytes() == weights.read_bytes()

    assert run_cli("summary", cfg, "--input-size", 48, 48) == 0
    text = capsys.readouterr().out
    assert "48 x  48 x   3 ->   24 x  24 x   8" in text

    with pytest.raises(SystemExit, match="exists"):
        run_cli("convert", cfg, weights, out)


def test_cli_reports_bad_weights_without_writing(tiny, tmp_path, capsys):
    cfg, weights = tiny
    cut = tmp_path / "cut.weights"
    cut.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(SystemExit) as info:
        run_cli("convert", cfg, cut, tmp_path / "x.keras", "--quiet")
    message = str(info.value.code)  # a message, so the exit status is 1
    assert message.startswith("keras-csp darknet convert: error: ") and "needs" in message
    assert "\n" not in message
    assert not (tmp_path / "x.keras").exists()


def test_add_darknet_parser_wires_subcommands():
    parser = argparse.ArgumentParser(prog="keras-csp")
    add_darknet_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["darknet", "convert", "a.cfg", "b.weights", "c.keras",
                              "--input-size", "320", "416"])
    assert args.command == "darknet" and args.darknet_command == "convert"
    assert args.input_size == [320, 416] and callable(args.handler)

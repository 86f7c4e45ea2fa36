"""Fine-tuning from trained weights: YOLOv4-tiny for other classes from an 80-class Darknet
file (every block that fits loaded, the prediction convs re-created and reported), files of
another cfg refused before anything is assigned, a frozen backbone left unchanged by ``fit``,
and ``keras-csp train --model YOLOv4-tiny --weights coco`` through the registry (seeded weights
served from a loopback HTTP server)."""

import dataclasses
import functools
import hashlib
import http.server
import subprocess
import sys
import threading

import numpy as np
import pytest

from keras_csp import darknet, detectors
from keras_csp.detectors.heads import prior_biases
from keras_csp.detectors.transfer import load_matching

SIZE = 64


def _tiny_cfg(shared_dir):
    return shared_dir / "darknet" / "cfg" / "darknet-repo" / "yolov4-tiny.cfg"


def _make_weights(shared_dir, cfg, out):
    script = shared_dir / "darknet" / "make_weights.py"
    subprocess.run([sys.executable, str(script), str(cfg), str(out), "--seed", "0"],
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def coco_file(shared_dir, tmp_path_factory):
    """Seeded weights of yolov4-tiny.cfg (80 classes), as the published COCO file is laid out."""
    return _make_weights(shared_dir, _tiny_cfg(shared_dir),
                         tmp_path_factory.mktemp("tiny") / "yolov4-tiny.weights")


@pytest.fixture(scope="module")
def file_blocks(shared_dir, coco_file):
    """Darknet's values of every conv block of the file: {cfg-order position: [arrays]}."""
    reference = darknet.load(_tiny_cfg(shared_dir), coco_file, input_size=(SIZE, SIZE))
    network = darknet.infer_network(_tiny_cfg(shared_dir), (SIZE, SIZE))
    names = [darknet.block_name(s.index) for s in network.layers if s.weight_floats]
    values = []
    for name in names:
        layers = [reference.get_layer(f"{name}_conv")]
        if any(layer.name == f"{name}_bn" for layer in reference.layers):
            layers.append(reference.get_layer(f"{name}_bn"))
        values.append([w.numpy() for layer in layers for w in layer.weights])
    return values


def _block_values(det, block):
    model = det.detector
    layers = [model.get_layer(f"{block}_conv")]
    if any(layer.name == f"{block}_bn" for layer in model.layers):
        layers.append(model.get_layer(f"{block}_bn"))
    return [w.numpy() for layer in layers for w in layer.weights]


def test_other_classes_load_every_block_that_fits_and_recreate_the_heads(coco_file, file_blocks,
                                                                           capsys):
    det = detectors.YOLOv4Tiny(num_classes=3, input_shape=(SIZE, SIZE, 3), weights=str(coco_file))
    report = det.transfer_report
    assert report.source_num_classes == 80  # inferred from the file's float count
    assert [s.block for s in report.skipped] == ["head_p5", "head_p4"]
    assert [(s.expected, s.in_file) for s in report.skipped] == [
        ((24, 512, 1, 1), (255, 512, 1, 1)), ((24, 256, 1, 1), (255, 256, 1, 1))]
    assert len(report.loaded) == 19 and not report.missing
    printed = capsys.readouterr().out
    assert "loaded 19 of 21 conv blocks" in printed
    assert "skipped head_p4: 3 classes here, 80 in the file" in printed
    for position, block in enumerate(det.darknet_blocks):
        ours = _block_values(det, block)
        if block in report.loaded:
            for a, b in zip(ours, file_blocks[position]):
                np.testing.assert_array_equal(a, b)
        else:  # re-created: fresh kernel, the prior biases
            head = {f"head_{('P%d' % np.log2(h.stride)).lower()}": h for h in det.heads}[block]
            np.testing.assert_allclose(ours[1], prior_biases(head, SIZE))
            assert ours[0].shape == (1, 1, ours[0].shape[2], 24) and np.abs(ours[0]).max() > 0
    assert det.class_names is None


def test_a_file_of_another_cfg_is_refused_before_anything_is_assigned(shared_dir, coco_file,
                                                                      tmp_path):
    det = detectors.YOLOv4Tiny(num_classes=3, input_shape=(SIZE, SIZE, 3))
    before = [v.numpy().copy() for v in det.detector.weights]
    data = coco_file.read_bytes()
    cut = tmp_path / "cut.weights"
    cut.write_bytes(data[:20 + 4 * 1000])  # ends inside the second conv block
    with pytest.raises(ValueError, match="runs out inside block 'stem_conv2'"):
        load_matching(det, cut)
    longer = tmp_path / "longer.weights"
    longer.write_bytes(data + b"\0" * 400)
    with pytest.raises(ValueError, match="left over"):
        load_matching(det, longer)
    prn = _make_weights(shared_dir, shared_dir / "darknet/cfg/darknet-repo/yolov3-tiny-prn.cfg",
                        tmp_path / "prn.weights")
    with pytest.raises(ValueError, match="prn.weights"):
        load_matching(det, prn)
    with pytest.raises(ValueError, match="20 classes"):
        load_matching(det, coco_file, source_num_classes=20)
    after = [v.numpy() for v in det.detector.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_a_frozen_backbone_is_unchanged_by_a_fit_step(coco_file):
    from keras_csp.training.run import backbone_layers

    det = detectors.YOLOv4Tiny(num_classes=3, input_shape=(SIZE, SIZE, 3), weights=str(coco_file),
                               verbose=False)
    frozen = backbone_layers(det)
    assert {"stem_conv1_conv", "stage3_transition_bn", "top_conv_conv"} <= {l.name for l in frozen}
    assert not any(l.name.startswith(("neck_", "head_")) for l in frozen)
    for layer in frozen:
        layer.trainable = False
    before = {w.path: w.numpy().copy() for w in det.detector.weights}
    det.compile(optimizer="adam", run_eagerly=True)  # one step: eager is 3x faster than tracing
    images = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    boxes = -np.ones((2, 4, 5), np.float32)
    boxes[:, 0] = [0.2, 0.2, 0.7, 0.8, 1]
    det.fit(images, boxes, epochs=1, batch_size=2, verbose=0)
    frozen_paths = {w.path for layer in frozen for w in layer.weights}
    changed = {w.path for w in det.detector.weights if not np.array_equal(w.numpy(), before[w.path])}
    assert not changed & frozen_paths
    assert any(p.startswith("head_p4") for p in changed) and any(p.startswith("neck_") for p in changed)


@pytest.fixture()
def served_coco(coco_file, tmp_path, monkeypatch):
    """The registry's ``yolov4-tiny-coco`` pointed at the seeded file on a loopback server."""
    from keras_csp.weights import registry

    folder = tmp_path / "served"
    folder.mkdir()
    data = coco_file.read_bytes()
    (folder / "yolov4-tiny.weights").write_bytes(data)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    entry = dataclasses.replace(
        registry.get("yolov4-tiny-coco"), size=len(data),
        urls=(f"http://127.0.0.1:{httpd.server_address[1]}/yolov4-tiny.weights",),
        checksum=("sha256", (hashlib.sha256(data).hexdigest(),)))
    monkeypatch.setitem(registry._REGISTRY, "yolov4-tiny-coco", entry)
    monkeypatch.setenv("KERAS_CSP_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KERAS_CSP_WEIGHTS_MIRROR", raising=False)
    yield entry
    httpd.shutdown()
    httpd.server_close()


def test_training_builds_yolov4_tiny_from_coco_by_alias(served_coco, file_blocks, capsys):
    """The model ``keras-csp train --model YOLOv4-tiny --weights coco`` trains (build_model)."""
    from keras_csp.training.models import build_model

    det = build_model("YOLOv4-tiny", 8, SIZE, weights="coco")
    assert "skipped head_p4: 8 classes here, 80 in the file" in capsys.readouterr().out
    for position, block in enumerate(det.darknet_blocks):
        if not block.startswith("head_"):
            for a, b in zip(_block_values(det, block), file_blocks[position]):
                np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_train_cli_fine_tunes_yolov4_tiny_from_coco(served_coco, file_blocks, tmp_path, capsys):
    """``--weights coco`` with the data's 8 classes: the fitting blocks come from the served
    file; with the backbone frozen for the one epoch, the backbone is still the file's after
    training while the neck and the re-created heads have moved."""
    from keras_csp.cli import main
    from keras_csp.data import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", num_images=4, seed=1, image_size=(SIZE, SIZE),
                                   max_objects=2)
    out = tmp_path / "run"
    code = main(["train", "--train", data["coco_json"], "--model", "YOLOv4-tiny", "--weights", "coco",
                 "--image-size", str(SIZE), "--batch-size", "4", "--epochs", "1",
                 "--freeze-backbone-epochs", "1", "--augment", "none", "--optimizer", "adam",
                 "--out", str(out), "--no-tensorboard", "--no-save-keras", "--verbose", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "skipped head_p5: 8 classes here, 80 in the file" in printed
    det = detectors.YOLOv4Tiny(num_classes=8, input_shape=(SIZE, SIZE, 3),
                               weights=str(out / "final.weights.h5"))
    assert det.transfer_report is None  # a Keras file: all-or-nothing
    backbone = 15  # the first 15 blocks are CSPDarknet53-tiny (cfg layers 0-26)
    for position, block in enumerate(det.darknet_blocks):
        same = all(np.array_equal(a, b) for a, b in zip(_block_values(det, block), file_blocks[position]))
        if position < backbone:
            assert same, block
        elif block.startswith("neck_"):
            assert not same, block

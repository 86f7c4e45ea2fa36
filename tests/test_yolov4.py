"""YOLOv4 and YOLOv4-tiny against Darknet's yolov4.cfg / yolov4-tiny.cfg (../shared/darknet/cfg).

- every conv block, in ``darknet_blocks`` order, against the cfg's conv layers (filters,
  size, stride, input channels, batch norm, activation);
- kernel weights and BFLOPs against Darknet's counts of the same cfg (keras_csp.darknet);
- the heads against the cfg's [yolo] sections (anchors, masks, every loss option, the
  matching pool);
- seeded Darknet weights (make_weights.py): the named detector loaded with the file gives
  exactly ``keras_csp.darknet.load(cfg, file)``'s outputs;
- ``weights="coco"`` / ``"conv.29"`` through the registry, served from a loopback server;
- the CSPDarknet53-tiny backbone: strides, and the same weights from a detector file;
- a converted YOLOv4-tiny saved as ``.keras`` loads back (safe_mode=True) with equal outputs.
"""

import dataclasses
import functools
import hashlib
import http.server
import subprocess
import sys
import threading

import numpy as np
import pytest

import keras_csp
from keras_csp import darknet, detectors
from keras_csp.backend import keras
from keras_csp.darknet import yolo_head_spec

CFGS = {"YOLOv4": "darknet-repo/yolov4.cfg", "YOLOv4-tiny": "darknet-repo/yolov4-tiny.cfg"}
TINY_SIZE = 160
V4_SIZE = 128


def _cfg(shared_dir, name):
    return shared_dir / "darknet" / "cfg" / CFGS[name]


def _make_weights(shared_dir, cfg, out):
    script = shared_dir / "darknet" / "make_weights.py"
    subprocess.run([sys.executable, str(script), str(cfg), str(out), "--seed", "0"],
                   check=True, capture_output=True)
    return out


def _activation(model, block):
    names = {layer.name: layer for layer in model.layers}
    act = names.get(f"{block}_act")
    if act is None:
        return "linear"
    if isinstance(act, keras_csp.layers.Mish):
        return "mish"
    if isinstance(act, keras.layers.LeakyReLU):
        return "leaky"
    return type(act).__name__


def _signatures(model, blocks):
    names = {layer.name for layer in model.layers}
    out = []
    for block in blocks:
        conv = model.get_layer(f"{block}_conv")
        k, _, per_group, filters = conv.kernel.shape
        out.append((int(filters), int(k), int(conv.strides[0]), int(per_group),
                    f"{block}_bn" in names, _activation(model, block)))
    return out


def _cfg_signatures(network):
    return [(s.filters, s.size, s.stride_x, s.input_shape[2] // s.groups, s.batch_normalize,
             s.activation) for s in network.layers if s.type == "convolutional"]


def _cfg_heads(network):
    """HeadSpecs of the cfg's [yolo] sections (smallest stride first) and their anchor pools."""
    by_index = {spec.index: spec for spec in network.yolo_layers}
    heads, pools = [], []
    for head in network.heads():
        spec = by_index[head["layer"]]
        heads.append(yolo_head_spec(spec.options, head["stride"]))
        pools.append(tuple(tuple(float(v) for v in a) for a in spec.anchors))
    return heads, pools


def _check_against_cfg(det, network):
    assert _signatures(det.detector, det.darknet_blocks) == _cfg_signatures(network)
    convs = {layer.name[:-5] for layer in det.detector.layers if layer.name.endswith("_conv")}
    assert sorted(convs) == sorted(det.darknet_blocks)  # every conv listed exactly once
    prof = keras_csp.profile(det.detector)
    assert prof.params == network.kernel_weights
    assert abs(prof.bflops - network.bflops) / network.bflops < 0.005, (prof.bflops, network.bflops)
    heads, pools = _cfg_heads(network)
    assert list(det.heads) == heads  # anchors (masks), scale_x_y, ciou, normalizers, thresholds
    pool = tuple(tuple(float(v) for v in a) for a in det._matching_anchors)
    assert all(p == pool for p in pools)  # Darknet matches a truth against all the section's anchors


def _compare_outputs(det, reference, size):
    x = np.random.default_rng(1).random((2, size, size, 3), dtype=np.float32)
    ours = det(x, training=False)
    theirs = reference(x, training=False)
    assert [tuple(o.shape) for o in ours] == [tuple(t.shape) for t in theirs]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5 * np.abs(b).max())


@pytest.fixture(scope="module")
def tiny_weights(shared_dir, tmp_path_factory):
    return _make_weights(shared_dir, _cfg(shared_dir, "YOLOv4-tiny"),
                         tmp_path_factory.mktemp("tiny") / "yolov4-tiny.weights")


# -- YOLOv4-tiny --------------------------------------------------------------------------

def test_tiny_matches_the_cfg_conv_by_conv_and_in_counts(shared_dir):
    det = detectors.YOLOv4Tiny()
    assert det.detector.inputs[0].shape[1:3] == (416, 416)  # the cfg's size
    network = darknet.infer_network(_cfg(shared_dir, "YOLOv4-tiny"), (416, 416))
    assert network.kernel_weights == 6_049_888 and abs(network.bflops - 6.910) < 1e-3
    _check_against_cfg(det, network)
    assert [h.scale_x_y for h in det.heads] == [1.05, 1.05]
    assert all(h.iou_loss == "ciou" and h.iou_normalizer == 0.07 and h.ignore_thresh == 0.7
               for h in det.heads)


def test_tiny_reproduces_darknet_load_with_seeded_weights(shared_dir, tiny_weights):
    det = detectors.YOLOv4Tiny(input_shape=(TINY_SIZE, TINY_SIZE, 3), weights=str(tiny_weights))
    assert det.transfer_report.complete and det.transfer_report.source_num_classes == 80
    reference = darknet.load(_cfg(shared_dir, "YOLOv4-tiny"), tiny_weights,
                             input_size=(TINY_SIZE, TINY_SIZE))
    _compare_outputs(det, reference, TINY_SIZE)
    # A path without registry entry carries no class names.
    assert det.class_names is None


def test_tiny_backbone_strides_and_weights_from_the_detector_file(tiny_weights):
    backbone = keras_csp.CSPDarknet53Tiny(include_top=False, input_shape=(128, 128, 3),
                                          weights=str(tiny_weights))
    features = keras_csp.pyramid_outputs(backbone)
    assert {k: tuple(v.shape[1:]) for k, v in features.items()} == {
        "P1": (64, 64, 32), "P2": (32, 32, 64), "P3": (16, 16, 128), "P4": (8, 8, 256),
        "P5": (4, 4, 512)}
    assert len(backbone.darknet_blocks) == 15  # cfg layers 0-26 hold 15 convs
    assert keras_csp.profile(backbone).params == 3_625_824  # Darknet's count of layers 0-26
    det = detectors.YOLOv4Tiny(input_shape=(128, 128, 3), weights=str(tiny_weights))
    for block in backbone.darknet_blocks:
        for a, b in zip(backbone.get_layer(f"{block}_conv").weights,
                        det.detector.get_layer(f"{block}_conv").weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert keras_csp.zoo.build("csdarknet53-tiny", include_top=False).name == "CSPDarknet53Tiny"
    with pytest.raises(ValueError, match="No ImageNet weights were published for CSPDarknet53Tiny"):
        keras_csp.CSPDarknet53Tiny(weights="imagenet")


def test_tiny_saved_as_keras_loads_back_with_safe_mode(tiny_weights, tmp_path):
    det = detectors.YOLOv4Tiny(input_shape=(TINY_SIZE, TINY_SIZE, 3), weights=str(tiny_weights),
                               class_names=[f"c{i}" for i in range(80)])
    path = tmp_path / "yolov4-tiny.keras"
    det.save(path)
    back = keras.saving.load_model(path, safe_mode=True)
    assert back.class_names == det.class_names and back.heads == det.heads
    det.save_weights(tmp_path / "converted.weights.h5")
    again = detectors.YOLOv4Tiny(input_shape=(TINY_SIZE, TINY_SIZE, 3),
                                 weights=str(tmp_path / "converted.weights.h5"))
    assert again.transfer_report is None  # a Keras weights file: Keras' all-or-nothing load
    x = np.random.default_rng(2).random((1, TINY_SIZE, TINY_SIZE, 3), dtype=np.float32)
    for a, b, c in zip(det(x, training=False), back(x, training=False), again(x, training=False)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(a.numpy(), c.numpy())


# -- YOLOv4 -------------------------------------------------------------------------------

def test_yolov4_matches_the_cfg_conv_by_conv(shared_dir):
    det = detectors.YOLOv4(input_shape=(V4_SIZE, V4_SIZE, 3))
    _check_against_cfg(det, darknet.infer_network(_cfg(shared_dir, "YOLOv4"), (V4_SIZE, V4_SIZE)))
    assert [h.scale_x_y for h in det.heads] == [1.2, 1.1, 1.05]
    assert all(h.iou_thresh == 0.213 and h.iou_loss == "ciou" for h in det.heads)


@pytest.mark.slow
def test_yolov4_reproduces_darknet_load_with_seeded_weights(shared_dir, tmp_path):
    """~20 s of CPU: two 64M-weight builds and a 258 MB file."""
    cfg = _cfg(shared_dir, "YOLOv4")
    weights = _make_weights(shared_dir, cfg, tmp_path / "yolov4.weights")
    det = detectors.YOLOv4(input_shape=(V4_SIZE, V4_SIZE, 3), weights=str(weights))
    assert det.transfer_report.complete and len(det.transfer_report.loaded) == 110
    reference = darknet.load(cfg, weights, input_size=(V4_SIZE, V4_SIZE))
    _compare_outputs(det, reference, V4_SIZE)


@pytest.mark.slow
def test_yolov4_counts_at_the_cfg_size(shared_dir):
    det = detectors.YOLOv4()
    assert det.detector.inputs[0].shape[1:3] == (608, 608)
    network = darknet.infer_network(_cfg(shared_dir, "YOLOv4"), (608, 608))
    assert network.kernel_weights == 64_296_032 and abs(network.bflops - 128.459) < 1e-3
    _check_against_cfg(det, network)


# -- weights="coco" / "conv.29" through the registry ---------------------------------------

@pytest.fixture()
def server(tmp_path):
    """A loopback HTTP server for ``tmp_path / "served"``."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _serve_as(monkeypatch, server, entry_name, data):
    """Point registry entry ``entry_name`` at ``data`` on the loopback server (SHA-256 pinned)."""
    from keras_csp.weights import registry

    folder, base = server
    original = registry.get(entry_name)
    (folder / original.filename).write_bytes(data)
    entry = dataclasses.replace(original, urls=(f"{base}/{original.filename}",), size=len(data),
                                checksum=("sha256", (hashlib.sha256(data).hexdigest(),)))
    monkeypatch.setitem(registry._REGISTRY, entry_name, entry)
    return entry


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_CSP_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KERAS_CSP_WEIGHTS_MIRROR", raising=False)
    return tmp_path / "cache"


def test_tiny_coco_by_alias_has_coco_class_names(shared_dir, tiny_weights, server, cache,
                                                  monkeypatch):
    from keras_csp.weights import COCO_CLASSES

    _serve_as(monkeypatch, server, "yolov4-tiny-coco", tiny_weights.read_bytes())
    det = detectors.YOLOv4Tiny(input_shape=(TINY_SIZE, TINY_SIZE, 3), weights="coco")
    assert det.class_names == COCO_CLASSES and len(det.class_names) == 80
    assert (cache / "yolov4-tiny.weights").is_file()
    reference = darknet.load(_cfg(shared_dir, "YOLOv4-tiny"), tiny_weights,
                             input_size=(TINY_SIZE, TINY_SIZE))
    _compare_outputs(det, reference, TINY_SIZE)


def test_tiny_conv29_loads_the_first_29_cfg_layers(shared_dir, tiny_weights, server, cache,
                                                   monkeypatch, capsys):
    cfg = _cfg(shared_dir, "YOLOv4-tiny")
    network = darknet.infer_network(cfg, (416, 416))
    first = [s for s in network.layers if s.index < 29 and s.weight_floats]
    floats = sum(s.weight_floats for s in first)
    data = tiny_weights.read_bytes()
    # Darknet's `partial ... 29` writes the header and layers 0-28 of the same file.
    _serve_as(monkeypatch, server, "yolov4-tiny.conv.29", data[:20 + 4 * floats])
    det = detectors.YOLOv4Tiny(num_classes=3, input_shape=(TINY_SIZE, TINY_SIZE, 3),
                               weights="conv.29")
    report = det.transfer_report
    assert len(report.loaded) == len(first) == 17 and not report.skipped
    assert report.missing == ("head_p5", "neck_p4_reduce", "neck_p4_out", "head_p4")
    assert "not in the file (4, left as initialised)" in capsys.readouterr().out
    assert det.class_names is None
    reference = darknet.load(cfg, tiny_weights, input_size=(TINY_SIZE, TINY_SIZE))
    ref_blocks = [darknet.block_name(s.index) for s in first]
    for ours, theirs in zip(report.loaded, ref_blocks):
        for a, b in zip(det.detector.get_layer(f"{ours}_conv").weights,
                        reference.get_layer(f"{theirs}_conv").weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_named_detector_nms_follows_its_heads():
    """A detector whose heads ask for diounms predicts with DIoU NMS (as load_detector does)."""
    from keras_csp.backend import keras
    from keras_csp.detectors import Detector, HeadSpec

    heads = [HeadSpec(stride=32, anchors=((40, 40), (80, 80)), num_classes=2, nms_kind="diounms", beta_nms=0.8)]
    inputs = keras.Input((64, 64, 3))
    outputs = [keras.layers.Conv2D(2 * 7, 1, strides=32)(inputs)]
    det = Detector(keras.Model(inputs, outputs), heads)
    assert det.nms_config.method == "diou" and det.nms_config.beta == 0.8
    assert Detector(keras.Model(inputs, outputs), heads, nms={"iou_threshold": 0.3}).nms_config.method != "diou"


def test_predict_names_the_classes():
    """With class names, predict gives each box its name ("" for padding rows)."""
    from keras_csp import detectors

    det = detectors.YOLOv4Tiny(num_classes=3, input_shape=(64, 64, 3), class_names=["cat", "dog", "cup"])
    det.nms_config = det.nms_config.__class__.coerce({"score_threshold": 0.0, "max_detections": 5})
    out = det.predict(np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32), verbose=0)
    labels, classes = np.asarray(out["labels"]), np.asarray(out["classes"])
    assert labels.shape == classes.shape
    names = np.array(["cat", "dog", "cup"])
    for label, cls in zip(labels.reshape(-1), classes.reshape(-1)):
        assert (label.decode() if isinstance(label, bytes) else label) == (names[cls] if cls >= 0 else "")
    assert (classes >= 0).any()

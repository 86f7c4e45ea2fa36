"""tflite/ runtime tools: NumPy letterbox, decode and NMS agree with the library (TF), the
whole NumPy + LiteRT pipeline gives the Keras detector's boxes, and detect.py / benchmark.py
run with TensorFlow and Keras made unimportable."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from keras_csp.backend import keras, tf
from keras_csp.export import examples, to_tflite
from keras_csp.ops.decode import MAX_LOG_WH, decode_heads
from keras_csp.ops.head_spec import HeadSpec
from keras_csp.postprocess import NMSConfig, letterbox, postprocess
from keras_csp.postprocess import nms as nms_module

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tflite")
sys.path.insert(0, TOOLS)
import yolo_numpy  # noqa: E402


@pytest.fixture(scope="module")
def exported():
    """A real Detector (tiny backbone + PANet neck) and its fp32 .tflite file."""
    from keras_csp.detectors import YOLODetector, necks

    keras.utils.set_random_seed(3)
    detector = YOLODetector(
        examples.tiny_backbone(64), neck=necks.PANet(widths=(8, 16, 32)), num_classes=3,
        anchors=[[(10, 14), (23, 27), (37, 58)], [(81, 82), (135, 169), (344, 319)],
                 [(20, 20), (40, 40), (60, 60)]],
        nms={"score_threshold": 0.05}, prior_init=False)
    for level in ("p3", "p4", "p5"):  # spread scores: no near-ties between candidates
        layer = detector.detector.get_layer(f"head_{level}_conv")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * 4.0, bias])
    folder = tempfile.mkdtemp(prefix="test_tflite_tools_")
    result = to_tflite(detector, os.path.join(folder, "detector.tflite"),
                       labels=["circle", "square", "star"])
    yield detector, result
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("shape", [(45, 77), (64, 64), (100, 30), (20, 33)])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_letterbox_matches_the_exported_graph(shape, dtype):
    rng = np.random.default_rng(shape[0])
    image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    if dtype == "float32":
        image = image.astype(np.float32) / 255.0
    want, geometry = letterbox(tf.constant(image[None]), (64, 48))
    got, got_geometry = yolo_numpy.letterbox(image, (64, 48))
    assert got.shape == (64, 48, 3)
    assert np.abs(got - want.numpy()[0]).max() < 1e-6
    np.testing.assert_allclose(got_geometry.scale, geometry.scale.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(got_geometry.offset, geometry.offset.numpy())
    np.testing.assert_array_equal(got_geometry.to_info(), geometry.to_info().numpy())
    # The inverse too: input boxes (some beyond the image) back to original pixels.
    boxes = np.random.default_rng(1).uniform(-0.2, 1.2, (7, 4)).astype(np.float32)
    np.testing.assert_allclose(got_geometry.boxes_to_original(boxes),
                               geometry.boxes_to_original(boxes[None]).numpy()[0], rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("scale_x_y,new_coords", [(1.0, False), (1.1, False), (2.0, True)])
def test_decode_matches_keras_csp_ops(scale_x_y, new_coords):
    heads = [HeadSpec(8, [(10, 13), (16, 30)], 4, scale_x_y=scale_x_y, new_coords=new_coords),
             HeadSpec(16, [(30, 61)], 4, scale_x_y=scale_x_y, new_coords=new_coords)]
    rng = np.random.default_rng(1)
    raw = [rng.normal(0, 3, (1, 6, 8, 18)).astype(np.float32),
           rng.normal(0, 3, (1, 3, 4, 9)).astype(np.float32)]
    raw[0][0, 0, 0, 2] = 40.0  # beyond the exp() clip
    assert yolo_numpy.MAX_LOG_WH == MAX_LOG_WH  # one clip, written twice only for the lean runtime
    want = decode_heads([tf.constant(r) for r in raw], heads, (48, 64))
    sidecar_heads = [{"stride": h.stride, "anchors": h.anchors, "num_classes": h.num_classes,
                      "scale_x_y": h.scale_x_y, "new_coords": h.new_coords} for h in heads]
    boxes, objectness, class_probs = yolo_numpy.decode(raw, sidecar_heads, (48, 64))
    np.testing.assert_allclose(boxes, want["boxes"].numpy()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(objectness, want["objectness"].numpy()[0], atol=1e-6)
    np.testing.assert_allclose(class_probs, want["class_probs"].numpy()[0], atol=1e-6)


@pytest.mark.parametrize("class_aware,top_k", [(True, 1000), (False, 1000), (True, 40)])
def test_nms_matches_the_exported_graph(class_aware, top_k):
    heads = (HeadSpec(8, [(10, 13), (16, 30), (33, 23)], 3),
             HeadSpec(16, [(30, 61), (62, 45), (59, 119)], 3))
    rng = np.random.default_rng(7)
    raw = [rng.normal(0, 2, (1, 8, 8, 24)).astype(np.float32),
           rng.normal(0, 2, (1, 4, 4, 24)).astype(np.float32)]
    nms = NMSConfig(max_detections=30, iou_threshold=0.4, score_threshold=0.2,
                    class_aware=class_aware, pre_nms_top_k=top_k)
    want = postprocess([tf.constant(r) for r in raw], heads, nms, (64, 64), kernel="builtin",
                       pixels=False)
    sidecar_heads = [{"stride": h.stride, "anchors": h.anchors, "num_classes": 3} for h in heads]
    assert (yolo_numpy.NMS_RANGE, yolo_numpy.CLASS_SHIFT) == (nms_module.NMS_RANGE, nms_module.CLASS_SHIFT)
    got = yolo_numpy.nms(*yolo_numpy.decode(raw, sidecar_heads, (64, 64)), 0.4, 0.2, 30,
                         class_aware, top_k)
    count = int(want["num_detections"][0])
    assert count == len(got["scores"]) > 5
    np.testing.assert_allclose(got["boxes"], want["boxes"][0][:count].numpy(), atol=1e-6)
    np.testing.assert_allclose(got["scores"], want["scores"][0][:count].numpy(), atol=1e-6)
    np.testing.assert_array_equal(got["classes"], want["classes"][0][:count].numpy())


def test_numpy_pipeline_gives_the_keras_detector_boxes(exported):
    from keras_csp.detectors import predict_boxes

    detector, result = exported
    assert result.gpu_report.ok, str(result.gpu_report)
    model = yolo_numpy.TFLiteModel(result.path)
    rng = np.random.default_rng(0)
    for shape in [(45, 77), (90, 60)]:
        image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
        got = yolo_numpy.detect(model, image)
        want = predict_boxes(detector, [image], input_size=64)
        count = int(want["num_detections"][0])
        assert count == len(got["scores"]) > 10
        np.testing.assert_allclose(got["boxes"], want["boxes"][0][:count], atol=1e-3)
        np.testing.assert_allclose(got["scores"], want["scores"][0][:count], atol=1e-5)
        np.testing.assert_array_equal(got["classes"], want["classes"][0][:count])


BLOCK_TF = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "keras_csp"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _tool(script, *args):
    command = [sys.executable, "-c", BLOCK_TF, os.path.join(TOOLS, script), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_detect_script_on_a_folder_and_a_gif_without_tensorflow(exported, tmp_path):
    from PIL import Image

    detector, result = exported
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(2)
    for index, shape in enumerate([(45, 77), (64, 64)]):
        Image.fromarray(rng.integers(0, 256, shape + (3,), dtype=np.uint8)).save(
            photos / f"img{index}.png")
    frames = [Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
              for _ in range(3)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:])
    out = tmp_path / "out"
    run = _tool("detect.py", result.path, photos, tmp_path / "clip.gif", "--out", out,
                "--threads", 1)
    assert run.returncode == 0, run.stderr
    records = json.loads((out / "detections.json").read_text())
    assert [r["image"] for r in records] == ["img0.png", "img1.png", "clip.gif#0",
                                            "clip.gif#1", "clip.gif#2"]
    assert records[0]["size"] == [45, 77] and records[0]["detections"]
    first = records[0]["detections"][0]
    assert first["label"] in ("circle", "square", "star") and len(first["box"]) == 4
    assert sorted(p.name for p in out.glob("*.jpg")) == [
        "clip_gif_0.jpg", "clip_gif_1.jpg", "clip_gif_2.jpg", "img0.jpg", "img1.jpg"]
    # The same boxes as in-process for the first image.
    image = np.asarray(Image.open(photos / "img0.png").convert("RGB"))
    expected = yolo_numpy.detect(yolo_numpy.TFLiteModel(result.path), image)
    np.testing.assert_allclose([d["box"] for d in records[0]["detections"]],
                               expected["boxes"], atol=0.01)


def test_benchmark_script_without_tensorflow(exported):
    detector, result = exported
    run = _tool("benchmark.py", result.path, "--runs", 5, "--warmup", 1, "--threads", 2,
                "--json")
    assert run.returncode == 0, run.stderr
    stats = json.loads(run.stdout)[0]
    assert stats["runs"] == 5 and stats["threads"] == 2
    assert 0 < stats["p50_ms"] <= stats["p90_ms"]

"""to_tflite and to_saved_model on the tiny detector: numerics of every variant against Keras,
the sidecar, the serving signatures, and bad input failing before anything is written."""

import json
import os
import shutil
import tempfile

import numpy as np
import pytest

from keras_csp.backend import keras, register, tf
from keras_csp.export import (ExportError, QUANTIZE_MODES, calibration_images, examples,
                              to_saved_model, to_tflite)

SIZE = 64
CLASSES = 3


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=path).get_signature_runner("serving_default")


def _run(path, images):
    runner = _interpreter(path)
    detail = runner.get_input_details()["images"]
    batch = images
    if detail["dtype"] != np.float32:
        scale, zero = detail["quantization"]
        batch = np.round(images / scale + zero).astype(detail["dtype"])
    return runner(images=batch)


@pytest.fixture(scope="module")
def detector():
    keras.utils.set_random_seed(5)
    model = examples.tiny_detector(SIZE, CLASSES)
    heads = examples.tiny_heads(CLASSES)
    # Spread the objectness logits so that some boxes pass the score threshold.
    for name in ("head_stride8", "head_stride16"):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        bias[4::5 + CLASSES] += 1.0
        layer.set_weights([kernel * 3.0, bias])
    return model, heads


@pytest.fixture(scope="module")
def images():
    """Smooth random 'photos': calibration needs images, not white noise."""
    rng = np.random.default_rng(0)
    coarse = rng.random((24, 8, 8, 3)).astype(np.float32)
    return tf.image.resize(coarse, (SIZE, SIZE), method="bicubic").numpy().clip(0, 1)


@pytest.fixture(scope="module")
def out_dir():
    path = tempfile.mkdtemp(prefix="test_export_")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def float_file(detector, out_dir):
    model, heads = detector
    return to_tflite(model, os.path.join(out_dir, "fp32.tflite"), heads=heads,
                     labels=["a", "b", "c"])


def _keras(model, images):
    return [o.numpy() for o in model(images, training=False)]


def test_float32_matches_keras_and_writes_sidecar(detector, images, float_file):
    model, heads = detector
    expected = _keras(model, images[:1])
    outputs = _run(float_file.path, images[:1])
    for name, want in zip(("stride8", "stride16"), expected):
        np.testing.assert_allclose(outputs[name], want, atol=1e-4, rtol=1e-4)
    assert float_file.gpu_report.ok, str(float_file.gpu_report)
    with open(float_file.sidecar_path, encoding="utf-8") as handle:
        sidecar = json.load(handle)
    assert sidecar == float_file.sidecar
    assert sidecar["input"]["shape"] == [1, SIZE, SIZE, 3]
    assert sidecar["input"]["dtype"] == "float32" and sidecar["input"]["quantization"] is None
    assert [o["name"] for o in sidecar["outputs"]] == ["stride8", "stride16"]
    assert [h["anchors"] for h in sidecar["heads"]] == [[list(a) for a in h.anchors]
                                                        for h in heads]
    assert sidecar["postprocess"]["nms"] == "none"
    labels = os.path.join(os.path.dirname(float_file.path), sidecar["labels"])
    assert open(labels, encoding="utf-8").read().split() == ["a", "b", "c"]


@pytest.mark.parametrize("quantize,tolerance", [("float16", 0.02), ("dynamic", 0.1)])
def test_float16_and_dynamic_stay_close(detector, images, out_dir, quantize, tolerance):
    model, heads = detector
    result = to_tflite(model, os.path.join(out_dir, f"{quantize}.tflite"), quantize=quantize,
                       heads=heads)
    assert result.gpu_report.ok, str(result.gpu_report)
    assert result.sidecar["quantize"] == quantize
    expected = _keras(model, images[:2])
    for image, want in zip(images[:2], zip(*expected)):
        outputs = _run(result.path, image[None])
        for name, value in zip(("stride8", "stride16"), want):
            scale = np.abs(value).max()
            assert np.abs(outputs[name][0] - value).max() < tolerance * scale, (quantize, name)


def test_int8_full_integer_with_uint8_input(detector, images, out_dir):
    model, heads = detector
    result = to_tflite(model, os.path.join(out_dir, "int8.tflite"), quantize="int8",
                       representative_data=images[:16], input_type="uint8", heads=heads)
    quant = result.sidecar["input"]["quantization"]
    assert result.sidecar["input"]["dtype"] == "uint8"
    assert quant["zero_point"] == 0 and abs(quant["scale"] - 1 / 255) < 1e-6
    assert result.gpu_report.ok, str(result.gpu_report)
    counts = result.gpu_report.op_counts
    assert counts.get("CONV_2D") and counts.get("DEQUANTIZE", 0) <= 2  # only the outputs
    held_out = images[16:20]
    expected = _keras(model, held_out)
    errors = []
    for index, image in enumerate(held_out):
        outputs = _run(result.path, image[None])
        for name, want in zip(("stride8", "stride16"), expected):
            error = np.abs(outputs[name][0] - want[index]).mean()
            errors.append(error / np.abs(want[index]).mean())
    assert max(errors) < 0.1, errors


def test_int8_keeps_mish_precise_with_large_activations(out_dir):
    from keras_csp.layers import conv_bn_act

    keras.utils.set_random_seed(1)
    image = keras.Input((32, 32, 3), name="image")
    x = conv_bn_act(image, 16, 3, activation="mish", name="a")
    x = conv_bn_act(x, 16, 3, activation="mish", name="b")
    model = keras.Model(image, keras.layers.Conv2D(8, 1, name="out")(x))
    bn = model.get_layer("a_bn")
    gamma, beta, mean, variance = bn.get_weights()
    bn.set_weights([gamma * 8.0, beta, mean, variance])  # pre-activations up to about +-12
    rng = np.random.default_rng(0)
    data = tf.image.resize(rng.random((40, 8, 8, 3)).astype("float32"), (32, 32))
    data = data.numpy().clip(0, 1)
    result = to_tflite(model, os.path.join(out_dir, "mish_int8.tflite"), quantize="int8",
                       representative_data=data[:32])
    errors = []
    for image in data[32:]:
        want = model(image[None]).numpy()
        got = _run(result.path, image[None])["output"]
        errors.append(np.abs(got - want).mean() / np.abs(want).mean())
    assert max(errors) < 0.1, errors
    assert result.gpu_report.op_counts.get("DEQUANTIZE", 0) == 1  # only the output
    # Mish's bounded softplus: no EXP (whose int8 range [0, e^max] leaves no precision).
    assert "EXP" not in result.gpu_report.op_counts, result.gpu_report.op_counts


def test_builtin_nms_matches_the_saved_model(detector, images, out_dir):
    model, heads = detector
    result = to_tflite(model, os.path.join(out_dir, "nms.tflite"), heads=heads, nms="builtin",
                       max_detections=20)
    assert [o["name"] for o in result.sidecar["outputs"]] == [
        "boxes", "scores", "classes", "num_detections"]
    assert "NON_MAX_SUPPRESSION_V5" in result.gpu_report.op_counts
    assert not result.gpu_report.ok  # the NMS tail is CPU work, and the report says so
    # ... but it must not raise op versions (per opcode) past what the delegate parses,
    # which would push the network's own ops (e.g. its strided slices) off the GPU too.
    assert not [f for f in result.gpu_report.findings if f.kind == "version"]
    assert all(f.layer is None for f in result.gpu_report.findings)  # none in the network
    saved = to_saved_model(model, os.path.join(out_dir, "nms_saved"), heads=heads, nms=True,
                           max_detections=20)
    serve = tf.saved_model.load(saved).signatures["serving_default"]
    want = serve(images=tf.constant(images[:1]))
    got = _run(result.path, images[:1])
    count = int(want["num_detections"][0])
    assert 0 < count == int(got["num_detections"][0])
    np.testing.assert_allclose(got["boxes"][0][:count], want["boxes"][0][:count], atol=1e-4)
    np.testing.assert_array_equal(got["classes"][0][:count], want["classes"][0][:count])
    assert (got["classes"][0][count:] == -1).all()


def test_saved_model_uint8_letterbox_signature(detector, out_dir):
    model, heads = detector
    path = to_saved_model(model, os.path.join(out_dir, "letterbox"), heads=heads,
                          input_type="uint8", letterbox=True, nms=True)
    serve = tf.saved_model.load(path).signatures["serving_default"]
    spec = serve.structured_input_signature[1]["images"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, None, None, 3]
    image = np.random.default_rng(1).integers(0, 256, (2, 40, 90, 3), dtype=np.uint8)
    out = serve(images=tf.constant(image))
    assert out["boxes"].shape == (2, 100, 4) and out["classes"].dtype == tf.int32
    count = int(out["num_detections"][0])
    boxes = out["boxes"][0][:count].numpy()
    assert count > 0 and (boxes >= 0).all()
    assert (boxes[:, [0, 2]] <= 90).all() and (boxes[:, [1, 3]] <= 40).all()
    raw = to_saved_model(model, os.path.join(out_dir, "raw"), heads=heads)
    outputs = tf.saved_model.load(raw).signatures["serving_default"].structured_outputs
    assert set(outputs) == {"stride8", "stride16"}


def test_calibration_images_from_a_folder(tmp_path):
    from PIL import Image

    for index, size in enumerate([(30, 50), (64, 20), (16, 16)]):
        pixels = np.random.default_rng(index).integers(0, 256, size + (3,), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{index}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    batch = calibration_images(tmp_path, (SIZE, SIZE))
    assert batch.shape == (3, SIZE, SIZE, 3) and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    assert np.allclose(batch[0, 0, 0], 114 / 255)  # letterbox padding


# --- bad input: clear errors, nothing written ------------------------------------------------


@register
class NoBuiltin(keras.layers.Layer):
    def call(self, x):
        counts = tf.math.bincount(tf.cast(x * 10.0, tf.int32), minlength=11, maxlength=11)
        return x + tf.cast(counts[0], tf.float32)


def _untouched(path, content=b"previous"):
    assert open(path, "rb").read() == content
    assert sorted(os.listdir(os.path.dirname(path))) == [os.path.basename(path)]


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous")
    return str(path)


def test_unsupported_mode_fails_first(detector, target):
    model, heads = detector
    assert "int4" not in QUANTIZE_MODES
    with pytest.raises(ValueError, match="quantize must be one of"):
        to_tflite(model, target, quantize="int4")
    with pytest.raises(ValueError, match="nms must be one of"):
        to_tflite(model, target, nms="combined")
    with pytest.raises(ValueError, match="need quantize='int8'"):
        to_tflite(model, target, input_type="uint8")
    with pytest.raises(ValueError, match="needs representative_data"):
        to_tflite(model, target, quantize="int8")
    with pytest.raises(ValueError, match="quantization-aware"):
        to_tflite(model, target, quantize="qat")
    _untouched(target)


def test_representative_data_of_the_wrong_shape_or_range(detector, images, target):
    model, heads = detector
    small = np.zeros((16, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match=r"element 0 has shape \(32, 32, 3\).*64, 64"):
        to_tflite(model, target, quantize="int8", representative_data=small)
    with pytest.raises(ValueError, match="divide 0-255 pixels by 255"):
        to_tflite(model, target, quantize="int8", representative_data=images * 255.0)
    with pytest.raises(ValueError, match="at least 8"):
        to_tflite(model, target, quantize="int8", representative_data=images[:2])
    dataset = tf.data.Dataset.from_tensor_slices((small, np.zeros(16))).batch(4)
    with pytest.raises(ValueError, match=r"element 0 has shape \(4, 32, 32, 3\)"):
        to_tflite(model, target, quantize="int8", representative_data=dataset)
    _untouched(target)


def test_unconvertible_layer_names_op_and_layer(target):
    image = keras.Input((16, 16, 3), name="image")
    model = keras.Model(image, NoBuiltin(name="histogram")(keras.layers.Conv2D(3, 1)(image)))
    with pytest.raises(ExportError, match=r"DenseBincount in layer\(s\) histogram"):
        to_tflite(model, target)
    _untouched(target)


def test_head_specs_must_match_outputs(detector, target, tmp_path):
    model, heads = detector
    with pytest.raises(ValueError, match=r"needs 27 channels; output 0 .*\(None, 8, 8, 24\)"):
        to_tflite(model, target, heads=examples.tiny_heads(CLASSES + 1))
    with pytest.raises(ValueError, match="1 labels for 3 classes"):
        to_tflite(model, target, heads=heads, labels=["only one"])
    with pytest.raises(ValueError, match="2 outputs"):
        to_saved_model(model, tmp_path / "sm", heads=heads[:1], nms=True)
    with pytest.raises(ValueError, match="head specs"):
        to_saved_model(model, tmp_path / "sm", nms=True)
    assert not (tmp_path / "sm").exists()
    _untouched(target)


def test_saved_model_never_replaces_a_folder_by_accident(detector, tmp_path):
    model, heads = detector
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        to_saved_model(model, folder)
    assert os.listdir(folder) == ["keep.txt"]
    to_saved_model(model, folder, overwrite=True)
    assert "saved_model.pb" in os.listdir(folder)
    assert sorted(os.listdir(tmp_path)) == ["exported"]  # no temp folder left behind


def test_command_line_tflite_int8_saved_model_and_gpu_check(detector, images, tmp_path, capsys):
    from PIL import Image

    from keras_csp.cli import main

    model, heads = detector
    model_path = tmp_path / "tiny.keras"
    model.save(model_path)
    heads_path = tmp_path / "heads.json"
    heads_path.write_text(json.dumps([h.get_config() for h in heads]))
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, image in enumerate(images[:10]):
        Image.fromarray((image * 255).astype(np.uint8)).save(photos / f"{index}.png")
    out = tmp_path / "tiny_int8.tflite"
    status = main(["export", "tflite", str(model_path), str(out), "--heads", str(heads_path),
                   "--quantize", "int8", "--calibration", str(photos), "--input-type", "uint8",
                   "--strict"])
    assert status == 0 and out.exists() and (tmp_path / "tiny_int8.json").exists()
    sidecar = json.loads((tmp_path / "tiny_int8.json").read_text())
    assert sidecar["quantize"] == "int8" and sidecar["heads"][0]["stride"] == 8
    assert main(["export", "gpu-check", str(out), "--model", str(model_path)]) == 0
    assert "0 finding(s)" in capsys.readouterr().out
    saved = tmp_path / "saved"
    assert main(["export", "saved-model", str(model_path), str(saved), "--heads",
                 str(heads_path), "--nms", "--letterbox", "--input-type", "uint8"]) == 0
    serve = tf.saved_model.load(str(saved)).signatures["serving_default"]
    assert set(serve.structured_outputs) == {"boxes", "scores", "classes", "num_detections"}

"""``keras-csp benchmark``: every export format of a tiny detector in one table, measured on the
same images (real SavedModel, LiteRT and, when installed, tf2onnx + onnxruntime)."""

import json

import numpy as np
import pytest

from keras_csp.export import benchmark as bench


def _tiny_task(seed=1):
    from keras_csp.backend import keras
    from keras_csp.data.synthetic import SHAPE_CLASSES
    from keras_csp.detectors import YOLOTask
    from keras_csp.export import examples

    keras.utils.set_random_seed(seed)
    network = examples.tiny_detector(64, len(SHAPE_CLASSES))
    head = network.get_layer("head_stride8")  # confident boxes: some land on objects, mAP > 0
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 4.0, bias + 1.0])
    return YOLOTask(network, examples.tiny_heads(len(SHAPE_CLASSES)))


@pytest.fixture(scope="module")
def val_source(tmp_path_factory):
    from keras_csp.data.synthetic import synthetic_source

    return synthetic_source(tmp_path_factory.mktemp("bench") / "val", num_images=6, seed=2, min_side=64, max_side=96)


def test_keras_and_tflite_rows_measured_on_the_same_images(val_source, tmp_path):
    # Every row (SavedModel, fp16, int8, ONNX too) through the command: the slow test below.
    formats = ["keras", "tflite_fp32"]
    logs = []
    result = bench.benchmark(_tiny_task(), val_source, formats, tmp_path / "files", runs=5, threads=1,
                             num_calibration=4, log=logs.append)
    assert [r.format for r in result.rows] == formats
    rows = {r.format: r for r in result.rows}
    for row in result.rows:
        assert row.error is None, (row.format, row.error)
        assert row.size_bytes > 0 and row.p50_ms > 0 and row.p90_ms >= row.p50_ms, row
        assert 0 <= row.map <= row.map50 <= 1
    assert rows["keras"].map50 > 0
    assert rows["tflite_fp32"].map50 == pytest.approx(rows["keras"].map50, abs=1e-3)
    assert rows["tflite_fp32"].map == pytest.approx(rows["keras"].map, abs=1e-3)
    assert isinstance(rows["tflite_fp32"].gpu_findings, int) and rows["keras"].gpu_findings is None
    assert result.num_images == 6 and "first 4 images" in result.calibration
    table = result.table().splitlines()
    assert len(table) == 2 + len(formats) and all(f"| {f} |" in t for f, t in zip(formats, table[2:]))
    assert any("tflite_fp32: mAP@0.5" in line for line in logs)


def test_wrong_inputs_say_what_was_expected(val_source, tmp_path):
    with pytest.raises(ValueError, match="not a file, a run folder or a detector name"):
        bench.load_benchmark_model("no-such-detector", val_source)
    bad = tmp_path / "weights.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match="expected a .keras detector file"):
        bench.load_benchmark_model(bad, val_source)
    with pytest.raises(ValueError, match="unknown format"):
        bench.benchmark(_tiny_task(), val_source, "keras,tflite_int4")


@pytest.mark.slow  # every format through the command, ONNX included (tf2onnx in a subprocess): ~2 minutes
def test_benchmark_command_on_a_keras_file(val_source, tmp_path, capsys):
    from keras_csp.cli import main

    path = tmp_path / "tiny.keras"
    _tiny_task().save(path)
    out = tmp_path / "out"
    data = val_source.annotation_file
    assert main(["benchmark", str(path), "--data", data, "--out", str(out), "--runs", "5",
                 "--num-calibration", "4", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    for name in bench.FORMATS:
        assert f"| {name} |" in printed, name
    saved = json.loads((out / "benchmark.json").read_text())
    rows = {r["format"]: r for r in saved["rows"]}
    assert sorted(rows) == sorted(bench.FORMATS)
    onnx = rows["onnx"]
    if onnx["error"] is None:  # tf2onnx and onnxruntime installed
        assert onnx["map50"] == pytest.approx(rows["keras"]["map50"], abs=1e-3) and onnx["size_bytes"] > 0
    else:
        assert onnx["error"].startswith("skipped")
    for name in bench.FORMATS[:-1]:
        assert rows[name]["error"] is None and rows[name]["size_bytes"] > 0 and rows[name]["p50_ms"] > 0, name
    assert rows["saved_model"]["map50"] == pytest.approx(rows["keras"]["map50"], abs=1e-6)
    assert np.isclose(rows["tflite_fp32"]["map50"], rows["keras"]["map50"], atol=1e-3)
    assert rows["tflite_int8"]["size_bytes"] < rows["tflite_fp16"]["size_bytes"] < rows["tflite_fp32"]["size_bytes"]
    assert all(isinstance(rows[n]["gpu_findings"], int) for n in ("tflite_fp32", "tflite_fp16", "tflite_int8"))
    assert "first 4 images" in saved["calibration"]

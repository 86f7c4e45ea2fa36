"""Every example in examples/ runs on tiny synthetic data with its flags (a smoke test: each
must finish and leave its outputs). About two CPU minutes in all, so marked slow:
``pytest -m slow tests/test_examples.py``."""

import importlib.util
import json
import os

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DETECTION = ["--synthetic", "--model", "CSPDenseNetb-Ref-PRN", "--image-size", "64", "--epochs", "1",
             "--batch-size", "4"]


@pytest.mark.parametrize("name", ["train_coco", "train_yolo_txt"])
def test_detection_examples(name, tmp_path):
    result = _example(name).main(DETECTION + ["--out", str(tmp_path)])
    assert (tmp_path / "final.weights.h5").is_file()
    assert result.evaluation is not None and set(result.evaluation.stats) >= {"AP", "AP50"}
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["model"] == "CSPDenseNetb-Ref-PRN"
    if name == "train_yolo_txt":
        assert info["category_ids"] == list(range(8))  # YOLO txt: class 0 is category 0


def test_finetune_darknet_example(tmp_path, capsys):
    result = _example("finetune_darknet").main(DETECTION[:-4] + ["--epochs", "2", "--batch-size", "4",
                                                                  "--freeze-backbone-epochs", "1", "--out", str(tmp_path)])
    assert (tmp_path / "backup-phase1" / "latest.json").is_file() and (tmp_path / "backup-phase2").is_dir()
    assert len(result.history["loss"]) == 2
    assert "from the Darknet file during fine-tuning" in capsys.readouterr().out


def test_classify_example(tmp_path):
    accuracy = _example("classify_imagenet").main(["--synthetic", "--model", "CSPDenseNetbRef", "--image-size", "64",
                                                   "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path)])
    assert set(accuracy) == {"top1", "top5"} and 0.0 <= accuracy["top1"] <= accuracy["top5"] <= 1.0
    assert (tmp_path / "history.json").is_file()


def test_export_example(tmp_path):
    results = _example("export_mobile").main(["--synthetic", "--image-size", "64", "--out", str(tmp_path)])
    assert (tmp_path / "detector_fp16.tflite").is_file() and (tmp_path / "detector_int8.tflite").is_file()
    assert (tmp_path / "saved_model" / "saved_model.pb").is_file()
    assert results["fp16"].size_bytes > 1000

"""``keras-csp train`` -> ``evaluate`` -> ``predict`` on a tiny detector: the files each writes,
the COCO numbers agreeing between training and evaluation, and PNGs with boxes drawn."""

import json

import numpy as np
import pytest
from PIL import Image

from keras_csp.cli import main


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from keras_csp.data import write_synthetic_dataset

    root = tmp_path_factory.mktemp("cli")
    data = write_synthetic_dataset(root / "data", num_images=10, seed=4, min_side=64, max_side=96, max_objects=3,
                                   min_object=8)
    out = root / "run"
    code = main(["train", "--train", data["coco_json"], "--val", data["coco_json"], "--model",
                 "helpers:tiny_detector", "--image-size", "64", "--batch-size", "4", "--epochs", "2",
                 "--augment", "none", "--optimizer", "adam", "--learning-rate", "0.01", "--anchors", "auto",
                 "--out", str(out), "--no-tensorboard", "--verbose", "0",
                 # float32 on every CPU: the evaluation during training runs in the training
                 # precision, `keras-csp evaluate` the float32 detector file (the two AP differ in
                 # the 5th digit after bf16 training), and this module compares them exactly
                 "--mixed-precision", "none"])
    assert code == 0
    return data, out


def test_train_writes_the_run(trained):
    _, out = trained
    for name in ("config.yaml", "run.json", "best.weights.h5", "last.weights.h5", "final.weights.h5",
                 "history.json", "history.csv", "eval/coco_eval.json", "eval/per_class_ap.txt", "backup/latest.json"):
        assert (out / name).is_file(), name
    info = json.loads((out / "run.json").read_text())
    assert info["num_classes"] == 8 and info["category_ids"] == [1, 2, 3, 5, 7, 8, 10, 11]
    assert info["anchors"].count(";") == 1  # k-means anchors, two levels
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert sorted(history) == ["1", "2"] and "val_AP50" in history["2"] and "learning_rate" in history["1"]
    assert _png(out / "curves.png").shape[2] == 3
    assert list((out / "eval").glob("pr_*.png"))
    assert "circle" in (out / "eval" / "per_class_ap.txt").read_text()


def test_evaluate_reproduces_the_last_epoch(trained, tmp_path, capsys):
    data, out = trained
    assert main(["evaluate", data["coco_json"], "--run", str(out), "--weights", "final", "--out", str(tmp_path)]) == 0
    ours = json.loads((tmp_path / "coco_eval.json").read_text())["stats"]
    during = json.loads((out / "eval" / "coco_eval.json").read_text())
    assert during["epoch"] == 2
    for name in ("AP", "AP50", "AP75", "AR100"):
        assert ours[name] == pytest.approx(during["stats"][name], abs=1e-9), name
    assert "Average Precision" in capsys.readouterr().out


def test_predict_draws_boxes(trained, tmp_path):
    data, out = trained
    assert main(["predict", data["images"], "--run", str(out), "--weights", "best", "--out", str(tmp_path),
                 "--score-threshold", "0.0"]) == 0
    records = json.loads((tmp_path / "detections.json").read_text())
    assert len(records) == 10
    from keras_csp.training.restore import read_image
    from keras_csp.visualize import class_colour

    drawn = 0
    for record in records:
        picture, original = _png(record["output"]), read_image(record["image"])
        assert picture.shape == original.shape
        if not record["detections"]:
            assert np.array_equal(picture, original)  # nothing to draw: the image itself
            continue
        best = record["detections"][0]  # drawn last, so on top
        x0, y0, x1, y1 = best["box_xyxy"]
        row = int(round((y0 + y1) / 2))
        edge = picture[row, max(0, int(x0) - 1):int(x0) + 2]  # the box's left edge, +-1 pixel
        assert (edge == class_colour(best["class"])).all(axis=-1).any()
        assert np.any(picture != original)
        drawn += 1
    assert drawn > 0


def test_draw_detections_outline_label_and_padding():
    from keras_csp.visualize import class_colour, draw_detections

    image = np.full((80, 120, 3), 40, np.uint8)
    out = np.asarray(draw_detections(image, [[20, 30, 70, 60], [0, 0, 0, 0]], [2, -1], [0.9, 0.5], ["a", "b", "cat"],
                                     line_width=2))
    assert tuple(out[45, 20]) == class_colour(2) and tuple(out[45, 69]) == class_colour(2)  # left/right edges
    assert tuple(out[45, 45]) == (40, 40, 40)  # inside untouched
    assert (out[15:30, 20:60] != 40).any()  # the label above the box
    assert (out[70:, :] == 40).all()  # nothing else drawn (the padding row was skipped)
    assert np.array_equal(image, np.full((80, 120, 3), 40, np.uint8))  # input not modified

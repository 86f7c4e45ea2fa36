"""Validation pictures: the NumPy matching on hand cases, then every PNG (exists, decodes,
depends on the data) and ``results.csv``."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from keras_csp.evaluation import confusion as cm
from keras_csp.evaluation import pictures
from keras_csp.evaluation.coco import coco_dict, evaluate_coco
from keras_csp.evaluation.plots import plot_history, write_results_csv

A, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]


def test_box_iou_hand_values():
    iou = cm.box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0, 0.0]])


def test_confusion_matrix_hand_case():
    m = cm.ConfusionMatrix(2, ["cat", "dog"])
    # A (cat) found as cat; B (dog) found as cat; C (cat) only by a 0.1 detection (filtered:
    # missed); a dog detection on nothing (background); a second cat box on A (one-to-one: FP).
    m.update([A, B, C], [0, 1, 0],
             [[0, 0, 10, 10], [21, 21, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70], [1, 1, 10, 10]],
             [0, 0, 0, 1, 0], [0.9, 0.8, 0.1, 0.7, 0.6])
    #                 true: cat dog bg
    want = np.array([[1, 1, 1],   # predicted cat
                     [0, 0, 1],   # predicted dog
                     [1, 0, 0]])  # predicted background (missed)
    np.testing.assert_array_equal(m.matrix, want)
    np.testing.assert_allclose(m.normalized(), [[0.5, 1, 0.5], [0, 0, 0.5], [0.5, 0, 0]])
    np.testing.assert_array_equal(m.true_positives(), [1, 0])
    assert m.labels == ["cat", "dog", "background"]
    assert m.to_csv().splitlines()[1] == "cat,1,1,1"
    # an image without objects: every confident detection is a false positive
    m.update(np.zeros((0, 4)), [], [A], [1], [0.5])
    assert m.matrix[1, 2] == 2
    with pytest.raises(ValueError, match="class 5 is outside 0..1"):
        m.update([A], [5], [], [], [])


def test_confusion_iou_threshold_is_strict_and_pairs_take_the_best_iou():
    m = cm.ConfusionMatrix(1, iou_threshold=0.5)
    m.update([A], [0], [[5, 0, 15, 10]], [0], [0.9])  # IoU 1/3: no match
    np.testing.assert_array_equal(m.matrix, [[0, 1], [1, 0]])
    m = cm.ConfusionMatrix(1)
    # two objects, two detections: the pairing by IoU, not by order
    m.update([A, [0, 0, 10, 12]], [0, 0], [[0, 0, 10, 12], [0, 0, 10, 10]], [0, 0], [0.9, 0.8])
    np.testing.assert_array_equal(m.matrix, [[2, 0], [0, 0]])


def test_match_detections_within_class_by_score():
    tp = cm.match_detections([A, B], [0, 1], [[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [40, 40, 50, 50]],
                             [0, 0, 0, 1], [0.5, 0.9, 0.8, 0.7])
    # the 0.9 box takes A first, the 0.5 duplicate is a FP, B is a dog not found as cat
    np.testing.assert_array_equal(tp, [False, True, False, False])


def test_confidence_curves_hand_values():
    curves = cm.confidence_curves([0.9, 0.6, 0.3], [True, False, True], [0, 0, 0], [2, 0],
                                  thresholds=[0.0, 0.5, 0.95])
    np.testing.assert_allclose(curves["precision"][0], [2 / 3, 1 / 2, 1.0])
    np.testing.assert_allclose(curves["recall"][0], [1.0, 0.5, 0.0])
    np.testing.assert_allclose(curves["f1"][0], [0.8, 0.5, 0.0])
    assert np.isnan(curves["recall"][1]).all()  # a class without objects


def _scene(seed=0, num_images=6, swap=0.0, miss=0.0):
    """A COCO ground truth (3 classes, ids 1, 4, 9) and detections: each object found with
    jitter, its class swapped with probability ``swap``, missed with ``miss``, plus clutter."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    cats = [1, 4, 9]
    for i in range(1, num_images + 1):
        images.append({"id": i, "width": 160, "height": 120})
        for _ in range(4):
            x, y, w, h = rng.uniform(0, 100), rng.uniform(0, 70), rng.uniform(15, 50), rng.uniform(15, 45)
            c = int(rng.choice(cats))
            anns.append({"image_id": i, "category_id": c, "bbox": [x, y, w, h]})
            if rng.random() < miss:
                continue
            found = int(rng.choice(cats)) if rng.random() < swap else c
            j = rng.normal(0, 1.0, 4)
            dets.append({"image_id": i, "category_id": found, "bbox": [x + j[0], y + j[1], w + j[2], h + j[3]],
                         "score": float(rng.uniform(0.4, 1.0))})
        dets.append({"image_id": i, "category_id": int(rng.choice(cats)), "bbox": [140, 100, 15, 15],
                     "score": float(rng.uniform(0.05, 0.5))})
    gt = coco_dict(images, anns, [{"id": c, "name": n} for c, n in zip(cats, ["circle", "square", "star"])])
    return gt, dets


def _decoded(path):
    with Image.open(path) as image:
        image.load()
        return np.asarray(image.convert("RGB"))


def _samples(gt, dets, count=3):
    rng = np.random.default_rng(1)
    index = {1: 0, 4: 1, 9: 2}
    out = []
    for im in gt["images"][:count]:
        pixels = rng.integers(0, 255, (im["height"], im["width"], 3), dtype=np.uint8)

        def xyxy(items):
            return np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (d["bbox"] for d in items)]).reshape(-1, 4)

        g = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        d = [a for a in dets if a["image_id"] == im["id"]]
        out.append(pictures.Sample(im["id"], pixels, xyxy(g), np.array([index[a["category_id"]] for a in g]),
                                   xyxy(d), np.array([index[a["category_id"]] for a in d]),
                                   np.array([a["score"] for a in d])))
    return out


def test_every_picture_is_written_decodes_and_follows_the_data(tmp_path):
    outputs = {}
    for name, options in (("good", {}), ("confused", {"swap": 0.6, "miss": 0.3})):
        gt, dets = _scene(**options)
        result = evaluate_coco(gt, dets)
        paths, matrix = pictures.write_pictures(tmp_path / name, gt, dets, result, _samples(gt, dets))
        assert sorted(paths) == sorted(pictures.PICTURES)
        for path in paths.values():
            assert os.path.getsize(path) > 1000
            assert _decoded(path).shape[0] > 100
        expected, _ = cm.evaluate_matches(gt, dets)
        np.testing.assert_array_equal(matrix.matrix, expected.matrix)
        rows = list(csv.reader(open(tmp_path / name / "confusion_matrix.csv", encoding="utf-8")))
        assert rows[0] == ["predicted \\ true", "circle", "square", "star", "background"]
        np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], int), matrix.matrix)
        outputs[name] = (paths, matrix)
    good, confused = outputs["good"][1], outputs["confused"][1]
    assert np.trace(good.matrix[:3, :3]) == good.matrix[:3, :3].sum() > 0  # jitter only: no confusion
    assert confused.matrix[:3, :3].sum() > np.trace(confused.matrix[:3, :3])
    assert confused.matrix[3, :3].sum() > 0  # missed objects in the background row
    for name in pictures.PICTURES:
        a, b = _decoded(outputs["good"][0][name]), _decoded(outputs["confused"][0][name])
        assert a.shape != b.shape or not np.array_equal(a, b), name


def test_labels_picture_follows_the_labels(tmp_path):
    gt, _ = _scene()
    boxes, classes = pictures.labels_from_ground_truth(gt)
    assert len(boxes) == len(gt["annotations"]) and boxes.min() >= 0 and boxes.max() <= 1
    np.testing.assert_array_equal(np.bincount(classes, minlength=3),
                                  [sum(a["category_id"] == c for a in gt["annotations"]) for c in (1, 4, 9)])
    first = pictures.plot_labels(boxes, classes, ["a", "b", "c"], tmp_path / "one.png")
    second = pictures.plot_labels(boxes[classes == 0], classes[classes == 0], ["a", "b", "c"], tmp_path / "two.png")
    assert not np.array_equal(_decoded(first), _decoded(second))


def test_validation_pictures_of_a_detector_on_synthetic_images(tmp_path):
    from keras_csp.backend import keras
    from keras_csp.data import detection_dataset
    from keras_csp.data.synthetic import SHAPE_CLASSES, synthetic_source
    from keras_csp.detectors import YOLOTask
    from keras_csp.evaluation import evaluate_detector
    from keras_csp.export import examples

    source = synthetic_source(tmp_path / "val", num_images=6, seed=2, min_side=64, max_side=96)
    dataset = detection_dataset(source, image_size=64, batch_size=4, training=False)
    keras.utils.set_random_seed(1)
    network = examples.tiny_detector(64, len(SHAPE_CLASSES))
    head = network.get_layer("head_stride8")  # confident boxes, so predictions are drawn
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 4.0, bias + 1.0])
    task = YOLOTask(network, examples.tiny_heads(len(SHAPE_CLASSES)))
    result, paths, matrix = pictures.validation_pictures(task, dataset, tmp_path / "out", source, num_images=4)
    assert sorted(paths) == sorted(pictures.PICTURES)
    assert result.stats == evaluate_detector(task, dataset, source).stats
    num_objects = sum(len(r.boxes) for r in source.records)
    assert matrix.matrix[:, :-1].sum() == num_objects  # every object counted once
    assert matrix.matrix[:-1].sum() > 0  # confident detections counted
    grid = _decoded(paths["val_images.png"])
    assert grid.shape[0] > 600 and grid.shape[1] > 1000  # 2 x 2 pairs of 320-pixel images
    # A run's end draws them from its final evaluation (kept detections), not a second pass.
    evaluation = evaluate_detector(task, dataset, source)
    assert evaluation.detections is not None and evaluation.ground_truth is not None
    again, reused, reused_matrix = pictures.validation_pictures(task, dataset.take(1), tmp_path / "reused", source,
                                                                num_images=4, evaluation=evaluation)
    assert again is evaluation and sorted(reused) == sorted(paths)
    np.testing.assert_array_equal(reused_matrix.matrix, matrix.matrix)  # the whole set's, from one batch read


def test_results_csv_one_row_per_epoch_and_empty_cells_when_not_evaluated(tmp_path):
    history = {"loss": [3.0, 2.0, 1.5], "box_loss": [1.0, 0.8, 0.6], "learning_rate": [1e-3, 1e-3, 1e-4],
               "val_AP": [None, float("nan"), 0.25], "val_AP50": [None, None, 0.5]}
    path = write_results_csv(history, tmp_path / "results.csv")
    rows = list(csv.reader(open(path, encoding="utf-8")))
    assert rows[0] == ["epoch", "box_loss", "loss", "learning_rate", "val_AP", "val_AP50"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    assert rows[1][4:] == ["", ""] and rows[2][4] == "" and rows[3][4:] == ["0.25", "0.5"]
    curves = plot_history(history, tmp_path / "curves.png")
    assert _decoded(curves).shape[1] > 500


@pytest.mark.slow  # a 2-epoch training run and an evaluation: about 2 minutes on a loaded 2-core machine
def test_train_and_evaluate_write_results_csv_and_the_pictures(tmp_path):
    from keras_csp.cli import main
    from keras_csp.data import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", num_images=8, seed=4, min_side=64, max_side=96,
                                   max_objects=3, min_object=8)
    out = tmp_path / "run"
    assert main(["train", "--train", data["coco_json"], "--val", data["coco_json"], "--model",
                 "helpers:tiny_detector", "--image-size", "64", "--batch-size", "4", "--epochs", "2",
                 "--eval-every", "2", "--augment", "none", "--optimizer", "adam", "--out", str(out),
                 "--no-tensorboard", "--verbose", "0"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv", encoding="utf-8")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[0]["loss"]) > 0 and rows[0]["val_AP50"] == "" and rows[1]["val_AP50"] != ""
    for name in pictures.PICTURES:
        assert _decoded(out / name).shape[2] == 3, name
    evaluated = tmp_path / "evaluated"
    assert main(["evaluate", data["coco_json"], "--run", str(out), "--weights", "final", "--out",
                 str(evaluated)]) == 0
    for name in pictures.PICTURES:
        assert _decoded(evaluated / name).shape[2] == 3, name
    np.testing.assert_array_equal(_decoded(evaluated / "confusion_matrix.png"), _decoded(out / "confusion_matrix.png"))

"""COCO evaluation: perfect and shifted predictions against pycocotools run by itself,
annotation id 0 and category id 0, ground truth rebuilt from the evaluation stream,
top-k accuracy and the PNG figures."""

import contextlib
import io
import json

import numpy as np
import pytest

from keras_csp.evaluation import (
    STAT_NAMES,
    GroundTruthBuilder,
    coco_dict,
    detections_to_coco,
    evaluate_coco,
    plot_history,
    top_k_accuracy,
    write_pr_curves,
)


def _ground_truth(rng, num_images=6, category_ids=(0, 3, 7)):
    images, annotations = [], []
    for i in range(num_images):
        width, height = int(rng.integers(200, 640)), int(rng.integers(200, 640))
        images.append({"id": 100 + i, "width": width, "height": height, "file_name": f"{i}.jpg"})
        for _ in range(int(rng.integers(1, 6))):
            w, h = rng.uniform(8, width / 2), rng.uniform(8, height / 2)  # small, medium and large
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            annotations.append({"image_id": 100 + i, "category_id": int(rng.choice(category_ids)),
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    categories = [{"id": c, "name": f"class{c}"} for c in category_ids]
    return coco_dict(images, annotations, categories)


def _perfect(gt, score=0.9):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
            for a in gt["annotations"]]


def _pycocotools_alone(gt_path, dets_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(str(dets_path))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, evaluator.stats))


def test_perfect_predictions_give_ap_one_with_category_zero():
    gt = _ground_truth(np.random.default_rng(0))
    result = evaluate_coco(gt, _perfect(gt))
    for name in ("AP", "AP50", "AP75", "AR100"):
        assert result.stats[name] == pytest.approx(1.0), name
    by_id = {r["category_id"]: r for r in result.per_class}
    assert set(by_id) == {0, 3, 7}
    assert by_id[0]["num_gt"] > 0 and by_id[0]["AP"] == pytest.approx(1.0)  # class 0 is not background
    assert sum(r["num_gt"] for r in result.per_class) == len(gt["annotations"])


def test_shifted_predictions_match_pycocotools_alone(tmp_path):
    rng = np.random.default_rng(1)
    gt = _ground_truth(rng, num_images=8)
    dets = []
    for k, a in enumerate(gt["annotations"]):
        x, y, w, h = a["bbox"]
        shift = (3.0 + k % 4) * (1 if k % 2 else -1)  # known shifts, some boxes fail IoU 0.75
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"],
                     "bbox": [x + shift, y + 0.5 * shift, w, h], "score": 0.5 + 0.01 * (k % 40)})
    dets.append({"image_id": 100, "category_id": 3, "bbox": [1, 1, 20, 20], "score": 0.99})  # a false positive
    gt_path, dets_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    dets_path.write_text(json.dumps(dets))
    ours = evaluate_coco(str(gt_path), dets)
    alone = _pycocotools_alone(gt_path, dets_path)
    for name in STAT_NAMES:
        assert ours.stats[name] == pytest.approx(alone[name], abs=1e-12), name
    assert 0.0 < ours.stats["AP75"] < ours.stats["AP50"] < 1.0  # the shift was felt


def test_annotation_id_zero_does_not_break_matching():
    gt = _ground_truth(np.random.default_rng(2))
    raw = dict(gt, annotations=[dict(a, id=i) for i, a in enumerate(gt["annotations"])])  # ids from 0
    assert raw["annotations"][0]["id"] == 0
    assert evaluate_coco(raw, _perfect(raw)).stats["AP"] == pytest.approx(1.0)


def test_only_evaluated_images_count_and_errors_name_the_problem():
    gt = _ground_truth(np.random.default_rng(3))
    first = gt["images"][0]["id"]
    dets = [d for d in _perfect(gt) if d["image_id"] == first]
    assert evaluate_coco(gt, dets, image_ids=[first]).stats["AP"] == pytest.approx(1.0)
    assert evaluate_coco(gt, dets).stats["AR100"] < 1.0  # the other images' objects are missed
    with pytest.raises(ValueError, match="category ids \\[99\\]"):
        evaluate_coco(gt, [dict(dets[0], category_id=99)])
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_coco(gt, dets, image_ids=[12345])
    empty = evaluate_coco(gt, [])
    assert empty.stats["AP"] == 0.0 and empty.num_detections == 0


def test_detections_to_coco_maps_classes_and_skips_padding():
    boxes = np.array([[[10, 20, 30, 60], [0, 0, 5, 5], [0, 0, 0, 0]]], np.float32)
    out = detections_to_coco(boxes, [[0.9, 0.4, 0.0]], [[0, 2, -1]], [2], [42], category_ids=[1, 5, 9])
    assert [d["category_id"] for d in out] == [1, 9]
    assert out[0]["bbox"] == [10.0, 20.0, 20.0, 40.0] and out[0]["image_id"] == 42


def test_ground_truth_from_the_eval_stream_matches_the_json(tmp_path):
    """Boxes normalised to the letterboxed input, mapped back with image_info, equal the
    dataset's own pixel boxes; perfect detections built the same way score AP 1."""
    from keras_csp.data import detection_dataset, write_synthetic_dataset
    from keras_csp.data.yolo_txt import YoloTxtSource

    paths = write_synthetic_dataset(tmp_path / "syn", num_images=6, seed=3, min_side=64, max_side=128,
                                    max_objects=4, min_object=8)
    source = YoloTxtSource(paths["yolo_list"], names=paths["names"])  # category ids 0..7
    builder = GroundTruthBuilder(source.category_ids, source.class_names)
    for _, meta in detection_dataset(source, image_size=96, batch_size=4, training=False):
        builder.add(meta["boxes"].numpy(), meta["image_id"].numpy(), meta["image_info"].numpy())
    rebuilt = builder.ground_truth()
    with open(paths["coco_json"]) as f:
        original = json.load(f)
    assert len(rebuilt["images"]) == 6
    assert len(rebuilt["annotations"]) == len(original["annotations"])
    sizes = {im["id"]: (im["width"], im["height"]) for im in rebuilt["images"]}
    assert sizes == {im["id"]: (im["width"], im["height"]) for im in original["images"]}
    ours = sorted((a["image_id"], tuple(np.round(a["bbox"], 1))) for a in rebuilt["annotations"])
    theirs = sorted((a["image_id"], tuple(np.round(a["bbox"], 1))) for a in original["annotations"])
    np.testing.assert_allclose([b for _, b in ours], [b for _, b in theirs], atol=0.3)
    assert evaluate_coco(rebuilt, _perfect(rebuilt)).stats["AP"] == pytest.approx(1.0)


def test_top_k_accuracy():
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]])
    labels = np.array([1, 2, 1, 0])
    acc = top_k_accuracy(labels, probs, ks=(1, 2, 3))
    assert acc["top1"] == pytest.approx(1 / 4)
    assert acc["top2"] == pytest.approx(1 / 4)  # rows 3 and 4: ties count against the label
    assert acc["top3"] == pytest.approx(1.0)
    onehot = np.eye(3)[labels]
    assert top_k_accuracy(onehot, probs, ks=(1,)) == {"top1": acc["top1"]}


def test_pr_curves_and_training_curves_are_pngs(tmp_path):
    from PIL import Image

    gt = _ground_truth(np.random.default_rng(4))
    dets = _perfect(gt, 0.8)[::2] + [dict(d, bbox=[d["bbox"][0] + 9, d["bbox"][1], *d["bbox"][2:]], score=0.3)
                                       for d in _perfect(gt)[1::2]]
    result = evaluate_coco(gt, dets)
    paths = write_pr_curves(result, tmp_path / "pr")
    assert len(paths) == sum(1 for r in result.per_class if r["num_gt"]) + 1
    for path in paths:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert "class0" in result.table()
    history = {"loss": [5.0, 3.0, 2.0], "box_loss": [2.0, 1.5, 1.0], "val_AP": [float("nan"), 0.2, 0.3]}
    curves = plot_history(history, tmp_path / "curves.png")
    with Image.open(curves) as im:
        assert im.format == "PNG"
    assert not list(tmp_path.glob("**/.tmp-*"))

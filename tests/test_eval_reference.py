"""Evaluation as the reference tools run it: the tiled NMS (30000 candidates, multi-label)
against the plain NumPy NMS, the presets, crowd / difficult boxes kept as ignored regions
(scored as pycocotools scores ``iscrowd=1`` on a hand-built case), and evaluation images that
fail to decode counted in the summary."""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from test_nms import _check, _random_case, reference_nms
from helpers import tiny_detector

from keras_csp.data import detection_dataset
from keras_csp.data.coco import CocoSource, write_coco_json
from keras_csp.data.voc import VocSource
from keras_csp.postprocess import nms as nms_module
from keras_csp.postprocess.nms import NMSConfig, non_max_suppression
from keras_csp.evaluation import STAT_NAMES, GroundTruthBuilder, evaluate_coco, evaluate_detector
from keras_csp.evaluation.detection import EVAL_NMS, FAST_EVAL_NMS, REFERENCE_EVAL_NMS, eval_nms

TILED = [
    NMSConfig(score_threshold=0.3, iou_threshold=0.45, max_detections=50, pre_nms_top_k=200),
    NMSConfig(score_threshold=0.2, iou_threshold=0.4, max_detections=40, method="diou", pre_nms_top_k=200),
    NMSConfig(score_threshold=0.1, iou_threshold=0.5, max_detections=60, multi_label=True, pre_nms_top_k=200),
    NMSConfig(score_threshold=0.2, iou_threshold=0.3, max_detections=30, class_aware=False, pre_nms_top_k=200),
    NMSConfig(score_threshold=0.05, iou_threshold=0.5, max_detections=7, multi_label=True, pre_nms_top_k=200),
]


@pytest.mark.parametrize("cfg", TILED, ids=lambda c: f"{c.method}-ml{int(c.multi_label)}-k{c.max_detections}")
def test_tiled_nms_matches_the_numpy_reference(cfg, monkeypatch):
    monkeypatch.setattr(nms_module, "DENSE_MAX_CANDIDATES", 20)  # force the tiled path, 16 per tile
    monkeypatch.setattr(nms_module, "NMS_TILE", 16)
    rng = np.random.default_rng(11)
    batch = [_random_case(rng, 70, 3, ties=True) for _ in range(2)]
    boxes, scores = np.stack([b for b, _ in batch]), np.stack([s for _, s in batch])
    result = {k: v.numpy() for k, v in non_max_suppression(boxes, scores, cfg).items()}
    _check(result, [reference_nms(b, s, cfg) for b, s in batch], cfg.max_detections)


def test_reference_preset_is_the_default_and_the_old_one_has_a_name():
    assert EVAL_NMS is REFERENCE_EVAL_NMS and eval_nms() is REFERENCE_EVAL_NMS and eval_nms("reference") is EVAL_NMS
    assert EVAL_NMS.multi_label and EVAL_NMS.score_threshold == 0.001 and EVAL_NMS.pre_nms_top_k == 30000
    assert eval_nms("fast") == NMSConfig(score_threshold=0.001, iou_threshold=0.6, max_detections=100)
    assert eval_nms("fast") is FAST_EVAL_NMS and eval_nms({"score_threshold": 0.5}).score_threshold == 0.5
    with pytest.raises(ValueError, match="Unknown evaluation NMS preset 'darknet'"):
        eval_nms("darknet")


def test_reference_keeps_every_class_above_threshold_per_box():
    boxes = np.array([[[0.1, 0.1, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9]]], np.float32)
    scores = np.array([[[0.6, 0.5, 0.0005], [0.0, 0.002, 0.3]]], np.float32)
    ref = non_max_suppression(boxes, scores, REFERENCE_EVAL_NMS)
    fast = non_max_suppression(boxes, scores, FAST_EVAL_NMS)
    assert int(ref["num_detections"][0]) == 4 and ref["classes"][0, :4].numpy().tolist() == [0, 1, 2, 1]
    assert int(fast["num_detections"][0]) == 2 and fast["classes"][0, :2].numpy().tolist() == [0, 2]


def _pycocotools(gt, dets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(json.loads(json.dumps(dets))), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, evaluator.stats))


def _stream_ground_truth(source, size=64):
    builder = GroundTruthBuilder(source.category_ids, source.class_names)
    for _, meta in detection_dataset(source, size, batch_size=4, training=False):
        builder.add(meta["boxes"].numpy(), meta["image_id"].numpy(), meta["image_info"].numpy())
    return builder.ground_truth()


def _voc(root, objects):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    body = "".join(f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin>"
                   f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                   for n, d, b in objects)
    (root / "Annotations/000001.xml").write_text(
        f"<annotation><size><width>100</width><height>60</height><depth>3</depth></size>{body}</annotation>")
    Image.fromarray(np.full((60, 100, 3), 90, np.uint8)).save(root / "JPEGImages/000001.jpg")
    (root / "ImageSets/Main/test.txt").write_text("000001\n")
    return VocSource(root, split="test", class_names=["dog", "cat"])


def test_voc_difficult_boxes_are_ignored_as_pycocotools_ignores_crowds(tmp_path):
    # A dog, a difficult dog and a difficult cat (VOC pixels, 1-based inclusive).
    source = _voc(tmp_path, [("dog", 0, (11, 11, 40, 40)), ("dog", 1, (61, 11, 90, 50)), ("cat", 1, (41, 41, 60, 60))])
    gt = _stream_ground_truth(source)
    crowd = [a["iscrowd"] for a in gt["annotations"]]
    assert sorted(crowd) == [0, 1, 1] and len(gt["annotations"]) == 3
    dets = [  # the best-scored detection lies on the difficult dog; one on the difficult cat
        {"image_id": 1, "category_id": 0, "bbox": [60, 10, 30, 40], "score": 0.95},
        {"image_id": 1, "category_id": 0, "bbox": [10, 10, 30, 30], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [40, 40, 20, 20], "score": 0.8},
    ]
    hand = {"images": [{"id": 1, "width": 100, "height": 60}],
            "categories": [{"id": 0, "name": "dog"}, {"id": 1, "name": "cat"}],
            "annotations": [{"id": i + 1, "image_id": 1, "category_id": c, "bbox": b, "area": b[2] * b[3],
                             "iscrowd": k} for i, (c, b, k) in
                            enumerate([(0, [10, 10, 30, 30], 0), (0, [60, 10, 30, 40], 1), (1, [40, 40, 20, 20], 1)])]}
    ours = evaluate_coco(gt, dets).stats
    np.testing.assert_allclose([ours[k] for k in STAT_NAMES], [_pycocotools(hand, dets)[k] for k in STAT_NAMES],
                               atol=1e-9)
    assert ours["AP50"] == pytest.approx(1.0)  # neither a false positive nor a miss
    dropped = dict(gt, annotations=[a for a in gt["annotations"] if not a["iscrowd"]])
    assert evaluate_coco(dropped, dets).stats["AP50"] < 0.6  # the old rebuild: the 0.95 box was a false positive


def test_coco_crowd_boxes_rebuilt_from_the_stream_score_as_the_json(tmp_path):
    rng = np.random.default_rng(2)
    images, annotations = [], []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        images.append({"id": 7 + i, "file_name": f"{i}.png", "width": 80, "height": 48})
        annotations += [
            {"id": 10 * i + 1, "image_id": 7 + i, "category_id": 3, "bbox": [4.0, 4.0, 20.0, 16.0], "iscrowd": 0},
            {"id": 10 * i + 2, "image_id": 7 + i, "category_id": 3, "bbox": [40.0, 8.0, 36.0, 36.0], "iscrowd": 1},
            {"id": 10 * i + 3, "image_id": 7 + i, "category_id": 5, "bbox": [30.0, 20.0, 12.0, 20.0], "iscrowd": 0},
        ]
    for ann in annotations:
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    categories = [{"id": 3, "name": "a"}, {"id": 5, "name": "b"}]
    path = write_coco_json(tmp_path / "crowd.json", images, annotations, categories)
    source = CocoSource(path, image_dir=tmp_path)
    dets = []
    for im in images:
        dets += [{"image_id": im["id"], "category_id": 3, "bbox": [45.0, 10.0, 10.0, 10.0], "score": 0.99},  # in the crowd
                 {"image_id": im["id"], "category_id": 3, "bbox": [5.5, 4.0, 20.0, 16.0], "score": 0.7},
                 {"image_id": im["id"], "category_id": 5, "bbox": [31.0, 21.0, 12.0, 19.0], "score": 0.6},
                 {"image_id": im["id"], "category_id": 5, "bbox": [0.0, 30.0, 10.0, 10.0], "score": 0.65}]  # false
    gt = _stream_ground_truth(source, size=96)
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 3
    ours = evaluate_coco(gt, dets).stats
    reference = _pycocotools(json.load(open(path)), dets)
    np.testing.assert_allclose([ours[k] for k in STAT_NAMES], [reference[k] for k in STAT_NAMES], atol=1e-6)


def test_images_that_fail_to_decode_are_counted_in_the_summary(tmp_path):
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64})
        annotations.append({"image_id": i + 1, "category_id": 1, "bbox": [8.0, 8.0, 30.0, 30.0], "iscrowd": 0})
    path = write_coco_json(tmp_path / "eval.json", images, annotations, [{"id": 1, "name": "x"}])
    source = CocoSource(path, image_dir=tmp_path)  # the header check passes now
    data = (tmp_path / "2.png").read_bytes()
    (tmp_path / "2.png").write_bytes(data[:60])  # truncated after the source was built
    detector = tiny_detector(1, (64, 64, 3))
    result = evaluate_detector(detector, detection_dataset(source, 64, batch_size=4, training=False), source)
    assert result.num_images == 3 and result.num_failed_images == 1
    assert result.summary.startswith("1 image(s) of eval.json failed to decode")
    assert result.to_json()["num_failed_images"] == 1

"""No target silently dropped: ``max_boxes`` is sized from the data (x4 for mosaic, x2 for
mixup), and what a too-small ``max_boxes`` still cuts is counted in the source's report by
in-graph counters, with one warning, for training targets and evaluation ground truth."""

import logging

import numpy as np
import pytest
from PIL import Image

from keras_csp.backend import tf
from keras_csp.data import AugmentConfig, detection_dataset
from keras_csp.data.boxes import compact, pad_boxes
from keras_csp.data.coco import CocoSource, write_coco_json
from keras_csp.data.pipeline import AUTO_MAX_BOXES_CAP, auto_max_boxes
from keras_csp.data.report import BOXES_CUT, GROUND_TRUTH_CUT

SIZE = 128
MOSAIC = AugmentConfig(mosaic=1.0, scale=0.5, translate=0.1, aspect=0.0, flip=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A COCO JSON of 8 busy images: 60 to 71 objects of 10 x 10 pixels each on 128 x 128."""
    root = tmp_path_factory.mktemp("dense")
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": SIZE, "height": SIZE})
        cells = rng.permutation(144)[: 60 + i + (4 if i == 7 else 0)]  # a 12 x 12 grid of cells
        for c in cells:
            x, y = 10.0 * (c % 12) + 4, 10.0 * (c // 12) + 4
            annotations.append({"image_id": i + 1, "category_id": 1 + int(c) % 3, "bbox": [x, y, 9.0, 9.0],
                                "iscrowd": 0})
    categories = [{"id": k, "name": f"c{k}"} for k in (1, 2, 3)]
    return CocoSource(write_coco_json(root / "dense.json", images, annotations, categories), image_dir=root)


def _counts(ds, batches=None):
    """Valid target rows per output image, over the first ``batches`` batches."""
    out = []
    for step, (_, boxes) in enumerate(ds):
        if batches is not None and step >= batches:
            break
        out += (boxes.numpy()[..., 4] >= 0).sum(axis=1).tolist()
    return out


def test_pad_and_compact_report_what_they_cut():
    boxes, cut = pad_boxes(tf.random.uniform([7, 4]), tf.range(7), 5, return_cut=True)
    assert boxes.shape == (5, 5) and int(cut) == 2
    _, cut = pad_boxes(tf.random.uniform([3, 4]), tf.range(3), 5, return_cut=True)
    assert int(cut) == 0
    rows = tf.concat([tf.random.uniform([2, 9, 4]), tf.zeros([2, 9, 1])], axis=-1)
    keep = tf.constant([[True] * 9, [True, False] * 4 + [True]])
    packed, cut = compact(rows, keep, 4, return_cut=True)
    assert packed.shape == (2, 4, 5) and cut.numpy().tolist() == [5, 1]


def test_max_boxes_is_sized_from_the_data(dense):
    assert dense.max_objects() == 71
    assert auto_max_boxes(dense, mosaic=1.0) == (71, 288)  # 4 x 71 = 284, rounded up to 8
    assert auto_max_boxes(dense, mosaic=1.0, mixup=0.5) == (71, 568)
    assert auto_max_boxes(dense) == (71, 72)
    assert auto_max_boxes(dense, max_boxes=50) == (50, 50)  # the user's value stands
    huge = type("Huge", (), {"max_objects": lambda self, include_ignored=False: 400, "name": "huge"})()
    assert auto_max_boxes(huge, mosaic=1.0, mixup=0.1) == (400, AUTO_MAX_BOXES_CAP)  # capped, with a warning


def test_mosaics_keep_every_target_by_default_and_a_small_max_boxes_is_counted_once(dense, caplog):
    def counts(max_boxes=None):
        return _counts(detection_dataset(source, SIZE, batch_size=8, augment=MOSAIC, seed=3, group_size=8,
                                         max_boxes=max_boxes))

    source = CocoSource(dense.annotation_file, image_dir=dense.image_dir)  # a fresh report
    sized, reference = counts(), counts(1000)
    assert sized == reference and max(sized) > 100  # more than the old fixed 100 rows, none lost
    assert source.report.num_cut_boxes == 0
    with caplog.at_level(logging.WARNING, logger="keras_csp.data"):  # 72 >= 71: only mosaics cut
        cut = counts(72)
    assert cut == [min(n, 72) for n in reference]
    expected = sum(max(n - 72, 0) for n in reference)
    assert expected > 0 and source.report.runtime_counts()[BOXES_CUT] == expected
    assert source.report.num_cut_boxes == expected
    assert f"{BOXES_CUT}: {expected}" in source.report.summary()
    warnings = [r for r in caplog.records if "boxes cut by max_boxes=72" in r.getMessage()]
    assert len(warnings) == 1  # once, however many outputs cut


def test_single_images_cut_before_augmentation_are_counted(dense):
    source = CocoSource(dense.annotation_file, image_dir=dense.image_dir)
    counts = [60 + i + (4 if i == 7 else 0) for i in range(8)]
    kept = _counts(detection_dataset(source, SIZE, batch_size=8, augment=False, seed=0, max_boxes=62))
    assert sorted(kept) == sorted(min(n, 62) for n in counts)
    assert source.report.runtime_counts()[BOXES_CUT] == sum(max(n - 62, 0) for n in counts)


def test_mixup_cuts_are_counted(dense):
    source = CocoSource(dense.annotation_file, image_dir=dense.image_dir)
    config = AugmentConfig(mosaic=0.0, mixup=1.0, scale=0.0, translate=0.0, aspect=0.0, flip=0.0, hsv_h=0.0,
                           hsv_s=0.0, hsv_v=0.0)
    assert auto_max_boxes(source, mosaic=0.0, mixup=1.0) == (71, 144)
    full = _counts(detection_dataset(source, SIZE, batch_size=8, augment=config, seed=1, group_size=8))
    assert max(full) > 100 and source.report.num_cut_boxes == 0
    _counts(detection_dataset(source, SIZE, batch_size=8, augment=config, seed=1, group_size=8, max_boxes=80))
    assert source.report.runtime_counts()[BOXES_CUT] == sum(max(n - 80, 0) for n in full)


def test_evaluation_ground_truth_cut_is_counted(dense):
    source = CocoSource(dense.annotation_file, image_dir=dense.image_dir)
    rows = [int((meta["boxes"].numpy()[..., 4] >= 0).sum()) for _, meta in
            detection_dataset(source, SIZE, batch_size=8, training=False)]
    assert rows == [sum(60 + i + (4 if i == 7 else 0) for i in range(8))]  # sized from the data: all kept
    assert source.report.num_cut_boxes == 0
    list(detection_dataset(source, SIZE, batch_size=8, training=False, max_boxes=62))
    assert source.report.runtime_counts()[GROUND_TRUTH_CUT] == sum(max(60 + i + (4 if i == 7 else 0) - 62, 0)
                                                                   for i in range(8))

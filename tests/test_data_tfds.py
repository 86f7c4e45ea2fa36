"""TFDS sources offline with ``tfds.testing.mock_data``: coco/2017, voc/2007, imagenet2012.

The mock examples have object fields of different lengths and random boxes: the source must
cut, clip and drop them into valid elements of the shared structure, and count what it did.
"""

import numpy as np
import pytest

from keras_csp.data import (
    CLASSIFICATION_SPEC,
    COCO_CATEGORY_IDS,
    ELEMENT_SPEC,
    TfdsClassificationSource,
    TfdsDetectionSource,
    classification_dataset,
    detection_dataset,
)

tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture
def mock():
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def _check_elements(elements, num_classes):
    assert elements
    for e in elements:
        boxes, classes = e["boxes"], e["classes"]
        assert boxes.shape == (len(classes), 4)
        assert np.all(boxes >= 0) and np.all(boxes <= 1)
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        assert np.all((classes >= 0) & (classes < num_classes))
        assert e["image"].shape[-1] == 3 and e["original_size"].tolist() == list(e["image"].shape[:2])


@pytest.mark.parametrize("name, num_classes", [("coco/2017", 80), ("voc/2007", 20), ("voc/2012", 20)])
def test_tfds_detection_sources_validate_and_clip(mock, name, num_classes):
    source = TfdsDetectionSource(name, split="train")
    assert source.num_classes == num_classes
    ds = source.dataset()
    assert ds.element_spec == ELEMENT_SPEC
    elements = list(ds.as_numpy_iterator())
    assert len(elements) == 6
    _check_elements(elements, num_classes)
    counts = source.report.as_dict()["runtime_counts"]
    # TFDS mock examples have mismatched field lengths and random (often inverted) boxes
    assert counts["examples with mismatched object-field lengths (cut)"] > 0
    assert counts["boxes dropped in-graph (empty, non-finite or unknown class)"] > 0
    assert sum(len(e["classes"]) for e in elements) > 0


def test_tfds_coco_maps_back_to_official_category_ids(mock):
    source = TfdsDetectionSource("coco/2017")
    assert source.category_ids == list(COCO_CATEGORY_IDS) and len(set(COCO_CATEGORY_IDS)) == 80
    assert source.category_id(0) == 1 and source.category_id(79) == 90 and source.class_index(90) == 79
    assert source.class_names[0] == "person"


def test_tfds_voc_image_ids_from_file_names(mock):
    elements = list(TfdsDetectionSource("voc/2007").dataset().as_numpy_iterator())
    ids = [int(e["image_id"]) for e in elements]
    assert all(i >= 0 for i in ids) and len(set(ids)) == len(ids)


def test_tfds_detection_pipeline_batches(mock):
    source = TfdsDetectionSource("coco/2017")
    images, boxes = next(iter(detection_dataset(source, image_size=64, batch_size=2, seed=0, group_size=4)))
    # TFDS cannot tell its busiest image: DEFAULT_MAX_BOXES per image, x4 for the mosaic.
    from keras_csp.data.pipeline import DEFAULT_MAX_BOXES

    assert source.max_objects() is None
    assert images.shape == (2, 64, 64, 3) and boxes.shape == (2, 4 * DEFAULT_MAX_BOXES, 5)
    images, targets = next(iter(detection_dataset(source, image_size=64, batch_size=3, training=False)))
    assert targets["image_info"].shape == (3, 4, 2)


def test_tfds_imagenet_classification(mock):
    source = TfdsClassificationSource("imagenet2012", split="train")
    assert source.num_classes == 1000
    ds = source.dataset()
    assert ds.element_spec == CLASSIFICATION_SPEC
    images, labels = next(iter(classification_dataset(source, image_size=32, batch_size=4, seed=0, mixup=0.5, cutmix=0.5)))
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4, 1000)
    np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, atol=1e-5)
    evaluation = list(classification_dataset(source, image_size=32, batch_size=4, training=False).as_numpy_iterator())
    assert sum(len(x) for x, _ in evaluation) == 6 and all(np.all(y.max(axis=1) == 1.0) for _, y in evaluation)


def test_tfds_string_sources_resolve(mock):
    images, boxes = next(iter(detection_dataset("tfds:voc/2007", image_size=64, batch_size=2, seed=0, mosaic=False)))
    assert images.shape == (2, 64, 64, 3)


@pytest.mark.parametrize("name", ["coco/2017", "voc/2007"])
def test_tfds_crowd_and_difficult_boxes_are_ignored_regions_in_evaluation(mock, name):
    from keras_csp.data.boxes import decode_ignored

    source = TfdsDetectionSource(name)
    assert source.yields_ignored  # detection_dataset(training=False) asks for them
    plain = list(source.dataset().as_numpy_iterator())
    with_ignored = list(source.dataset(include_ignored=True).as_numpy_iterator())
    ignored = 0
    for a, b in zip(plain, with_ignored):
        n = len(a["classes"])
        np.testing.assert_array_equal(b["classes"][:n], a["classes"])  # the targets, unchanged
        np.testing.assert_allclose(b["boxes"][:n], a["boxes"])
        extra = b["classes"][n:]
        assert np.all(extra <= -2) and np.all((decode_ignored(extra) >= 0) & (decode_ignored(extra) < 80))
        ignored += len(extra)
    assert ignored > 0  # the mock marks some boxes crowd / difficult
    kept = TfdsDetectionSource(name, include_crowd=True, include_difficult=True)  # they are targets then
    assert all(np.all(e["classes"] >= 0) for e in kept.dataset(include_ignored=True).as_numpy_iterator())

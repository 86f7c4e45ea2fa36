"""``detection_dataset`` / ``classification_dataset`` end to end: shapes and dtypes, boxes that
still cover their painted pixels after the full training pipeline, evaluation geometry that
maps back to the original boxes, seeds, caching, multi-scale, argument errors."""

import json

import numpy as np
import pytest
from PIL import Image
from test_data_augment import COLOURS, assert_boxes_cover_colours, painted

from keras_csp.backend import tf
from keras_csp.data import (
    AugmentConfig,
    CocoSource,
    ImageFolderSource,
    boxes_to_original,
    classification_dataset,
    detection_dataset,
)

EXACT = AugmentConfig(hsv_h=0, hsv_s=0, hsv_v=0, min_box_size=0.0, min_area_ratio=0.0, scale=0.5, translate=0.2, aspect=0.3)


@pytest.fixture(scope="module")
def painted_coco(tmp_path_factory):
    """Eight PNGs of various sizes with solid rectangles (class = colour) and their COCO JSON."""
    root = tmp_path_factory.mktemp("painted")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(8):
        h, w = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        rects, taken = [], np.zeros((h, w), bool)
        for k in rng.permutation(len(COLOURS))[:3]:
            bw, bh = int(rng.integers(8, w // 2)), int(rng.integers(8, h // 2))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            if taken[max(0, y0 - 2) : y0 + bh + 2, max(0, x0 - 2) : x0 + bw + 2].any():
                continue
            taken[y0 : y0 + bh, x0 : x0 + bw] = True
            rects.append((x0, y0, x0 + bw, y0 + bh, int(k)))
        image, _, _ = painted(h, w, rects)
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        images.append({"id": 100 + i, "file_name": f"{i}.png", "width": w, "height": h})
        for x0, y0, x1, y1, k in rects:
            annotations.append({"id": len(annotations) + 1, "image_id": 100 + i, "category_id": int(k) + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
    categories = [{"id": k + 1, "name": f"colour{k}"} for k in range(len(COLOURS))]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return CocoSource(path)


def _to_uint8(images):
    return (np.asarray(images) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("mosaic", [True, False])
def test_training_batches_keep_boxes_on_their_pixels(painted_coco, mosaic):
    ds = detection_dataset(painted_coco, image_size=64, batch_size=4, augment=EXACT, mosaic=mosaic, seed=3,
                           max_boxes=12, group_size=4)
    assert ds.element_spec[0].shape.as_list() == [4, 64, 64, 3] and ds.element_spec[1].shape.as_list() == [4, 12, 5]
    n = 0
    for images, boxes in ds.as_numpy_iterator():
        assert images.dtype == np.float32 and 0 <= images.min() and images.max() <= 1
        for image, b in zip(_to_uint8(images), boxes):
            assert_boxes_cover_colours(image, b)
            padding = b[b[:, 4] < 0]
            assert np.all(padding == -1)
            n += 1
    assert n == 8


def test_multi_scale_changes_size_every_n_batches_and_boxes_follow(painted_coco):
    ds = detection_dataset(painted_coco, image_size=64, batch_size=1, augment=EXACT, mosaic=False, seed=1,
                           multi_scale=(32, 128), multi_scale_every=2, max_boxes=12).repeat(3)
    sizes = []
    for images, boxes in ds.as_numpy_iterator():
        assert images.shape[1] == images.shape[2] and images.shape[1] % 32 == 0 and 32 <= images.shape[1] <= 128
        sizes.append(images.shape[1])
        if images.shape[1] >= 96:  # downscaling blurs small boxes' edges: check the larger sizes
            assert_boxes_cover_colours(_to_uint8(images[0]), boxes[0], margin=2.5, min_inside=0.8)
    assert len(set(sizes)) > 1
    assert all(sizes[i] == sizes[i + 1] for i in range(0, len(sizes) - 1, 2))  # constant within each pair


def test_evaluation_keeps_order_ids_and_maps_back(painted_coco):
    ds = detection_dataset(painted_coco, image_size=64, batch_size=3, training=False)
    batches = list(ds.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [3, 3, 2]  # every image, in order
    ids = np.concatenate([t["image_id"] for _, t in batches])
    assert ids.tolist() == [100 + i for i in range(8)]
    gt = json.loads(open(painted_coco.annotation_file).read())
    for images, targets in batches:
        original = boxes_to_original(targets["boxes"], targets["image_info"]).numpy()
        for image, image_id, info, boxes, orig in zip(images, targets["image_id"], targets["image_info"],
                                                      targets["boxes"], original):
            expected = [a["bbox"] for a in gt["annotations"] if a["image_id"] == image_id]
            expected = np.array([[x, y, x + w, y + h] for x, y, w, h in expected])
            valid = boxes[:, 4] >= 0
            np.testing.assert_allclose(orig[valid], expected, atol=0.6)
            assert info[0].tolist() == [gt["images"][image_id - 100]["height"], gt["images"][image_id - 100]["width"]]
            assert_boxes_cover_colours(_to_uint8(image), boxes)
    again = list(ds.as_numpy_iterator())
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))  # deterministic


def test_seed_fixes_draws_and_epochs_differ(painted_coco):
    make = lambda seed: detection_dataset(painted_coco, image_size=64, batch_size=4, seed=seed, group_size=4)  # noqa: E731
    ds = make(7)
    epoch1, epoch2 = next(ds.as_numpy_iterator()), next(ds.as_numpy_iterator())
    assert not np.array_equal(epoch1[0], epoch2[0])  # each epoch draws afresh
    same = next(make(7).as_numpy_iterator())
    assert np.array_equal(epoch1[0], same[0]) and np.array_equal(epoch1[1], same[1])
    other = next(make(8).as_numpy_iterator())
    assert not np.array_equal(epoch1[0], other[0])


def test_cache_uint8_and_mixup(painted_coco, tmp_path):
    ds = detection_dataset(painted_coco, image_size=64, batch_size=4, seed=0, cache=str(tmp_path / "cache"),
                           image_dtype="uint8", mixup=1.0, mosaic=False, group_size=4)
    batches = list(ds.as_numpy_iterator()) + list(ds.as_numpy_iterator())
    assert batches[0][0].dtype == np.uint8 and len(batches) == 4
    assert any(p.name.startswith("cache") for p in tmp_path.iterdir())
    counts = [int((b[:, :, 4] >= 0).sum()) for _, b in batches]
    plain = detection_dataset(painted_coco, image_size=64, batch_size=8, augment=False, seed=0)
    total = int((next(plain.as_numpy_iterator())[1][:, :, 4] >= 0).sum())
    assert sum(counts[:2]) > total  # mixed images carry the boxes of two images
    in_memory = detection_dataset(painted_coco, image_size=64, batch_size=4, seed=0, cache=True, group_size=4)
    assert len(list(in_memory.as_numpy_iterator())) == 2


def test_no_augmentation_is_a_letterbox(painted_coco):
    train = next(detection_dataset(painted_coco, image_size=64, batch_size=8, augment=False, shuffle=False).as_numpy_iterator())
    evaluation = next(detection_dataset(painted_coco, image_size=64, batch_size=8, training=False).as_numpy_iterator())
    np.testing.assert_allclose(train[1], evaluation[1]["boxes"], atol=1e-5)
    assert np.abs(train[0] - evaluation[0]).mean() < 0.01


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image_size=100), "multiple of 32"),
        (dict(batch_size=0), "batch_size"),
        (dict(augment="yes"), "augment"),
        (dict(multi_scale=(30, 64)), "multi_scale"),
        (dict(image_dtype="float16"), "image_dtype"),
    ],
)
def test_argument_errors_name_the_argument(painted_coco, kwargs, match):
    with pytest.raises(ValueError, match=match):
        detection_dataset(painted_coco, **{"image_size": 64, **kwargs})


def test_bad_source_and_config_errors(tmp_path):
    with pytest.raises(ValueError, match="not a known source"):
        detection_dataset(str(tmp_path / "nothing"))
    with pytest.raises(TypeError, match="source"):
        detection_dataset(3)
    with pytest.raises(ValueError, match=r"AugmentConfig.mosaic must be in \[0, 1\]"):
        AugmentConfig(mosaic=2.0)


def test_classification_from_an_image_folder(tmp_path):
    for k, name in enumerate(["cat", "dog", "eel"]):
        (tmp_path / name).mkdir()
        for i in range(3):
            image, _, _ = painted(40 + 10 * i, 50, [(0, 0, 50, 40 + 10 * i, k)])
            Image.fromarray(image).save(tmp_path / name / f"{i}.jpg")
    (tmp_path / "dog" / "broken.jpg").write_text("nope")
    source = ImageFolderSource(tmp_path)
    assert source.class_names == ["cat", "dog", "eel"] and len(source) == 9
    assert source.report.skipped_images == {"corrupt or unreadable image": 1}
    images, labels = next(iter(classification_dataset(source, image_size=32, batch_size=9, seed=0)))
    assert images.shape == (9, 32, 32, 3) and labels.shape == (9, 3)
    for image, label in zip(_to_uint8(images), labels.numpy()):  # each image is its class colour
        assert colour_fraction(image, int(label.argmax())) > 0.9
    images, labels = next(iter(classification_dataset(source, image_size=32, batch_size=9, seed=0, cutmix=1.0,
                                                      label_smoothing=0.1)))
    np.testing.assert_allclose(labels.numpy().sum(1), 1.0, atol=1e-5)
    assert labels.numpy().min() >= 0.1 / 3 - 1e-6
    evaluation = list(classification_dataset(tmp_path, image_size=32, batch_size=4, training=False).as_numpy_iterator())
    labels = np.concatenate([y for _, y in evaluation]).argmax(1)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def colour_fraction(image, k):
    return np.all(np.abs(image.astype(int) - COLOURS[k].astype(int)) < 60, axis=-1).mean()


def test_fit_consumes_the_training_dataset(painted_coco):
    """A stand-in model (not a detector) trains on the batches with plain ``fit``."""
    from keras_csp.backend import keras

    inputs = keras.Input((64, 64, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, strides=4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(12 * 5)(pooled))
    model.compile("sgd", loss=lambda y_true, y_pred: tf.reduce_mean(tf.square(tf.reshape(y_true, [-1, 60]) - y_pred)))
    ds = detection_dataset(painted_coco, image_size=64, batch_size=4, seed=0, max_boxes=12, group_size=4)
    history = model.fit(ds, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("training", [True, False])
def test_pipelines_run_without_tf_data_autotuning(painted_coco, training):
    """Autotuning's thread sleeps up to 60 s, and freeing an iterator waits for it: after a long
    ``fit`` that stalled runs by 42-59 s (benchmarks/fit_overheads.py). Its parallelism stays."""
    ds = detection_dataset(painted_coco, image_size=64, batch_size=4, training=training)
    assert ds.options().autotune.enabled is False
    assert ds.options().deterministic is True
    next(iter(ds))  # and it still runs

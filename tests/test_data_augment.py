"""Each augmentation moves boxes with the pixels: paint boxes as solid colours, transform,
and check every transformed box holds its colour and no colour is left outside its box."""

import numpy as np
import pytest

from keras_csp.backend import tf
from keras_csp.data import augment as aug
from keras_csp.data.boxes import boxes_to_original, compact, pad_boxes
from keras_csp.data.mosaic import compose
from keras_csp.data.pipeline import prepare_element
from keras_csp.data.structure import PAD_VALUE, make_element

COLOURS = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255], [255, 128, 0], [255, 255, 255]],
    np.uint8,
)
BACKGROUND = 30
MAX_BOXES = 16


def painted(h, w, rects):
    """Image ``h x w`` with solid rectangles ``(x0, y0, x1, y1, colour)``; boxes normalised."""
    image = np.full((h, w, 3), BACKGROUND, np.uint8)
    for x0, y0, x1, y1, k in rects:
        image[y0:y1, x0:x1] = COLOURS[k]
    boxes = np.array([[x0 / w, y0 / h, x1 / w, y1 / h] for x0, y0, x1, y1, _ in rects], np.float32).reshape(-1, 4)
    classes = np.array([k for *_, k in rects], np.int32)
    return image, boxes, classes


def colour_mask(image, k, tol=60):
    return np.all(np.abs(image.astype(np.int32) - COLOURS[k].astype(np.int32)) < tol, axis=-1)


def assert_boxes_cover_colours(image, boxes, margin=1.5, min_inside=0.9, colours=None):
    """``image`` uint8 [H, W, 3]; ``boxes`` [M, 5] normalised (padding -1) with class = colour.

    Every box of colour k is (mostly) that colour inside, and no pixel of colour k lies
    outside the boxes of class k (``colours`` limits the colours checked)."""
    h, w = image.shape[:2]
    boxes = np.asarray(boxes)
    valid = boxes[boxes[:, 4] >= 0]
    assert np.all(valid[:, :4] >= -1e-6) and np.all(valid[:, :4] <= 1 + 1e-6), valid
    for k in range(len(COLOURS)) if colours is None else colours:
        mask = colour_mask(image, k)
        covered = np.zeros((h, w), bool)
        for x0, y0, x1, y1, _ in valid[valid[:, 4] == k]:
            px = np.array([x0 * w, y0 * h, x1 * w, y1 * h])
            a, b = np.floor(px[:2] - margin).astype(int).clip(0), np.ceil(px[2:] + margin).astype(int)
            covered[a[1] : b[1], a[0] : b[0]] = True
            i0, i1 = np.ceil(px[:2] + 2).astype(int), np.floor(px[2:] - 2).astype(int)
            if np.all(i1 - i0 >= 2):
                inside = mask[i0[1] : i1[1], i0[0] : i1[0]].mean()
                assert inside >= min_inside, f"colour {k}: only {inside:.2f} of box {px.round(1)} holds it"
        stray = mask & ~covered
        assert stray.sum() == 0, f"colour {k}: {stray.sum()} pixels outside its boxes"


def test_painted_helper_catches_a_wrong_box():
    image, boxes, classes = painted(60, 80, [(10, 10, 30, 30, 0)])
    right = np.concatenate([boxes, classes[:, None]], 1)
    assert_boxes_cover_colours(image, right)
    wrong = right.copy()
    wrong[0, [0, 2]] += 0.2
    with pytest.raises(AssertionError):
        assert_boxes_cover_colours(image, wrong)


def _rects():
    return [(5, 8, 30, 40, 0), (40, 5, 75, 25, 1), (50, 35, 95, 55, 2), (8, 50, 20, 58, 3)]


def test_letterbox_boxes_follow_pixels_and_image_info_inverts():
    image, boxes, classes = painted(60, 100, _rects())
    out, out_boxes, info = aug.letterbox(image, np.concatenate([boxes, classes[:, None]], 1), 64)
    out = out.numpy()
    assert out.shape == (64, 64, 3)
    assert np.all(out[:6] == PAD_VALUE) and np.all(out[-6:] == PAD_VALUE)  # 64 * 60/100 = 38 rows of image
    assert_boxes_cover_colours(out, out_boxes.numpy())
    original = boxes_to_original(out_boxes[None, :, :4], info[None])[0].numpy()
    np.testing.assert_allclose(original, boxes * [100, 60, 100, 60], atol=0.6)
    # One geometry: the same Letterbox from the sizes alone, and its own inverse.
    from keras_csp.postprocess import Letterbox

    np.testing.assert_array_equal(Letterbox.fit([60, 100], (64, 64)).to_info().numpy(), info.numpy())
    np.testing.assert_array_equal(Letterbox.from_info(info).boxes_to_original(out_boxes).numpy(), original)


def _prepared(size, images):
    """Prepared (resized + padded) groups from painted images, as the pipeline builds them."""
    elements = [prepare_element(make_element(im, b, c, i), size, MAX_BOXES) for i, (im, b, c) in enumerate(images)]
    return {k: tf.stack([e[k] for e in elements]) for k in elements[0]}


@pytest.mark.parametrize("mosaic", [0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compose_affine_and_mosaic_move_boxes_with_pixels(mosaic, seed):
    sources = [
        painted(60, 100, [(5, 8, 30, 40, 0), (60, 30, 90, 55, 1)]),
        painted(90, 50, [(5, 5, 40, 30, 2), (10, 50, 45, 85, 3)]),
        painted(64, 64, [(20, 20, 50, 44, 4)]),
        painted(70, 90, [(0, 0, 30, 30, 5), (50, 40, 90, 70, 6)]),
    ]
    group = _prepared(64, sources)
    images, boxes = compose(group["image"], group["boxes"], group["valid_size"], tf.constant([seed, 7]), 64,
                            MAX_BOXES, mosaic=mosaic, scale=0.5, translate=0.2, aspect=0.3,
                            min_box_size=0.0, min_area_ratio=0.0)
    assert images.shape == (4, 64, 64, 3) and images.dtype == tf.uint8
    assert boxes.shape == (4, MAX_BOXES, 5)
    for image, b in zip(images.numpy(), boxes.numpy()):
        assert_boxes_cover_colours(image, b)
    if mosaic:  # the mosaics hold boxes from more than one source image
        assert max(len(set(b[b[:, 4] >= 0, 4].astype(int))) for b in boxes.numpy()) > 2


def test_compose_without_jitter_is_a_centred_letterbox():
    image, boxes, classes = painted(60, 100, _rects())
    group = _prepared(64, [(image, boxes, classes)])
    out, out_boxes = compose(group["image"], group["boxes"], group["valid_size"], tf.constant([1, 2]), 64,
                             MAX_BOXES, mosaic=0.0, scale=0.0, translate=0.0, aspect=0.0)
    ref, ref_boxes, _ = aug.letterbox(image, np.concatenate([boxes, classes[:, None]], 1), 64)
    valid = out_boxes[0].numpy()[: len(classes)]
    np.testing.assert_allclose(valid, ref_boxes.numpy(), atol=1e-5)
    assert np.mean(np.abs(out[0].numpy().astype(int) - ref.numpy().astype(int))) < 2.0


def test_compose_drops_boxes_that_become_too_small():
    image, boxes, classes = painted(64, 64, [(10, 10, 13, 13, 0), (20, 20, 60, 60, 1)])
    group = _prepared(64, [(image, boxes, classes)])
    _, out_boxes = compose(group["image"], group["boxes"], group["valid_size"], tf.constant([0, 0]), 64,
                           MAX_BOXES, mosaic=0.0, scale=0.0, translate=0.0, aspect=0.0, min_box_size=4.0)
    kept = out_boxes[0].numpy()
    assert kept[0, 4] == 1 and np.all(kept[1:] == -1)


def test_flip_moves_boxes_with_pixels():
    image, boxes, classes = painted(64, 64, [(5, 8, 30, 40, 0), (40, 5, 60, 25, 1)])
    padded = pad_boxes(boxes, classes, MAX_BOXES)[None]
    images = tf.constant(image[None], tf.float32) / 255.0
    flipped, new_boxes = aug.random_flip(images, padded, tf.constant([0, 1]), prob=1.0)
    out = (flipped[0].numpy() * 255).round().astype(np.uint8)
    assert not np.array_equal(out, image)
    assert_boxes_cover_colours(out, new_boxes[0].numpy())
    assert np.all(new_boxes[0, 2:].numpy() == -1)


def test_hsv_keeps_boxes_on_their_regions():
    image, boxes, classes = painted(64, 64, [(5, 8, 30, 40, 0), (40, 5, 60, 25, 2)])
    images = tf.constant(image[None], tf.float32) / 255.0
    out = aug.random_hsv(images, tf.constant([3, 4]), hue=0.1, saturation=0.5, value=0.3)[0].numpy()
    assert not np.allclose(out, images[0].numpy(), atol=0.02)
    for x0, y0, x1, y1 in (boxes * 64).astype(int):
        region = out[y0:y1, x0:x1]
        assert region.std(axis=(0, 1)).max() < 1e-3  # still one solid colour, exactly the box
        around = out[max(0, y0 - 2) : y0, x0:x1]
        assert np.abs(around - region[0, 0]).max() > 0.1 or around.size == 0


def _hsv(pixels):
    import colorsys

    return np.array([colorsys.rgb_to_hsv(*p) for p in pixels.reshape(-1, 3)])


def test_hsv_jitter_value_is_exact_and_saturation_keeps_hue():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0.05, 0.6, (4, 6, 6, 3)), tf.float32)
    seed = tf.constant([9, 9])
    gains = tf.random.stateless_uniform([4, 3], seed, -1.0, 1.0).numpy()
    before = _hsv(images.numpy()).reshape(4, -1, 3)
    value = _hsv(aug.random_hsv(images, seed, 0.0, 0.0, 0.4).numpy()).reshape(4, -1, 3)
    np.testing.assert_allclose(value[..., 2], before[..., 2] * (1 + 0.4 * gains[:, 2:3]), atol=1e-5)
    np.testing.assert_allclose(value[..., :2], before[..., :2], atol=1e-4)
    images = tf.constant(rng.uniform(0.3, 0.6, (4, 6, 6, 3)), tf.float32)  # no clipping at gain 1.5
    before = _hsv(images.numpy()).reshape(4, -1, 3)
    saturated = _hsv(aug.random_hsv(images, seed, 0.0, 0.5, 0.0).numpy()).reshape(4, -1, 3)
    np.testing.assert_allclose(saturated[..., 0], before[..., 0], atol=1e-4)
    assert np.all(np.sign(saturated[..., 1] - before[..., 1]) == np.sign(gains[:, 1:2]))
    turned = _hsv(aug.random_hsv(images, seed, 0.05, 0.0, 0.0).numpy()).reshape(4, -1, 3)
    shift = (turned[..., 0] - before[..., 0] + 0.5) % 1.0 - 0.5
    strong = before[..., 1] > 0.3
    np.testing.assert_allclose(shift[strong], np.broadcast_to(0.05 * gains[:, :1], shift.shape)[strong], atol=0.02)


def test_mixup_keeps_both_images_boxes():
    a, ab, ac = painted(64, 64, [(5, 8, 30, 40, 0)])
    b, bb, bc = painted(64, 64, [(35, 30, 60, 60, 2)])
    images = tf.constant(np.stack([a, b]), tf.float32) / 255.0
    padded = tf.stack([pad_boxes(ab, ac, MAX_BOXES), pad_boxes(bb, bc, MAX_BOXES)])
    mixed, boxes = aug.mixup_detection(images, padded, tf.constant([5, 6]), prob=1.0, max_boxes=MAX_BOXES)
    first = boxes[0].numpy()
    assert sorted(first[first[:, 4] >= 0, 4].tolist()) == [0.0, 2.0]
    out, bg = mixed[0].numpy(), BACKGROUND / 255.0
    # Inside a's box: ratio * red + (1 - ratio) * background; inside b's: the reverse, in blue.
    ratios = {}
    for x0, y0, x1, y1, k in first[first[:, 4] >= 0]:
        px = (np.array([x0, y0, x1, y1]) * 64).round().astype(int)
        region = out[px[1] : px[3], px[0] : px[2]]
        assert region.std(axis=(0, 1)).max() < 1e-4  # the box covers exactly one blended colour
        channel = int(np.argmax(COLOURS[int(k)]))
        ratios[int(k)] = (region[..., channel].mean() - bg) / (1.0 - bg)
    assert 0.2 < ratios[0] < 0.8
    np.testing.assert_allclose(ratios[0], 1.0 - ratios[2], atol=1e-5)
    untouched = np.ones(out.shape[:2], bool)
    for x0, y0, x1, y1, _ in first[first[:, 4] >= 0]:
        px = (np.array([x0, y0, x1, y1]) * 64).round().astype(int)
        untouched[px[1] : px[3], px[0] : px[2]] = False
    np.testing.assert_allclose(out[untouched], bg, atol=1e-6)  # no colour outside the boxes


def test_random_resized_crop_maps_the_painted_box():
    image, boxes, _ = painted(80, 100, [(30, 20, 70, 60, 1)])
    for seed in range(5):
        out, crop = aug.random_resized_crop(image, 48, tf.constant([seed, 3]), scale=(0.3, 1.0), return_crop=True)
        y0, x0, y1, x1 = crop.numpy()
        b = boxes[0]
        new = np.array([(b[0] - x0) / (x1 - x0), (b[1] - y0) / (y1 - y0), (b[2] - x0) / (x1 - x0), (b[3] - y0) / (y1 - y0)])
        new = np.clip(new, 0, 1)
        row = np.concatenate([new, [1.0]])[None] if (new[2] > new[0] and new[3] > new[1]) else np.full((1, 5), -1.0)
        assert_boxes_cover_colours(out.numpy(), row, margin=2.0)


def test_cutmix_pastes_the_box_from_the_next_image_and_mixes_labels():
    a, _, _ = painted(32, 32, [(0, 0, 32, 32, 0)])
    b, _, _ = painted(32, 32, [(0, 0, 32, 32, 2)])
    images = tf.constant(np.stack([a, b]), tf.float32) / 255.0
    labels = tf.one_hot([0, 2], 3)
    out, mixed, pasted = aug.cutmix(images, labels, tf.constant([1, 1]), prob=1.0, return_boxes=True)
    out = (out.numpy() * 255).round().astype(np.uint8)
    x0, y0, x1, y1 = (pasted[0].numpy() * 32).round().astype(int)
    area = (x1 - x0) * (y1 - y0) / 32**2
    assert 0 < area < 1
    assert_boxes_cover_colours(out[0], np.array([[x0 / 32, y0 / 32, x1 / 32, y1 / 32, 2]]), colours=[2])
    inside = np.zeros((32, 32), bool)
    inside[y0:y1, x0:x1] = True
    assert colour_mask(out[0], 0).sum() == (~inside).sum() and np.all(colour_mask(out[0], 0) == ~inside)
    np.testing.assert_allclose(mixed[0].numpy(), [1 - area, 0, area], atol=1e-6)


def test_center_crop_keeps_the_centre():
    image, _, _ = painted(60, 120, [(50, 20, 70, 40, 3)])
    out = aug.center_crop(image, 32, crop_fraction=1.0).numpy()
    # scale 32/60: the square is x 26.7-37.3 in the resized 64-wide image, crop starts at x=16
    assert_boxes_cover_colours(out, np.array([[(50 * 32 / 60 - 16) / 32, 20 / 60, (70 * 32 / 60 - 16) / 32, 40 / 60, 3]]))


def test_compact_keeps_order_and_pads():
    rows = tf.constant([[[0.1, 0.1, 0.2, 0.2, 1], [-1, -1, -1, -1, -1], [0.3, 0.3, 0.4, 0.4, 2]]], tf.float32)
    out = compact(rows, rows[..., 4] >= 0, 4).numpy()[0]
    assert out[:2, 4].tolist() == [1, 2] and np.all(out[2:] == -1)


def test_classification_mixup_blends_images_and_labels_alike():
    a, _, _ = painted(16, 16, [(0, 0, 16, 16, 0)])
    b, _, _ = painted(16, 16, [(0, 0, 16, 16, 1)])
    images = tf.constant(np.stack([a, b]), tf.float32) / 255.0
    mixed, labels = aug.mixup_classification(images, tf.one_hot([0, 1], 2), tf.constant([2, 3]), prob=1.0, alpha=0.4)
    ratio = mixed[0, 0, 0, 0].numpy()  # red channel: ratio * 1 + (1 - ratio) * 0
    assert 0 < ratio < 1
    np.testing.assert_allclose(mixed[0].numpy(), ratio * images[0].numpy() + (1 - ratio) * images[1].numpy(), atol=1e-6)
    np.testing.assert_allclose(labels[0].numpy(), [ratio, 1 - ratio], atol=1e-6)

"""End to end with augmentation on: a tiny detector trained through the real pipeline
(mosaic, mixup, scale/translate/aspect jitter, flip, HSV) on small synthetic images must
score well above its untrained self on held-out images (COCO AP50, reference evaluation)."""

import numpy as np
from PIL import Image, ImageDraw
from helpers import tiny_detector

from keras_csp.backend import keras
from keras_csp.data import AugmentConfig, detection_dataset
from keras_csp.data.coco import CocoSource, write_coco_json
from keras_csp.evaluation import detection_function, evaluate_detector


def _squares(root, num_images, seed):
    """64 x 64 noisy images with one or two yellow squares (14-29 px) each, as COCO JSON."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(num_images):
        image = Image.fromarray(rng.integers(60, 140, (64, 64, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 3))):
            side = int(rng.integers(14, 30))
            x, y = (int(v) for v in rng.integers(0, 64 - side, 2))
            draw.rectangle([x, y, x + side - 1, y + side - 1], fill=(230, 230, 40))
            annotations.append({"image_id": i + 1, "category_id": 1, "bbox": [x, y, side, side], "iscrowd": 0,
                                "area": side * side})
        image.save(root / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64})
    path = write_coco_json(root / "squares.json", images, annotations, [{"id": 1, "name": "square"}])
    return CocoSource(path, image_dir=root)


def test_detector_learns_with_mosaic_and_mixup_on(tmp_path):
    train, held_out = _squares(tmp_path / "train", 64, 1), _squares(tmp_path / "val", 32, 2)
    keras.utils.set_random_seed(0)
    detector = tiny_detector(1, (64, 64, 3))
    val = detection_dataset(held_out, 64, batch_size=32, training=False, cache=True)
    detect = detection_function(detector)  # traced once, reads the current weights
    untrained = evaluate_detector(detector, val, held_out, detect=detect).stats["AP50"]
    data = detection_dataset(train, 64, batch_size=8, augment=AugmentConfig(mosaic=1.0, mixup=0.2), seed=0,
                             cache=True).repeat()
    detector.compile(optimizer=keras.optimizers.Adam(0.004))
    detector.fit(data, steps_per_epoch=240, epochs=1, verbose=0)
    trained = evaluate_detector(detector, val, held_out, detect=detect).stats
    # Measured: untrained 0.031; 150 steps 0.12, 300 steps 0.54 (AP50, this seed).
    assert trained["AP50"] >= max(0.15, 4 * untrained), (trained, untrained)
    assert train.report.num_cut_boxes == 0  # mosaic + mixup sized max_boxes: no target lost

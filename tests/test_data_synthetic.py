"""The synthetic dataset: reproducible files, COCO and YOLO agree, variety, hardness, CLI."""

import argparse
import hashlib
import json

import numpy as np
import pytest

from keras_csp.data import CocoSource, YoloTxtSource, detection_dataset
from keras_csp.data.cli import add_data_parser
from keras_csp.data.synthetic import (
    CATEGORY_IDS,
    SHAPE_CLASSES,
    ensure_synthetic_dataset,
    synthetic_source,
    write_synthetic_dataset,
)

SMALL = dict(min_side=96, max_side=160)


def _digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, num_images=24, seed=5, **SMALL)
    return root


def test_same_seed_same_files_other_seed_other_files(synth, tmp_path):
    again = tmp_path / "again"
    write_synthetic_dataset(again, num_images=24, seed=5, **SMALL)
    assert _digest(again) == _digest(synth)
    other = tmp_path / "other"
    write_synthetic_dataset(other, num_images=24, seed=6, **SMALL)
    a, b = _digest(other), _digest(synth)
    assert a.keys() == b.keys()
    assert sum(a[k] != b[k] for k in a if k.startswith("images/")) == 24
    # image i does not depend on how many images are written
    fewer = tmp_path / "fewer"
    write_synthetic_dataset(fewer, num_images=3, seed=5, **SMALL)
    assert all(_digest(fewer)[f"images/{i:06d}.jpg"] == b[f"images/{i:06d}.jpg"] for i in (1, 2, 3))


def test_coco_and_yolo_files_describe_the_same_boxes(synth):
    coco = CocoSource(synth / "annotations.json")
    yolo = YoloTxtSource(synth / "train.txt", names=synth / "classes.names")
    assert coco.class_names == list(SHAPE_CLASSES) == yolo.class_names
    assert coco.category_ids == list(CATEGORY_IDS) and CATEGORY_IDS != tuple(range(1, 9))  # gaps on purpose
    assert coco.report.num_skipped == 0 and yolo.report.num_skipped == 0 and coco.report.num_dropped_boxes == 0
    for a, b in zip(coco.dataset().as_numpy_iterator(), yolo.dataset().as_numpy_iterator()):
        assert a["image_id"] == b["image_id"]
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=2e-6)
        np.testing.assert_array_equal(a["classes"], b["classes"])
        np.testing.assert_array_equal(a["image"], b["image"])


def test_variety_sizes_overlaps_and_classes(synth):
    data = json.loads((synth / "annotations.json").read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    assert len(set(sizes.values())) > 10  # sizes and aspects vary
    boxes = np.array([a["bbox"] for a in data["annotations"]])
    rel = np.sqrt(boxes[:, 2] * boxes[:, 3] / np.array([np.prod(sizes[a["image_id"]]) for a in data["annotations"]]))
    assert rel.min() < 0.06 and rel.max() > 0.35  # tiny to large
    assert {a["category_id"] for a in data["annotations"]} == set(CATEGORY_IDS)
    overlaps = 0
    for image_id in sizes:
        b = np.array([a["bbox"] for a in data["annotations"] if a["image_id"] == image_id]).reshape(-1, 4)
        x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        iw = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
        ih = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
        overlaps += int(np.triu((iw > 0) & (ih > 0), 1).sum())
    assert overlaps > 5
    # textured backgrounds: not flat colour
    from PIL import Image

    image = np.asarray(Image.open(synth / "images" / "000001.jpg"), np.float32)
    assert image.std(axis=(0, 1)).mean() > 10


def test_trivial_detector_scores_near_zero(synth):
    """A prior-only detector (every class, boxes on a grid of typical sizes) gets ~0 AP."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(synth / "annotations.json"))
        detections = []
        for image in gt.dataset["images"]:
            w, h = image["width"], image["height"]
            for frac in (0.1, 0.25, 0.5):
                for cx in (0.25, 0.5, 0.75):
                    for cy in (0.25, 0.5, 0.75):
                        for cat in CATEGORY_IDS:
                            bw, bh = frac * w, frac * h
                            detections.append({"image_id": image["id"], "category_id": cat, "score": 0.5,
                                               "bbox": [cx * w - bw / 2, cy * h - bh / 2, bw, bh]})
        evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert 0.0 <= evaluator.stats[0] < 0.05


def test_ensure_reuses_and_synthetic_source_pipes(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    paths = ensure_synthetic_dataset(num_images=4, seed=1, **SMALL)
    assert paths["root"].startswith(str(tmp_path / "home"))
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "home").rglob("*") if p.is_file()}
    again = ensure_synthetic_dataset(num_images=4, seed=1, **SMALL)
    assert again == paths
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "home").rglob("*") if p.is_file()} == written
    other = ensure_synthetic_dataset(num_images=5, seed=1, **SMALL)
    assert other["root"] != paths["root"]
    source = synthetic_source(num_images=4, seed=1, **SMALL)
    assert len(source) == 4
    images, boxes = next(iter(detection_dataset(source, image_size=64, batch_size=4, seed=0)))
    # Padding sized from the data: the busiest image x4 (default augmentation has mosaic), to 8s.
    expected_rows = -(-4 * source.max_objects() // 8) * 8
    assert images.shape == (4, 64, 64, 3) and boxes.shape == (4, expected_rows, 5)
    yolo = synthetic_source(num_images=4, seed=1, format="yolo", **SMALL)
    assert isinstance(yolo, YoloTxtSource) and len(yolo) == 4


def test_cli_synth_writes_the_set(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="keras-csp")
    add_data_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(["data", "synth", str(out), "--num-images", "3", "--seed", "5",
                              "--min-side", "96", "--max-side", "160"])
    assert args.func(args) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    reference = tmp_path / "ref"
    write_synthetic_dataset(reference, num_images=3, seed=5, **SMALL)
    assert _digest(out) == _digest(reference)
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "synth", str(out), "--num-images", "0"])


def test_plain_variant_has_no_clutter_and_solid_shapes(tmp_path):
    """clutter=False (the demo's set): same boxes drawn on one background texture with no
    distractors; its manifest says so, so it never reuses a cluttered set's cache."""
    from keras_csp.data.synthetic import render_image

    def edge_energy(image):
        return float(np.abs(np.diff(image.astype(np.float32), axis=1)).mean())

    plain = [render_image(np.random.default_rng([3, i]), 96, 96, 3, 24, clutter=False) for i in range(12)]
    busy = [render_image(np.random.default_rng([3, i]), 96, 96, 3, 24) for i in range(12)]
    assert sum(len(objects) for _, objects in plain) >= 12
    # no lines, arcs or blended second textures: fewer edges on average
    assert np.mean([edge_energy(im) for im, _ in plain]) < np.mean([edge_energy(im) for im, _ in busy])
    paths = ensure_synthetic_dataset(tmp_path / "plain", num_images=2, seed=1, image_size=(64, 64), clutter=False)
    manifest = json.loads(open(paths["manifest"]).read())
    assert manifest["clutter"] is False
    again = ensure_synthetic_dataset(tmp_path / "plain", num_images=2, seed=1, image_size=(64, 64))
    assert "clutter" not in json.loads(open(again["manifest"]).read())  # rewritten as the default set

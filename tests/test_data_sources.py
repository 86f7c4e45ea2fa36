"""File sources (COCO JSON, YOLO txt, Pascal VOC): parsing, id mapping, the shared element
structure, and bad input (skipped and counted, or an error naming the file and line)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_csp.data import (
    ELEMENT_SPEC,
    CocoFormatError,
    CocoSource,
    VocFormatError,
    VocSource,
    YoloFormatError,
    YoloTxtSource,
    detection_dataset,
)
from keras_csp.data.decode import check_image
from keras_csp.data.yolo_txt import label_path


def _save(path, array, mode=None, **kw):
    Image.fromarray(array, mode).save(path, **kw) if mode else Image.fromarray(array).save(path, **kw)
    return path


def rgb(h, w, value=(200, 50, 50)):
    a = np.zeros((h, w, 3), np.uint8)
    a[:] = value
    return a


def _elements(source, **kw):
    return list(source.dataset(**kw).as_numpy_iterator())


# -- COCO ---------------------------------------------------------------------------------------
def _coco(tmp_path, images, annotations, categories=None, indent=None):
    path = tmp_path / "instances.json"
    data = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 7, "name": "train"}],
    }
    path.write_text(json.dumps(data, indent=indent))
    return path


def test_coco_maps_category_ids_and_normalises_boxes(tmp_path):
    (tmp_path / "images").mkdir()
    _save(tmp_path / "images" / "a.jpg", rgb(50, 100))
    path = _coco(tmp_path, [{"id": 42, "file_name": "a.jpg", "width": 100, "height": 50}], [
        {"id": 1, "image_id": 42, "category_id": 7, "bbox": [10, 5, 20, 10], "iscrowd": 0},
        {"id": 2, "image_id": 42, "category_id": 1, "bbox": [0, 0, 50, 50]},
        {"id": 3, "image_id": 42, "category_id": 3, "bbox": [60, 10, 30, 30], "iscrowd": 1},
    ])  # fmt: skip
    source = CocoSource(path)
    assert source.category_ids == [1, 3, 7] and source.class_names == ["person", "car", "train"]
    assert source.class_index(7) == 2 and source.category_id(2) == 7
    np.testing.assert_array_equal(source.category_id(np.array([0, 2])), [1, 7])
    with pytest.raises(KeyError, match="unknown category id 5"):
        source.class_index(5)
    (element,) = _elements(source)
    assert element["image_id"] == 42 and element["original_size"].tolist() == [50, 100]
    np.testing.assert_allclose(element["boxes"], [[0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 0.5, 1.0]], atol=1e-6)
    assert element["classes"].tolist() == [2, 0]  # the crowd box is left out
    assert source.report.notes["crowd box left out (iscrowd=1)"] == 1
    crowd = CocoSource(path, include_crowd=True)
    assert _elements(crowd)[0]["classes"].tolist() == [2, 0, 1]


@pytest.fixture
def bad_coco(tmp_path):
    """A COCO set with every kind of bad input."""
    d = tmp_path / "images"
    d.mkdir()
    _save(d / "good.jpg", rgb(40, 60))
    _save(d / "gray.png", np.full((40, 60), 90, np.uint8))
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 180, 20
    _save(d / "rgba.png", rgba)
    _save(d / "deep.png", (np.arange(40 * 60).reshape(40, 60) * 27).astype(np.uint16))
    Image.fromarray(rgb(40, 60)).convert("P").save(d / "palette.png")
    _save(d / "empty.jpg", rgb(40, 60))
    (d / "corrupt.jpg").write_text("this is not an image")
    full = (d / "good.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    _save(d / "scan.tif", rgb(40, 60))
    names = ["good.jpg", "gray.png", "rgba.png", "deep.png", "palette.png", "empty.jpg",
             "corrupt.jpg", "truncated.jpg", "missing.jpg", "scan.tif"]  # fmt: skip
    images = [{"id": i + 1, "file_name": n, "width": 60, "height": 40} for i, n in enumerate(names)]
    box = lambda image_id, bbox, cat=1, **kw: {"image_id": image_id, "category_id": cat, "bbox": bbox, **kw}  # noqa: E731
    annotations = [
        box(1, [10, 10, 20, 20]),
        box(1, [5, 5, 0, 10]),  # zero width
        box(1, [30, 5, -4, 10]),  # negative width
        box(1, [100, 100, 10, 10]),  # wholly outside
        box(1, [50, 30, 30, 30]),  # partly outside: clipped
        box(1, [1, 1, 5, 5], cat=99),  # unknown category
        box(77, [1, 1, 5, 5]),  # unknown image
        box(2, [0, 0, 30, 20]), box(3, [0, 0, 30, 20]), box(4, [0, 0, 30, 20]), box(5, [0, 0, 30, 20]),
        box(7, [0, 0, 30, 20]), box(8, [0, 0, 30, 20]), box(9, [0, 0, 30, 20]), box(10, [0, 0, 30, 20]),
    ]  # fmt: skip
    return _coco(tmp_path, images, annotations, [{"id": 1, "name": "thing"}])


def test_bad_coco_input_is_skipped_counted_and_converted(bad_coco, caplog):
    caplog.set_level("INFO", logger="keras_csp.data")
    source = CocoSource(bad_coco)
    report = source.report
    assert len(source) == 6
    assert report.skipped_images == {"corrupt or unreadable image": 2, "missing file": 1, "unsupported image format": 1}
    assert any("truncated.jpg" in e for e in report.examples("image", "corrupt or unreadable image"))
    assert report.dropped_boxes == {
        "zero or negative width/height": 2, "box outside the image": 1, "unknown category": 1,
        "annotation for an unknown image id": 1,
    }  # fmt: skip
    assert report.converted_images == {
        "grayscale converted to RGB": 1, "RGBA converted to RGB (alpha dropped)": 1,
        "16-bit grayscale converted to 8-bit RGB": 1, "palette converted to RGB": 1,
    }  # fmt: skip
    assert report.notes["box clipped to the image"] == 1
    assert any("empty.jpg" in e for e in report.examples("note", "no annotations (kept as a background image)"))
    summary = report.summary()
    assert "missing.jpg" in summary and "corrupt.jpg" in summary and "unsupported image format: 1" in summary
    assert sum("skipped images: 4" in r.getMessage() for r in caplog.records) == 1  # logged once
    report.log_once()
    assert sum("skipped images: 4" in r.getMessage() for r in caplog.records) == 1

    by_id = {int(e["image_id"]): e for e in _elements(source)}
    assert sorted(by_id) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(by_id[1]["boxes"], [[10 / 60, 0.25, 0.5, 0.75], [50 / 60, 0.75, 1.0, 1.0]], atol=1e-6)
    assert all(e["image"].shape == (40, 60, 3) for e in by_id.values())
    gray = by_id[2]["image"]
    assert np.all(gray == 90)
    assert np.all(by_id[3]["image"][..., 1] == 180) and np.all(by_id[3]["image"][..., 0] == 0)
    deep = by_id[4]["image"]
    assert deep.dtype == np.uint8 and deep.max() > 200 and np.all(deep[..., 0] == deep[..., 2])
    assert len(by_id[6]["boxes"]) == 0 and by_id[6]["boxes"].shape == (0, 4)


def test_bad_input_never_stops_an_epoch(bad_coco):
    source = CocoSource(bad_coco)
    # A file that breaks after the checks (overwritten, deleted) fails in the graph: skipped, counted.
    (bad_coco.parent / "images" / "palette.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    os.remove(bad_coco.parent / "images" / "empty.jpg")
    batches = list(detection_dataset(source, image_size=64, batch_size=2, seed=0).as_numpy_iterator())
    assert len(batches) == 2 and batches[0][0].shape == (2, 64, 64, 3)
    evaluation = list(detection_dataset(source, image_size=64, batch_size=3, training=False).as_numpy_iterator())
    ids = np.concatenate([t["image_id"] for _, t in evaluation])
    assert ids.tolist() == [1, 2, 3, 4]
    assert source.report.runtime_failures == 4  # two files, two passes
    assert "failed to decode while iterating: 4" in source.report.summary()


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"images": [], "annotations": [\n  {"id": 1,, }]}', r"instances\.json:2:\d+: not valid JSON"),
        ("[1, 2, 3]", r"instances\.json:1: not a COCO instances file.*found list"),
        ('{"images": [], "annotations": []}', r"instances\.json:1: not a COCO.*found \['annotations', 'images'\]"),
    ],
)
def test_coco_errors_name_file_and_line(tmp_path, text, match):
    path = tmp_path / "instances.json"
    path.write_text(text)
    with pytest.raises(CocoFormatError, match=match):
        CocoSource(path)


def test_coco_bad_bbox_field_names_its_line(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2]},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2]},
    ]
    path = _coco(tmp_path, images, annotations, indent=1)
    text = path.read_text().splitlines()
    line = next(i for i, t in enumerate(text, 1) if '"id": 2' in t) - 1  # the "{" before it
    with pytest.raises(CocoFormatError, match=rf"instances\.json:{line}: annotations\[1\] 'bbox' must be 4 numbers"):
        CocoSource(path)


# -- YOLO txt ---------------------------------------------------------------------------------------
def test_label_path_follows_darknet():
    assert label_path("/d/images/train/a.jpg") == "/d/labels/train/a.txt"
    assert label_path("/d/VOC/JPEGImages/b.png") == "/d/VOC/labels/b.txt"
    assert label_path("/d/pics/c.jpeg") == "/d/pics/c.txt"


def _yolo(tmp_path, labels, names=("a", "b")):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    lines = []
    for i, rows in enumerate(labels):
        _save(tmp_path / "images" / f"{i:04d}.jpg", rgb(40, 80))
        if rows is not None:
            (tmp_path / "labels" / f"{i:04d}.txt").write_text(rows)
        lines.append(f"images/{i:04d}.jpg\n")
    (tmp_path / "list.txt").write_text("".join(lines))
    (tmp_path / "obj.names").write_text("".join(f"{n}\n" for n in names))
    return tmp_path / "list.txt"


def test_yolo_txt_reads_labels_and_counts_problems(tmp_path):
    path = _yolo(tmp_path, ["0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.2\n\n", None, "5 0.5 0.5 0.2 0.2\n0 0.5 0.5 0 0.2\n"])
    source = YoloTxtSource(path, names=tmp_path / "obj.names")
    assert source.class_names == ["a", "b"] and len(source) == 3
    elements = _elements(source)
    assert [int(e["image_id"]) for e in elements] == [0, 1, 2]
    np.testing.assert_allclose(elements[0]["boxes"], [[0.25, 0.25, 0.75, 0.75], [0.2, 0.15, 0.3, 0.35]], atol=1e-6)
    assert elements[0]["classes"].tolist() == [0, 1]
    assert len(elements[1]["boxes"]) == 0 and len(elements[2]["boxes"]) == 0
    assert source.report.notes["no label file"] == 1
    assert source.report.dropped_boxes == {"unknown category": 1, "zero or negative width/height": 1}
    beside = YoloTxtSource(path)  # no names given: obj.names beside the list names the classes
    assert beside.class_names == ["a", "b"] and beside.names_file.endswith("obj.names")
    (tmp_path / "obj.names").unlink()
    inferred = YoloTxtSource(path)  # no names at all: classes up to the largest id
    assert inferred.num_classes == 6 and inferred.class_names[5] == "class_5"


@pytest.mark.parametrize(
    "rows, match",
    [
        ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n", r"0000\.txt:2: expected 5 fields .* found 4"),
        ("0 0.5 0.5 0.2 0.2 0.9\n", r"0000\.txt:1: expected 5 fields .* found 6"),
        ("\n\n0 0.5 x 0.2 0.2\n", r"0000\.txt:3: fields must be numbers"),
        ("0.5 0.5 0.5 0.2 0.2\n", r"0000\.txt:1: class must be an integer"),
    ],
)
def test_yolo_label_errors_name_file_and_line(tmp_path, rows, match):
    path = _yolo(tmp_path, [rows])
    with pytest.raises(YoloFormatError, match=match):
        YoloTxtSource(path)


# -- VOC -------------------------------------------------------------------------------------------
def _voc_xml(objects, width=100, height=50):
    body = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>\n"
        for n, d, b in objects
    )
    return f"<annotation>\n<filename>x.jpg</filename>\n<size><width>{width}</width><height>{height}</height><depth>3</depth></size>\n{body}</annotation>\n"


def _voc(tmp_path, annotations):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True)
    for stem, xml in annotations.items():
        (tmp_path / "Annotations" / f"{stem}.xml").write_text(xml)
        _save(tmp_path / "JPEGImages" / f"{stem}.jpg", rgb(50, 100))
    (tmp_path / "ImageSets/Main/trainval.txt").write_text("".join(f"{s}\n" for s in annotations))
    return tmp_path


def test_voc_reads_boxes_difficult_and_unknown_names(tmp_path):
    root = _voc(tmp_path, {
        "2008_000008": _voc_xml([("dog", False, (1, 1, 50, 25)), ("cat", True, (10, 10, 20, 20)), ("unicorn", False, (5, 5, 9, 9))]),
        "2008_000011": _voc_xml([("person", False, (51, 26, 100, 50))]),
    })  # fmt: skip
    source = VocSource(root)
    elements = _elements(source)
    assert [int(e["image_id"]) for e in elements] == [2008000008, 2008000011]
    np.testing.assert_allclose(elements[0]["boxes"], [[0.0, 0.0, 0.5, 0.5]], atol=1e-6)  # 1-based inclusive
    assert elements[0]["classes"].tolist() == [11]
    np.testing.assert_allclose(elements[1]["boxes"], [[0.5, 0.5, 1.0, 1.0]], atol=1e-6)
    assert source.report.dropped_boxes == {"unknown category": 1}
    assert source.report.notes["difficult object left out"] == 1
    assert _elements(VocSource(root, include_difficult=True))[0]["classes"].tolist() == [11, 7]


def test_voc_bad_xml_names_file_and_line(tmp_path):
    root = _voc(tmp_path, {"000001": "<annotation>\n<size><width>10</width>\n</annotation>\n"})
    with pytest.raises(VocFormatError, match=r"000001\.xml:3:\d+: not valid XML"):
        VocSource(root)


def test_voc_bndbox_without_numbers_names_its_line(tmp_path):
    xml = _voc_xml([("dog", False, (1, 1, 50, 25))]).replace("<xmax>50</xmax>", "<xmax>wide</xmax>")
    root = _voc(tmp_path, {"000001": xml})
    with pytest.raises(VocFormatError, match=r"000001\.xml:4: <bndbox> needs numeric"):
        VocSource(root)


# -- shared structure ---------------------------------------------------------------------------------
def test_all_file_sources_yield_the_same_structure(tmp_path):
    (tmp_path / "coco" / "images").mkdir(parents=True)
    _save(tmp_path / "coco" / "images" / "a.jpg", rgb(20, 30))
    coco = CocoSource(_coco(tmp_path / "coco", [{"id": 1, "file_name": "a.jpg", "width": 30, "height": 20}], []))
    (tmp_path / "yolo").mkdir()
    yolo = YoloTxtSource(_yolo(tmp_path / "yolo", ["0 0.5 0.5 0.5 0.5\n"]))
    (tmp_path / "voc").mkdir()
    voc = VocSource(_voc(tmp_path / "voc", {"000001": _voc_xml([("dog", False, (1, 1, 50, 25))])}))
    for source in (coco, yolo, voc):
        ds = source.dataset()
        assert ds.element_spec == ELEMENT_SPEC, type(source).__name__
        element = next(iter(ds))
        assert {k: v.dtype for k, v in element.items()} == {k: s.dtype for k, s in ELEMENT_SPEC.items()}


def test_check_image_reports_header_facts(tmp_path):
    path = _save(tmp_path / "g.png", np.zeros((7, 9), np.uint8))
    check = check_image(str(path))
    assert check.reason is None and check.size == (7, 9) and check.conversion == "grayscale converted to RGB"
    assert check_image(str(tmp_path / "nope.jpg")).reason == "missing file"
    assert check_image(str(tmp_path / "nope.jpg"), verify="none").reason is None


def test_a_source_with_no_usable_image_says_so(tmp_path):
    path = _coco(tmp_path, [{"id": 1, "file_name": "gone.jpg", "width": 10, "height": 10}], [])
    source = CocoSource(path)
    assert len(source) == 0 and source.report.skipped_images == {"missing file": 1}
    with pytest.raises(ValueError, match=r"instances\.json: no usable images(.|\n)*gone\.jpg"):
        detection_dataset(source, image_size=64)

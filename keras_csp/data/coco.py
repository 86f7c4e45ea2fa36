"""COCO "instances" JSON with an image folder, as the official files are laid out.

Category ids (1..90 with gaps in COCO) are mapped to contiguous 0-based classes in
ascending id order and back (``category_ids``); ``iscrowd`` boxes are left out of training
targets by default (they mark groups, not objects; COCO evaluation ignores them too).
"""

import json
import os

from keras_csp.data.jsonlines import entry_line, line_of
from keras_csp.data.source import FileDetectionSource, Record, clean_boxes

_REQUIRED = ("images", "annotations", "categories")


class CocoFormatError(ValueError):
    """The file is not COCO instances JSON; the message names the file, line and field."""


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class CocoSource(FileDetectionSource):
    """Images and boxes of a COCO instances JSON.

    Args:
        annotation_file: path of the JSON (e.g. ``annotations/instances_val2017.json``).
        image_dir: folder of the images named by ``file_name``; default: ``images/`` next
            to the JSON if it exists, else the JSON's folder.
        include_crowd: keep ``iscrowd=1`` boxes as ordinary targets (default False).
        verify: how the image files are checked (``decode.VERIFY_MODES``).
        name: name used in reports; default the JSON's file name.
    """

    def __init__(self, annotation_file, image_dir=None, include_crowd=False, verify="header", name=None):
        self.annotation_file = os.fspath(annotation_file)
        if image_dir is None:
            base = os.path.dirname(os.path.abspath(self.annotation_file))
            image_dir = os.path.join(base, "images") if os.path.isdir(os.path.join(base, "images")) else base
        self.image_dir = os.fspath(image_dir)
        self.include_crowd = include_crowd
        data, text = self._load_json()
        categories = self._parse_categories(data, text)
        super().__init__(
            name or os.path.basename(self.annotation_file),
            [c["name"] for c in categories],
            [c["id"] for c in categories],
            verify=verify,
        )
        self._add_records(self._parse(data, text))

    # -- parsing ------------------------------------------------------------------------------
    def _error(self, text, what, key=None, index=None, pos=None):
        line = None
        if key is not None:
            line = entry_line(text, key, index)
        elif pos is not None:
            line = line_of(text, pos)
        where = f"{self.annotation_file}:{line}" if line else self.annotation_file
        entry = f" {key}[{index}]" if key is not None else ""
        return CocoFormatError(f"{where}:{entry} {what}")

    def _load_json(self):
        try:
            with open(self.annotation_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise FileNotFoundError(f"{self.annotation_file}: cannot read the COCO JSON ({e})") from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CocoFormatError(
                f"{self.annotation_file}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})"
            ) from None
        if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in _REQUIRED):
            found = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise self._error(
                text,
                f"not a COCO instances file: expected an object with lists {', '.join(_REQUIRED)}; "
                f"found {found}",
                pos=0,
            )
        return data, text

    def _parse_categories(self, data, text):
        categories = []
        for i, c in enumerate(data["categories"]):
            if not isinstance(c, dict) or not isinstance(c.get("id"), int) or "name" not in c:
                raise self._error(text, f"a category needs an integer 'id' and a 'name'; found {c!r}", "categories", i)
            categories.append(c)
        ids = [c["id"] for c in categories]
        if len(set(ids)) != len(ids):
            raise self._error(text, f"duplicate category ids in {sorted(ids)}", pos=0)
        if not categories:
            raise self._error(text, "no categories", pos=0)
        return sorted(categories, key=lambda c: c["id"])

    def _parse(self, data, text):
        images = {}
        for i, im in enumerate(data["images"]):
            if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
                raise self._error(text, f"an image needs an integer 'id' and a 'file_name'; found {im!r}", "images", i)
            if im["id"] in images:
                raise self._error(text, f"duplicate image id {im['id']}", "images", i)
            images[im["id"]] = (im, [], [], [], [])  # image, boxes, classes, crowd boxes, crowd classes
        cat_index = {c: i for i, c in enumerate(self.category_ids)}
        for i, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
                raise self._error(text, f"an annotation needs 'image_id' and 'category_id'; found {ann!r}", "annotations", i)
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
                raise self._error(text, f"'bbox' must be 4 numbers [x, y, width, height]; found {bbox!r}", "annotations", i)
            entry = images.get(ann["image_id"])
            if entry is None:
                self.report.drop_box("annotation for an unknown image id", self.annotation_file, f"image_id {ann['image_id']}")
                continue
            im, boxes, classes, crowd, crowd_classes = entry
            file = os.path.join(self.image_dir, im["file_name"])
            x, y, w, h = bbox
            if ann.get("iscrowd", 0) and not self.include_crowd:  # no target; evaluation ignores it
                self.report.note("crowd box left out (iscrowd=1)", file)
                crowd.append([x, y, x + w, y + h])
                crowd_classes.append(cat_index.get(ann["category_id"], -1))
                continue
            boxes.append([x, y, x + w, y + h])
            classes.append(cat_index.get(ann["category_id"], -1))
        records = []
        for image_id, (im, boxes, classes, crowd, crowd_classes) in images.items():
            file = os.path.join(self.image_dir, im["file_name"])
            width, height = im.get("width"), im.get("height")
            if not (_number(width) and _number(height) and width > 0 and height > 0):
                width, height = _size_from_file(file)
                if width is None:  # missing / unreadable: the image check will skip and count it
                    width = height = 1
            box_array, class_array = clean_boxes(boxes, classes, width, height, self.num_classes, self.report, file)
            ignored = clean_boxes(crowd, crowd_classes, width, height, self.num_classes, self.report, file, ignored=True)
            records.append(Record(file, image_id, box_array, class_array, *ignored))
        return records


def _size_from_file(path):
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:
        return None, None


def write_coco_json(path, images, annotations, categories, info=None):
    """Write a minimal COCO instances JSON (used by the synthetic set and tests)."""
    data = {
        "info": info or {"description": "written by keras_csp"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


__all__ = ["CocoFormatError", "CocoSource", "write_coco_json"]

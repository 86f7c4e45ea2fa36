"""Darknet / Ultralytics YOLO txt datasets: an image list and one label file per image.

Each label line is ``class x_center y_center width height``, normalised to [0, 1]. The
label file of ``.../images/a.jpg`` is ``.../labels/a.txt`` (the last ``images`` or
``JPEGImages`` folder becomes ``labels``, as both tools do), else ``a.txt`` beside the image.
"""

import os

import numpy as np

from keras_csp.data.source import FileDetectionSource, Record, clean_boxes, ids_from_names

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class YoloFormatError(ValueError):
    """A list or label file that cannot be read; the message names the file and line."""


def label_path(image_path):
    """The label file Darknet / Ultralytics read for ``image_path``."""
    path = image_path.replace("\\", "/")
    for folder in ("/images/", "/JPEGImages/"):
        if folder in path:
            head, tail = path.rsplit(folder, 1)
            path = f"{head}/labels/{tail}"
            break
    return os.path.splitext(path)[0] + ".txt"


def read_names(names):
    """Class names from a list or a Darknet ``.names`` file (one per line); None stays None."""
    if names is None or isinstance(names, (list, tuple)):
        return None if names is None else [str(n) for n in names]
    with open(names, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def parse_label_file(path):
    """Rows ``(class, cx, cy, w, h)`` of one label file as (classes int64 [n], boxes float [n, 4]).

    Raises ``YoloFormatError`` naming the file and line for a wrong field count or a value
    that is not a number.
    """
    classes, boxes = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 5:
                raise YoloFormatError(
                    f"{path}:{lineno}: expected 5 fields 'class x_center y_center width height'; "
                    f"found {len(fields)}: {line.strip()!r}"
                )
            try:
                cls = float(fields[0])
                values = [float(v) for v in fields[1:]]
            except ValueError:
                raise YoloFormatError(f"{path}:{lineno}: fields must be numbers; found {line.strip()!r}") from None
            if cls != int(cls):
                raise YoloFormatError(f"{path}:{lineno}: class must be an integer; found {fields[0]!r}")
            classes.append(int(cls))
            boxes.append(values)
    return np.asarray(classes, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4)


def _read_list(list_file, root):
    if os.path.isdir(list_file):
        names = sorted(n for n in os.listdir(list_file) if n.lower().endswith(IMAGE_EXTENSIONS))
        return [os.path.join(list_file, n) for n in names]
    base = root if root is not None else os.path.dirname(os.path.abspath(list_file))
    paths = []
    with open(list_file, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                paths.append(line if os.path.isabs(line) else os.path.join(base, line))
    return paths


class YoloTxtSource(FileDetectionSource):
    """A Darknet-style list file (or a folder of images) with YOLO txt labels.

    Args:
        list_file: text file with one image path per line (relative paths are relative to
            ``root``, default the list file's folder), or a folder of images.
        names: class names, a list or a ``.names`` file; default ``class_0..`` up to the
            largest class id found. With names, larger class ids are dropped and counted.
        root: folder that relative paths in ``list_file`` start from.
        verify: how the image files are checked (``decode.VERIFY_MODES``).
        name: name used in reports.

    Image ids are the digits of the file names when those are distinct (COCO's
    ``000000000139.jpg`` -> 139), else the position in the list. A missing label file means
    no objects (a background image), as in Darknet.
    """

    def __init__(self, list_file, names=None, root=None, verify="header", name=None):
        self.list_file = os.fspath(list_file)
        if not os.path.exists(self.list_file):
            raise FileNotFoundError(f"YOLO list file or folder not found: {self.list_file}")
        paths = _read_list(self.list_file, root)
        if not paths:
            raise YoloFormatError(f"{self.list_file}: no image paths in the list")
        names = read_names(names)
        parsed = []
        missing_labels = []
        for path in paths:
            lpath = label_path(path)
            if os.path.isfile(lpath):
                parsed.append(parse_label_file(lpath))
            else:
                missing_labels.append(path)
                parsed.append((np.zeros((0,), np.int64), np.zeros((0, 4))))
        if names is None:
            top = max((int(c.max()) for c, _ in parsed if len(c)), default=0)
            names = [f"class_{i}" for i in range(top + 1)]
        super().__init__(name or os.path.basename(self.list_file), names, verify=verify)
        for path in missing_labels:
            self.report.note("no label file", path)
        records = []
        for path, image_id, (classes, cxcywh) in zip(paths, ids_from_names(paths), parsed):
            xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
            boxes, classes = clean_boxes(xyxy, classes, 1.0, 1.0, self.num_classes, self.report, label_path(path))
            records.append(Record(path, image_id, boxes, classes))
        self._add_records(records)

"""Darknet / Ultralytics YOLO txt datasets: an image list and one label file per image.

Each label line is ``class x_center y_center width height``, normalised to [0, 1]. The
label file of ``.../images/a.jpg`` is ``.../labels/a.txt`` (the last ``images`` or
``JPEGImages`` folder becomes ``labels``, as both tools do), else ``a.txt`` beside the image.
Without explicit names, ``classes.txt``, ``obj.names`` or a single ``*.names`` beside the list
(or in or beside the image folder) names the classes.
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


NAMES_FILES = ("classes.txt", "obj.names")


def read_names(names):
    """Class names from a list or a Darknet ``.names`` file (one per line); None stays None."""
    if names is None or isinstance(names, (list, tuple)):
        return None if names is None else [str(n) for n in names]
    names = os.fspath(names)
    if not os.path.isfile(names):
        raise FileNotFoundError(f"class names file not found: {names}")
    with open(names, encoding="utf-8") as f:
        found = [line.strip() for line in f if line.strip()]
    if not found:
        raise YoloFormatError(f"{names}: no class names in the file (one name per line)")
    return found


def find_names_file(list_file):
    """The names file beside a YOLO list (or in / beside an image folder): ``classes.txt``,
    ``obj.names``, else the only ``*.names``; None if there is none. Several ``*.names`` and
    no ``classes.txt`` / ``obj.names`` is an error naming them."""
    list_file = os.path.abspath(os.fspath(list_file))
    folders = [list_file, os.path.dirname(list_file)] if os.path.isdir(list_file) else [os.path.dirname(list_file)]
    if os.path.isdir(list_file):
        labels = os.path.dirname(label_path(os.path.join(list_file, "x.jpg")))
        if labels != list_file:
            folders.append(labels)
    for folder in folders:
        for name in NAMES_FILES:
            if os.path.isfile(os.path.join(folder, name)):
                return os.path.join(folder, name)
        others = sorted(n for n in os.listdir(folder) if n.endswith(".names"))
        if len(others) == 1:
            return os.path.join(folder, others[0])
        if others:
            raise YoloFormatError(f"{folder}: several names files {others} beside {list_file}; "
                                  "choose one with --names")
    return None


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
    """Image paths of a list file or a folder (its images, sub-folders included, sorted).

    A relative line is taken from ``root`` (default the list's folder); where that file does
    not exist but one beside the list does (Ultralytics' ``./`` lines), that one."""
    if os.path.isdir(list_file):
        found = []
        for folder, subfolders, files in os.walk(list_file):
            subfolders.sort()
            found += [os.path.join(folder, n) for n in sorted(files) if n.lower().endswith(IMAGE_EXTENSIONS)]
        return found
    here = os.path.dirname(os.path.abspath(list_file))
    base = root if root is not None else here
    paths = []
    with open(list_file, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                if os.path.isabs(line):
                    paths.append(line)
                    continue
                path = os.path.normpath(os.path.join(base, line))
                if base != here and not os.path.exists(path) and os.path.exists(os.path.join(here, line)):
                    path = os.path.normpath(os.path.join(here, line))
                paths.append(path)
    return paths


class YoloTxtSource(FileDetectionSource):
    """A Darknet-style list file (or a folder of images) with YOLO txt labels.

    Args:
        list_file: text file with one image path per line (relative paths are relative to
            ``root``, default the list file's folder), or a folder of images, or a list of these.
        names: class names, a list or a ``.names`` file; default: ``classes.txt`` /
            ``obj.names`` / ``*.names`` beside the list (``names_file`` tells which), else
            ``class_0..`` up to the largest class id found. With names, larger class ids are
            dropped and counted.
        root: folder that relative paths in ``list_file`` start from.
        verify: how the image files are checked (``decode.VERIFY_MODES``).
        name: name used in reports.

    Image ids are the digits of the file names when those are distinct (COCO's
    ``000000000139.jpg`` -> 139), else the position in the list. A missing label file means
    no objects (a background image), as in Darknet.
    """

    def __init__(self, list_file, names=None, root=None, verify="header", name=None):
        entries = [os.fspath(e) for e in list_file] if isinstance(list_file, (list, tuple)) else [os.fspath(list_file)]
        self.list_file = entries[0] if len(entries) == 1 else entries
        paths = []
        for entry in entries:
            if not os.path.exists(entry):
                raise FileNotFoundError(f"YOLO list file or folder not found: {entry}")
            found = _read_list(entry, root)
            if not found:
                kind = "images in the folder" if os.path.isdir(entry) else "image paths in the list"
                raise YoloFormatError(f"{entry}: no {kind}")
            paths += found
        self.names_file = names if isinstance(names, (str, os.PathLike)) else None
        if names is None:
            self.names_file = find_names_file(entries[0])
            names = self.names_file
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
        super().__init__(name or os.path.basename(entries[0]), names, verify=verify)
        for path in missing_labels:
            self.report.note("no label file", path)
        records = []
        for path, image_id, (classes, cxcywh) in zip(paths, ids_from_names(paths), parsed):
            xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1)
            boxes, classes = clean_boxes(xyxy, classes, 1.0, 1.0, self.num_classes, self.report, label_path(path))
            records.append(Record(path, image_id, boxes, classes))
        self._add_records(records)

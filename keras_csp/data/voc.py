"""Pascal VOC: ``Annotations/*.xml``, ``JPEGImages/`` and ``ImageSets/Main/<split>.txt``.

VOC boxes are 1-based inclusive pixel indices; ``xmin`` ``xmax`` become the continuous
edges ``xmin - 1`` and ``xmax``. ``difficult`` objects are left out unless asked for (VOC
evaluation ignores them); they stay as ignored regions for evaluation (``Record.ignored_boxes``).
"""

import os
import xml.parsers.expat

from keras_csp.data.coco import _size_from_file
from keras_csp.data.source import FileDetectionSource, Record, clean_boxes, ids_from_names

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


class VocFormatError(ValueError):
    """An annotation XML that cannot be read; the message names the file and line."""


def parse_voc_xml(path):
    """Read one VOC annotation: ``{"filename", "width", "height", "objects": [...]}``.

    Each object is ``{"name", "difficult", "box": [xmin, ymin, xmax, ymax], "line"}`` with
    the raw (1-based) numbers. Errors name the file and line.
    """
    root = {"children": [], "text": "", "line": 1}
    stack = [root]
    parser = xml.parsers.expat.ParserCreate()

    def start(tag, attrs):
        node = {"tag": tag, "children": [], "text": "", "line": parser.CurrentLineNumber}
        stack[-1]["children"].append(node)
        stack.append(node)

    def end(tag):
        stack.pop()

    def chars(data):
        stack[-1]["text"] += data

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, chars
    try:
        with open(path, "rb") as f:
            parser.ParseFile(f)
    except xml.parsers.expat.ExpatError as e:
        raise VocFormatError(f"{path}:{e.lineno}:{e.offset}: not valid XML ({xml.parsers.expat.ErrorString(e.code)})") from None

    def child(node, tag):
        return next((c for c in node["children"] if c["tag"] == tag), None)

    def text(node, tag, default=None):
        c = child(node, tag) if node else None
        return c["text"].strip() if c is not None else default

    ann = child(root, "annotation")
    if ann is None:
        raise VocFormatError(f"{path}:1: not a VOC annotation (no <annotation> root element)")
    size = child(ann, "size")
    result = {"filename": text(ann, "filename"), "width": 0, "height": 0, "objects": []}
    try:
        result["width"] = int(float(text(size, "width", 0)))
        result["height"] = int(float(text(size, "height", 0)))
    except ValueError:
        raise VocFormatError(f"{path}:{size['line']}: <size> width/height must be numbers") from None
    for obj in (c for c in ann["children"] if c["tag"] == "object"):
        box = child(obj, "bndbox")
        if box is None:
            raise VocFormatError(f"{path}:{obj['line']}: <object> without <bndbox>")
        try:
            coords = [float(text(box, k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise VocFormatError(
                f"{path}:{box['line']}: <bndbox> needs numeric xmin, ymin, xmax, ymax"
            ) from None
        result["objects"].append(
            {
                "name": text(obj, "name", ""),
                "difficult": text(obj, "difficult", "0") in ("1", "true"),
                "box": coords,
                "line": obj["line"],
            }
        )
    return result


class VocSource(FileDetectionSource):
    """A Pascal VOC folder (``VOCdevkit/VOC2007``-like).

    Args:
        root: folder with ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``.
        split: ``ImageSets/Main/<split>.txt`` to read; None reads every XML in Annotations.
        class_names: the classes, in contiguous-index order (default the 20 VOC classes);
            other names are dropped and counted.
        include_difficult: keep ``difficult`` objects as targets (default False).
        verify: how the image files are checked (``decode.VERIFY_MODES``).
    """

    def __init__(self, root, split="trainval", class_names=VOC_CLASSES, include_difficult=False, verify="header", name=None):
        self.root = os.fspath(root)
        self.include_difficult = include_difficult
        super().__init__(name or f"{os.path.basename(os.path.normpath(self.root))}/{split}", class_names, verify=verify)
        ann_dir = os.path.join(self.root, "Annotations")
        if split is None:
            if not os.path.isdir(ann_dir):
                raise FileNotFoundError(f"VOC annotations folder not found: {ann_dir}")
            stems = sorted(n[:-4] for n in os.listdir(ann_dir) if n.endswith(".xml"))
        else:
            list_file = os.path.join(self.root, "ImageSets", "Main", f"{split}.txt")
            if not os.path.isfile(list_file):
                raise FileNotFoundError(f"VOC split list not found: {list_file}")
            with open(list_file, encoding="utf-8") as f:
                stems = [line.split()[0] for line in f if line.strip()]
        index = {n: i for i, n in enumerate(self.class_names)}
        records = []
        for stem, image_id in zip(stems, ids_from_names(stems)):
            xml_path = os.path.join(ann_dir, f"{stem}.xml")
            image_path = os.path.join(self.root, "JPEGImages", f"{stem}.jpg")
            if not os.path.isfile(xml_path):
                self.report.skip_image("missing annotation file", xml_path)
                continue
            ann = parse_voc_xml(xml_path)
            width, height = ann["width"], ann["height"]
            if width <= 0 or height <= 0:
                width, height = _size_from_file(image_path)
                if width is None:
                    width = height = 1
            boxes, classes, ignored, ignored_classes = [], [], [], []
            for obj in ann["objects"]:
                xmin, ymin, xmax, ymax = obj["box"]
                if obj["difficult"] and not include_difficult:  # no target; evaluation ignores it
                    self.report.note("difficult object left out", xml_path)
                    ignored.append([xmin - 1, ymin - 1, xmax, ymax])
                    ignored_classes.append(index.get(obj["name"], -1))
                    continue
                boxes.append([xmin - 1, ymin - 1, xmax, ymax])
                classes.append(index.get(obj["name"], -1))
            box_array, class_array = clean_boxes(boxes, classes, width, height, self.num_classes, self.report, xml_path)
            ignored = clean_boxes(ignored, ignored_classes, width, height, self.num_classes, self.report, xml_path,
                                  ignored=True)
            records.append(Record(image_path, image_id, box_array, class_array, *ignored))
        self._add_records(records)

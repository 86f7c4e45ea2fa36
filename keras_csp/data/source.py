"""Base classes of the sources: class/category mapping and the element stream.

A source knows its classes (contiguous 0-based indices and the dataset's own category ids,
e.g. COCO's 1..90 with gaps), what it skipped (``report``), and makes a ``tf.data.Dataset``
of elements as described in the package docstring.
"""

import dataclasses
import re

import numpy as np

import keras_csp.data.decode as decode  # noqa: PLR0402  (the module, not the package: no import cycle)
from keras_csp.backend import tf
from keras_csp.data.boxes import encode_ignored
from keras_csp.data.report import SkipReport
from keras_csp.data.structure import CLASSIFICATION_SPEC, ELEMENT_SPEC, make_element


class DetectionSource:
    """A detection dataset: ``dataset()`` yields elements, ``category_ids`` maps classes back.

    ``class_names[i]`` and ``category_ids[i]`` describe contiguous class ``i``.
    """

    element_spec = ELEMENT_SPEC
    yields_ignored = False
    """True when ``dataset(include_ignored=True)`` adds the ignored regions (crowd, difficult)."""

    def __init__(self, name, class_names, category_ids=None):
        self.name = name
        self.class_names = [str(n) for n in class_names]
        ids = list(range(len(self.class_names))) if category_ids is None else list(category_ids)
        if len(ids) != len(self.class_names):
            raise ValueError(
                f"{name}: {len(ids)} category ids for {len(self.class_names)} class names"
            )
        if len(set(ids)) != len(ids):
            raise ValueError(f"{name}: duplicate category ids {ids}")
        self.category_ids = [int(i) for i in ids]
        self._index_of = {c: i for i, c in enumerate(self.category_ids)}
        self.report = SkipReport(name)

    @property
    def num_classes(self):
        return len(self.class_names)

    def category_id(self, index):
        """Dataset category id of contiguous class ``index`` (works on arrays too)."""
        return np.asarray(self.category_ids, np.int64)[np.asarray(index, np.int64)]

    def class_index(self, category_id):
        """Contiguous class of a dataset category id; ``KeyError`` naming it if unknown."""
        try:
            return self._index_of[int(category_id)]
        except KeyError:
            raise KeyError(
                f"{self.name}: unknown category id {category_id}; known: {self.category_ids}"
            ) from None

    def dataset(self, shuffle=False, seed=None):
        """A ``tf.data.Dataset`` of elements (``ELEMENT_SPEC``); ``shuffle`` before decoding."""
        raise NotImplementedError

    def max_objects(self, include_ignored=False):
        """The most boxes any one image has (targets; with ``include_ignored`` the ignored
        regions too), or None when the source cannot tell without reading everything."""
        return None

    def image_ids(self):
        """The ids of every image the source yields, or None when it cannot tell."""
        return None

    def __len__(self):
        raise NotImplementedError

    def __repr__(self):
        try:
            size = len(self)
        except TypeError:
            size = "unknown"
        return f"{type(self).__name__}({self.name!r}, images={size}, classes={self.num_classes})"


def _no_boxes():
    return np.zeros((0, 4), np.float32)


def _no_classes():
    return np.zeros((0,), np.int32)


@dataclasses.dataclass
class Record:
    """One image of a file source: path, id, normalised xyxy boxes [n, 4] and classes [n];
    ``ignored_boxes`` / ``ignored_classes``: regions that are no target but that evaluation
    must ignore (COCO ``iscrowd``, VOC ``difficult``)."""

    path: str
    image_id: int
    boxes: np.ndarray
    classes: np.ndarray
    ignored_boxes: np.ndarray = dataclasses.field(default_factory=_no_boxes)
    ignored_classes: np.ndarray = dataclasses.field(default_factory=_no_classes)


def clean_boxes(boxes, classes, width, height, num_classes, report, file, ignored=False):
    """Validate pixel xyxy ``boxes`` of one image; return normalised boxes and classes.

    Non-finite, zero/negative-size, wholly-outside and unknown-class boxes are dropped and
    counted in ``report``; boxes partly outside are clipped to the image. ``ignored``: these
    are ignored regions (their drops are counted under reasons starting "ignored region").
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    keep = np.ones(len(boxes), bool)

    def drop(mask, reason):
        mask = mask & keep
        n = int(mask.sum())
        if n:
            report.drop_box(f"ignored region: {reason}" if ignored else reason, file, f"{boxes[mask][0].round(2).tolist()}", count=n)
            keep[mask] = False

    drop(~np.isfinite(boxes).all(axis=1), "non-finite box")
    drop((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]), "zero or negative width/height")
    drop((classes < 0) | (classes >= num_classes), "unknown category")
    outside = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= width) | (boxes[:, 1] >= height)
    drop(outside, "box outside the image")
    boxes, classes = boxes[keep], classes[keep]
    clipped = np.clip(boxes, 0, [width, height, width, height])
    if not ignored and (np.abs(clipped - boxes) > 1e-3 * max(width, height)).any():  # not mere rounding
        report.note("box clipped to the image", file)
    normalised = clipped / np.array([width, height, width, height], np.float64)
    return normalised.astype(np.float32), classes.astype(np.int32)


def counted_load(report, path):
    """Load an image in the graph, counting attempts and successes in ``report``: the
    difference is what the pipeline's ``ignore_errors`` skipped while iterating."""
    attempted = report.runtime_counter("attempted")
    decoded = report.runtime_counter("decoded")
    with tf.control_dependencies([attempted.assign_add(1)]):
        image = decode.load_image(path)
    with tf.control_dependencies([image]):
        done = decoded.assign_add(1)
    with tf.control_dependencies([done]):
        return tf.identity(image)


def ids_from_names(paths):
    """Image ids from file names: their digits when all are distinct (``000000139.jpg`` -> 139,
    ``2008_000008.jpg`` -> 2008000008, as COCO and VOC number them), else the list position."""
    stems = [re.sub(r"\D", "", p.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]) for p in paths]
    if all(stems) and all(len(s) <= 18 for s in stems):
        ids = [int(s) for s in stems]
        if len(set(ids)) == len(ids):
            return ids
    return list(range(len(paths)))


class FileDetectionSource(DetectionSource):
    """A source whose images are files: checks them once, then streams decoded elements."""

    yields_ignored = True

    def __init__(self, name, class_names, category_ids=None, verify="header"):
        super().__init__(name, class_names, category_ids)
        self.verify = verify
        self.records = []

    def _add_records(self, records):
        """Check the image files of ``records``; keep the usable ones and log the report once."""
        checks = decode.check_images([r.path for r in records], self.verify)
        for record, check in zip(records, checks):
            if check.reason:
                self.report.skip_image(check.reason, record.path, check.detail)
                continue
            if check.conversion:
                self.report.convert_image(check.conversion, record.path)
            if len(record.boxes) == 0:
                self.report.note("no annotations (kept as a background image)", record.path)
            self.records.append(record)
        self.report.log_once()

    def __len__(self):
        return len(self.records)

    def max_objects(self, include_ignored=False):
        counts = [len(r.boxes) + (len(r.ignored_boxes) if include_ignored else 0) for r in self.records]
        return max(counts, default=0)

    def image_ids(self):
        return [r.image_id for r in self.records]

    def dataset(self, shuffle=False, seed=None, include_ignored=False):
        """Elements in record order (``shuffle``: before decoding). ``include_ignored`` appends
        each image's ignored regions with class codes ``-2 - class`` (``boxes.encode_ignored``),
        for evaluation: training never sees them."""
        records = self.records
        if not records:
            raise ValueError(f"{self.name}: no usable images.\n{self.report.summary()}")

        def boxes_of(r):
            return np.concatenate([r.boxes, r.ignored_boxes]) if include_ignored else r.boxes

        def classes_of(r):
            return np.concatenate([r.classes, encode_ignored(r.ignored_classes)]) if include_ignored else r.classes

        lengths = [len(boxes_of(r)) for r in records]
        flat_boxes = np.concatenate([boxes_of(r) for r in records] + [np.zeros((0, 4), np.float32)])
        flat_classes = np.concatenate([classes_of(r) for r in records] + [np.zeros((0,), np.int32)])
        table = (
            tf.constant([r.path for r in records], tf.string, shape=[len(records)]),
            tf.constant([r.image_id for r in records], tf.int64, shape=[len(records)]),
            tf.RaggedTensor.from_row_lengths(flat_boxes.astype(np.float32), lengths),
            tf.RaggedTensor.from_row_lengths(flat_classes.astype(np.int32), lengths),
        )
        ds = tf.data.Dataset.from_tensor_slices(table)
        if shuffle:
            ds = ds.shuffle(max(1, len(records)), seed=seed, reshuffle_each_iteration=True)
        report = self.report

        def load(path, image_id, boxes, classes):
            return make_element(counted_load(report, path), boxes, classes, image_id)

        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.ignore_errors(log_warning=True)


class ClassificationSource:
    """A classification dataset: ``dataset()`` yields ``{"image", "label", "image_id"}``
    (``CLASSIFICATION_SPEC``); ``class_names[i]`` names label ``i``."""

    element_spec = CLASSIFICATION_SPEC

    def __init__(self, name, class_names):
        self.name = name
        self.class_names = [str(n) for n in class_names]
        self.report = SkipReport(name)

    @property
    def num_classes(self):
        return len(self.class_names)

    def dataset(self, shuffle=False, seed=None):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, classes={self.num_classes})"

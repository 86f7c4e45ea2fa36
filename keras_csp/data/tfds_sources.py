"""TensorFlow Datasets sources: ``coco/2017``, ``voc/2007``, ``voc/2012`` (detection) and any
dataset with ``image`` and ``label`` features such as ``imagenet2012`` (classification).

TFDS boxes are ``[ymin, xmin, ymax, xmax]`` normalised; they become the package's xyxy.
Examples are validated in the graph: the box, label and crowd/difficult lists are cut to
their common length (TFDS' mock data, and a damaged record, can have them differ), boxes are
clipped to the image and empty or unknown-class boxes dropped; both are counted.
"""

from keras_csp.backend import tf
from keras_csp.data.boxes import encode_ignored
from keras_csp.data.source import ClassificationSource, DetectionSource
from keras_csp.data.structure import make_element, sanitize_boxes
from keras_csp.data.voc import VOC_CLASSES
from keras_csp.weights.classes import COCO_CLASSES

COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip
"""The official COCO category ids of the 80 detection classes, in TFDS' label order."""

COCO_CLASS_NAMES = COCO_CLASSES  # one list of COCO's names: keras_csp.weights.classes


def _load(name, split, data_dir, download, shuffle_files, seed):
    import tensorflow_datasets as tfds  # optional dependency (extra "tfds")

    builder = tfds.builder(name, data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    read_config = tfds.ReadConfig(shuffle_seed=seed) if seed is not None else None
    ds = builder.as_dataset(split=split, shuffle_files=shuffle_files, read_config=read_config)
    return builder.info, ds


def _num_examples(info, split):
    try:
        n = info.splits[split].num_examples
    except Exception:  # unknown split info (e.g. TFDS mock data)
        return None
    return n or None


def _id_from_filename(filename):
    """int64 id from a file name's digits (VOC ``2008_000008.jpg`` -> 2008000008), else a hash."""
    digits = tf.strings.substr(tf.strings.regex_replace(filename, r"\D", ""), 0, 18)
    hashed = tf.strings.to_hash_bucket_fast(filename, 2**62)
    return tf.cond(
        tf.strings.length(digits) > 0,
        lambda: tf.strings.to_number(digits, tf.int64),
        lambda: hashed,
    )


class TfdsDetectionSource(DetectionSource):
    """A TFDS detection dataset (``coco/2017``, ``voc/2007``, ``voc/2012`` or alike).

    Args:
        name: TFDS name; it must have ``image`` and ``objects`` with ``bbox`` and ``label``.
        split: TFDS split (``"train"``, ``"validation"``, ``"train[:10%]"``...).
        data_dir: TFDS data folder.
        include_crowd: keep COCO ``is_crowd`` boxes (default False).
        include_difficult: keep VOC ``is_difficult`` boxes (default False).
        download: run ``download_and_prepare`` first (default False: nothing is fetched).
        shuffle_buffer: decoded images held to shuffle (TFDS decodes before we see them).

    ``category_ids`` are COCO's official ids for ``coco/*`` and ``0..C-1`` otherwise. Crowd
    and difficult boxes left out of the targets come back as ignored regions in evaluation.
    """

    yields_ignored = True

    def __init__(self, name="coco/2017", split="train", data_dir=None, include_crowd=False,
                 include_difficult=False, download=False, shuffle_buffer=256):
        import tensorflow_datasets as tfds

        self.tfds_name, self.split, self.data_dir, self.download = name, split, data_dir, download
        self.include_crowd, self.include_difficult = include_crowd, include_difficult
        self.shuffle_buffer = shuffle_buffer
        info = tfds.builder(name, data_dir=data_dir).info
        features = info.features
        if "image" not in features or "objects" not in features:
            raise ValueError(f"TFDS dataset {name!r} has no 'image' and 'objects' features: {list(features)}")
        objects = features["objects"]
        if "bbox" not in objects or "label" not in objects:
            raise ValueError(f"TFDS dataset {name!r}: 'objects' lacks 'bbox' or 'label': {list(objects)}")
        names = objects["label"].names
        is_coco = name.startswith("coco") and len(names) == len(COCO_CATEGORY_IDS)
        if all(n == str(i) for i, n in enumerate(names)):  # no names in the metadata (mock data)
            if is_coco:
                names = COCO_CLASS_NAMES
            elif name.startswith("voc") and len(names) == len(VOC_CLASSES):
                names = VOC_CLASSES
        ids = COCO_CATEGORY_IDS if is_coco else None
        super().__init__(f"tfds:{name}/{split}", names, ids)
        self._num_examples = _num_examples(info, split)

    def __len__(self):
        if self._num_examples is None:
            raise TypeError(f"{self.name}: the number of examples is not known")
        return self._num_examples

    def _convert(self, example, include_ignored=False):
        objects = example["objects"]
        lengths = [tf.shape(objects["bbox"])[0], tf.shape(objects["label"])[0]]
        flags = []
        if "is_crowd" in objects and not self.include_crowd:
            flags.append(objects["is_crowd"])
        if "is_difficult" in objects and not self.include_difficult:
            flags.append(objects["is_difficult"])
        lengths += [tf.shape(f)[0] for f in flags]
        n = tf.reduce_min(tf.stack(lengths))
        mismatched = tf.reduce_any(tf.not_equal(tf.stack(lengths), n))
        bbox = tf.reshape(tf.cast(objects["bbox"], tf.float32), [-1, 4])[:n]
        all_labels = tf.cast(objects["label"], tf.int32)[:n]
        keep = tf.ones([n], tf.bool)
        for flag in flags:
            keep &= tf.logical_not(tf.cast(flag[:n], tf.bool))
        all_boxes = tf.stack([bbox[:, 1], bbox[:, 0], bbox[:, 3], bbox[:, 2]], axis=-1)
        boxes, labels = tf.boolean_mask(all_boxes, keep), tf.boolean_mask(all_labels, keep)
        clean_boxes, clean_labels = sanitize_boxes(boxes, labels, self.num_classes)
        dropped = tf.cast(tf.shape(labels)[0] - tf.shape(clean_labels)[0], tf.int64)
        if include_ignored:  # crowd / difficult boxes as ignored regions (evaluation: neither misses nor FPs)
            ignored_boxes, ignored_labels = sanitize_boxes(tf.boolean_mask(all_boxes, ~keep),
                                                           tf.boolean_mask(all_labels, ~keep), self.num_classes)
            clean_boxes = tf.concat([clean_boxes, ignored_boxes], axis=0)
            clean_labels = tf.concat([clean_labels, encode_ignored(ignored_labels)], axis=0)
        updates = [
            self.report.runtime_counter("boxes dropped in-graph (empty, non-finite or unknown class)").assign_add(dropped),
            self.report.runtime_counter("examples with mismatched object-field lengths (cut)").assign_add(
                tf.cast(mismatched, tf.int64)
            ),
        ]
        if "image/id" in example:
            image_id = example["image/id"]
        elif "image/filename" in example:
            image_id = _id_from_filename(example["image/filename"])
        else:
            image_id = tf.constant(-1, tf.int64)
        with tf.control_dependencies(updates):
            return make_element(tf.identity(example["image"]), clean_boxes, clean_labels, image_id)

    def dataset(self, shuffle=False, seed=None, include_ignored=False):
        """Elements; ``include_ignored`` appends the crowd / difficult boxes the source leaves
        out of the targets as ignored regions (class codes ``boxes.encode_ignored``), for
        evaluation as pycocotools and the VOC protocol treat them."""
        _, ds = _load(self.tfds_name, self.split, self.data_dir, self.download, shuffle, seed)
        if shuffle:
            ds = ds.shuffle(self.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        return ds.map(lambda example: self._convert(example, include_ignored), num_parallel_calls=tf.data.AUTOTUNE)


class TfdsClassificationSource(ClassificationSource):
    """A TFDS classification dataset (``imagenet2012`` or any with ``image`` and ``label``)."""

    def __init__(self, name="imagenet2012", split="train", data_dir=None, download=False,
                 image_key="image", label_key="label", shuffle_buffer=1024):
        import tensorflow_datasets as tfds

        self.tfds_name, self.split, self.data_dir, self.download = name, split, data_dir, download
        self.image_key, self.label_key, self.shuffle_buffer = image_key, label_key, shuffle_buffer
        features = tfds.builder(name, data_dir=data_dir).info.features
        if image_key not in features or label_key not in features:
            raise ValueError(f"TFDS dataset {name!r} lacks {image_key!r} or {label_key!r}: {list(features)}")
        super().__init__(f"tfds:{name}/{split}", features[label_key].names)

    def dataset(self, shuffle=False, seed=None):
        _, ds = _load(self.tfds_name, self.split, self.data_dir, self.download, shuffle, seed)
        if shuffle:
            ds = ds.shuffle(self.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        image_key, label_key = self.image_key, self.label_key

        def convert(index, example):
            image = example[image_key]
            if image.shape.rank == 3 and image.shape[-1] == 1:
                image = tf.image.grayscale_to_rgb(image)
            return {
                "image": tf.ensure_shape(tf.cast(image, tf.uint8), [None, None, 3]),
                "label": tf.cast(example[label_key], tf.int32),
                "image_id": tf.cast(index, tf.int64),
            }

        return ds.enumerate().map(convert, num_parallel_calls=tf.data.AUTOTUNE)

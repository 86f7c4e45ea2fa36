"""Classification from a folder of class folders (``root/<class name>/<image>``).

Classes are the sub-folder names in sorted order, as ``keras.utils.image_dataset_from_directory``
and TFDS' ``ImageFolder`` do; images are checked like the detection file sources.
"""

import os

import numpy as np

import keras_csp.data.decode as decode  # noqa: PLR0402  (the module, not the package: no import cycle)
from keras_csp.backend import tf
from keras_csp.data.source import ClassificationSource, counted_load
from keras_csp.data.yolo_txt import IMAGE_EXTENSIONS


class ImageFolderSource(ClassificationSource):
    """Images under ``root/<class>/``; ``verify`` as in ``decode.VERIFY_MODES``."""

    def __init__(self, root, verify="header", name=None):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"image folder not found: {self.root}")
        classes = sorted(d for d in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, d)))
        if not classes:
            raise ValueError(f"{self.root}: no class sub-folders")
        super().__init__(name or os.path.basename(os.path.normpath(self.root)), classes)
        paths, labels = [], []
        for label, cls in enumerate(classes):
            folder = os.path.join(self.root, cls)
            for file in sorted(os.listdir(folder)):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(folder, file))
                    labels.append(label)
        self.paths, self.labels = [], []
        for path, label, check in zip(paths, labels, decode.check_images(paths, verify)):
            if check.reason:
                self.report.skip_image(check.reason, path, check.detail)
            else:
                if check.conversion:
                    self.report.convert_image(check.conversion, path)
                self.paths.append(path)
                self.labels.append(label)
        self.report.log_once()

    def __len__(self):
        return len(self.paths)

    def dataset(self, shuffle=False, seed=None):
        n = len(self.paths)
        if not n:
            raise ValueError(f"{self.name}: no usable images.\n{self.report.summary()}")
        ds = tf.data.Dataset.from_tensor_slices(
            (tf.constant(self.paths, tf.string, [n]), tf.constant(np.asarray(self.labels, np.int32), shape=[n]),
             tf.range(n, dtype=tf.int64))
        )
        if shuffle:
            ds = ds.shuffle(max(1, n), seed=seed, reshuffle_each_iteration=True)

        report = self.report

        def load(path, label, index):
            return {"image": counted_load(report, path), "label": label, "image_id": index}

        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(log_warning=True)

"""Input pipelines in ``tf.data``: sources, box-aware augmentations, batching.

Element structure
-----------------
Every detection source (``CocoSource``, ``YoloTxtSource``, ``VocSource``,
``TfdsDetectionSource``, the synthetic set) yields the same dict from ``source.dataset()``:

=================  ==============  =========================================================
key                dtype, shape    meaning
=================  ==============  =========================================================
``image``          uint8 [H, W, 3] RGB, as decoded (grayscale / RGBA / palette / 16-bit
                                   converted; alpha dropped)
``boxes``          float32 [N, 4]  ``[x_min, y_min, x_max, y_max]`` normalised to [0, 1] of
                                   the original image (clipped; empty ones dropped)
``classes``        int32 [N]       contiguous 0-based class; ``source.category_id(c)`` gives
                                   the dataset's own id (e.g. COCO 1..90), and
                                   ``source.class_index(id)`` the reverse
``image_id``       int64 []        the dataset's image id (COCO ``id``; digits of the file
                                   name for YOLO txt / VOC, else the list position)
``original_size``  int32 [2]       (height, width) of the decoded image
=================  ==============  =========================================================

Classification sources (``ImageFolderSource``, ``TfdsClassificationSource``) yield
``{"image": uint8 [H, W, 3], "label": int32 [], "image_id": int64 []}``.

Batches
-------
``detection_dataset(source, image_size=S, batch_size=B, augment=..., mosaic=...)``:

* training (default): ``(images float32 [B, S, S, 3] in [0, 1], boxes float32
  [B, max_boxes, 5])``, boxes ``[x_min, y_min, x_max, y_max, class]`` normalised to the
  model input after letterbox / augmentation; padding rows are all -1.
* ``training=False`` (evaluation): ``(images, {"boxes": [B, max_boxes, 5], "image_id":
  int64 [B], "image_info": float32 [B, 4, 2]})`` in source order with every image kept.
  ``image_info`` rows: (original h, w), (input h, w), (scale y, x), (offset y, x), so that
  ``input_pixel = original_pixel * scale + offset``; ``boxes_to_original(pred, image_info)``
  maps normalised predictions to original pixels and ``xyxy_to_coco`` to COCO ``[x, y, w, h]``.

``classification_dataset(source, image_size=S, batch_size=B, ...)`` gives ``(images,
one-hot labels [B, C])``.

Bad input never stops an epoch: unusable images are skipped and unusable boxes dropped,
counted by reason in ``source.report`` (``SkipReport``; its summary is logged once). A JSON
that is not COCO, an XML that is not VOC, or a label line with the wrong field count raises an
error naming the file and line.
"""

from keras_csp.data.augment import letterbox
from keras_csp.data.boxes import boxes_to_original, xyxy_to_coco
from keras_csp.data.coco import CocoFormatError, CocoSource
from keras_csp.data.image_folder import ImageFolderSource
from keras_csp.data.pipeline import (
    NO_AUGMENT,
    AugmentConfig,
    classification_dataset,
    detection_dataset,
    resolve_source,
)
from keras_csp.data.report import SkipReport
from keras_csp.data.source import ClassificationSource, DetectionSource
from keras_csp.data.structure import CLASSIFICATION_SPEC, DEFAULT_MAX_BOXES, ELEMENT_SPEC, PAD_VALUE
from keras_csp.data.synthetic import ensure_synthetic_dataset, synthetic_source, write_synthetic_dataset
from keras_csp.data.tfds_sources import COCO_CATEGORY_IDS, TfdsClassificationSource, TfdsDetectionSource
from keras_csp.data.voc import VOC_CLASSES, VocFormatError, VocSource
from keras_csp.data.yolo_txt import YoloFormatError, YoloTxtSource

__all__ = [
    "AugmentConfig",
    "CLASSIFICATION_SPEC",
    "COCO_CATEGORY_IDS",
    "ClassificationSource",
    "CocoFormatError",
    "CocoSource",
    "DEFAULT_MAX_BOXES",
    "DetectionSource",
    "ELEMENT_SPEC",
    "ImageFolderSource",
    "NO_AUGMENT",
    "PAD_VALUE",
    "SkipReport",
    "TfdsClassificationSource",
    "TfdsDetectionSource",
    "VOC_CLASSES",
    "VocFormatError",
    "VocSource",
    "YoloFormatError",
    "YoloTxtSource",
    "boxes_to_original",
    "classification_dataset",
    "detection_dataset",
    "ensure_synthetic_dataset",
    "letterbox",
    "resolve_source",
    "synthetic_source",
    "write_synthetic_dataset",
    "xyxy_to_coco",
]

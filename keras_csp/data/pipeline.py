"""``detection_dataset`` and ``classification_dataset``: sources to batches for ``model.fit``.

Training (detection): shuffle file list -> decode (parallel) -> resize longer side to S and
pad -> [cache] -> groups of ``group_size`` -> mosaic / scale / aspect / translate planned
per group with the boxes (vectorised, ``mosaic.py``) -> pixels per output (parallel) ->
batch -> flip, HSV, mixup (batch-level, vectorised) -> [multi-scale resize] -> prefetch. Every random draw is stateless and comes from ``seed``;
each epoch draws afresh (``Dataset.random(rerandomize_each_iteration=True)``).

Evaluation: decode -> letterbox -> batch, in order, keeping ``image_id`` and ``image_info``
(and the ignored regions, crowd / difficult, as class codes <= -2: see ``boxes``).

``max_boxes`` (rows of the padded box tensor) is sized from the data unless given: the
source's busiest image, x4 with mosaic, x2 with mixup (``auto_max_boxes``). Boxes that still
do not fit are counted in ``source.report`` (``report.BOXES_CUT``), with one warning.
"""

import dataclasses
import os
import random

import keras_csp.data.augment as aug  # the module, not the package: no import cycle
from keras_csp.backend import tf
from keras_csp.data.boxes import pad_boxes
from keras_csp.data.coco import CocoSource
from keras_csp.data.image_folder import ImageFolderSource
from keras_csp.data.mosaic import plan_group, render_mosaic, single_pixels
from keras_csp.data.report import BOXES_CUT, GROUND_TRUTH_CUT, LOGGER
from keras_csp.data.source import ClassificationSource, DetectionSource
from keras_csp.data.structure import DEFAULT_MAX_BOXES, PAD_VALUE
from keras_csp.data.synthetic import synthetic_source
from keras_csp.data.tfds_sources import TfdsClassificationSource, TfdsDetectionSource
from keras_csp.data.voc import VocSource
from keras_csp.data.yolo_txt import YoloTxtSource


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Detection training augmentations (defaults follow YOLOv5's hyp.scratch-low).

    Attributes:
        mosaic: probability that a sample is a 4-image mosaic.
        mixup: probability that a sample is blended with another (boxes of both kept).
        scale: zoom in ``[1 - scale, 1 + scale]``.
        translate: shift of the centre, fraction of the side, in ``[-translate, translate]``.
        aspect: stretch in ``[1 / (1 + aspect), 1 + aspect]`` (Darknet's jitter changes aspect).
        flip: probability of a left-right flip.
        hsv_h, hsv_s, hsv_v: colour jitter (hue turn in turns, saturation / value gains;
            see ``augment.random_hsv``).
        min_box_size: boxes narrower or lower than this many output pixels are dropped.
        min_area_ratio: boxes keeping less of their area after clipping are dropped.
    """

    mosaic: float = 1.0
    mixup: float = 0.0
    scale: float = 0.5
    translate: float = 0.1
    aspect: float = 0.2
    flip: float = 0.5
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    min_box_size: float = 2.0
    min_area_ratio: float = 0.1

    def __post_init__(self):
        for field in ("mosaic", "mixup", "flip", "min_area_ratio"):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{field} must be in [0, 1]; received {value!r}")
        if not 0.0 <= self.scale < 1.0:
            raise ValueError(f"AugmentConfig.scale must be in [0, 1); received {self.scale!r}")
        for field in ("translate", "aspect", "hsv_h", "hsv_s", "hsv_v", "min_box_size"):
            if getattr(self, field) < 0:
                raise ValueError(f"AugmentConfig.{field} must be >= 0; received {getattr(self, field)!r}")


NO_AUGMENT = AugmentConfig(mosaic=0.0, mixup=0.0, scale=0.0, translate=0.0, aspect=0.0, flip=0.0,
                           hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)


def resolve_source(source, training=True):
    """A source object from ``source``: a source, ``"synthetic"``, ``"tfds:NAME[:SPLIT]"``,
    a COCO ``.json``, a YOLO list ``.txt``, or a VOC folder (one with ``Annotations/``)."""
    if isinstance(source, (DetectionSource, ClassificationSource)):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"`source` must be a source object or a string; received {type(source).__name__}")
    text = os.fspath(source)
    if text == "synthetic":
        return synthetic_source()
    if text.startswith("tfds:"):
        name, _, split = text[5:].partition(":")
        return TfdsDetectionSource(name, split or ("train" if training else "validation"))
    if text.endswith(".json"):
        return CocoSource(text)
    if text.endswith(".txt"):
        return YoloTxtSource(text)
    if os.path.isdir(os.path.join(text, "Annotations")):
        return VocSource(text)
    raise ValueError(
        f"`source` {text!r} is not a known source: pass a source object, 'synthetic', "
        "'tfds:NAME[:SPLIT]', a COCO .json, a YOLO list .txt or a VOC folder"
    )


def _seed_stream(seed):
    """An endless dataset of stateless seeds ``[2]`` int64, new each epoch."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int; received {value!r}")


def _multi_scale_sizes(multi_scale):
    if multi_scale is None:
        return None
    try:
        low, high = (int(v) for v in multi_scale)
    except (TypeError, ValueError):
        raise ValueError(f"`multi_scale` must be (min_size, max_size) or None; received {multi_scale!r}") from None
    if low % 32 or high % 32 or not 32 <= low <= high:
        raise ValueError(f"`multi_scale` sizes must be multiples of 32 with min <= max; received {multi_scale!r}")
    return list(range(low, high + 1, 32))


def _augment_config(augment, mosaic, mixup):
    if augment is True:
        config = AugmentConfig()
    elif augment is False or augment is None:
        config = NO_AUGMENT
    elif isinstance(augment, AugmentConfig):
        config = augment
    else:
        raise ValueError(f"`augment` must be a bool or an AugmentConfig; received {augment!r}")
    changes = {}
    if mosaic is not None:
        changes["mosaic"] = float(mosaic)
    if mixup is not None:
        changes["mixup"] = float(mixup)
    return dataclasses.replace(config, **changes) if changes else config


AUTO_MAX_BOXES_CAP = 1000
"""Ceiling of a data-sized ``max_boxes``. The loss compares every prediction with every row
(a ``[batch, H*W*anchors, max_boxes]`` IoU per scale: 1.1 GB per intermediate at 608 px,
batch 16 and 1000 rows), so rows cost memory; COCO's busiest image (93 non-crowd boxes)
x4 (mosaic) x2 (mixup) = 744 fits. Boxes past the cap are counted, never silently lost."""


def auto_max_boxes(source, max_boxes=None, mosaic=0.0, mixup=0.0, training=True):
    """``(rows per image, rows per output)`` of the padded box tensors.

    Unless ``max_boxes`` is given, rows per output = the source's most boxes in one image
    (``DEFAULT_MAX_BOXES`` when the source cannot tell; evaluation counts its ignored regions
    too), x4 when mosaics are drawn (``mosaic > 0``: four images in one), x2 with mixup
    (two in one), rounded up to a multiple of 8, at most ``AUTO_MAX_BOXES_CAP``.
    """
    most = source.max_objects(include_ignored=not training)
    if max_boxes is not None:
        return (max_boxes if most is None else max(1, min(max_boxes, most))), max_boxes
    per_image = max(1, DEFAULT_MAX_BOXES if most is None else most)
    factor = (4 if training and mosaic > 0 else 1) * (2 if training and mixup > 0 else 1)
    rows = min(AUTO_MAX_BOXES_CAP, -(-per_image * factor // 8) * 8)
    if per_image * factor > AUTO_MAX_BOXES_CAP:
        LOGGER.warning("%s: max_boxes capped at %d (the data may need %d = %d per image x %d); boxes past it are "
                       "counted in the report", source.name, rows, per_image * factor, per_image, factor)
    return min(per_image, rows), rows


def _counted(report, name, cut, warning, value):
    """``value`` once ``cut`` (summed) is added to ``report``'s in-graph counter ``name``."""
    if report is None:
        return value
    update = report.count_in_graph(name, tf.reduce_sum(cut), warning)
    with tf.control_dependencies([update]):
        return tf.nest.map_structure(tf.identity, value)


def _cut_warning(max_boxes, where):
    return (f"boxes cut by max_boxes={max_boxes} in {where}: real objects lost; pass a larger max_boxes "
            "(or leave it unset to size it from the data)")


def prepare_element(element, size, max_boxes, report=None):
    """Training stage 1: resize the longer side to ``size``, pad bottom/right with 114.

    Returns ``{"image" [S, S, 3] uint8, "boxes" [M, 5] normalised to the S x S canvas,
    "valid_size" int32 [2]}`` (the fixed-shape form groups are batched and cached in).
    Boxes past ``max_boxes`` are counted in ``report`` (``report.BOXES_CUT``).
    """
    image, new_hw = aug.resize_long_side(element["image"], size)
    image = tf.pad(image, [[0, size - new_hw[0]], [0, size - new_hw[1]], [0, 0]], constant_values=PAD_VALUE)
    f = tf.cast(new_hw, tf.float32) / size
    boxes = element["boxes"] * tf.stack([f[1], f[0], f[1], f[0]])
    boxes, cut = pad_boxes(boxes, element["classes"], max_boxes, return_cut=True)
    out = {"image": tf.ensure_shape(image, [size, size, 3]), "boxes": boxes, "valid_size": new_hw}
    return _counted(report, BOXES_CUT, cut, _cut_warning(max_boxes, "an image"), out)


def _options(deterministic):
    """The pipelines' options: ``deterministic`` order, and tf.data's autotuning off.

    Autotuning's optimisation thread sleeps up to 60 s between rounds, and an iterator that
    Python's garbage collector frees (Keras' ``fit`` leaves its iterator to it) waits for that
    thread: measured, 42-59 s stalls at random points after a 100-s ``fit`` (the 2-minute quick
    demo overran its budget by 32 s; benchmarks/fit_overheads.py), none with it off. Off,
    ``AUTOTUNE`` parallelism is the core count and fit was as fast (photo-objects, mosaic, 320,
    2-core AMD EPYC: 0.763 against 0.748 s per step in float32, 0.613 against 0.664 in bf16;
    the pipeline's own CPU time per batch 132 against 206 ms)."""
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = False
    return options


def detection_dataset(source, image_size=416, batch_size=16, augment=True, mosaic=None, training=True,
                      max_boxes=None, seed=None, cache=False, mixup=None, multi_scale=None,
                      multi_scale_every=10, image_dtype="float32", shuffle=None, group_size=16,
                      drop_remainder=None):
    """A batched ``tf.data.Dataset`` for a detector.

    Args:
        source: a ``DetectionSource`` or a string (see ``resolve_source``).
        image_size: model input side ``S`` (a multiple of 32).
        batch_size: images per batch.
        augment: True (``AugmentConfig()`` defaults), False, or an ``AugmentConfig``.
            Ignored when ``training=False``.
        mosaic: overrides ``AugmentConfig.mosaic`` (bool or probability), or a float32
            ``tf.Variable`` holding the probability, read at every group of ``group_size`` images,
            so that a callback can change it while training (``close_mosaic`` in
            ``keras_csp.training`` sets it to 0 for the last epochs; batches already prefetched
            keep the old rate). With a variable, the boxes are sized for mosaics.
        training: True yields ``(images, boxes)``; False yields the evaluation form
            ``(images, {"boxes", "image_id", "image_info"})`` in source order, every image
            kept, no augmentation.
        max_boxes: rows of the padded box tensor; default (None): sized from the data
            (``auto_max_boxes``: the busiest image, x4 with mosaic, x2 with mixup, capped).
            Boxes that do not fit are counted in ``source.report`` and warned about once.
        seed: int; fixes shuffling and every augmentation draw (epochs still differ).
        cache: False, True (memory) or a file path: caches decoded, resized images.
        mixup: overrides ``AugmentConfig.mixup`` (probability).
        multi_scale: ``(min, max)`` multiples of 32: every ``multi_scale_every`` batches
            the images are resized to a new random square size in that range (images are
            composed at ``max(image_size, max)``; normalised boxes need no change).
        image_dtype: ``"float32"`` (in [0, 1]) or ``"uint8"`` (0-255, less host memory).
        shuffle: defaults to ``training``.
        group_size: images composed together for mosaics (each mosaic draws its three
            partners from its group).
        drop_remainder: defaults to ``training`` (static batch size for training).

    Returns:
        training: ``(images [B, S, S, 3], boxes [B, max_boxes, 5])``, boxes
        ``[x_min, y_min, x_max, y_max, class]`` normalised to the model input, padding -1.
        evaluation: ``(images, {"boxes": [B, max_boxes, 5], "image_id": int64 [B],
        "image_info": float32 [B, 4, 2]})`` where ``image_info`` rows are (original h, w),
        (input h, w), (scale y, x), (offset y, x); ``boxes.boxes_to_original`` maps
        predictions back to original pixels and ``source.category_id`` maps classes back.
    """
    _check_positive_int("image_size", image_size)
    _check_positive_int("batch_size", batch_size)
    if max_boxes is not None:
        _check_positive_int("max_boxes", max_boxes)
    _check_positive_int("group_size", group_size)
    _check_positive_int("multi_scale_every", multi_scale_every)
    if image_size % 32:
        raise ValueError(f"`image_size` must be a multiple of 32; received {image_size}")
    if image_dtype not in ("float32", "uint8"):
        raise ValueError(f"`image_dtype` must be 'float32' or 'uint8'; received {image_dtype!r}")
    source = resolve_source(source, training)
    if not isinstance(source, DetectionSource):
        raise TypeError(f"`source` must be a detection source; received {type(source).__name__}")
    shuffle = training if shuffle is None else shuffle
    drop_remainder = training if drop_remainder is None else drop_remainder
    seed = random.randrange(2**31) if seed is None else int(seed)
    dtype = tf.as_dtype(image_dtype)

    def finish(images):
        return images if dtype == tf.float32 else tf.cast(tf.round(images * 255.0), tf.uint8)

    report = source.report
    if not training:
        _, max_boxes = auto_max_boxes(source, max_boxes, training=False)
        extra = {"include_ignored": True} if source.yields_ignored else {}
        ds = source.dataset(shuffle=shuffle, seed=seed, **extra)
        warning = _cut_warning(max_boxes, "an evaluation image (its ground truth is incomplete)")

        def letterboxed(element):
            image, boxes, info = aug.letterbox(element["image"], element["boxes"], image_size)
            boxes, cut = pad_boxes(boxes, element["classes"], max_boxes, return_cut=True)
            out = {"image": image, "boxes": boxes, "image_id": element["image_id"], "image_info": info}
            return _counted(report, GROUND_TRUTH_CUT, cut, warning, out)

        ds = ds.map(letterboxed, num_parallel_calls=tf.data.AUTOTUNE)
        ds = _cache(ds, cache)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)

        def to_eval(batch):
            images = finish(tf.cast(batch["image"], tf.float32) / 255.0)
            return images, {"boxes": batch["boxes"], "image_id": batch["image_id"], "image_info": batch["image_info"]}

        ds = ds.map(to_eval, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(True))

    try:
        if drop_remainder and len(source) < batch_size:
            LOGGER.warning("%s has %d images, fewer than batch_size=%d: with drop_remainder an epoch has no "
                           "batch (use .repeat() or a smaller batch)", source.name, len(source), batch_size)
    except TypeError:  # size unknown (some TFDS splits)
        pass
    mosaic_rate = mosaic if isinstance(mosaic, tf.Variable) else None
    config = _augment_config(augment, 1.0 if mosaic_rate is not None else mosaic, mixup)
    per_image, max_boxes = auto_max_boxes(source, max_boxes, config.mosaic, config.mixup)
    sizes = _multi_scale_sizes(multi_scale)
    compose_size = max([image_size] + (sizes or []))
    ds = source.dataset(shuffle=shuffle and not cache, seed=seed)
    ds = ds.map(lambda e: prepare_element(e, compose_size, per_image, report), num_parallel_calls=tf.data.AUTOTUNE)
    if cache is not False:
        ds = _cache(ds, cache)
        if shuffle:
            ds = ds.shuffle(2048, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(group_size)
    ds = tf.data.Dataset.zip((ds, _seed_stream(seed)))

    options = dict(mosaic=config.mosaic if mosaic_rate is None else mosaic_rate, scale=config.scale, translate=config.translate, aspect=config.aspect,
                   min_box_size=config.min_box_size, min_area_ratio=config.min_area_ratio)

    def planned(group, group_seed):
        plan, boxes, cut = plan_group(group["image"], group["boxes"], group["valid_size"], group_seed, compose_size,
                                      max_boxes, **options, return_cut=True)
        boxes = _counted(report, BOXES_CUT, cut, _cut_warning(max_boxes, "a composed (mosaic) image"), boxes)
        if config.mosaic > 0:  # pixels per output below, in a parallel map
            plan["sources"] = tf.gather(group["image"], plan.pop("src"))
            return {"plan": plan, "boxes": boxes}
        return {"image": single_pixels(group["image"], plan, compose_size), "boxes": boxes}

    ds = ds.map(planned, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if config.mosaic > 0:

        def rendered(item):
            plan = item["plan"]
            image = render_mosaic(plan["sources"], plan["ax"], plan["bx"], plan["ay"], plan["by"], plan["qx"],
                                  plan["qy"], plan["canvas"], compose_size)
            return {"image": image, "boxes": item["boxes"]}

        ds = ds.map(rendered, num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle and config.mosaic > 0:  # separate mosaics that share images
        ds = ds.shuffle(4 * group_size, seed=seed + 1, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = tf.data.Dataset.zip((ds, _seed_stream(seed + 2)))

    def batch_augment(batch, batch_seed):
        s_flip, s_hsv, s_mix = tf.unstack(aug.split_seed(batch_seed, 3))
        images = tf.cast(batch["image"], tf.float32) / 255.0
        boxes = batch["boxes"]
        if config.flip > 0:
            images, boxes = aug.random_flip(images, boxes, s_flip, config.flip)
        if config.hsv_h > 0 or config.hsv_s > 0 or config.hsv_v > 0:
            images = aug.random_hsv(images, s_hsv, config.hsv_h, config.hsv_s, config.hsv_v)
        if config.mixup > 0:
            images, boxes, cut = aug.mixup_detection(images, boxes, s_mix, config.mixup, max_boxes, return_cut=True)
            boxes = _counted(report, BOXES_CUT, cut, _cut_warning(max_boxes, "a mixup"), boxes)
        return images, boxes

    ds = ds.map(batch_augment, num_parallel_calls=tf.data.AUTOTUNE)
    if sizes:
        size_table = tf.constant(sizes, tf.int32)
        picks = _seed_stream(seed + 3).map(
            lambda s: tf.random.stateless_uniform([], s, 0, len(sizes), dtype=tf.int32)
        )
        picks = picks.flat_map(lambda i: tf.data.Dataset.from_tensors(size_table[i]).repeat(multi_scale_every))

        def rescale(batch, new_size):
            images, boxes = batch
            images = tf.image.resize(images, tf.stack([new_size, new_size]), method="bilinear")
            return tf.clip_by_value(images, 0.0, 1.0), boxes

        ds = tf.data.Dataset.zip((ds, picks)).map(rescale, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda images, boxes: (finish(images), boxes), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(True))


def _cache(ds, cache):
    if cache is False or cache is None:
        return ds
    if cache is True:
        return ds.cache()
    return ds.cache(os.fspath(cache))


def classification_dataset(source, image_size=224, batch_size=32, training=True, augment=True, mixup=0.0,
                           cutmix=0.0, label_smoothing=0.0, seed=None, cache=False, crop_scale=(0.08, 1.0),
                           flip=0.5, image_dtype="float32", shuffle=None, drop_remainder=None):
    """A batched ``tf.data.Dataset`` for a classifier: ``(images [B, S, S, 3], labels [B, C])``.

    Training: random resized crop (area fraction ``crop_scale``), flip, then batch-level
    ``mixup`` / ``cutmix`` (probabilities); labels are one-hot (soft after mixing, with
    ``label_smoothing``). Evaluation: shorter side to ``S / 0.875``, centre crop, in order.
    Images float32 in [0, 1] (or uint8 with ``image_dtype="uint8"``).
    """
    _check_positive_int("image_size", image_size)
    _check_positive_int("batch_size", batch_size)
    for name, value in (("mixup", mixup), ("cutmix", cutmix), ("flip", flip)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"`{name}` must be a probability in [0, 1]; received {value!r}")
    if image_dtype not in ("float32", "uint8"):
        raise ValueError(f"`image_dtype` must be 'float32' or 'uint8'; received {image_dtype!r}")
    if isinstance(source, str) and source.startswith("tfds:"):
        name, _, split = source[5:].partition(":")
        source = TfdsClassificationSource(name, split or ("train" if training else "validation"))
    elif isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        source = ImageFolderSource(source)
    if not isinstance(source, ClassificationSource):
        raise TypeError(f"`source` must be a classification source; received {source!r}")
    shuffle = training if shuffle is None else shuffle
    drop_remainder = training if drop_remainder is None else drop_remainder
    seed = random.randrange(2**31) if seed is None else int(seed)
    num_classes = source.num_classes
    dtype = tf.as_dtype(image_dtype)
    ds = source.dataset(shuffle=shuffle and not cache, seed=seed)
    augment = training and augment

    if augment:
        if cache is not False:
            ds = _cache(ds, cache)
            if shuffle:
                ds = ds.shuffle(2048, seed=seed, reshuffle_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, _seed_stream(seed)))

        def crop(element, s):
            s_crop, s_flip = tf.unstack(aug.split_seed(s, 2))
            image = aug.random_resized_crop(element["image"], image_size, s_crop, crop_scale)
            if flip > 0:
                do = tf.random.stateless_uniform([], s_flip) < flip
                image = tf.cond(do, lambda: tf.reverse(image, axis=[1]), lambda: image)
            return image, element["label"]

        ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda e: (aug.center_crop(e["image"], image_size), e["label"]),
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = _cache(ds, cache)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = tf.data.Dataset.zip((ds, _seed_stream(seed + 1)))

    def batch_fn(batch, s):
        images, labels = batch
        images = tf.cast(images, tf.float32) / 255.0
        labels = tf.one_hot(labels, num_classes)
        if label_smoothing:
            labels = labels * (1.0 - label_smoothing) + label_smoothing / num_classes
        if augment and (mixup > 0 or cutmix > 0):
            s_mix, s_cut = tf.unstack(aug.split_seed(s, 2))
            if mixup > 0:
                images, labels = aug.mixup_classification(images, labels, s_mix, mixup)
            if cutmix > 0:
                images, labels = aug.cutmix(images, labels, s_cut, cutmix)
        images = images if dtype == tf.float32 else tf.cast(tf.round(images * 255.0), tf.uint8)
        return images, labels

    ds = ds.map(batch_fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(True))

"""``YOLODetector``: backbone -> neck -> head, trainable with ``fit``, boxes from ``predict``.

The three parts are replaceable: any backbone whose feature maps are identity layers named
``P{n}`` (every keras_csp backbone; see ``keras_csp.pyramid_outputs``), any neck (a name in
``keras_csp.detectors.necks.NECKS`` or a callable with the neck signature) and the YOLO
head (one 1x1 conv per scale). The backbone can be built and loaded alone first (ImageNet
or Darknet weights); the detector reuses its layers, so those weights carry over.
"""

import keras_csp.registry as registry  # noqa: PLR0402  (the module, not keras_csp/__init__: no cycle)
from keras_csp.backend import keras, register, tf
from keras_csp.darknet.order import DarknetBlocksModel, blocks_present, darknet_order
from keras_csp.darknet.weights import load_conv_weights, save_conv_weights
from keras_csp.detectors.heads import TINY_ANCHORS, head_level, prior_biases, split_anchors, yolo_head
from keras_csp.detectors.necks import HeadSlot, get_neck, level_index
from keras_csp.detectors.task import YOLOTask
from keras_csp.models.application import feature_extractor, pyramid_outputs
from keras_csp.ops.head_spec import HeadSpec
from keras_csp.postprocess.decoder import postprocess
from keras_csp.postprocess.nms import NMSConfig, darknet_nms


def _unpack(data):
    """``(x, y)`` from what ``predict`` hands ``predict_step``: ``x``, ``(x,)``, ``(x, y)``
    or ``(x, y, sample_weight)``; a 1-tuple holding ``(images, {...})`` counts as ``(x, y)``."""
    if isinstance(data, (list, tuple)):
        if len(data) == 1 and isinstance(data[0], (list, tuple)):
            return _unpack(tuple(data[0]))
        return data[0], (data[1] if len(data) > 1 else None)
    return data, None


@register
class Detector(YOLOTask):
    """A YOLO detector: ``call`` gives the raw heads (for ``fit`` and export), ``predict``
    gives boxes after decoding and NMS.

    Args:
      detector: the functional network, images ``[B, H, W, 3]`` in [0, 1] -> list of
        ``[B, H/s, W/s, A*(5+C)]`` logits (see :func:`YOLODetector`).
      heads: one ``HeadSpec`` per output; matching_anchors: see ``YOLOTask``.
      nms: :class:`~keras_csp.postprocess.NMSConfig` (or dict) used by ``predict``; default
        the cfg's ``nms_kind`` / ``beta_nms`` when the heads carry one, else NMSConfig's.
      darknet_blocks: conv block names in the order of the Darknet cfg (for ``.weights``).
      class_names: optional name of each class id (e.g. COCO's 80 with ``weights="coco"``),
        for reading ``predict``'s ``classes`` and for export; serialized with the model.

    ``predict(images)`` returns a fixed-size dict per image: ``boxes [K, 4]`` (pixel xyxy),
    ``scores [K]``, ``classes [K]`` (int32, -1 padding), ``num_detections`` and, when the
    detector has ``class_names``, ``labels [K]`` (the names, "" for padding). Boxes are in
    pixels of the model input, or of the original images when the data carry the letterbox
    geometry: ``(images, {"image_info": ...})`` as ``keras_csp.data`` evaluation datasets
    yield, or ``{"images": ..., "image_info": ...}`` as input.

    Post-processing is part of the model: ``detector.nms = NMSConfig(...)`` (or a dict)
    changes it after training, the next ``predict`` uses it, and ``get_config`` saves it, so
    it survives ``.keras`` save / load (``nms_config`` is the same setting under its older name).
    """

    def __init__(self, detector, heads, matching_anchors=None, nms=None, darknet_blocks=None,
                 class_names=None, **kwargs):
        super().__init__(detector, heads, matching_anchors, **kwargs)
        kind = getattr(self.heads[-1], "nms_kind", "default") if self.heads else "default"
        if nms is None and kind != "default":  # the cfg's nms_kind / beta_nms (last [yolo], as Darknet)
            nms = darknet_nms(kind, self.heads[-1].beta_nms)
        self.nms = nms
        blocks = darknet_blocks if darknet_blocks is not None else darknet_order(detector, default=())
        self.darknet_blocks = tuple(blocks)
        self.class_names = None
        if class_names is not None:
            self.set_class_names(class_names)

    def set_class_names(self, class_names):
        """Name each class id (one name per class of the heads), or ``None`` to clear them."""
        if class_names is None:
            self.class_names = None
            return
        names = tuple(str(n) for n in class_names)
        expected = self.heads[0].num_classes
        if len(names) != expected:
            raise ValueError(
                f"`class_names` must name each of the {expected} classes of {self.name}; "
                f"received {len(names)} names."
            )
        self.class_names = names

    @property
    def nms(self):
        """The :class:`~keras_csp.postprocess.NMSConfig` that ``predict`` and ``detect`` use."""
        return self._nms

    @nms.setter
    def nms(self, value):
        self._nms = NMSConfig.coerce(value)
        self.predict_function = None  # predict_step was traced with the old settings

    nms_config = nms

    @property
    def backbone(self):
        """The backbone part as a model ``images -> {"P3": ..., ...}`` (shares the layers)."""
        levels = tuple(pyramid_outputs(self.detector))
        return feature_extractor(self.detector, levels)

    def _input_hw(self, images):
        shape = self.detector.inputs[0].shape
        if shape[1] is not None and shape[2] is not None:
            return int(shape[1]), int(shape[2])
        dynamic = tf.shape(images)
        return dynamic[1], dynamic[2]

    def detect(self, images, image_info=None, nms=None):
        """Images (float in [0, 1] or uint8) -> the fixed-size detections dict."""
        if images.dtype == tf.uint8:
            images = tf.cast(images, tf.float32) / 255.0
        raw = self(images, training=False)
        return postprocess(
            raw, self.heads, NMSConfig.coerce(nms) if nms is not None else self.nms,
            self._input_hw(images), image_info,
        )

    def predict_step(self, data):
        x, y = _unpack(data)
        image_info = None
        if isinstance(x, dict):
            image_info = x.get("image_info")
            x = x["images"]
        elif isinstance(y, dict):
            image_info = y.get("image_info")
        out = self.detect(tf.convert_to_tensor(x), image_info)
        if self.class_names:  # "labels": each box's class name ("" for padding rows)
            names = tf.constant(list(self.class_names) + [""])
            out["labels"] = tf.gather(names, tf.where(out["classes"] >= 0, out["classes"], len(self.class_names)))
        return out

    def load_darknet_weights(self, path, allow_extra=False):
        """Load a Darknet ``.weights`` file of this detector's cfg (all-or-nothing)."""
        if not self.darknet_blocks:
            raise ValueError(f"{self.name} has no Darknet block list; it was not built by YOLODetector.")
        return load_conv_weights(self.detector, self.darknet_blocks, path, allow_extra=allow_extra)

    def save_darknet_weights(self, path):
        """Write this detector's conv blocks as a Darknet ``.weights`` file, in cfg order."""
        return save_conv_weights(self.detector, self.darknet_blocks, path)

    def get_config(self):
        config = super().get_config()
        config["nms"] = self.nms.get_config()
        config["darknet_blocks"] = list(self.darknet_blocks)
        config["class_names"] = None if self.class_names is None else list(self.class_names)
        return config


def _build_backbone(backbone, input_shape):
    if isinstance(backbone, keras.Model):
        return backbone
    if isinstance(backbone, str):
        return registry.build(backbone, include_top=False, input_shape=input_shape or (None, None, 3))
    raise TypeError(
        f"`backbone` must be a keras.Model with P{{n}} pyramid layers or a model name; received "
        f"{type(backbone).__name__}."
    )


def _cfg_order(backbone_blocks, neck_registry, head_blocks, levels):
    """Backbone blocks, then the neck's with each scale's prediction conv at its HeadSlot."""
    order = list(backbone_blocks)
    placed = set()
    for item in neck_registry:
        if isinstance(item, HeadSlot):
            if item.level in head_blocks:
                order.append(head_blocks[item.level])
                placed.add(item.level)
        else:
            order.append(item)
    order.extend(head_blocks[lvl] for lvl in levels if lvl not in placed)
    return tuple(order)


def _head_options(head_options, count):
    if head_options is None:
        return [{}] * count
    if isinstance(head_options, dict):
        return [dict(head_options)] * count
    options = list(head_options)
    if len(options) != count or not all(isinstance(o, dict) for o in options):
        raise ValueError(
            f"`head_options` must be a dict or one dict per output level ({count}); received "
            f"{head_options!r}."
        )
    return options


def YOLODetector(
    backbone,
    neck="panet_spp",
    num_classes=80,
    anchors=None,
    *,
    heads=None,
    head_options=None,
    matching_anchors=None,
    activation="leaky",
    input_shape=None,
    nms=None,
    prior_init=True,
    name=None,
):
    """Compose a YOLO detector from a backbone, a neck and the YOLO head.

    Args:
      backbone: a keras_csp backbone built with ``include_top=False`` (any model with
        ``P{n}`` identity layers), or a backbone name (``"CSPDarknet53"``), built with
        ``input_shape``. Its conv blocks come first in ``darknet_blocks``.
      neck: a name from ``keras_csp.detectors.necks.NECKS`` (``fpn``, ``fpn_spp``,
        ``panet_spp``, ``efm``, ``efm_sam``, ``efm_spp``, ``gfm``, ``prn``, ``prn_3l``), or a
        neck object (e.g. ``necks.PANet(widths=(64, 128, 256))``) or callable
        ``neck(features, activation=, registry=, name=) -> {level: tensor}``.
      num_classes: classes per anchor.
      anchors: ``(w, h)`` pixel anchors, one list per output level or one flat list split
        evenly (default: YOLOv3's COCO anchors for three levels; for two, yolov3-tiny-prn's
        masks 1-3 / 3-5 of its six anchors, all six used for matching).
      heads: explicit ``HeadSpec``s (overrides ``num_classes``, ``anchors``, ``head_options``).
      head_options: ``HeadSpec`` loss/decoding fields, a dict for all levels or one per level
        (e.g. ``{"ignore_thresh": 0.7}``, ``{"iou_loss": "ciou"}``, ``scale_x_y``).
      matching_anchors: anchor pool for label assignment (default: all heads' anchors).
      activation: activation of the neck's conv blocks (the cfgs use leaky).
      input_shape: used only when ``backbone`` is a name.
      nms: ``NMSConfig`` or dict for ``predict``.
      prior_init: initialise prediction biases to a low objectness / class prior.
      name: model name.

    Returns:
      a :class:`Detector` (a keras.Model; this function is named like its class, as
      ``keras.applications`` builders are); ``detector.network`` is the functional network and
      ``detector.darknet_blocks`` its conv blocks in Darknet cfg order.
    """
    backbone = _build_backbone(backbone, input_shape)
    neck = get_neck(neck)
    features = pyramid_outputs(backbone)
    registry = []
    neck_outputs = neck(features, activation=activation, registry=registry, name="neck")
    levels = tuple(sorted(neck_outputs, key=level_index))
    if heads is None:
        if anchors is None and len(levels) == 2 and matching_anchors is None:
            # yolov3-tiny-prn's masks share anchor 3 and leave anchor 0 for matching only.
            matching_anchors = TINY_ANCHORS
        options = _head_options(head_options, len(levels))
        heads = tuple(
            HeadSpec(stride=2 ** level_index(lvl), anchors=a, num_classes=num_classes, **opt)
            for lvl, a, opt in zip(levels, split_anchors(anchors, len(levels)), options)
        )
    else:
        heads = tuple(HeadSpec.coerce(h) for h in heads)
    head_blocks = {}
    raw = yolo_head(neck_outputs, heads, head_blocks)
    network_name = _safe(name or f"{backbone.name}_{type(neck).__name__}")
    inputs = backbone.inputs[0] if len(backbone.inputs) == 1 else backbone.inputs
    network = DarknetBlocksModel(inputs, raw, name=network_name)
    head_levels = [head_level(h) for h in heads]
    # Backbone stages no neck level reads (e.g. a stride-64 stage under a P4/P5 head) are not
    # part of the network; their blocks are left out of the Darknet order too.
    backbone_blocks = blocks_present(network, darknet_order(backbone, default=()))
    blocks = _cfg_order(backbone_blocks, registry, head_blocks, head_levels)
    network.darknet_blocks = blocks
    if prior_init:
        size = backbone.inputs[0].shape[1] or 416
        for head, level in zip(heads, head_levels):
            network.get_layer(f"{head_blocks[level]}_conv").bias.assign(prior_biases(head, size))
    return Detector(network, heads, matching_anchors, nms=nms, darknet_blocks=blocks,
                    name=f"{network_name}_detector")


def network_of(model):
    """The Keras network of a ``Detector`` or ``YOLOTask`` (its ``.network``: image in, head
    maps out), or ``model`` itself when it is already a plain network (or carries no built
    network with inputs). The one unwrapping: export, evaluation and training use it too."""
    inner = getattr(model, "detector", None)
    if isinstance(inner, keras.Model) and getattr(inner, "inputs", None):
        return inner
    return model


def _safe(name):
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


__all__ = ["Detector", "YOLODetector", "network_of"]

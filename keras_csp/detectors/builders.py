"""The paper's detectors by name, each one entry of ``DETECTORS`` built by ``YOLODetector``.

Exact (the authors' Darknet cfgs, same conv blocks in the same order, so Darknet
``.weights`` load): CSPResNeXt50-PANet-SPP, CSPDarknet53-PANet-SPP, CSPResNet50-PANet-SPP
(cs*-panet-spp.cfg), YOLOv3 (yolov3.cfg) and YOLOv3-SPP (yolov3-spp.cfg), YOLOv4 (yolov4.cfg:
CSPDarknet53-PANet-SPP with the mish backbone, csdarknet53-omega, its own anchors and [yolo]
options) and YOLOv4-tiny (yolov4-tiny.cfg: CSPDarknet53-tiny and a two-level neck). These
two have trained COCO weights: ``YOLOv4(weights="coco")`` (see ``keras_csp.weights``).

Reconstructions (no cfg was ever published): the small detectors of Table 2 and Table 4,
EFM / EFM(SAM) / EFM(SPP) / GFM / PRN / PRN-3l on CSPPeleeNet, PeleeNet and the CSP
Reference nets. Their neck structure follows the paper's text (EFM, GFM) or
yolov3-tiny-prn.cfg (PRN); the neck widths are the only free choice and were picked to
reach the paper's BFLOPs and parameter counts (all within 5%, see docs/detectors.md and
tests/test_registry_models.py). Their backbones are themselves reconstructions
(``keras_csp.models.small``).
"""

import dataclasses
import functools
from typing import Optional

import keras_csp.registry as registry  # noqa: PLR0402  (the module, not keras_csp/__init__: no cycle)
from keras_csp.detectors.detector import YOLODetector
from keras_csp.detectors.heads import TINY_ANCHORS, TINY_PRN_ANCHORS, YOLOV3_ANCHORS
from keras_csp.detectors.necks import EFM, GFM, PRN, TinyFPN
from keras_csp.detectors.transfer import load_pretrained
from keras_csp.profiling import profile


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    """One named detector: backbone builder name, neck, default input side, origin, and the
    published counts it is held to: ``targets`` is ``((size, BFLOPs, kernel weights or
    None), ...)`` (Darknet's own figures for exact cfgs, the paper's tables otherwise)."""

    name: str
    backbone: str
    neck: object
    input_size: int
    source: str
    targets: tuple = ()
    anchors: tuple = YOLOV3_ANCHORS
    head_options: Optional[dict] = None
    backbone_kwargs: Optional[dict] = None
    exact: bool = True
    matching_anchors: Optional[tuple] = None


_CFG_HEAD = {"ignore_thresh": 0.7}  # every [yolo] of these cfgs; truth_thresh=1 is the no-op

DETECTORS = {}


def _exact(name, backbone, neck, size, source, targets):
    DETECTORS[name] = DetectorSpec(name, backbone, neck, size, source, targets,
                                   head_options=_CFG_HEAD)


_exact("CSPResNeXt50-PANet-SPP", "CSPResNeXt50", "panet_spp", 512,
       "reference-repo cfg/csresnext50-panet-spp.cfg (416 there; the paper's main size is 512)",
       ((512, 71.344, 56_853_440), (416, 47.098, 56_853_440), (608, 100.6, 56.9e6),
        (320, 27.9, 56.9e6)))
_exact("CSPDarknet53-PANet-SPP", "CSPDarknet53", "panet_spp", 416,
       "reference-repo cfg/csdarknet53-panet-spp.cfg", ((416, 60.137, 64_296_032),))
_exact("CSPResNet50-PANet-SPP", "CSPResNet50", "panet_spp", 416,
       "reference-repo cfg/csresnet50-panet-spp.cfg", ((416, 49.313, 58_256_832),))
_exact("YOLOv3", "Darknet53", "fpn", 416, "darknet cfg/yolov3.cfg",
       ((416, 65.9, 62.3e6), (608, 140.7, 62.3e6), (320, 39.0, 62.3e6)))
_exact("YOLOv3-SPP", "Darknet53", "fpn_spp", 608, "darknet cfg/yolov3-spp.cfg",
       ((608, 141.531, 62_944_352),))

# yolov4.cfg / yolov4-tiny.cfg (the Darknet project, AlexeyAB/darknet): their [yolo] options,
# one dict per level (smallest stride first). Each head matches a truth against all the
# section's anchors (``matching_anchors``) and is positive where the best is in its ``mask``
# (``anchor_indices``): in yolov4-tiny both masks hold anchor 3, so such a truth is a positive
# in both heads, as in Darknet. iou_thresh (yolov4 only): anchors with shape IoU > 0.213 are
# positives too. max_delta (Darknet's gradient clip) has no counterpart; the loss needs none.
_V4_HEAD = {"iou_loss": "ciou", "iou_normalizer": 0.07, "cls_normalizer": 1.0,
            "ignore_thresh": 0.7, "nms_kind": "greedynms", "beta_nms": 0.6}
YOLOV4_ANCHORS = (
    ((12, 16), (19, 36), (40, 28)),
    ((36, 75), (76, 55), (72, 146)),
    ((142, 110), (192, 243), (459, 401)),
)
_V4_POOL = tuple(a for level in YOLOV4_ANCHORS for a in level)
DETECTORS["YOLOv4"] = DetectorSpec(
    "YOLOv4", "CSPDarknet53", "panet_spp", 608,
    "darknet cfg/yolov4.cfg (csdarknet53-panet-spp.cfg with the mish backbone; trained on COCO)",
    # Darknet's counts of yolov4.cfg (keras_csp.darknet.infer_network; tests/test_yolov4.py).
    ((608, 128.459, 64_296_032), (416, 60.137, 64_296_032)),
    anchors=YOLOV4_ANCHORS,
    head_options=tuple(
        {**_V4_HEAD, "scale_x_y": scale, "iou_thresh": 0.213, "matching_anchors": _V4_POOL,
         "anchor_indices": mask}
        for scale, mask in ((1.2, (0, 1, 2)), (1.1, (3, 4, 5)), (1.05, (6, 7, 8)))),
    backbone_kwargs={"activation": "mish"},
    matching_anchors=_V4_POOL,
)
DETECTORS["YOLOv4-tiny"] = DetectorSpec(
    "YOLOv4-tiny", "CSPDarknet53Tiny", TinyFPN((128, 256)), 416,
    "darknet cfg/yolov4-tiny.cfg (trained on COCO)",
    ((416, 6.910, 6_049_888),),
    anchors=TINY_PRN_ANCHORS,  # masks 1,2,3 (P4) and 3,4,5 (P5) of the cfg's six
    head_options=tuple(
        {**_V4_HEAD, "scale_x_y": 1.05, "matching_anchors": TINY_ANCHORS, "anchor_indices": mask}
        for mask in ((1, 2, 3), (3, 4, 5))),
    matching_anchors=TINY_ANCHORS,  # anchor 0 serves matching only, as in Darknet
)
_POOL_KEYS = ("matching_anchors", "anchor_indices")


def _drop_cfg_pool(options, spec):
    """``options`` without the spec's own per-head anchor pool (it belongs to the cfg's
    anchors; other anchors match within the heads' anchors)."""
    if options is None or spec.head_options is None:
        return options
    own = spec.head_options if isinstance(spec.head_options, (list, tuple)) else [spec.head_options]
    pools = {tuple((k, repr(o.get(k))) for k in _POOL_KEYS) for o in own}

    def strip(o):
        if tuple((k, repr(o.get(k))) for k in _POOL_KEYS) in pools:
            return {k: v for k, v in o.items() if k not in _POOL_KEYS}
        return o

    return [strip(o) for o in options] if isinstance(options, (list, tuple)) else strip(options)


def _small(name, backbone, neck, size, source, targets):
    two_levels = len(neck.levels) == 2
    DETECTORS[name] = DetectorSpec(
        name, backbone, neck, size, source, targets, exact=False, head_options=_CFG_HEAD,
        anchors=TINY_PRN_ANCHORS if two_levels else YOLOV3_ANCHORS,
        matching_anchors=TINY_ANCHORS if two_levels else None,
    )


# Table 2 (CSPPeleeNet backbone, 416x416) and Table 4.
_PELEE_EFM = (64, 112, 224)
_small("CSPPeleeNet-EFM(SAM)", "CSPPeleeNet", EFM(_PELEE_EFM, attention="sam"), 416,
       "Table 4 and Table 2", ((416, 5.068, 4.31e6), (512, 7.68, 4.31e6)))
_small("CSPPeleeNet-EFM", "CSPPeleeNet", EFM(_PELEE_EFM), 416, "Table 2", ((416, 4.868, None),))
_small("CSPPeleeNet-EFM(SPP)", "CSPPeleeNet", EFM(_PELEE_EFM, spp=True), 416, "Table 2",
       ((416, 4.863, None),))
_small("CSPPeleeNet-GFM", "CSPPeleeNet", GFM(_PELEE_EFM), 416, "Table 2", ((416, 4.605, None),))
_small("CSPPeleeNet-PRN", "CSPPeleeNet", PRN((128, 256)), 416,
       "Table 2 (head of yolov3-tiny-prn.cfg)", ((416, 3.590, None),))
_small("CSPPeleeNet-PRN-3l", "CSPPeleeNet", PRN((128, 128, 256), ("P3", "P4", "P5")), 416,
       "Table 2", ((416, 4.586, None),))
_small("PeleeNet-PRN", "PeleeNet", PRN((128, 256)), 416, "Table 4", ((416, 4.04, 3.16e6),))
# Table 4, 320x320. The Reference nets end with a stride-64 stage (darknet.cfg's layout):
# EFM fuses it into P5 (the "s + 1" of P5); the PRN heads read P4 and P5 only, so that
# stage is not part of those detectors.
_REF_EFM = (96, 128, 224)
_small("CSPPeleeNet-Ref-EFM(SAM)", "CSPPeleeNetRef", EFM(_REF_EFM, attention="sam"), 320,
       "Table 4", ((320, 3.43, 5.67e6),))
_small("CSPDenseNet-Ref-EFM(SAM)", "CSPDenseNetRef", EFM(_REF_EFM, attention="sam"), 320,
       "Table 4", ((320, 2.89, 5.05e6),))
_small("CSPPeleeNet-Ref-PRN", "CSPPeleeNetRef", PRN((160, 512)), 320, "Table 4",
       ((320, 2.56, 4.59e6),))
_small("CSPPeleeNet-Ref-PRN(3l)", "CSPPeleeNetRef", PRN((128, 160, 512), ("P3", "P4", "P5")),
       320, "Table 4", ((320, 3.15, 4.79e6),))
_small("CSPDenseNet-Ref-PRN", "CSPDenseNetRef", PRN((128, 512)), 320, "Table 4",
       ((320, 2.01, 3.97e6),))
_small("CSPDenseNetb-Ref-PRN", "CSPDenseNetbRef", PRN((256, 160)), 320, "Table 4",
       ((320, 1.59, 1.87e6),))


def _backbone(name, **kwargs):
    """Build backbone ``name`` (a builder or cfg variant name) from the registry."""
    if registry.kind_of(name) not in ("backbone", "variant"):
        raise ValueError(f"Unknown backbone {name!r} for a named detector.")
    return registry.build(name, **kwargs)


def merge_head_options(own, user):
    """The user's head options key by key over a named detector's own (its cfg's): a dict over
    every level, or one dict per level; ``own`` may itself be per level (YOLOv4)."""
    if user is None or own is None:
        return own if user is None else user
    per_level_own = isinstance(own, (list, tuple))
    if isinstance(user, dict):
        return [{**o, **user} for o in own] if per_level_own else {**own, **user}
    user = list(user)
    own = list(own) if per_level_own else [own] * len(user)
    if len(own) != len(user):
        raise ValueError(f"head_options: {len(user)} per-level dicts for a detector with {len(own)} levels.")
    return [{**o, **u} for o, u in zip(own, user)]


def build_detector(
    spec,
    num_classes=80,
    input_shape=None,
    weights=None,
    backbone_weights=None,
    anchors=None,
    head_options=None,
    nms=None,
    name=None,
    class_names=None,
    verbose=True,
):
    """Build the named detector ``spec`` (a ``DetectorSpec`` or a key of ``DETECTORS``).

    ``weights`` goes through :func:`keras_csp.detectors.transfer.load_pretrained`: a registry
    name or alias (``"coco"``, ``"conv.29"``), a Darknet file (blocks that fit are loaded, the
    class-dependent prediction convs of another class count re-created, a partial file's
    missing blocks left as initialised; ``verbose`` prints what was not loaded) or a Keras
    weights file. ``detector.transfer_report`` keeps the report (None for Keras files).
    """
    if isinstance(spec, str):
        if spec not in DETECTORS:
            raise ValueError(f"Unknown detector {spec!r}; known: {', '.join(sorted(DETECTORS))}.")
        spec = DETECTORS[spec]
    if input_shape is None:
        input_shape = (spec.input_size, spec.input_size, 3)
    backbone = _backbone(
        spec.backbone, include_top=False, input_shape=tuple(input_shape),
        weights=backbone_weights, **(spec.backbone_kwargs or {}),
    )
    options = merge_head_options(spec.head_options, head_options)
    matching = spec.matching_anchors
    if anchors is not None:
        options, matching = _drop_cfg_pool(options, spec), None
    detector = YOLODetector(
        backbone, spec.neck, num_classes=num_classes,
        anchors=spec.anchors if anchors is None else anchors,
        head_options=options, matching_anchors=matching, nms=nms,
        name=name or spec.name.replace("-", "_").replace("(", "").replace(")", ""),
    )
    if class_names is not None:
        detector.set_class_names(class_names)
    report = None
    if weights is not None:
        report = load_pretrained(detector, weights, model=spec.name, verbose=verbose)
    detector.transfer_report = report
    return detector


def report(names=None):
    """Rows ``(name, size, measured BFLOPs, target, measured weights, target)`` of the named
    detectors (all by default) at every size of their ``targets``; builds each one."""
    rows = []
    for key in names or DETECTORS:
        spec = DETECTORS[key]
        for size, bflops, params in spec.targets:
            detector = build_detector(spec, input_shape=(size, size, 3))
            prof = profile(detector.detector)
            rows.append((key, size, prof.bflops, bflops, prof.params, params))
    return rows


_DOC = """The {name} detector ({kind}; {source}).

    {structure}
    Published counts: {targets}.

    Args:
        num_classes: classes (80 for COCO; the head widths follow).
        input_shape: (height, width, 3), multiples of 32; default ({size}, {size}, 3). Use
            (None, None, 3) for any size (then ``predict`` works, ``YoloDecode`` does not).
        weights: {weights_doc}a Darknet file (the whole detector in
            ``darknet_blocks`` order, or its first blocks as Darknet's ``*.conv.N``; the
            prediction convs of a file for other classes are re-created: fine-tuning; see
            ``keras_csp.detectors.transfer``) or a Keras weights file.
        backbone_weights: weights of the backbone alone ("imagenet" or a path), loaded
            before the neck and head are added.
        anchors: (w, h) pixel anchors per level (default: the cfg's).
        head_options: HeadSpec loss options, merged key by key over the cfg's own (ignore_thresh=0.7;
            YOLOv4's per-level [yolo] options).
        nms: NMSConfig or dict used by ``predict``.
        name: model name.
        class_names: a name per class (``weights="coco"`` with 80 classes sets COCO's).
        verbose: print which blocks of a Darknet ``weights`` file were not loaded.

    Returns a ``keras_csp.detectors.Detector``: ``fit`` trains it on ``(images, boxes)``,
    ``predict`` returns boxes, ``detector.network`` is the raw functional network.
    """


_PRETRAINED = {
    "YOLOv4": '"coco" (yolov4.weights, COCO\'s 80 classes; with another num_classes every\n'
              '            block but the three prediction convs), "conv.137" (yolov4.conv.137,\n'
              '            the ImageNet backbone and SPP), a name registered in keras_csp.weights, ',
    "YOLOv4-tiny": '"coco" (yolov4-tiny.weights, COCO\'s 80 classes; with another num_classes\n'
                   '            every block but the two prediction convs), "conv.29"\n'
                   '            (yolov4-tiny.conv.29, the first 29 cfg layers), a name registered\n'
                   '            in keras_csp.weights, ',
}


def _weights_doc(key):
    return _PRETRAINED.get(key, "a name registered in keras_csp.weights, ")


def _make(key):
    spec = DETECTORS[key]

    def builder(num_classes=80, input_shape=None, weights=None, backbone_weights=None,
                anchors=None, head_options=None, nms=None, name=None, class_names=None,
                verbose=True):
        return build_detector(spec, num_classes, input_shape, weights, backbone_weights,
                              anchors, head_options, nms, name, class_names, verbose)

    builder.__name__ = builder.__qualname__ = (
        key.replace("-", "").replace("(", "").replace(")", "").replace(".", "")
    )
    if spec.exact:
        structure = (
            f"Backbone {spec.backbone}, neck {spec.neck!r}: the cfg's conv blocks in the cfg's\n"
            "    order (``detector.darknet_blocks``), so the authors' Darknet weights load."
        )
    else:
        structure = (
            f"No cfg was published. Backbone {spec.backbone} (keras_csp.models.small, itself a\n"
            f"    reconstruction), neck {spec.neck!r}: the neck widths were\n"
            "    picked to reach the paper's counts (docs/detectors.md)."
        )
    targets = "; ".join(
        f"{b} BFLOPs" + (f", {p / 1e6:.2f}M weights" if p else "") + f" @{size}"
        for size, b, p in spec.targets
    )
    builder.__doc__ = _DOC.format(
        name=key, kind="exact cfg" if spec.exact else "reconstruction", source=spec.source,
        size=spec.input_size, structure=structure, targets=targets,
        weights_doc=_weights_doc(key),
    )
    return builder


CSPResNeXt50PANetSPP = _make("CSPResNeXt50-PANet-SPP")
CSPDarknet53PANetSPP = _make("CSPDarknet53-PANet-SPP")
CSPResNet50PANetSPP = _make("CSPResNet50-PANet-SPP")
YOLOv3 = _make("YOLOv3")
YOLOv3SPP = _make("YOLOv3-SPP")
CSPPeleeNetEFMSAM = _make("CSPPeleeNet-EFM(SAM)")
CSPPeleeNetRefEFMSAM = _make("CSPPeleeNet-Ref-EFM(SAM)")
CSPDenseNetRefEFMSAM = _make("CSPDenseNet-Ref-EFM(SAM)")
CSPPeleeNetRefPRN = _make("CSPPeleeNet-Ref-PRN")
CSPPeleeNetRefPRN3l = _make("CSPPeleeNet-Ref-PRN(3l)")
CSPDenseNetRefPRN = _make("CSPDenseNet-Ref-PRN")
CSPDenseNetbRefPRN = _make("CSPDenseNetb-Ref-PRN")
PeleeNetPRN = _make("PeleeNet-PRN")
YOLOv4 = _make("YOLOv4")
YOLOv4Tiny = _make("YOLOv4-tiny")
YOLOv4Tiny.__name__ = YOLOv4Tiny.__qualname__ = "YOLOv4Tiny"

for _key in DETECTORS:
    registry.register(_key, functools.partial(build_detector, _key), "detector")


def backbone_with_neck(backbone, neck, num_classes=80, input_shape=None, backbone_weights=None, name=None,
                       **kwargs):
    """The detector a ``BACKBONE+NECK`` name builds: registered backbone ``backbone`` (built
    without its top at ``input_shape``) with neck ``neck`` of ``necks.NECKS`` and the YOLO head;
    ``kwargs`` go to :func:`YOLODetector` (anchors, head_options, nms, ...)."""
    if registry.kind_of(backbone) not in ("backbone", "variant"):
        raise ValueError(f"model {backbone}+{neck}: {backbone!r} is not a registered backbone; known: "
                         f"{', '.join(registry.names('backbone') + registry.names('variant'))}.")
    model = registry.build(backbone, include_top=False, input_shape=tuple(input_shape or (None, None, 3)),
                           weights=backbone_weights)
    return YOLODetector(model, neck, num_classes=num_classes,
                        name=name or f"{backbone}_{neck}".replace("-", "_"), **kwargs)


registry.register_composition(backbone_with_neck)

__all__ = [
    "CSPDarknet53PANetSPP", "CSPDenseNetRefEFMSAM", "CSPDenseNetRefPRN", "CSPDenseNetbRefPRN",
    "CSPPeleeNetEFMSAM", "CSPPeleeNetRefEFMSAM", "CSPPeleeNetRefPRN", "CSPPeleeNetRefPRN3l",
    "CSPResNeXt50PANetSPP", "CSPResNet50PANetSPP", "DETECTORS", "DetectorSpec", "PeleeNetPRN",
    "YOLOV4_ANCHORS", "YOLOv3", "YOLOv3SPP", "YOLOv4", "YOLOv4Tiny", "backbone_with_neck", "build_detector",
    "merge_head_options", "report",
]

"""Published weights by name: where each file lives, its checksum, and the model it fits.

Data, not code, at the bottom of the import graph (standard library only): the model builders
ask this table what ``weights="coco"`` or ``weights="imagenet"`` means for them, and
:mod:`keras_csp.weights.download` fetches and verifies the file. Users add their own entries
with :func:`register`, and ``weights="their-name"`` then works the same way.
"""

import dataclasses
from typing import Optional

from keras_csp.weights.classes import COCO_CLASSES

CHECKSUM_ALGORITHMS = ("sha256", "sha1", "git-blob-sha1")
"""``git-blob-sha1`` is git's object id of the file: SHA-1 of ``b"blob <size>\\0"`` + the bytes,
so a file kept in a git repository is pinned by the blob id its tree lists."""


@dataclasses.dataclass(frozen=True)
class WeightsEntry:
    """One published weights file.

    ``checksum`` is ``(algorithm, (hex, ...))``: every value is a hash some source published
    for this very address (more than one when sources disagree, each named in
    ``checksum_note``), or None when nobody published one (``checksum_note`` says so, and the
    loader's float count against the cfg is then the only check). ``darknet_layers`` marks a
    partial Darknet file holding only the first N cfg layers (``yolov4-tiny.conv.29``).
    """

    name: str
    urls: tuple
    filename: str
    model: str
    checksum: Optional[tuple] = None
    checksum_note: str = ""
    size: Optional[int] = None
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    format: str = "darknet"
    classes: Optional[tuple] = None
    darknet_layers: Optional[int] = None
    alias: Optional[str] = None
    source: str = ""

    @property
    def num_classes(self):
        return None if self.classes is None else len(self.classes)

    def matches(self, model, alias, model_kwargs):
        """True when this entry is ``alias`` of ``model`` built with ``model_kwargs``."""
        if self.model != model or self.alias != alias:
            return False
        return all(model_kwargs.get(key, value) == value for key, value in self.model_kwargs.items())


_REGISTRY = {}


def register(name, *, url, model, sha256=None, sha1=None, git_blob_sha1=None, size=None,
             model_kwargs=None, format="darknet", classes=None, darknet_layers=None, alias=None,
             source="", checksum_note="", filename=None, overwrite=False):
    """Add a weights file under ``name`` (``url``: one address or a list of mirrors).

    Give at most one checksum (a hex string, or a tuple of accepted values); without one the
    file is used unchecked, and ``checksum_note`` should say why. ``model`` is the registry
    name of the model it fits (``"YOLOv4-tiny"``), ``alias`` the short name a builder accepts
    (``weights="coco"``). Returns the :class:`WeightsEntry`.
    """
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"Weights {name!r} are already registered (pass overwrite=True to replace them).")
    urls = (url,) if isinstance(url, str) else tuple(url)
    if not urls or not all(isinstance(u, str) and u for u in urls):
        raise ValueError(f"register({name!r}): `url` must be a URL or a list of URLs; received {url!r}.")
    given = [(algo, value) for algo, value in
             (("sha256", sha256), ("sha1", sha1), ("git-blob-sha1", git_blob_sha1)) if value]
    if len(given) > 1:
        raise ValueError(f"register({name!r}): give one checksum, received {[a for a, _ in given]}.")
    checksum = None
    if given:
        algo, values = given[0]
        values = (values,) if isinstance(values, str) else tuple(values)
        checksum = (algo, tuple(v.lower() for v in values))
    if format not in ("darknet", "keras"):
        raise ValueError(f"register({name!r}): `format` must be 'darknet' or 'keras'; received {format!r}.")
    entry = WeightsEntry(
        name=name, urls=urls, filename=filename or urls[0].rstrip("/").rsplit("/", 1)[-1],
        model=model, checksum=checksum, checksum_note=checksum_note, size=size,
        model_kwargs=dict(model_kwargs or {}), format=format,
        classes=None if classes is None else tuple(classes), darknet_layers=darknet_layers,
        alias=alias, source=source,
    )
    _REGISTRY[name] = entry
    return entry


def unregister(name):
    """Remove a user entry (tests, or replacing a mirror)."""
    _REGISTRY.pop(name, None)


def get(name):
    """The entry registered as ``name``; an unknown name lists the known ones."""
    if isinstance(name, WeightsEntry):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"No weights registered as {name!r}; registered: {', '.join(names())}.") from None


def names(model=None):
    """Registered names (of one ``model`` when given), sorted."""
    return sorted(n for n, e in _REGISTRY.items() if model is None or e.model == model)


def find(model, alias, **model_kwargs):
    """The entry that is ``alias`` (``"coco"``, ``"imagenet"``) of ``model``, or None."""
    for entry in _REGISTRY.values():
        if entry.matches(model, alias, model_kwargs):
            return entry
    return None


def aliases(model):
    """Short names (``"coco"``) available for ``model``, with the kwargs each needs."""
    return sorted({(e.alias, tuple(sorted(e.model_kwargs.items()))) for e in _REGISTRY.values()
                   if e.model == model and e.alias})


# --- The published files -------------------------------------------------------------------

_DARKNET_RELEASES = "https://github.com/AlexeyAB/darknet/releases/download"
_OPENCV_PIN = ("pinned by OpenCV's test-data script, opencv/opencv_extra "
               "testdata/dnn/download_models.py")

register(
    "yolov4-coco", url=f"{_DARKNET_RELEASES}/darknet_yolo_v3_optimal/yolov4.weights",
    model="YOLOv4", alias="coco", classes=COCO_CLASSES, size=257_717_640,  # 20 + 4 x cfg floats
    sha1="0143deb6c46fcc7f74dd35bf3c14edc3784e99ee",
    checksum_note=f"SHA-1 {_OPENCV_PIN} (model 'YOLOv4').",
    source="AlexeyAB/darknet release darknet_yolo_v3_optimal; cfg darknet cfg/yolov4.cfg; COCO trainval",
)
register(
    "yolov4.conv.137", url=f"{_DARKNET_RELEASES}/darknet_yolo_v3_optimal/yolov4.conv.137",
    model="YOLOv4", alias="conv.137", darknet_layers=137,
    checksum_note="no published checksum; the loader checks the float count of the first 137 "
                  "cfg layers (csdarknet53-omega, ImageNet) before assigning anything.",
    source="AlexeyAB/darknet release darknet_yolo_v3_optimal (the backbone part of yolov4.cfg)",
)
register(
    "yolov4-tiny-coco", url=f"{_DARKNET_RELEASES}/darknet_yolo_v4_pre/yolov4-tiny.weights",
    model="YOLOv4-tiny", alias="coco", classes=COCO_CLASSES, size=24_251_276,  # 20 + 4 x floats
    sha1=("d110379b7b86899226b591ad4affc7115f707157", "451caaab22fb9831aa1a5ee9b5ba74a35ffa5dcb"),
    checksum_note=(f"SHA-1 d110379b... {_OPENCV_PIN} for tag darknet_yolo_v4_pre; the same "
                   "script pins 451caaab... for yolov4-tiny.weights under tag yolov4 (the 2020-12 "
                   "retrain), and the R package ovml pins 451caaab... for this tag's address, so "
                   "the asset may have been replaced: both are accepted, nothing else is."),
    source="AlexeyAB/darknet release darknet_yolo_v4_pre; cfg darknet cfg/yolov4-tiny.cfg; COCO",
)
register(
    "yolov4-tiny.conv.29", url=f"{_DARKNET_RELEASES}/darknet_yolo_v4_pre/yolov4-tiny.conv.29",
    model="YOLOv4-tiny", alias="conv.29", darknet_layers=29,
    checksum_note="no published checksum; the loader checks the float count of the first 29 cfg "
                  "layers before assigning anything.",
    source="AlexeyAB/darknet release darknet_yolo_v4_pre (the first 29 layers of yolov4-tiny.cfg)",
)

# The paper's reference repo keeps three small ImageNet weights in git: pinned by commit, and
# by git blob id (a checksum of the bytes).
_REFERENCE_RAW = ("https://github.com/WongKinYiu/CrossStagePartialNetworks/raw/"
                  "8786894eec2bc8e7d78572d5a770f091baa6f4fb/weight")
register(
    "csmobilenet-v2-imagenet", url=f"{_REFERENCE_RAW}/csmobilenet-v2_final.weights",
    model="CSPMobileNetV2", alias="imagenet",
    git_blob_sha1="3a60f0eb6f91365fc9029c2170acdec338fadcf1",
    checksum_note="git blob id of weight/csmobilenet-v2_final.weights at the pinned commit.",
    source="WongKinYiu/CrossStagePartialNetworks weight/ (cfg csmobilenet-v2.cfg), ImageNet",
)
register(
    "resnet10-imagenet", url=f"{_REFERENCE_RAW}/resnet10_final.weights",
    model="ResNet10", alias="imagenet",
    git_blob_sha1="8d72a4d7747d36ea4eca5542131fa39f0a70c0d9",
    checksum_note="git blob id of weight/resnet10_final.weights at the pinned commit.",
    source="WongKinYiu/CrossStagePartialNetworks weight/ (cfg resnet10.cfg), ImageNet",
)

# The big ImageNet backbones: the authors host them on Google Drive only (no stable direct
# address; users report the links dead). They stay registered with no URL, so
# weights="imagenet" names the file to place in the cache by hand.
_GDRIVE_PAGE = "https://github.com/WongKinYiu/CrossStagePartialNetworks#big-models"
for _model, _activation, _file in (
    ("CSPDarknet53", "leaky", "csdarknet53_final.weights"),
    ("CSPDarknet53", "mish", "csdarknet53-omega_final.weights"),
    ("CSPResNet50", "leaky", "csresnet50_final.weights"),
    ("CSPResNeXt50", "leaky", "csresnext50_final.weights"),
    ("CSPResNeXt50", "mish", "csresnext50-omega_final.weights"),
    ("Darknet53", "leaky", "darknet53_final.weights"),
    ("ResNet50", "leaky", "resnet50_final.weights"),
    ("ResNeXt50", "leaky", "resnext50_final.weights"),
):
    _REGISTRY[_file.replace("_final.weights", "-imagenet")] = WeightsEntry(
        name=_file.replace("_final.weights", "-imagenet"), urls=(), filename=_file,
        model=_model, model_kwargs={"activation": _activation}, alias="imagenet",
        checksum_note="Google Drive only, no published checksum: place the file by hand; the "
                      "loader checks its float count against the cfg.",
        source=f"the authors' ImageNet weights, {_GDRIVE_PAGE}",
    )
MANUAL_DOWNLOAD_PAGE = _GDRIVE_PAGE

"""Start a detector from trained weights made for other classes, or for only its first layers.

Fine-tuning on a user's classes reuses every conv block of a COCO-trained Darknet file whose
shape fits and re-creates the class-dependent prediction convs (their width is
``anchors * (5 + classes)``); Darknet's own fine-tuning starts from a partial file holding the
first N cfg layers only (``darknet partial``: ``yolov4-tiny.conv.29``, ``yolov4.conv.137``).
:func:`load_matching` does both and returns a :class:`TransferReport` naming every block it
loaded, skipped (with the shapes that differ) or did not find in the file: nothing is dropped
without being listed. :func:`load_pretrained` adds the ``weights=`` argument of the named
detectors: a registry name or alias (``"coco"``, ``"conv.29"``; see ``keras_csp.weights``),
a Darknet file or a Keras weights file.
"""

import dataclasses
import os
from typing import Optional, Tuple

import numpy as np

from keras_csp.darknet.weights import assign, keras_assignments, param_layers_from_model, read_weights, split_weights
from keras_csp.detectors.heads import head_level, prior_biases
from keras_csp.weights import resolve


@dataclasses.dataclass(frozen=True)
class SkippedBlock:
    """A block of the file that does not fit the detector: the kernel shapes
    (Darknet's ``(out, in, k, k)``) the detector has and the file holds."""

    block: str
    expected: tuple
    in_file: tuple
    reason: str


@dataclasses.dataclass(frozen=True)
class TransferReport:
    """What :func:`load_matching` did with each conv block of the detector (cfg order)."""

    path: str
    source_num_classes: Optional[int]
    loaded: Tuple[str, ...]
    skipped: Tuple[SkippedBlock, ...]
    missing: Tuple[str, ...]

    @property
    def complete(self):
        """True when every block was loaded from the file."""
        return not self.skipped and not self.missing

    def __str__(self):
        total = len(self.loaded) + len(self.skipped) + len(self.missing)
        lines = [f"{os.path.basename(self.path)}: loaded {len(self.loaded)} of {total} conv blocks"
                 + (f" (file written for {self.source_num_classes} classes)"
                    if self.source_num_classes else "")]
        for s in self.skipped:
            lines.append(f"  skipped {s.block}: {s.reason}; the detector has {s.expected}, "
                         f"the file {s.in_file} (re-initialised)")
        if self.missing:
            lines.append(f"  not in the file ({len(self.missing)}, left as initialised): "
                         + ", ".join(self.missing))
        return "\n".join(lines)


def class_dependent_blocks(detector):
    """``{block name: HeadSpec}`` of the prediction convs, whose width depends on the classes."""
    blocks = {}
    for head in detector.heads:
        name = f"head_{head_level(head).lower()}"
        if name not in detector.darknet_blocks:
            raise ValueError(
                f"{detector.name}: no prediction conv {name!r} among its Darknet blocks; "
                "load_matching needs a detector built by YOLODetector (or a named detector)."
            )
        blocks[name] = head
    return blocks


def _source_classes(layers, heads, found):
    """The class count a whole Darknet file of ``found`` floats was written for, or None."""
    fixed = sum(layer.count() for layer in layers if layer.name not in heads)
    per_class_unit = sum(heads[l.name].num_anchors * (l.in_channels * l.size * l.size + 1)
                         for l in layers if l.name in heads)
    rest = found - fixed
    if per_class_unit == 0 or rest <= 0 or rest % per_class_unit:
        return None
    classes = rest // per_class_unit - 5
    return classes if classes >= 1 else None


def _kernel_shape(layer):
    return dict(layer.fields())["weights"]


def load_matching(detector, path, source_num_classes=None, verbose=True):
    """Load the blocks of Darknet file ``path`` that fit ``detector``; report the rest.

    The file is read in the detector's cfg block order with each prediction conv sized for
    ``source_num_classes`` (default: inferred from the file's float count, or the detector's
    own when the file is partial). Blocks whose shape matches are assigned; prediction convs
    for another class count are skipped and re-initialised (fresh kernel, the prior biases);
    a file ending exactly after a block is a partial file (Darknet's ``*.conv.N``): the
    blocks after it are reported as not in the file. A file ending inside a block, or longer
    than the detector, is another cfg's: ValueError before anything is assigned. ``verbose``
    prints the report when something was not loaded. Returns a :class:`TransferReport`.
    """
    path = os.fspath(path)
    network = detector.detector
    ours = param_layers_from_model(network, detector.darknet_blocks)
    heads = class_dependent_blocks(detector)
    weights = read_weights(path)
    found = weights.values.size
    if source_num_classes is None:
        source_num_classes = _source_classes(ours, heads, found)
    classes = source_num_classes or detector.heads[0].num_classes
    source = [dataclasses.replace(l, filters=heads[l.name].num_anchors * (5 + classes))
              if l.name in heads else l for l in ours]
    ends = np.cumsum([layer.count() for layer in source])
    covered = len(source)
    if found < ends[-1] and not weights.tail and found in set(ends.tolist()):
        covered = int(np.searchsorted(ends, found)) + 1  # a partial file: whole blocks only
    # Raises (naming where the file ends, or how much is left over) unless the floats fit.
    arrays = split_weights(weights, source[:covered], f"{detector.name} (prediction convs for {classes} classes)")
    take, skipped, loaded = [], [], []
    for mine, theirs, parts in zip(ours, source, arrays):
        if mine.fields() == theirs.fields():
            take.append((mine, parts))
            loaded.append(mine.name)
        else:
            skipped.append(SkippedBlock(
                mine.name, _kernel_shape(mine), _kernel_shape(theirs),
                f"{heads[mine.name].num_classes} classes here, {classes} in the file"
                if mine.name in heads else "shape differs"))
    plan = keras_assignments(network, [m for m, _ in take], [p for _, p in take], weights.transposed)
    assign(plan)
    size = network.inputs[0].shape[1] or 416
    for s in skipped:
        reinitialise_head(network, s.block, heads[s.block], size)
    report = TransferReport(path, source_num_classes, tuple(loaded), tuple(skipped),
                            tuple(l.name for l in ours[covered:]))
    if verbose and not report.complete:
        print(report)
    return report


def reinitialise_head(network, block, head, input_size=416):
    """A fresh kernel (the layer's initializer) and the prior biases for prediction conv ``block``."""
    conv = network.get_layer(f"{block}_conv")
    kernel = conv.kernel_initializer(tuple(conv.kernel.shape))
    conv.kernel.assign(np.asarray(kernel, np.float32))
    conv.bias.assign(prior_biases(head, input_size))


_HDF5 = b"\x89HDF\r\n\x1a\n"


def _is_keras_file(path):
    """Keras weights (HDF5 ``.weights.h5`` / ``.h5``) or a ``.keras`` archive (zip)."""
    with open(path, "rb") as handle:
        start = handle.read(8)
    return start == _HDF5 or start[:4] == b"PK\x03\x04"


def resolve_weights(weights, model):
    """``(path, registry entry or None)`` for a ``weights=`` argument of ``model``."""
    if isinstance(weights, os.PathLike) or (isinstance(weights, str) and os.path.exists(weights)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise ValueError(f"weights={path!r} is not a file.")
        return path, None
    if model is None:
        raise ValueError(f"weights={weights!r}: no such file (registry names and aliases need "
                         "a named detector).")
    return resolve(weights, model)


def load_pretrained(detector, weights, model=None, source_num_classes=None, verbose=True):
    """Load ``weights`` into ``detector``: a registry name or alias of ``model`` (``"coco"``,
    ``"conv.29"``), a Darknet file (through :func:`load_matching`) or a Keras weights file.

    With a registry entry naming its classes (COCO's 80) and a detector for as many classes,
    the detector gets those class names. Returns the :class:`TransferReport` (None for Keras
    files, which load all-or-nothing).
    """
    path, entry = resolve_weights(weights, model)
    if (entry.format == "keras") if entry is not None else _is_keras_file(path):
        detector.load_weights(path)
        report = None
    else:
        if source_num_classes is None and entry is not None:
            source_num_classes = entry.num_classes
        report = load_matching(detector, path, source_num_classes, verbose=verbose)
    classes = getattr(entry, "classes", None)
    if classes and detector.class_names is None and len(classes) == detector.heads[0].num_classes:
        detector.set_class_names(classes)
    return report


__all__ = ["SkippedBlock", "TransferReport", "class_dependent_blocks", "load_matching",
           "load_pretrained", "reinitialise_head", "resolve_weights"]

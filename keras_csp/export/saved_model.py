"""``to_saved_model``: a SavedModel with a ``serving_default`` signature (also ``serve``)."""

import contextlib
import dataclasses
import io
import os
import tempfile
import warnings

from keras_csp.backend import LEGACY_KERAS, tf
from keras_csp.export import _files, serving
from keras_csp.postprocess.decoder import postprocess
from keras_csp.postprocess.geometry import letterbox as letterbox_images
from keras_csp.postprocess.nms import NMSConfig


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """What the serving function does; validated before anything is traced or written."""

    input_size: tuple
    input_type: str = "float32"
    letterbox: bool = False
    nms: NMSConfig = None
    """The exported NMS settings; None: raw outputs, no NMS."""
    batch_size: int = None
    names: tuple = ()
    heads: tuple = None


def serving_config(model, input_size=None, input_type="float32", letterbox=False, nms=False,
                   heads=None, max_detections=None, iou_threshold=None, score_threshold=None,
                   batch_size=None):
    """Check every serving argument against ``model`` and return a ``ServingConfig``."""
    size = serving.resolve_input_size(model, input_size)
    serving.check_input_type(input_type)
    if heads is None:
        heads = serving.heads_of(model)
    heads = serving.coerce_heads(heads)
    if nms not in (True, False):
        raise ValueError(f"nms must be True or False; received {nms!r}.")
    if heads is not None:
        _check_heads(model, heads)
    nms_config = None
    if nms:
        if heads is None:
            raise ValueError(
                "nms=True needs the detector's head specs: pass heads=[HeadSpec(...), ...] "
                f"(model {model.name!r} carries none)."
            )
        nms_config = serving.nms_from(model, max_detections, iou_threshold, score_threshold)
    if batch_size is not None and (int(batch_size) < 1):
        raise ValueError(f"batch_size must be None or >= 1; received {batch_size!r}.")
    return ServingConfig(size, input_type, bool(letterbox), nms_config,
                         None if batch_size is None else int(batch_size),
                         tuple(serving.output_names(model, heads)), heads)


def make_config(*args, **kwargs):
    """Deprecated name of :func:`serving_config` (``make_config`` is also training's config
    builder, ``keras_csp.training.make_config``)."""
    warnings.warn("keras_csp.export.saved_model.make_config is deprecated; use serving_config.",
                  DeprecationWarning, stacklevel=2)
    return serving_config(*args, **kwargs)


def _check_heads(model, heads):
    outputs = serving.network_of(model).outputs
    if len(heads) != len(outputs):
        raise ValueError(
            f"Got {len(heads)} head specs for the {len(outputs)} outputs of "
            f"{model.name!r}; they must match one to one, stride 8 first."
        )
    for number, (head, output) in enumerate(zip(heads, outputs)):
        if output.shape[-1] is not None and output.shape[-1] != head.channels:
            raise ValueError(
                f"Head spec {number} (stride {head.stride}, {head.num_anchors} anchors, "
                f"{head.num_classes} classes) needs {head.channels} channels; output {number} "
                f"of {model.name!r} has shape {tuple(output.shape)}."
            )


def serving_function(model, config):
    """The Python function to trace: ``images`` -> dict of named outputs."""
    height, width = config.input_size

    def serve(images):
        geometry = None
        if config.letterbox:
            x, geometry = letterbox_images(images, config.input_size)
        else:
            x = serving.to_unit_float(images)
        raw = serving.call_model(model, x)
        if config.nms is None:
            outputs = dict(zip(config.names, raw))
            if geometry is not None:
                outputs["image_info"] = tf.tile(geometry.to_info()[None], [tf.shape(images)[0], 1, 1])
            return outputs
        return _detect_any_batch(raw, config, (height, width), geometry)

    return serve


def _detect_any_batch(raw, config, size, geometry):
    """``postprocess`` with the builtin NMS kernel (image by image when the batch is dynamic)."""
    return postprocess(raw, config.heads, config.nms, size, geometry, kernel="builtin", pixels=False)


def input_signature(config):
    dtype = tf.uint8 if config.input_type == "uint8" else tf.float32
    if config.letterbox:
        shape = [config.batch_size, None, None, 3]
    else:
        shape = [config.batch_size, config.input_size[0], config.input_size[1], 3]
    return [tf.TensorSpec(shape, dtype, name="images")]


def write(model, directory, config):
    """Trace the serving function and write the SavedModel into ``directory`` (must be empty)."""
    if LEGACY_KERAS:
        from tf_keras.export import ExportArchive
    else:
        from keras.export import ExportArchive
    archive = ExportArchive()
    archive.track(serving.network_of(model))
    archive.add_endpoint("serve", serving_function(model, config), input_signature(config))
    if LEGACY_KERAS:
        with contextlib.redirect_stdout(io.StringIO()):  # tf_keras prints every endpoint
            archive.write_out(directory)
    else:
        archive.write_out(directory, verbose=False)


def to_saved_model(model, directory, *, input_size=None, input_type="float32", letterbox=False,
                   nms=False, heads=None, max_detections=None, iou_threshold=None,
                   score_threshold=None, batch_size=None, overwrite=False):
    """Write ``model`` as a SavedModel whose ``serving_default`` signature takes ``images``.

    - ``input_type``: ``"float32"`` (pixels in [0, 1]) or ``"uint8"`` (0-255, divided by
      255 in the graph).
    - ``letterbox=True``: ``images`` may have any height and width; they are letterboxed to
      ``input_size`` in the graph (bilinear, grey 114 padding), and box outputs come back in
      pixels of the image given. Without NMS the raw outputs come with ``image_info``
      ``[B, 4, 2]``, the letterbox geometry in the library's one convention (rows: original
      (h, w), input (h, w), scale (y, x), offset (y, x); see ``keras_csp.postprocess.Letterbox``).
    - ``nms=True`` (detectors; ``heads`` or ``model.heads`` needed): outputs ``boxes``
      ``[B, K, 4]`` xyxy, ``scores``, ``classes`` (-1 pads) and ``num_detections``, with
      ``K = max_detections``; otherwise the raw per-scale outputs, named ``stride8`` ...
      Thresholds default to the detector's ``nms`` (else 100, 0.45, 0.25); NMS is
      greedy and class-aware with each box's best class, as ``Detector.predict``.
    - ``model``: a functional model, or a ``keras_csp.detectors.Detector`` (its network,
      heads and NMS settings are used).
    - ``batch_size``: fixed batch (None: any).

    Everything is checked before tracing; the folder appears only when complete.
    Returns the path written.
    """
    config = serving_config(model, input_size, input_type, letterbox, nms, heads, max_detections,
                            iou_threshold, score_threshold, batch_size)
    directory = os.fspath(directory)
    with _files.directory(directory, overwrite=overwrite) as temp:
        write(model, temp, config)
    return directory


def write_temporary(model, config):
    """A SavedModel in a fresh system temp folder (caller removes it); for TFLite conversion."""
    temp = tempfile.mkdtemp(prefix="keras_csp_export_")
    path = os.path.join(temp, "saved_model")
    write(model, path, config)
    return temp, path

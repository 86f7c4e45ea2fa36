"""``YOLOTask``: any functional YOLO detector, trainable with ``compile`` and ``fit``.

The wrapped model maps images ``[B, H, W, 3]`` (float32 in [0, 1]) to the raw head outputs,
one ``[B, H/s, W/s, A*(5+C)]`` tensor per ``HeadSpec``, in the same order. The task's
``compute_loss`` applies ``YoloLoss`` to them, so a dataset of ``(images, boxes)`` with
``boxes [B, max_boxes, 5]`` (normalised xyxy + class, padding -1) trains with plain::

    task = YOLOTask(detector, heads)
    task.compile(optimizer=keras.optimizers.Adam(1e-3))          # or loss="ciou"
    task.fit(dataset, epochs=...)

It works in Keras 3 and in tf_keras (``TF_USE_LEGACY_KERAS=1``), under ``tf.distribute``
(the loss is scaled by the number of replicas, so gradients are those of the global-batch
mean) and with mixed precision (the loss is computed in float32). ``predict`` returns the raw
outputs; ``decode`` turns them into boxes (NMS is the detectors' business).
"""

from keras_csp.backend import LEGACY_KERAS, keras, register, tf
from keras_csp.losses.yolo import YoloLoss, reduce_over_batch
from keras_csp.ops.decode import decode_heads
from keras_csp.ops.head_spec import BOX_LOSSES, HeadSpec

_PARTS = ("box", "obj", "cls")


def _scale_for_replicas(loss):
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = loss * (1.0 / replicas)
    return loss


def _serialize(obj):
    return keras.saving.serialize_keras_object(obj)


def _deserialize(config, custom_objects=None):
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)


@register
class YOLOTask(keras.Model):
    """Train a functional YOLO detector with ``fit``: ``compute_loss`` is the YOLO loss.

    Args:
      detector: a ``keras.Model`` whose outputs are the raw per-scale heads, in the order
        of ``heads`` (a single output is accepted for a one-scale detector).
      heads: one ``HeadSpec`` (or its config dict) per output: stride, anchors in input
        pixels, classes, ``scale_x_y``, ``new_coords`` and the loss options.
      matching_anchors: optional anchor pool for best-anchor matching (see ``YoloLoss``);
        heads that carry their own pool (``HeadSpec.matching_anchors``, from a Darknet cfg)
        use that one.
      **kwargs: ``keras.Model`` arguments (``name``, ...).

    ``compile(optimizer, loss=None)``: ``loss`` may be ``None`` (each head's own options), a
    ``YoloLoss``, or one of ``"mse"``, ``"iou"``, ``"giou"``, ``"diou"``, ``"ciou"`` (that
    box loss for every head). Besides ``loss``, training logs ``box_loss``, ``obj_loss``
    and ``cls_loss`` (before regularisation).
    """

    def __init__(self, detector, heads, matching_anchors=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(detector, keras.Model):
            raise TypeError(
                f"`detector` must be a keras.Model mapping images to raw YOLO heads; "
                f"received {type(detector).__name__}."
            )
        heads = tuple(HeadSpec.coerce(h) for h in heads)
        if not heads:
            raise ValueError("`heads` must list one HeadSpec per detector output; received none.")
        outputs = getattr(detector, "outputs", None)
        if outputs is not None:
            if len(outputs) != len(heads):
                raise ValueError(
                    f"`detector` has {len(outputs)} outputs but {len(heads)} head specs were given."
                )
            for s, (out, head) in enumerate(zip(outputs, heads)):
                channels = out.shape[-1]
                if channels is not None and channels != head.channels:
                    raise ValueError(
                        f"`detector` output {s} has {channels} channels, head spec {s} "
                        f"({head.num_anchors} anchors, {head.num_classes} classes) needs {head.channels}."
                    )
        self.detector = detector
        self._head_configs = [h.get_config() for h in heads]
        self._matching_anchors = None if matching_anchors is None else [list(a) for a in matching_anchors]
        self.yolo_loss = YoloLoss(heads, matching_anchors)
        self.box_loss_tracker = keras.metrics.Mean(name="box_loss")
        self.obj_loss_tracker = keras.metrics.Mean(name="obj_loss")
        self.cls_loss_tracker = keras.metrics.Mean(name="cls_loss")
        if LEGACY_KERAS:
            # tf_keras tracks "loss" inside compiled_loss, which this task bypasses.
            self.total_loss_tracker = keras.metrics.Mean(name="loss")
        if getattr(detector, "built", False):
            self.built = True

    @property
    def network(self):
        """The functional network (images in, raw heads out) this task trains and exports.

        The same object as ``.detector``, the attribute it is stored under: saved weights and
        ``.keras`` files name their variables by that path, so it keeps its name."""
        return self.detector

    @property
    def heads(self):
        """The ``HeadSpec`` of each output, in order."""
        return tuple(HeadSpec.from_config(dict(c)) for c in self._head_configs)

    def call(self, inputs, training=None):
        outputs = self.detector(inputs, training=training)
        if isinstance(outputs, (list, tuple)):
            return list(outputs)
        return [outputs]

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        self.yolo_loss = self._resolve_loss(loss)
        super().compile(optimizer=optimizer, **kwargs)

    def _resolve_loss(self, loss):
        if loss is None:
            return YoloLoss(self.heads, self._matching_anchors)
        if isinstance(loss, str) and loss in BOX_LOSSES:
            return YoloLoss(self.heads, self._matching_anchors).with_box_loss(loss)
        if isinstance(loss, YoloLoss):
            if len(loss.heads) != len(self.heads):
                raise ValueError(
                    f"`loss` has {len(loss.heads)} heads; this task has {len(self.heads)} outputs."
                )
            return loss
        raise ValueError(
            f"`loss` must be None, a YoloLoss, or one of {BOX_LOSSES}; received {loss!r}."
        )

    def get_compile_config(self):
        """The base compile config plus the YOLO loss (so ``load_model`` restores both)."""
        config = super().get_compile_config()
        if not config:
            return config
        config = dict(config)
        config["loss"] = None
        config["yolo_loss"] = self.yolo_loss.get_config()
        return config

    def compile_from_config(self, config):
        """Recompile from ``get_compile_config`` (Keras skips custom ``compile`` methods)."""
        config = dict(config)
        yolo_loss = config.pop("yolo_loss", None)
        config.pop("loss", None)
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if yolo_loss is not None:
            self.yolo_loss = YoloLoss.from_config(yolo_loss)
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and self.built and hasattr(optimizer, "build"):
            optimizer.build(self.trainable_variables)  # its variables, for the saved state

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """YOLO loss of ``y_pred`` (raw heads) against ``y`` (padded boxes), plus layer losses."""
        if y is None:
            raise ValueError(
                "YOLOTask needs ground truth: feed (images, boxes) with boxes "
                "[batch, max_boxes, 5] = [x_min, y_min, x_max, y_max, class], padding -1."
            )
        if y_pred is None:
            y_pred = self(x, training=training)
        parts = self.yolo_loss.per_image(y, y_pred)
        loss = reduce_over_batch(parts["total"], sample_weight)
        for name in _PARTS:
            getattr(self, f"{name}_loss_tracker").update_state(reduce_over_batch(parts[name], sample_weight))
        extra = [tf.cast(tf.reduce_sum(v), tf.float32) for v in self.losses]
        if extra:
            loss = loss + tf.add_n(extra)
        if LEGACY_KERAS:
            self.total_loss_tracker.update_state(loss)
        return _scale_for_replicas(loss)

    def decode(self, outputs, input_size=None):
        """Raw outputs (from ``predict`` or ``call``) to ``boxes``/``objectness``/``class_probs``."""
        return decode_heads(outputs, self.heads, input_size)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "detector": _serialize(self.detector),
            "heads": [dict(c) for c in self._head_configs],
            "matching_anchors": self._matching_anchors,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        detector = config.pop("detector")
        if isinstance(detector, dict):
            detector = _deserialize(detector, custom_objects)
        return cls(detector=detector, **config)


__all__ = ["YOLOTask"]

"""The YOLO loss (Darknet's ``[yolo]`` layer as a differentiable function) and its label assignment.

``YoloLoss(heads)(y_true, y_pred)`` takes the padded ground truth ``[batch, max_boxes, 5]``
(``[x_min, y_min, x_max, y_max, class]`` normalised to the input image; rows with class -1,
or of zero area, are padding) and the raw head outputs (a list of ``[batch, H, W, A*(5+C)]``
logits, one per ``HeadSpec``) and returns a float32 scalar: the per-image sum over all
scales, cells and anchors, averaged over the batch. Everything is in-graph with static
ranks (no Python loops over data, no ``tf.py_function``), so it runs under ``jit_compile``,
``tf.distribute`` and mixed precision (outputs are cast to float32 first).

Formulation, per scale, for image ``b``; docs/loss.md has the full text and the Darknet
mapping:

- assignment (Darknet's forward_yolo_layer): for each scale, every valid ground truth picks
  the anchor of best shape IoU (centres aligned, first one on ties) among the scale's
  matching pool (a Darknet cfg's whole ``anchors=`` list; by default all anchors of all
  scales); if that anchor is one of the scale's own, the cell containing the box centre,
  with that anchor, is a positive. So a box whose best anchor two masks share (yolov4-tiny's
  anchor 3) is a positive in both scales, and one whose best anchor no mask holds (its
  anchor 0) in none. Every other anchor of the scale whose shape IoU
  exceeds ``iou_thresh`` is a positive too (the reference repo's "IoU threshold"). When two
  boxes claim the same cell and anchor, the one listed last gives the box target and the
  class targets are the union (Darknet overwrites and ORs likewise). Two YOLOv5 options add
  positives (both off by default): ``anchor_t`` (every anchor of the scale within that wh
  ratio of the box) and ``neighbor_cells`` (the same anchors in the horizontal and vertical
  neighbour cells nearest the centre);
- box: positives only, ``iou_normalizer * (1 - IoU_kind(pred, gt))`` for giou/diou/ciou/iou,
  or for ``mse`` ``iou_normalizer * (2 - w h) * (L_xy + L_wh)`` with Darknet's gradients;
- objectness: BCE on logits, target 1 at positives (``1 - obj_iou + obj_iou * IoU`` with
  YOLOv5's ``obj_iou``, off by default) and 0 elsewhere, except non-positives whose decoded
  box has IoU > ``ignore_thresh`` with some ground truth (ignored), times ``obj_normalizer``;
- class: BCE on logits at positives, targets ``y (1 - e) + e / 2`` with ``e =
  label_smoothing``, times ``cls_normalizer``.
"""

from keras_csp.backend import tf
from keras_csp.ops import boxes as box_ops
from keras_csp.ops.decode import (
    cell_offsets,
    decode_wh,
    decode_xy,
    normalized_anchors,
    split_head,
)
from keras_csp.ops.head_spec import HeadSpec, all_anchors

_LOG_EPS = 1e-9


def _as_list(outputs):
    if isinstance(outputs, dict):
        raise TypeError("YOLO head outputs must be a list of tensors (one per scale), not a dict.")
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]


def _bce(labels, logits):
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)


def _first_max(values):
    """Index of the first maximum along the last axis (Darknet's strict ``>`` keeps the
    lowest anchor index on ties; ``tf.argmax`` does not promise which tie it returns)."""
    count = tf.shape(values)[-1]
    top = tf.reduce_max(values, axis=-1, keepdims=True)
    positions = tf.broadcast_to(tf.range(count), tf.shape(values))
    return tf.reduce_min(tf.where(values >= top, positions, count), axis=-1)


def _binary_entropy(p):
    """``BCE(p, p)``: subtracted so that a perfect prediction costs exactly 0."""
    return -(tf.math.xlogy(p, p) + tf.math.xlogy(1.0 - p, 1.0 - p))


class YoloLoss:
    """The YOLO loss over all scales, configured by one ``HeadSpec`` per output.

    Args:
      heads: ``HeadSpec`` objects (or their config dicts), in the order of the outputs.
      matching_anchors: the pool of ``(w, h)`` pixel anchors a ground truth picks its best
        anchor from, as Darknet's ``anchors=`` line; by default all heads' anchors in order.
        Needed only when some anchors belong to no head (yolov3-tiny's mask skips anchor 0)
        or to two. A head with its own pool (``HeadSpec.matching_anchors``, as a cfg's
        [yolo] gives) uses that one.
      name: a name for the graph scope.

    Calling it returns the scalar loss; ``per_image`` returns the ``box``, ``obj``, ``cls``
    and ``total`` terms per image, and ``assign`` the label assignment (for inspection).
    """

    def __init__(self, heads, matching_anchors=None, name="yolo_loss"):
        heads = tuple(HeadSpec.coerce(h) for h in heads)
        if not heads:
            raise ValueError("YoloLoss needs at least one HeadSpec; received none.")
        classes = {h.num_classes for h in heads}
        if len(classes) != 1:
            raise ValueError(f"All heads must predict the same number of classes; received {sorted(classes)}.")
        self.heads = heads
        self.num_classes = heads[0].num_classes
        self.name = name
        self.matching_anchors = (
            None if matching_anchors is None
            else tuple((float(w), float(h)) for w, h in matching_anchors)
        )
        # Per head: which pool its truths pick their best anchor from, and where its anchors
        # sit in that pool (Darknet's mask). Heads sharing a pool share one best-anchor search.
        self._pools, self._pool_of_head, self._pool_index = [], [], []
        for s, head in enumerate(heads):
            pool, indices = self._head_pool(s, head, heads)
            if pool not in self._pools:
                self._pools.append(pool)
            self._pool_of_head.append(self._pools.index(pool))
            self._pool_index.append(indices)

    def _head_pool(self, s, head, heads):
        if head.matching_anchors is not None:
            if self.matching_anchors is not None and self.matching_anchors != head.matching_anchors:
                raise ValueError(
                    f"Head {s} has its own matching pool {list(head.matching_anchors)}, which "
                    f"differs from `matching_anchors` {list(self.matching_anchors)}; give one."
                )
            return head.matching_anchors, list(head.anchor_indices)
        if self.matching_anchors is not None:
            pool = self.matching_anchors
            indices = []
            for anchor in head.anchors:
                if anchor not in pool:
                    raise ValueError(
                        f"Head {s} anchor {anchor} is not in `matching_anchors` {list(pool)}."
                    )
                indices.append(pool.index(anchor))
            return pool, indices
        start = sum(h.num_anchors for h in heads[:s])
        return all_anchors(heads), list(range(start, start + head.num_anchors))

    # ------------------------------------------------------------------ config
    def get_config(self):
        return {
            "heads": [h.get_config() for h in self.heads],
            "matching_anchors": None
            if self.matching_anchors is None
            else [list(a) for a in self.matching_anchors],
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def with_box_loss(self, iou_loss):
        """A copy whose heads all use ``iou_loss`` (``mse``, ``iou``, ``giou``, ``diou``, ``ciou``)."""
        heads = [h.replace(iou_loss=iou_loss) for h in self.heads]
        return YoloLoss(heads, self.matching_anchors, self.name)

    # -------------------------------------------------------------- validation
    def _check(self, y_true, y_pred):
        y_pred = _as_list(y_pred)
        if len(y_pred) != len(self.heads):
            raise ValueError(
                f"YoloLoss has {len(self.heads)} heads but received {len(y_pred)} outputs."
            )
        y_true = tf.cast(tf.convert_to_tensor(y_true), tf.float32)
        if y_true.shape.rank is not None and (
            y_true.shape.rank != 3 or (y_true.shape[-1] is not None and y_true.shape[-1] < 5)
        ):
            raise ValueError(
                "Ground truth must be [batch, max_boxes, 5] = [x_min, y_min, x_max, y_max, class] "
                f"(padding rows -1); received shape {y_true.shape}."
            )
        y_pred = [tf.cast(tf.convert_to_tensor(p), tf.float32) for p in y_pred]
        for s, (p, head) in enumerate(zip(y_pred, self.heads)):
            if p.shape.rank is not None and p.shape.rank != 4:
                raise ValueError(f"Output {s} must be [batch, H, W, channels]; received shape {p.shape}.")
            if p.shape[-1] is not None and p.shape[-1] != head.channels:
                raise ValueError(
                    f"Output {s} has {p.shape[-1]} channels; its head ({head.num_anchors} anchors, "
                    f"{head.num_classes} classes) needs {head.channels}."
                )
        return y_true[..., :5], y_pred

    # -------------------------------------------------------------- assignment
    def _ground_truth(self, y_true, input_hw):
        x1, y1, x2, y2, cls = tf.unstack(y_true, axis=-1)
        valid = (cls >= 0) & (cls < self.num_classes) & (x2 > x1) & (y2 > y1)
        # Zero every unused row, so that a NaN there cannot reach the loss through 0 * NaN.
        y_true = tf.where(valid[..., None], y_true, 0.0)
        x1, y1, x2, y2, cls = tf.unstack(y_true, axis=-1)
        centre = tf.stack([0.5 * (x1 + x2), 0.5 * (y1 + y2)], axis=-1)
        size = tf.stack([x2 - x1, y2 - y1], axis=-1)
        in_h, in_w = input_hw
        size_px = size * tf.cast(tf.stack([in_w, in_h]), tf.float32)
        shape_iou, best = [], []
        for pool in self._pools:
            pool = tf.constant(pool, tf.float32)  # [K, 2]
            inter = tf.reduce_prod(tf.minimum(size_px[..., None, :], pool), axis=-1)
            union = tf.reduce_prod(size_px, -1)[..., None] + tf.reduce_prod(pool, -1) - inter
            iou = inter / tf.maximum(union, box_ops.EPSILON)  # [B, M, K]
            shape_iou.append(iou)
            best.append(_first_max(iou))
        return {
            "boxes": y_true[..., :4],
            "class": tf.cast(tf.where(valid, cls, 0.0), tf.int32),
            "valid": valid,
            "centre": centre,
            "size": size,
            "size_px": size_px,
            "shape_iou": shape_iou,
            "best": best,
        }

    def _assign_scale(self, gt, s, height, width):
        """Positives of scale ``s`` on an ``height x width`` grid: winner gt index and class targets."""
        head = self.heads[s]
        num_anchors = head.num_anchors
        p = self._pool_of_head[s]
        pool_index = tf.constant(self._pool_index[s], tf.int32)  # [A]: Darknet's mask
        # Darknet's forward_yolo_layer: the best of all the pool's anchors is a positive here
        # when this head owns it; any of this head's anchors above iou_thresh is one too.
        is_best = tf.equal(gt["best"][p][..., None], pool_index)  # [B, M, A]
        over = tf.gather(gt["shape_iou"][p], pool_index, axis=-1) > head.iou_thresh
        assigned = is_best | over
        if head.anchor_t:  # YOLOv5: anchors within a wh ratio of anchor_t
            anchors_px = tf.constant(head.anchors, tf.float32)  # [A, 2]
            ratio = gt["size_px"][..., None, :] / anchors_px  # [B, M, A, 2]
            worst = tf.reduce_max(tf.maximum(ratio, 1.0 / tf.maximum(ratio, box_ops.EPSILON)), axis=-1)
            assigned = assigned | (worst < head.anchor_t)
        assigned = gt["valid"][..., None] & assigned

        grid = tf.cast(tf.stack([width, height]), tf.float32)
        scaled = gt["centre"] * grid
        cell_xy = tf.cast(tf.floor(scaled), tf.int32)
        gx = tf.clip_by_value(cell_xy[..., 0], 0, width - 1)
        gy = tf.clip_by_value(cell_xy[..., 1], 0, height - 1)
        cells, masks = [gy * width + gx], [assigned]  # [B, M] each, [B, M, A] each
        if head.neighbor_cells:  # YOLOv5: the nearer horizontal and vertical neighbours too
            frac = scaled - tf.floor(scaled)
            nx = gx + tf.where(frac[..., 0] < 0.5, -1, 1)
            ny = gy + tf.where(frac[..., 1] < 0.5, -1, 1)
            inside_x = (nx >= 0) & (nx < width) & tf.not_equal(frac[..., 0], 0.5)
            inside_y = (ny >= 0) & (ny < height) & tf.not_equal(frac[..., 1], 0.5)
            cells += [gy * width + tf.clip_by_value(nx, 0, width - 1), tf.clip_by_value(ny, 0, height - 1) * width + gx]
            masks += [assigned & inside_x[..., None], assigned & inside_y[..., None]]
        cell = tf.concat(cells, axis=1)  # [B, K*M]
        assigned = tf.concat(masks, axis=1)  # [B, K*M, A]
        repeats = len(cells)

        shape = tf.shape(assigned)
        batch, max_boxes = shape[0], shape[1] // repeats
        b_idx = tf.broadcast_to(tf.range(batch)[:, None, None], shape)
        c_idx = tf.broadcast_to(cell[..., None], shape)
        a_idx = tf.broadcast_to(tf.range(num_anchors)[None, None, :], shape)
        indices = tf.stack([b_idx, c_idx, a_idx], axis=-1)  # [B, K*M, A, 3]
        m_idx = tf.tile(tf.range(1, max_boxes + 1), [repeats])
        m_idx = tf.broadcast_to(m_idx[None, :, None], shape)
        updates = tf.where(assigned, m_idx, 0)
        grid_shape = tf.stack([batch, height * width, num_anchors])
        winner = tf.tensor_scatter_nd_max(tf.zeros(grid_shape, tf.int32), indices, updates) - 1

        one_hot = tf.tile(tf.one_hot(gt["class"], self.num_classes, dtype=tf.float32), [1, repeats, 1])  # [B, K*M, C]
        class_updates = one_hot[:, :, None, :] * tf.cast(assigned, tf.float32)[..., None]
        class_shape = tf.concat([grid_shape, [self.num_classes]], axis=0)
        class_targets = tf.tensor_scatter_nd_max(tf.zeros(class_shape, tf.float32), indices, class_updates)
        return winner, class_targets

    def assign(self, y_true, grid_sizes, input_size):
        """Label assignment only: per scale ``gt_index [B, H*W, A]`` (-1: negative) and
        ``class_targets [B, H*W, A, C]`` (unsmoothed). ``grid_sizes`` lists ``(H, W)`` per
        scale, ``input_size`` is ``(height, width)`` in pixels."""
        y_true = tf.cast(tf.convert_to_tensor(y_true), tf.float32)[..., :5]
        gt = self._ground_truth(y_true, input_size)
        result = []
        for s, (height, width) in enumerate(grid_sizes):
            winner, class_targets = self._assign_scale(gt, s, height, width)
            result.append({"gt_index": winner, "class_targets": class_targets})
        return result

    # -------------------------------------------------------------------- loss
    def _scale_loss(self, logits, gt, s, input_hw):
        head = self.heads[s]
        shape = tf.shape(logits)
        batch, height, width = shape[0], shape[1], shape[2]
        parts = split_head(logits, head.num_anchors, head.num_classes)  # [B, HW, A, 5+C]
        raw_xy, raw_wh = parts[..., 0:2], parts[..., 2:4]
        raw_obj, raw_cls = parts[..., 4], parts[..., 5:]
        offsets = cell_offsets(height, width)  # [HW, 1, 2]
        anchors = normalized_anchors(head, input_hw)  # [A, 2]
        pred_xy = decode_xy(raw_xy, offsets, (height, width), head.scale_x_y)
        pred_wh = decode_wh(raw_wh, anchors, head.new_coords)
        pred_boxes = tf.concat([pred_xy - 0.5 * pred_wh, pred_xy + 0.5 * pred_wh], axis=-1)

        winner, class_targets = self._assign_scale(gt, s, height, width)
        positive = winner >= 0
        pos = tf.cast(positive, tf.float32)

        # Gather each positive's ground truth (index 0 for negatives; masked out below).
        count = height * width * head.num_anchors
        flat_winner = tf.reshape(tf.maximum(winner, 0), [batch, count])
        gt_boxes = tf.reshape(tf.gather(gt["boxes"], flat_winner, batch_dims=1), tf.shape(pred_boxes))

        box_term = self._box_term(head, gt_boxes, pred_boxes, raw_xy, raw_wh, offsets, anchors, (height, width))
        box_loss = head.iou_normalizer * tf.reduce_sum(box_term * pos, axis=[1, 2])

        # Ignore: non-positives whose prediction already overlaps some ground truth well.
        flat_pred = tf.reshape(tf.stop_gradient(pred_boxes), [batch, count, 4])
        overlaps = box_ops.pairwise_iou(flat_pred, gt["boxes"])  # [B, N, M]
        overlaps = tf.where(gt["valid"][:, None, :], overlaps, -1.0)
        best = tf.reduce_max(tf.concat([overlaps, -tf.ones_like(overlaps[..., :1])], -1), axis=-1)
        ignore = tf.reshape(best > head.ignore_thresh, tf.shape(winner)) & ~positive
        obj_weight = 1.0 - tf.cast(ignore, tf.float32)
        obj_target = pos
        if head.obj_iou:  # YOLOv5's gr: the positive's target follows how well its box fits
            fit = tf.maximum(tf.stop_gradient(box_ops.box_iou(pred_boxes, gt_boxes, kind="iou")), 0.0)
            obj_target = pos * (1.0 - head.obj_iou + head.obj_iou * fit)
        obj_loss = head.obj_normalizer * tf.reduce_sum(obj_weight * _bce(obj_target, raw_obj), axis=[1, 2])

        eps = head.label_smoothing
        cls_labels = class_targets * (1.0 - eps) + 0.5 * eps
        cls_term = tf.reduce_sum(_bce(cls_labels, raw_cls), axis=-1)
        cls_loss = head.cls_normalizer * tf.reduce_sum(cls_term * pos, axis=[1, 2])
        return box_loss, obj_loss, cls_loss

    @staticmethod
    def _box_term(head, gt_boxes, pred_boxes, raw_xy, raw_wh, offsets, anchors, grid_hw):
        """Per-cell box loss (before ``iou_normalizer`` and the positive mask)."""
        if head.iou_loss != "mse":
            return 1.0 - box_ops.box_iou(pred_boxes, gt_boxes, kind=head.iou_loss)
        height, width = grid_hw
        grid = tf.cast(tf.stack([width, height]), tf.float32)
        gt_xywh = box_ops.xyxy_to_xywh(gt_boxes)
        gt_xy, gt_wh = gt_xywh[..., 0:2], gt_xywh[..., 2:4]
        target_xy = gt_xy * grid - offsets  # position inside the cell, [0, 1]
        s, shift = head.scale_x_y, 0.5 * (head.scale_x_y - 1.0)
        if head.new_coords:
            loss_xy = 0.5 * tf.square(tf.sigmoid(raw_xy) * s - shift - target_xy)
            target_wh = 0.5 * tf.sqrt(tf.maximum(gt_wh / anchors, 0.0))
            loss_wh = 0.5 * tf.square(tf.sigmoid(raw_wh) - target_wh)
        else:
            # Darknet's delta on x is (t - (s sigmoid - shift)) applied to the logit: the
            # gradient of s * BCE(u, sigmoid) with u = (t + shift) / s.
            u = tf.clip_by_value((target_xy + shift) / s, 0.0, 1.0)
            loss_xy = s * (_bce(u, raw_xy) - _binary_entropy(u))
            target_wh = tf.math.log(tf.maximum(gt_wh / anchors, _LOG_EPS))
            loss_wh = 0.5 * tf.square(raw_wh - target_wh)
        scale = 2.0 - gt_wh[..., 0] * gt_wh[..., 1]
        return scale * tf.reduce_sum(loss_xy + loss_wh, axis=-1)

    def per_image(self, y_true, y_pred):
        """Loss terms per image, float32 ``[batch]`` each: ``box``, ``obj``, ``cls``, ``total``."""
        with tf.name_scope(self.name):
            y_true, y_pred = self._check(y_true, y_pred)
            first = tf.shape(y_pred[0])
            input_hw = (first[1] * self.heads[0].stride, first[2] * self.heads[0].stride)
            gt = self._ground_truth(y_true, input_hw)
            terms = {"box": [], "obj": [], "cls": []}
            for s, logits in enumerate(y_pred):
                box_loss, obj_loss, cls_loss = self._scale_loss(logits, gt, s, input_hw)
                terms["box"].append(box_loss)
                terms["obj"].append(obj_loss)
                terms["cls"].append(cls_loss)
            result = {key: tf.add_n(values) for key, values in terms.items()}
            result["total"] = result["box"] + result["obj"] + result["cls"]
            return result

    def __call__(self, y_true, y_pred, sample_weight=None):
        """Scalar loss: per-image totals (optionally weighted) summed, divided by the batch size."""
        total = self.per_image(y_true, y_pred)["total"]
        return reduce_over_batch(total, sample_weight)


def reduce_over_batch(values, sample_weight=None):
    """``sum(w * values) / batch`` (Keras' "sum_over_batch_size"), float32."""
    values = tf.cast(values, tf.float32)
    if sample_weight is not None:
        weight = tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        values = values * weight
    batch = tf.cast(tf.shape(values)[0], tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(values), batch)


__all__ = ["YoloLoss", "reduce_over_batch"]

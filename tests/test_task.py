"""YOLOTask: a functional detector trained with compile/fit on the YOLO loss, on tiny synthetic data.

The network is the tests' plain tiny network (helpers.tiny_network); the helpers at the top
(heads, synthetic images, detection matching) are reused by tests/test_task_distribute.py in
subprocesses.
"""

import numpy as np
import pytest
from helpers import tiny_network

from keras_csp.backend import keras, tf
from keras_csp.detectors import HeadSpec, YOLOTask
from keras_csp.losses import NaNGuard, YoloLoss
from keras_csp.ops import pairwise_iou

SIZE = 64
NUM_CLASSES = 2


# ----------------------------------------------------------------------- helpers
def tiny_heads(iou_loss="mse", **options):
    """Two scales (stride 16 on a 4x4 grid, stride 32 on 2x2), two anchors each."""
    common = dict(num_classes=NUM_CLASSES, iou_loss=iou_loss, **options)
    return [
        HeadSpec(stride=16, anchors=[(8, 8), (16, 12)], iou_thresh=0.3, **common),
        HeadSpec(stride=32, anchors=[(24, 24), (40, 32)], **common),
    ]


def synthetic_data(num_images=4, max_boxes=3, seed=0, boxes_per_image=(1, 2)):
    """Black images with filled rectangles: class 0 red, class 1 green; boxes padded with -1."""
    rng = np.random.default_rng(seed)
    images = np.zeros((num_images, SIZE, SIZE, 3), np.float32)
    boxes = -np.ones((num_images, max_boxes, 5), np.float32)
    for i in range(num_images):
        for j in range(boxes_per_image[i % len(boxes_per_image)]):
            w, h = rng.integers(10, 32, 2)
            x0, y0 = rng.integers(0, SIZE - w), rng.integers(0, SIZE - h)
            c = int(rng.integers(0, NUM_CLASSES))
            images[i, y0 : y0 + h, x0 : x0 + w, c] = 1.0
            boxes[i, j] = [x0 / SIZE, y0 / SIZE, (x0 + w) / SIZE, (y0 + h) / SIZE, c]
    return images, boxes


def detections(task, images, score_threshold=0.5):
    """Per image: (boxes xyxy, classes) after greedy NMS on objectness x class probability."""
    decoded = task.decode(task(images, training=False))
    results = []
    for b in range(images.shape[0]):
        probs = decoded["objectness"][b][:, None] * decoded["class_probs"][b]
        scores = tf.reduce_max(probs, axis=-1)
        classes = tf.argmax(probs, axis=-1)
        boxes = decoded["boxes"][b]
        yxyx = tf.gather(boxes, [1, 0, 3, 2], axis=-1)
        keep = tf.image.non_max_suppression(yxyx, scores, 20, iou_threshold=0.5, score_threshold=score_threshold)
        results.append((tf.gather(boxes, keep).numpy(), tf.gather(classes, keep).numpy()))
    return results


def match_report(task, images, boxes):
    """(lowest IoU of a ground truth with the best detection of its class,
    highest IoU of a detection with the ground truth that it overlaps least badly, inverted:
    the number of detections that overlap no ground truth by more than 0.3)."""
    worst, strays = 1.0, 0
    for (pred_boxes, pred_classes), gt in zip(detections(task, images), boxes):
        gt = gt[gt[:, 4] >= 0]
        for row in gt:
            same = pred_boxes[pred_classes == int(row[4])]
            best = pairwise_iou(same, row[None, :4]).numpy().max() if len(same) else 0.0
            worst = min(worst, float(best))
        if len(pred_boxes):
            overlap = pairwise_iou(pred_boxes, gt[:, :4]).numpy().max(axis=1) if len(gt) else np.zeros(len(pred_boxes))
            strays += int(np.sum(overlap <= 0.3))
    return worst, strays


def dataset(images, boxes, batch=4):
    return tf.data.Dataset.from_tensor_slices((images, boxes)).batch(batch).repeat()


# ------------------------------------------------------------------------- fit
OVERFIT_STEPS = {"mse": 150, "giou": 300, "diou": 300, "ciou": 300}  # Adam, cosine from 5e-3


@pytest.mark.parametrize("iou_loss", sorted(OVERFIT_STEPS))
def test_fit_overfits_until_decoded_boxes_match(iou_loss):
    """The loss falls and, on 4 images, NMS'd detections match every box (IoU > 0.9), none stray."""
    heads = tiny_heads(iou_loss, iou_normalizer=1.0)
    task = YOLOTask(tiny_network(heads), heads)
    images, boxes = synthetic_data()
    steps = OVERFIT_STEPS[iou_loss]
    schedule = keras.optimizers.schedules.CosineDecay(5e-3, steps)
    task.compile(optimizer=keras.optimizers.Adam(schedule), steps_per_execution=25)
    before, _ = match_report(task, images, boxes)
    history = task.fit(dataset(images, boxes), steps_per_epoch=steps // 4, epochs=4, verbose=0, shuffle=False).history
    losses = history["loss"]
    assert losses[-1] < 0.2 * losses[0], history
    assert history["box_loss"][-1] < history["box_loss"][0]
    worst, strays = match_report(task, images, boxes)
    assert before < 0.5  # an untrained net does not pass by chance
    assert worst > 0.9, (iou_loss, worst, history)
    assert strays == 0


def test_losses_reach_every_trainable_weight():
    heads = tiny_heads("ciou", label_smoothing=0.1)
    task = YOLOTask(tiny_network(heads, batch_norm=True), heads)
    images, boxes = synthetic_data(num_images=4, boxes_per_image=(1, 3))
    assert len(task.trainable_weights) == len(task.detector.trainable_weights) > 0
    with tf.GradientTape() as tape:
        loss = task.compute_loss(x=images, y=boxes, y_pred=task(images, training=True))
    grads = tape.gradient(loss, task.trainable_weights)
    for weight, grad in zip(task.trainable_weights, grads):
        assert grad is not None, weight.path if hasattr(weight, "path") else weight.name
        assert np.all(np.isfinite(grad.numpy()))
        assert float(tf.reduce_max(tf.abs(grad))) > 0, weight.name


def test_evaluate_reports_the_yolo_loss_and_its_parts():
    heads = tiny_heads("giou")
    task = YOLOTask(tiny_network(heads), heads)
    task.compile(optimizer="sgd")
    images, boxes = synthetic_data()
    logs = task.evaluate(images, boxes, batch_size=4, verbose=0, return_dict=True)
    parts = YoloLoss(heads).per_image(boxes, task(images, training=False))
    assert logs["loss"] == pytest.approx(float(np.mean(parts["total"])), rel=1e-5)
    for name in ("box", "obj", "cls"):
        assert logs[f"{name}_loss"] == pytest.approx(float(np.mean(parts[name])), rel=1e-5)


def test_edge_case_batches_train_without_nan():
    """Empty images, all-padding batches, tiny and border boxes: fit stays finite."""
    heads = tiny_heads("ciou")
    task = YOLOTask(tiny_network(heads), heads)
    images = np.random.default_rng(0).random((8, SIZE, SIZE, 3)).astype(np.float32)
    pad = [-1.0] * 5
    boxes = np.array(
        [
            [pad, pad, pad],  # empty image
            [[0.5, 0.5, 0.5 + 1e-5, 0.5 + 1e-5, 0], pad, pad],  # tiny
            [[0.0, 0.0, 0.1, 1.0, 1], [0.9, 0.9, 1.0, 1.0, 0], pad],  # on the border
            [[0.0, 0.0, 1.0, 1.0, 1], pad, pad],  # the whole image
            [pad, pad, pad],  # all-padding batch
            [pad, pad, pad],
            [pad, pad, pad],
            [pad, pad, pad],
        ],
        np.float32,
    )
    task.compile(optimizer=keras.optimizers.Adam(1e-2))
    guard = NaNGuard()
    history = task.fit(images, boxes, batch_size=4, epochs=3, verbose=0, shuffle=False, callbacks=[guard]).history
    assert guard.failure is None
    for name, values in history.items():
        assert np.all(np.isfinite(values)), name
    assert len(history["loss"]) == 3


def test_nan_guard_names_the_step_and_batch(capsys):
    heads = tiny_heads()
    task = YOLOTask(tiny_network(heads), heads)
    images, boxes = synthetic_data(num_images=10)
    images[6, 0, 0, 0] = np.nan  # batch 3 of epoch 1 (batch size 2), global step 3
    task.compile(optimizer="sgd")
    guard = NaNGuard()
    history = task.fit(images, boxes, batch_size=2, epochs=3, verbose=0, shuffle=False, callbacks=[guard]).history
    assert guard.failure is not None
    assert (guard.failure["epoch"], guard.failure["batch"], guard.failure["step"]) == (0, 3, 3)
    assert "batch 3" in guard.failure["message"] and "global step 3" in guard.failure["message"]
    assert "batch 3" in capsys.readouterr().out
    assert len(history["loss"]) == 1  # stopped during the first epoch
    # the NaN step already poisoned the weights: a raising guard fails on the very first batch
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 0 \(global step 0\)"):
        task.fit(images, boxes, batch_size=2, epochs=1, verbose=0, shuffle=False, callbacks=[NaNGuard(raise_error=True)])


def test_nan_guard_counts_steps_across_epochs():
    guard = NaNGuard(monitor=["loss"])
    guard.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    guard.on_train_begin()
    for epoch in range(2):
        guard.on_epoch_begin(epoch)
        for batch in range(5):
            logs = {"loss": float("inf") if (epoch, batch) == (1, 2) else 1.0, "other": float("nan")}
            guard.on_train_batch_end(batch, logs)
        guard.on_epoch_end(epoch)
    assert (guard.failure["epoch"], guard.failure["batch"], guard.failure["step"]) == (1, 2, 7)
    assert "other" not in guard.failure["values"]  # only monitored keys are checked


def test_compile_loss_argument():
    heads = tiny_heads("mse")
    task = YOLOTask(tiny_network(heads), heads)
    task.compile(optimizer="sgd", loss="ciou")
    assert {h.iou_loss for h in task.yolo_loss.heads} == {"ciou"}
    task.compile(optimizer="sgd")
    assert {h.iou_loss for h in task.yolo_loss.heads} == {"mse"}
    custom = YoloLoss([h.replace(obj_normalizer=2.0) for h in heads])
    task.compile(optimizer="sgd", loss=custom)
    assert task.yolo_loss is custom
    with pytest.raises(ValueError, match="`loss` must be"):
        task.compile(optimizer="sgd", loss="mean_squared_error")
    with pytest.raises(ValueError, match="needs ground truth"):
        task.compute_loss(x=None, y=None, y_pred=task(np.zeros((1, SIZE, SIZE, 3), np.float32)))


def test_construction_errors_name_the_problem():
    heads = tiny_heads()
    detector = tiny_network(heads)
    with pytest.raises(ValueError, match="2 outputs but 1 head"):
        YOLOTask(detector, heads[:1])
    with pytest.raises(ValueError, match="output 1 has 14 channels"):
        YOLOTask(detector, [heads[0], heads[1].replace(num_classes=3)])
    with pytest.raises(TypeError, match="keras.Model"):
        YOLOTask(lambda x: x, heads)


def test_save_load_round_trip_keeps_outputs_and_heads(tmp_path):
    heads = tiny_heads("diou", label_smoothing=0.05)
    task = YOLOTask(tiny_network(heads), heads, name="yolo_task")
    images, boxes = synthetic_data()
    task.compile(optimizer=keras.optimizers.Adam(1e-3))
    task.fit(images, boxes, batch_size=4, epochs=1, verbose=0)
    path = tmp_path / "task.keras"
    task.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, YOLOTask)
    assert loaded.heads == task.heads
    for a, b in zip(task(images, training=False), loaded(images, training=False)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert loaded.yolo_loss.get_config() == task.yolo_loss.get_config()  # compile state restored
    logs = loaded.evaluate(images, boxes, batch_size=4, verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"]) and "box_loss" in logs


@pytest.fixture
def mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy(previous)


def test_fit_with_mixed_precision(mixed_precision):
    heads = tiny_heads("ciou")
    task = YOLOTask(tiny_network(heads), heads)
    images, boxes = synthetic_data()
    assert task(images)[0].dtype == tf.float16
    task.compile(optimizer=keras.optimizers.Adam(5e-3), steps_per_execution=10)
    history = task.fit(dataset(images, boxes), steps_per_epoch=10, epochs=2, verbose=0, shuffle=False).history
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][1] < history["loss"][0]

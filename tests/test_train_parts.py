"""Training parts: Darknet schedules, Darknet's weight decay, AdamW, EMA, atomic backups that
resume exactly, best-weights checkpoints, the run log, the config and its flags.

The model is the tests' one tiny detector, ``helpers.tiny_detector`` (``--model
helpers:tiny_detector`` in the other training tests; ``test_train_parts:tiny_detector`` still
names it)."""

import json
import math

import numpy as np
import pytest
from helpers import tiny_detector  # also reached as test_train_parts:tiny_detector

from keras_csp.backend import LEGACY_KERAS, keras, tf
from keras_csp.training import (
    BackupAndResume,
    DarknetSchedule,
    DarknetSGD,
    EMASwap,
    ModelEMA,
    WeightsCheckpoint,
    make_config,
    make_optimizer,
)
from keras_csp.training.callbacks import RunLog

# -- schedules ------------------------------------------------------------------------------
def test_darknet_schedule_burn_in_and_steps():
    s = DarknetSchedule(0.01, total_steps=1000, policy="steps", burn_in=100)
    assert float(s(0)) == 0.0
    assert float(s(50)) == pytest.approx(0.01 * 0.5**4)  # Darknet: lr * (step / burn_in) ** 4
    assert float(s(100)) == pytest.approx(0.01)
    assert float(s(799)) == pytest.approx(0.01)
    assert float(s(800)) == pytest.approx(0.001)  # x0.1 at 80%
    assert float(s(900)) == pytest.approx(0.0001)  # and at 90%
    assert s.boundaries() == [800, 900]


def test_darknet_schedule_poly_cosine_and_serialization():
    poly = DarknetSchedule(0.1, total_steps=100, policy="poly", burn_in=0, power=4)
    assert float(poly(50)) == pytest.approx(0.1 * 0.5**4)
    assert float(poly(100)) == pytest.approx(0.0)
    cosine = DarknetSchedule(0.1, total_steps=100, policy="cosine", burn_in=0)
    assert float(cosine(50)) == pytest.approx(0.05)
    absolute = DarknetSchedule(1.0, 10_000, "steps", 0, steps=(4000, 6000), scales=(0.5, 0.2))
    assert [float(absolute(s)) for s in (3999, 4000, 6000)] == pytest.approx([1.0, 0.5, 0.1])
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(poly))
    assert isinstance(again, DarknetSchedule) and again.get_config() == poly.get_config()
    with pytest.raises(ValueError, match="policy"):
        DarknetSchedule(0.1, 100, policy="exp")
    with pytest.raises(ValueError, match="scales"):
        DarknetSchedule(0.1, 100, steps=(0.5, 0.8), scales=(0.1,))


# -- optimizers -----------------------------------------------------------------------------
def _dense():
    layer = keras.layers.Dense(3, kernel_initializer="ones", bias_initializer="ones")
    layer.build((None, 2))
    return layer


def test_darknet_sgd_decays_kernels_through_the_momentum_only():
    layer = _dense()
    lr, momentum, decay = 0.1, 0.9, 0.01
    optimizer = DarknetSGD(lr, momentum=momentum, l2_decay=decay)
    grads = [tf.fill([2, 3], 0.5), tf.fill([3], 0.5)]
    w, b = np.ones((2, 3)), np.ones(3)
    vw, vb = np.zeros((2, 3)), np.zeros(3)
    for _ in range(3):
        optimizer.apply_gradients(zip(grads, [layer.kernel, layer.bias]))
        vw = momentum * vw - lr * (0.5 + decay * w)  # Darknet: decay * w joins the gradient
        vb = momentum * vb - lr * 0.5  # biases are not decayed
        w, b = w + vw, b + vb
    np.testing.assert_allclose(np.asarray(layer.kernel), w, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(layer.bias), b, rtol=1e-5)
    again = DarknetSGD.from_config(optimizer.get_config())
    assert again.l2_decay == decay and float(again.momentum) == momentum


def test_adamw_skips_biases_and_adam_uses_coupled_decay():
    layer = _dense()
    optimizer = make_optimizer("adamw", 0.1, weight_decay=0.5)
    zeros = [tf.zeros([2, 3]), tf.zeros([3])]
    optimizer.apply_gradients(zip(zeros, [layer.kernel, layer.bias]))
    np.testing.assert_allclose(np.asarray(layer.kernel), 1 - 0.1 * 0.5, rtol=1e-6)  # decoupled decay
    np.testing.assert_allclose(np.asarray(layer.bias), 1.0)
    layer = _dense()
    adam = make_optimizer("adam", 0.1, weight_decay=0.5)
    adam.apply_gradients(zip(zeros, [layer.kernel, layer.bias]))
    assert np.all(np.asarray(layer.kernel) < 1.0) and np.allclose(np.asarray(layer.bias), 1.0)
    with pytest.raises(ValueError, match="Unknown optimizer"):
        make_optimizer("rmsprop")


# -- EMA ------------------------------------------------------------------------------------
def _regression(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True).astype("float32")
    return model, x, y


class _Snapshot(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.get_weights()])


def test_ema_swap_evaluates_the_average_without_changing_training():
    runs = {}
    for swap in (False, True):
        model, x, y = _regression()
        ema = ModelEMA(model, decay=0.8, tau=2.0)
        model.compile(make_optimizer("sgd", 0.05, weight_decay=0.0, ema=ema), loss="mse")
        snapshot = _Snapshot()
        callbacks = [EMASwap(ema), snapshot] if swap else [snapshot]
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
        runs[swap] = (ema.averages(), snapshot.weights)
    for a, b in zip(runs[False][0], runs[True][0]):  # the swaps did not change the training
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # After epoch 1, the swapped run shows the average, the other the raw training weights.
    assert not np.allclose(runs[False][1][0][0], runs[True][1][0][0])


# -- backups --------------------------------------------------------------------------------
def _compiled(seed=0):
    model, x, y = _regression(seed)
    model.compile(make_optimizer("sgd", 0.02, weight_decay=1e-3), loss="mse")
    return model, x, y


def test_backup_resumes_exactly_and_skips_incomplete_backups(tmp_path):
    backup_dir = tmp_path / "backup"
    reference, x, y = _compiled()
    reference.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0)

    first, x, y = _compiled()
    first.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[BackupAndResume(backup_dir)])
    assert json.loads((backup_dir / "latest.json").read_text())["epoch"] == 2
    # A kill while writing leaves a temporary folder or a folder without state.json: ignored.
    (backup_dir / ".tmp-crashed").mkdir()
    (backup_dir / "epoch-000009").mkdir()
    (backup_dir / "epoch-000009" / "ckpt.index").write_bytes(b"half a file")

    second, _, _ = _compiled(seed=1)  # other initial weights: all must come from the backup
    backup = BackupAndResume(backup_dir)
    assert backup.restore(second) == 2
    assert int(second.optimizer.iterations) == int(first.optimizer.iterations) == 8
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    second.fit(x, y, batch_size=8, epochs=4, initial_epoch=2, shuffle=False, verbose=0, callbacks=[backup])
    for a, b in zip(reference.get_weights(), second.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in backup_dir.iterdir()) == ["epoch-000003", "epoch-000004", "latest.json"]


@pytest.mark.skipif(LEGACY_KERAS, reason="tf_keras: pass fit(initial_epoch=backup.restore(model)), as train() does")
def test_backup_in_fit_sets_the_initial_epoch(tmp_path):
    model, x, y = _compiled()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[BackupAndResume(tmp_path)])
    again, x, y = _compiled()
    history = again.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[BackupAndResume(tmp_path)])
    assert len(history.history["loss"]) == 1  # only epoch 3 ran


def test_weights_checkpoint_keeps_the_best_and_ignores_nan(tmp_path):
    model, _, _ = _compiled()
    checkpoint = WeightsCheckpoint(tmp_path, monitor="val_AP", mode="max")
    checkpoint.set_model(model)
    for epoch, value in enumerate([0.1, float("nan"), 0.3, 0.2]):
        model.layers[0].kernel.assign(np.full((4, 8), value if not math.isnan(value) else -1.0, "float32"))
        checkpoint.on_epoch_end(epoch, {"val_AP": value})
    best = json.loads((tmp_path / "best.json").read_text())
    assert best == {"monitor": "val_AP", "value": 0.3, "epoch": 3}
    fresh, _, _ = _compiled()
    fresh.load_weights(tmp_path / "best.weights.h5")
    assert np.allclose(np.asarray(fresh.layers[0].kernel), 0.3)
    fresh.load_weights(tmp_path / "last.weights.h5")
    assert np.allclose(np.asarray(fresh.layers[0].kernel), 0.2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    assert WeightsCheckpoint(tmp_path, monitor="val_AP").best == 0.3  # a resumed run remembers


def test_run_log_spans_resumed_runs(tmp_path):
    log = RunLog(tmp_path, curves=False)
    for epoch in range(2):
        log.on_epoch_end(epoch, {"loss": 3.0 - epoch, "val_AP": float("nan")})
    again = RunLog(tmp_path, curves=True)
    again.on_epoch_end(1, {"loss": 1.5, "val_AP": 0.25})  # epoch 2 re-run after a kill
    again.on_epoch_end(2, {"loss": 1.0, "val_AP": 0.5})
    assert again.history() == {"loss": [3.0, 1.5, 1.0], "val_AP": [None, 0.25, 0.5]}
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert rows[0] == "epoch,loss,val_AP" and rows[1] == "1,3.0," and len(rows) == 4
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- config and flags -----------------------------------------------------------------------
def test_config_yaml_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 7\nimage_size: 320\noptimizer: adam\n")
    config = make_config(path, epochs=9, batch_size=None)
    assert (config.epochs, config.image_size, config.optimizer, config.batch_size) == (9, 320, "adam", 32)
    path.write_text("epochz: 7\n")
    with pytest.raises(ValueError, match="epochz"):
        make_config(path)
    with pytest.raises(ValueError, match="image_size.*multiple of 32"):
        make_config(image_size=100)
    with pytest.raises(ValueError, match="mixed_precision"):
        make_config(mixed_precision="fp8")


def test_cli_flags_reach_the_config(tmp_path):
    from keras_csp.cli import build_parser
    from keras_csp.training.cli import _config_from_args

    path = tmp_path / "run.yaml"
    path.write_text("epochs: 7\nlearning_rate: 0.01\nbackup: true\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--epochs", "3", "--no-backup",
                                      "--strategy", "mirrored", "--ema", "0.999", "--anchors", "auto"])
    config = _config_from_args(args)
    assert (config.epochs, config.learning_rate, config.backup, config.strategy) == (3, 0.01, False, "mirrored")
    assert (config.ema, config.anchors) == (0.999, "auto")
    sub = build_parser()._subparsers._group_actions[0].choices
    assert {"train", "evaluate", "predict", "demo"} <= set(sub)


def test_tiny_detector_is_a_trainable_detector():
    detector = tiny_detector(3, (64, 64, 3))
    assert [h.stride for h in detector.heads] == [16, 32]


def test_backup_skips_non_finite_epochs(tmp_path):
    model, _, _ = _compiled()
    backup = BackupAndResume(tmp_path)
    backup.set_model(model)
    backup.on_epoch_end(0, {"loss": 1.0})
    backup.on_epoch_end(1, {"loss": float("nan")})  # NaNGuard stops fit; this epoch is not kept
    assert backup.latest()[0] == 1


def test_mixed_precision_and_close_mosaic_run_trains_and_restores_the_policy(tmp_path):
    from keras_csp.data import write_synthetic_dataset
    from keras_csp.training import train

    data = write_synthetic_dataset(tmp_path / "data", num_images=4, seed=1, image_size=(64, 64), max_objects=2)
    result = train(train=data["coco_json"], model="helpers:tiny_detector", image_size=64, batch_size=4,
                   epochs=2, steps_per_epoch=1, augment="default", close_mosaic=1, mixed_precision="mixed_bfloat16",
                   out=str(tmp_path / "run"), tensorboard=False, verbose=0)
    assert result.model.detector.layers[2].compute_dtype == "bfloat16"
    assert all(math.isfinite(v) for v in result.history["loss"])
    assert keras.mixed_precision.global_policy().name == "float32"
    assert result.history["mosaic"] == [1.0, 0.0]  # close_mosaic=1: the last epoch without mosaics

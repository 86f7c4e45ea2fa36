"""Model EMA: every float weight averaged (batch-norm statistics included) with YOLOv5's
warm-up decay, updated inside the train step on every replica, kept in the resumable backup,
and swapped in for evaluation and checkpoints."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_csp.backend import keras
from keras_csp.training.checkpoints import BackupAndResume, WeightsCheckpoint
from keras_csp.training.ema import EMASwap, ModelEMA, ema_decay
from keras_csp.training.optimizers import make_optimizer

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def _bn_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(6), keras.layers.BatchNormalization(momentum=0.5),
        keras.layers.ReLU(), keras.layers.Dense(1),
    ])


def _data(seed=0, n=48):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 4)) * [1, 2, 3, 4] + [0, 1, -2, 5]).astype("float32")  # BN stats far from 0 / 1
    return x, (x @ [[0.5], [-1.0], [0.25], [1.0]]).astype("float32")


class _Record(keras.callbacks.Callback):
    """The raw values of the averaged variables after every step (the EMA's inputs)."""

    def __init__(self, ema):
        super().__init__()
        self.ema, self.steps = ema, []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([v.numpy() for v in self.ema._variables])


def _numpy_ema(initial, steps, decay, tau):
    average = [np.array(v, np.float64) for v in initial]
    for n, values in enumerate(steps, start=1):
        d = decay * (1.0 - np.exp(-n / tau))
        average = [d * a + (1.0 - d) * v for a, v in zip(average, values)]
    return average


def test_bn_statistics_are_averaged_as_the_formula_says():
    model = _bn_model()
    decay, tau = 0.9, 3.0
    ema = ModelEMA(model, decay=decay, tau=tau)
    names = [v.name for v in ema._variables]
    assert any("moving_mean" in n for n in names) and any("moving_variance" in n for n in names)
    assert len(ema) == len(model.weights) == 8  # every float weight, trainable or not
    initial = [v.numpy() for v in ema._variables]
    model.compile(make_optimizer("sgd", 0.05, weight_decay=0.0, ema=ema), loss="mse", jit_compile=False)
    record = _Record(ema)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    assert int(ema.updates.numpy()) == len(record.steps) == 6
    expected = _numpy_ema(initial, record.steps, decay, tau)
    raw = record.steps[-1]
    for name, want, got, now in zip(names, expected, ema.averages(), raw):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
    for name, want, now in zip(names, expected, raw):
        if "moving_" in name:  # the averaged BN statistics are not the raw model's
            assert np.abs(want - now).max() > 1e-2, name
    assert ema_decay(6, decay, tau) == pytest.approx(decay * (1 - np.exp(-2)))

    ema.use_average()  # the model now evaluates with the average, the raw weights wait
    bn = model.layers[1]
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected[names.index(bn.moving_mean.value.name)], rtol=1e-5)
    ema.use_training_weights()
    np.testing.assert_allclose(bn.moving_mean.numpy(), raw[names.index(bn.moving_mean.value.name)])


class _EpochWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.get_weights()])


def test_swap_shows_the_average_at_epoch_ends_without_changing_training():
    runs = {}
    for swap in (False, True):
        model = _bn_model()
        ema = ModelEMA(model, decay=0.8, tau=2.0)
        model.compile(make_optimizer("adam", 0.01, weight_decay=0.0, ema=ema), loss="mse", jit_compile=False)
        seen = _EpochWeights()
        x, y = _data()
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0,
                  callbacks=[EMASwap(ema), seen] if swap else [seen])
        runs[swap] = (ema, seen.weights, model)
    plain, swapped = runs[False], runs[True]
    assert swapped[0].swapped and not plain[0].swapped  # after fit the model holds the average
    for a, b in zip(plain[0].averages(), swapped[0].averages()):  # the same training, the same average
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    swapped[0].use_training_weights()
    for a, b in zip(plain[2].get_weights(), swapped[2].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # At epoch 1's end the swapped run's callbacks saw the average, the other the raw weights.
    assert not np.allclose(plain[1][0][0], swapped[1][0][0])


def _resumable(tmp_path, epochs, backup_dir, seed=0):
    model = _bn_model(seed)
    ema = ModelEMA(model, decay=0.9, tau=4.0)
    model.compile(make_optimizer("sgd", 0.02, weight_decay=1e-3, ema=ema), loss="mse", jit_compile=False)
    backup = BackupAndResume(backup_dir, ema=ema)
    checkpoint = WeightsCheckpoint(tmp_path / f"weights-{epochs}-{seed}", monitor="loss", mode="min")
    x, y = _data()
    initial = backup.restore(model)
    model.fit(x, y, batch_size=8, epochs=epochs, initial_epoch=initial, shuffle=False, verbose=0,
              callbacks=[backup, EMASwap(ema), checkpoint])
    return model, ema, checkpoint


def test_resume_with_ema_equals_an_uninterrupted_run(tmp_path):
    reference, reference_ema, _ = _resumable(tmp_path, 4, tmp_path / "reference")
    _resumable(tmp_path, 2, tmp_path / "backup")  # "killed" after epoch 2: its backup is what is left
    # Restarted in a new process would build other initial weights: all must come from the backup.
    resumed, resumed_ema, checkpoint = _resumable(tmp_path, 4, tmp_path / "backup", seed=1)
    assert int(resumed_ema.updates.numpy()) == int(reference_ema.updates.numpy()) == 24
    for a, b in zip(reference.get_weights(), resumed.get_weights()):  # the averages, in the models
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    reference_ema.use_training_weights()
    resumed_ema.use_training_weights()
    for a, b in zip(reference.get_weights(), resumed.get_weights()):  # and the training weights
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The checkpoint written after the last epoch holds the average, not the training weights.
    resumed_ema.use_average()
    last = _bn_model(seed=2)
    last.load_weights(checkpoint.last_path)
    for a, b in zip(last.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # A backup without the EMA does not silently restart the average.
    resumed_ema.use_training_weights()
    plain = BackupAndResume(tmp_path / "plain")
    plain.set_model(resumed)
    plain.save(4)
    again = _bn_model()
    again_ema = ModelEMA(again)
    again.compile(make_optimizer("sgd", 0.02, ema=again_ema), loss="mse", jit_compile=False)
    with pytest.raises(ValueError, match="EMA"):
        BackupAndResume(tmp_path / "plain", ema=again_ema).restore(again)


def test_bad_ema_arguments_are_refused():
    with pytest.raises(TypeError, match="ModelEMA"):
        make_optimizer("sgd", 0.01, ema=0.999)
    with pytest.raises(ValueError, match="built model"):
        ModelEMA(keras.Sequential([keras.layers.Dense(2)]))
    model = _bn_model()
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(model, decay=1.0)


MIRRORED = r"""
import json
import numpy as np
from keras_csp.training.strategy import split_cpu
split_cpu(2)
from keras_csp.backend import keras, tf
from keras_csp.training.ema import ModelEMA
from keras_csp.training.optimizers import make_optimizer

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization(momentum=0.5),
                              keras.layers.Dense(1)])
ema = ModelEMA(model, decay=0.9, tau=2.0)  # made in the model's strategy, outside its scope too
with strategy.scope():
    model.compile(make_optimizer("sgd", 0.05, weight_decay=0.0, ema=ema), loss="mse", jit_compile=False)
per_replica = lambda v: [np.asarray(t.numpy(), np.float64) for t in v.values]
initial = [per_replica(v) for v in ema._variables]
steps = []

class Record(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        steps.append([per_replica(v) for v in ema._variables])

rng = np.random.default_rng(0)
# Each global batch of 8 is split 4 + 4: replica 0 sees small inputs, replica 1 large ones,
# so their BN statistics (and so their averages) differ.
x = np.concatenate([np.concatenate([rng.normal(size=(4, 4)), 3 + 2 * rng.normal(size=(4, 4))]) for _ in range(3)])
x = x.astype("float32")
y = x.sum(axis=1, keepdims=True)
model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[Record()])
errors, spread = [], 0.0
for i, name in enumerate(v.name for v in ema._variables):
    for r in range(2):
        average = initial[i][r]
        for n, values in enumerate(steps, start=1):
            d = 0.9 * (1 - np.exp(-n / 2.0))
            average = d * average + (1 - d) * values[i][r]
        got = per_replica(ema.shadows[i])[r]
        errors.append(float(np.abs(got - average).max()))
    if "moving_mean" in name:
        shadows = per_replica(ema.shadows[i])
        spread = float(np.abs(shadows[0] - shadows[1]).max())
        mean_index = i
own = per_replica(ema.shadows[mean_index])
ema.use_average()  # each replica gets its own average
swapped = per_replica(ema._variables[mean_index])
print(json.dumps({"steps": len(steps), "updates": [int(u) for u in per_replica(ema.updates)],
                  "error": max(errors), "spread": spread,
                  "swap_error": max(float(np.abs(a - b).max()) for a, b in zip(own, swapped))}))
"""


def test_every_replica_averages_its_own_weights(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, ROOT, os.environ.get("PYTHONPATH", "")]),
               CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert result["steps"] == 3 and result["updates"] == [3, 3]
    assert result["error"] < 1e-5  # each replica's average is the formula on its own values
    assert result["spread"] > 0.1  # and the replicas' BN averages differ (no replica copies another's)
    assert result["swap_error"] < 1e-7


@pytest.mark.slow
def test_train_with_ema_on_the_synthetic_set_scores_at_least_the_raw_weights(tmp_path):
    """``train(ema=...)`` end to end: evaluation, best / final weights hold the average, the
    average scores at least the raw weights, and a resumed run equals an uninterrupted one."""
    from keras_csp.data import write_synthetic_dataset
    from keras_csp.evaluation import EVAL_NMS, evaluate_detector
    from keras_csp.data import detection_dataset, resolve_source
    from keras_csp.training import train

    data = dict(image_size=(64, 64), max_objects=2, min_object=16, clutter=False)
    train_json = write_synthetic_dataset(tmp_path / "train", num_images=64, seed=5, **data)["coco_json"]
    val_json = write_synthetic_dataset(tmp_path / "val", num_images=32, seed=9, **data)["coco_json"]
    options = dict(train=train_json, val=val_json, model="helpers:tiny_detector", image_size=64,
                   batch_size=8, augment="none", shuffle=False, optimizer="adam", learning_rate=1e-2, burn_in=8,
                   bn_momentum=0.9, tensorboard=False, verbose=0, seed=3, ema=0.99, ema_tau=20, eval_every=100)
    full = train(epochs=10, out=str(tmp_path / "full"), **options)
    ema_ap50 = full.evaluation.stats["AP50"]
    val = resolve_source(val_json, training=False)
    val_ds = detection_dataset(val, image_size=64, batch_size=16, training=False)
    final = evaluate_detector(full.model, val_ds, val, nms=EVAL_NMS).stats["AP50"]
    assert final == pytest.approx(ema_ap50, abs=1e-6)  # the model left by train holds the average
    raw = train(epochs=10, out=str(tmp_path / "raw"), **dict(options, ema=0.0)).evaluation.stats["AP50"]
    assert ema_ap50 >= raw, (ema_ap50, raw)

    train(epochs=6, out=str(tmp_path / "resumed"), **options)
    resumed = train(epochs=10, out=str(tmp_path / "resumed"), **options)
    assert resumed.evaluation.stats["AP50"] == pytest.approx(ema_ap50, abs=1e-6)
    for a, b in zip(full.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

"""Train to device in three commands: ``train --data obj.data --time`` writes ``best.keras`` /
``final.keras`` (complete, ``safe_mode=True``, classes and anchors inside), then ``export``,
``evaluate`` and ``predict`` take ``--run RUN`` or that file. Wrong inputs are one line.

The run is ``test_cli_quiet.trained_run`` (one subprocess per session). The time budget's
planning and deadline are checked without training here; ``test_time_budget_two_phases``
(slow) runs both phases for real."""

import json
import time

import numpy as np
import pytest

from keras_csp.cli import main
from test_cli_quiet import trained_run

TINY_ANCHORS = [[[6.0, 6.0], [12.0, 12.0], [20.0, 20.0]], [[24.0, 24.0], [40.0, 40.0], [56.0, 56.0]]]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root, run_dir, names, done = trained_run(tmp_path_factory)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return root, run_dir, names


def test_train_writes_complete_keras_files_with_classes_and_anchors(run):
    from keras_csp.backend import keras

    root, run_dir, names = run
    info = json.loads((run_dir / "run.json").read_text())
    assert info["class_names"] == names  # from obj.data's names= file, not class_0..
    plan = info["time_budget"]
    assert plan["minutes"] == 0.05 and plan["planned_epochs"] >= 1 and plan["seconds_per_step"] > 0
    for which in ("best", "final"):
        detector = keras.saving.load_model(run_dir / f"{which}.keras", safe_mode=True, compile=False)
        assert list(detector.class_names) == names
        assert [[list(a) for a in h.anchors] for h in detector.heads] == TINY_ANCHORS
        assert detector.nms_config.score_threshold == 0.25
        out = detector.predict(np.zeros((1, 64, 64, 3), np.float32), verbose=0)
        assert out["boxes"].shape == (1, 100, 4)  # the post-processing came with the file
    final = keras.saving.load_model(run_dir / "final.keras", safe_mode=True, compile=False)
    from keras_csp.training.restore import load_detector

    rebuilt, _ = load_detector(str(run_dir), str(run_dir / "final.weights.h5"))  # the weights-file path
    image = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype(np.float32)
    for a, b in zip(final(image), rebuilt(image)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_export_tflite_from_the_run_carries_the_class_names(run, tmp_path):
    root, run_dir, names = run
    out = tmp_path / "model.tflite"
    assert main(["export", "tflite", "--run", str(run_dir), "--weights", "final", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert (tmp_path / "model.labels.txt").read_text().split() == names
    sidecar = json.loads((tmp_path / "model.json").read_text())
    assert sidecar["labels"] == "model.labels.txt" and sidecar["heads"][0]["num_classes"] == len(names)


def test_evaluate_and_predict_take_the_run_or_the_keras_file(run, tmp_path, monkeypatch, capsys):
    root, run_dir, names = run
    monkeypatch.chdir(root)  # obj.data's paths are relative to the working directory
    assert main(["evaluate", "obj.data", "--run", str(run_dir / "best.keras"), "--max-batches", "1",
                 "--out", str(tmp_path / "eval"), "--no-pr-curves"]) == 0
    assert names[0] in (tmp_path / "eval" / "per_class_ap.txt").read_text()
    assert main(["predict", str(root / "images"), "--run", str(run_dir), "--weights", "final",
                 "--out", str(tmp_path / "pred"), "--score-threshold", "0.0"]) == 0
    records = json.loads((tmp_path / "pred" / "detections.json").read_text())
    found = {d["name"] for r in records for d in r["detections"]}
    assert found and found <= set(names)


@pytest.mark.parametrize("argv, expected", [
    (["export", "tflite", "{run}/final.weights.h5", "{tmp}/x.tflite"], "holds weights only, not a model: give the run"),
    (["export", "tflite", "CSPDenseNetb-Ref-PRN", "{tmp}/x.tflite", "--weights", "{run}/final.weights.h5"],
     "belongs to the training run"),
    (["export", "tflite", "--run", "{run}", "--weights", "middle", "{tmp}/x.tflite"], "--weights is one of best"),
    (["evaluate", "{tmp}/missing.data", "--run", "{run}"], "Darknet .data file not found"),
    (["predict", "{tmp}", "--run", "{run}/final.weights.h5", "--out", "{tmp}/p"], "holds weights only"),
])
def test_wrong_inputs_are_one_line(run, tmp_path, capsys, argv, expected):
    _, run_dir, _ = run
    argv = [a.format(run=run_dir, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_plan_epochs_fits_the_budget():
    from keras_csp.training.budget import EPOCH_OVERHEAD, plan_epochs

    # 60 s budget, 10 s used by epoch 1, 10 steps of 0.5 s, 2 s evaluations every epoch, 3 s set-up.
    per_epoch = 10 * 0.5 * EPOCH_OVERHEAD + 2.0
    planned = plan_epochs(60, 10, 10, 0.5, 2.0, 1, 1000, setup_seconds=3.0)
    assert planned == 1 + int((60 - 10 - 2 - 3) // per_epoch)
    assert 10 + (planned - 1) * per_epoch + 2 + 3 <= 60 < 10 + planned * per_epoch + 2 + 3
    assert plan_epochs(60, 10, 10, 0.5, 2.0, 1, 3) == 3  # the cap
    assert plan_epochs(60, 70, 10, 0.5, 2.0, 1, 1000) == 1  # over budget already: epoch 1 only


def test_deadline_stops_mid_epoch_leaving_the_final_evaluation_time():
    from keras_csp.backend import keras
    from keras_csp.training.budget import Deadline

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    guard = Deadline(time.perf_counter() + 1.0, reserve=0.96)
    guard.set_model(model)
    model.stop_training = False
    guard.on_epoch_begin(0)
    guard.on_train_batch_end(0)
    assert not model.stop_training
    time.sleep(0.06)  # now less than the 0.96 s reserved for the final evaluation is left
    guard.on_train_batch_end(1)
    assert model.stop_training and guard.stopped_at == 1 and guard.mid_epoch


@pytest.mark.slow
def test_time_budget_two_phases(tmp_path):
    """A real budget: epoch 1 timed, then the run resumes with the planned epochs and ends in time."""
    from keras_csp.data import write_synthetic_dataset
    from keras_csp.training import train

    data = write_synthetic_dataset(tmp_path / "d", num_images=16, seed=2, min_side=64, max_side=64, max_objects=2,
                                   min_object=10)
    start = time.perf_counter()
    result = train(train=data["yolo_list"], val=data["yolo_list"], model="test_train_parts:tiny_detector",
                   image_size=64, batch_size=4, augment="none", time=3, eval_every=3, out=str(tmp_path / "run"),
                   tensorboard=False, verbose=0, optimizer="adam", learning_rate=0.01)
    seconds = time.perf_counter() - start
    plan = result.run_info["time_budget"]
    assert plan["planned_epochs"] > 1 and plan["epochs_run"] >= 2
    assert seconds <= 3 * 60 + 20  # the deadline (the .keras files are written after it)
    history = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    rates = [history[str(e)]["learning_rate"] for e in range(1, plan["epochs_run"] + 1)]
    assert rates[-1] < rates[0]  # the step decay landed inside the budget
    assert result.evaluation is not None

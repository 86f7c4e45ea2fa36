"""Train to device in three commands: ``train --data obj.data --time`` writes ``best.keras`` /
``final.keras`` (complete, ``safe_mode=True``, classes and anchors inside), then ``export``,
``evaluate`` and ``predict`` take ``--run RUN`` or that file. Wrong inputs are one line.

The run is ``test_cli_quiet.trained_run`` (one subprocess per session). The time budget's
planning and deadline are checked without training here; ``test_time_budget_in_one_run``
(slow) trains to a real budget."""

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
    assert plan["minutes"] == 0.05 and plan["planned_steps"] >= 1 and plan["seconds_per_step"] > 0
    for which in ("best", "final"):
        detector = keras.saving.load_model(run_dir / f"{which}.keras", safe_mode=True, compile=False)
        assert list(detector.class_names) == names
        assert [[list(a) for a in h.anchors] for h in detector.heads] == TINY_ANCHORS
        assert detector.nms_config.score_threshold == 0.25
        out = detector.predict(np.zeros((1, 64, 64, 3), np.float32), verbose=0)
        assert out["boxes"].shape == (1, 100, 4)  # the post-processing came with the file
    final = keras.saving.load_model(run_dir / "final.keras", safe_mode=True, compile=False)
    from keras_csp.training.restore import restore_detector

    rebuilt, _ = restore_detector(str(run_dir), str(run_dir / "final.weights.h5"))  # the weights-file path
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


def _cost(start, end, step_seconds, steps_per_epoch, eval_every, eval_seconds):
    """Seconds from step ``start`` to ``end``: the steps, an evaluation at every ``eval_every``-th
    epoch end crossed, and the final evaluation (counted by hand, not with plan_steps)."""
    evals = sum(1 for s in range(start + 1, end) if s % (steps_per_epoch * eval_every) == 0)
    return (end - start) * step_seconds + evals * eval_seconds + eval_seconds


@pytest.mark.parametrize("step, left, every", [(0, 60.0, 1), (0, 60.0, 3), (25, 40.0, 1), (7, 300.0, 2)])
def test_plan_steps_fills_the_time_left_and_no_more(step, left, every):
    from keras_csp.training.budget import plan_steps

    planned = plan_steps(step, left, 0.5, 10, every, 2.0, 0.0, 10**6)
    assert _cost(step, planned, 0.5, 10, every, 2.0) <= left < _cost(step, planned + 2, 0.5, 10, every, 2.0)


def test_plan_steps_caps_and_floors():
    from keras_csp.training.budget import plan_steps

    assert plan_steps(0, 60.0, 0.5, 10, 1, 2.0, 0.0, 30) == 30  # max_epochs x steps
    assert plan_steps(12, 1.0, 0.5, 10, 1, 2.0, 0.0, 10**6) == 13  # over budget already: one more step


def _budget_model(schedule):
    from keras_csp.backend import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    model.optimizer.build(model.trainable_variables)
    model.stop_training = False
    return model


def _steps(budget, model, count=8):
    """Start ``budget``'s fit and run ``count`` steps of ~0.01 s through it."""
    budget.on_train_begin()
    budget.on_epoch_begin(0)
    for batch in range(count):
        time.sleep(0.01)
        model.optimizer.iterations.assign_add(1)
        budget.on_train_batch_end(batch)


def test_time_budget_plans_from_measured_steps_and_stretches_the_schedule():
    from keras_csp.training.budget import TimeBudget
    from keras_csp.training.schedules import DarknetSchedule

    schedule = DarknetSchedule(0.01, 10**6, "steps", burn_in=0, adjustable=True)
    model = _budget_model(schedule)
    recorded = []
    budget = TimeBudget(time.perf_counter() + 3.0, steps_per_epoch=100, eval_every=1, eval_estimate=0.5,
                        measure_steps=5, log=None, record=recorded.append, finish_seconds=0)
    budget.set_model(model)
    budget.attach_schedule(schedule)
    _steps(budget, model)
    planned = budget.planned_steps
    # ~2.5 s left at ~0.01 s per step, 0.5 s for the final evaluation and ~1 per epoch end crossed
    assert 60 < planned < 300 and recorded == [planned] and schedule.total_steps == planned
    assert float(schedule(int(0.85 * planned))) == pytest.approx(0.001)  # the decay moved with the plan
    assert float(schedule(int(0.75 * planned))) == pytest.approx(0.01)
    model.optimizer.iterations.assign(planned)
    budget.on_train_batch_end(8)
    assert model.stop_training and budget.stopped_at == 1 and budget.mid_epoch  # at the planned step


def test_time_budget_keeps_the_end_of_the_run_free():
    """The files a run writes after fit (finish_seconds) come out of the plan, not after --time."""
    from keras_csp.training.budget import FINISH_SECONDS, TimeBudget
    from keras_csp.training.schedules import DarknetSchedule

    plans = {}
    for finish in (0.0, 1.5):
        schedule = DarknetSchedule(0.01, 10**6, "steps", burn_in=0, adjustable=True)
        model = _budget_model(schedule)
        budget = TimeBudget(time.perf_counter() + 3.0, steps_per_epoch=1000, eval_estimate=0.0, measure_steps=5,
                            log=None, finish_seconds=finish)
        budget.set_model(model)
        budget.attach_schedule(schedule)
        _steps(budget, model)
        plans[finish] = budget.planned_steps
    # ~3 s of ~0.01 s steps against ~1.5 s: half the steps, within the timing's noise
    assert 0.3 < plans[1.5] / plans[0.0] < 0.7, plans
    assert FINISH_SECONDS > 0  # runs reserve it by default


def test_time_budget_keeps_a_recorded_plan_and_stops_before_the_deadline():
    from keras_csp.training.budget import TimeBudget
    from keras_csp.training.schedules import DarknetSchedule

    schedule = DarknetSchedule(0.01, 10**6, "steps", burn_in=0, adjustable=True)
    model = _budget_model(schedule)
    budget = TimeBudget(time.perf_counter() + 1.0, steps_per_epoch=10, eval_estimate=0.96, planned_steps=500,
                        measure_steps=2, log=None, finish_seconds=0)
    budget.set_model(model)
    budget.attach_schedule(schedule)
    assert schedule.total_steps == 500  # a resumed run: the recorded plan, not a new one
    budget.on_train_begin()
    budget.on_epoch_begin(0)
    model.optimizer.iterations.assign_add(1)
    budget.on_train_batch_end(0)
    assert not model.stop_training
    time.sleep(0.06)  # now less than the 0.96 s reserved for the final evaluation is left
    for batch in range(1, 4):
        model.optimizer.iterations.assign_add(1)
        budget.on_train_batch_end(batch)
    assert model.stop_training and budget.stopped_at == 1 and budget.mid_epoch and budget.planned_steps == 500


def test_eval_interval_keeps_evaluations_under_their_share():
    from keras_csp.training.budget import EVAL_SHARE, eval_interval

    assert EVAL_SHARE == 0.1
    # the 15-minute coins run: 12 steps of 0.69 s per epoch, ~5 s per evaluation -> every 7th epoch
    assert eval_interval(5.0, 12 * 0.69) == 7
    assert 5.0 / (7 * 12 * 0.69) <= EVAL_SHARE < 5.0 / (6 * 12 * 0.69)
    assert eval_interval(0.5, 10.0) == 1 and eval_interval(1.0, 10.0) == 1 and eval_interval(1.01, 10.0) == 2
    assert eval_interval(3.0, 0.0) == 1


def test_time_budget_with_eval_every_unset_sets_the_evaluators_interval():
    """auto: no evaluation before the first plan; then as often as keeps them under 10 % of the time,
    re-set with the evaluation time measured at an epoch end that evaluated."""
    import types

    from keras_csp.training.budget import MAX_PLANNED_EPOCHS, TimeBudget, eval_interval
    from keras_csp.training.schedules import DarknetSchedule

    schedule = DarknetSchedule(0.01, 10**6, "steps", burn_in=0, adjustable=True)
    model = _budget_model(schedule)
    # what the budget uses of COCOEvalCallback
    evaluator = types.SimpleNamespace(every=1, latest_evaluated=False, request=lambda epoch: None)
    budget = TimeBudget(time.perf_counter() + 30.0, steps_per_epoch=10, eval_every=None, eval_estimate=0.5,
                        measure_steps=5, log=None, finish_seconds=0)
    budget.set_model(model)
    budget.attach_schedule(schedule)
    budget.attach_evaluator(evaluator)
    assert evaluator.every == MAX_PLANNED_EPOCHS  # before a plan: none
    _steps(budget, model, count=10)
    # planned: 0.5 s per evaluation against ~0.1 s per epoch of 10 steps of ~0.01 s
    first = evaluator.every
    assert first == budget.eval_every == eval_interval(0.5, 10 * budget.seconds_per_step() * 1.03) and first >= 20
    budget.on_epoch_end(0)
    evaluator.latest_evaluated = True  # the epoch end evaluated: 0.02 s measured
    time.sleep(0.02)
    budget.on_epoch_begin(1)
    assert 0.02 <= budget.eval_seconds < 0.5
    assert evaluator.every == eval_interval(budget.eval_seconds, 10 * budget.seconds_per_step() * 1.03) < first
    given = TimeBudget(time.perf_counter() + 30.0, steps_per_epoch=10, eval_every=3, log=None)
    given.attach_evaluator(evaluator)
    assert given.eval_every == 3 and given.auto_eval is False  # a given interval stays
    # a resumed run keeps its recorded plan and still sets the interval once its steps are timed
    resumed = TimeBudget(time.perf_counter() + 30.0, steps_per_epoch=10, eval_every=None, eval_estimate=0.5,
                         planned_steps=2000, measure_steps=5, log=None, finish_seconds=0)
    evaluator = types.SimpleNamespace(every=1, latest_evaluated=False, request=lambda epoch: None)
    resumed.set_model(model)
    resumed.attach_evaluator(evaluator)
    assert evaluator.every == MAX_PLANNED_EPOCHS
    _steps(resumed, model, count=10)
    resumed.on_epoch_end(0)
    resumed.on_epoch_begin(1)
    assert resumed.planned_steps == 2000 and 1 < evaluator.every < MAX_PLANNED_EPOCHS


def test_time_budget_times_one_evaluation_instead_of_keeping_its_guess_in_reserve():
    """With no evaluation timed, the epoch end after the first plan is evaluated (the evaluator's
    ``request``); its measured time replaces ``eval_estimate`` in the plan, which then grows."""
    import types

    from keras_csp.training.budget import TimeBudget
    from keras_csp.training.schedules import DarknetSchedule

    schedule = DarknetSchedule(0.01, 10**6, "steps", burn_in=0, adjustable=True)
    model = _budget_model(schedule)
    requested = []
    evaluator = types.SimpleNamespace(every=100, latest_evaluated=False, request=requested.append)
    budget = TimeBudget(time.perf_counter() + 3.0, steps_per_epoch=10, eval_every=100, eval_estimate=1.5,
                        measure_steps=5, log=None, finish_seconds=0)
    budget.set_model(model)
    budget.attach_schedule(schedule)
    budget.attach_evaluator(evaluator)
    _steps(budget, model, count=10)
    guessed = budget.planned_steps  # planned with 1.5 s kept for the final evaluation
    assert guessed is not None and budget.eval_seconds is None
    budget.on_epoch_end(0)
    assert requested == [1]  # the first epoch end after the plan: timed
    evaluator.latest_evaluated = True
    time.sleep(0.05)
    budget.on_epoch_begin(1)
    assert 0.05 <= budget.eval_seconds < 1.5
    assert budget.planned_steps > guessed  # the reserve is what was measured, not the guess
    evaluator.latest_evaluated = False
    budget.on_epoch_end(1)
    assert requested == [1]  # once measured, no more
    # a stopping run asks for nothing (its last epoch is evaluated anyway)
    late = TimeBudget(time.perf_counter() + 3.0, steps_per_epoch=10, eval_every=100, measure_steps=5, log=None,
                      finish_seconds=0)
    late.set_model(model)
    late.attach_evaluator(types.SimpleNamespace(every=100, latest_evaluated=False, request=requested.append))
    _steps(late, model, count=10)
    model.stop_training = True
    late.on_epoch_end(0)
    model.stop_training = False
    assert requested == [1]


def test_an_adjustable_schedule_serializes_fixed_and_a_fixed_one_refuses_to_move():
    from keras_csp.training.schedules import DarknetSchedule

    schedule = DarknetSchedule(0.01, 1000, "steps", burn_in=0, adjustable=True)
    schedule.set_total_steps(200)
    again = DarknetSchedule.from_config(schedule.get_config())
    assert again.total_steps == 200 and float(again(170)) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="adjustable=True"):
        again.set_total_steps(10)


@pytest.mark.slow
def test_time_budget_in_one_run(tmp_path):
    """A real budget: the run planned from its first steps, the decay inside it, ended in time, with
mosaics closed for its last planned epoch (``close_mosaic``)."""
    from keras_csp.data import write_synthetic_dataset
    from keras_csp.training import train

    data = write_synthetic_dataset(tmp_path / "d", num_images=16, seed=2, min_side=64, max_side=64, max_objects=2,
                                   min_object=10)
    start = time.perf_counter()
    result = train(train=data["yolo_list"], val=data["yolo_list"], model="helpers:tiny_detector",
                   image_size=64, batch_size=4, augment="default", close_mosaic=1, time=3, eval_every=3,
                   out=str(tmp_path / "run"), tensorboard=False, verbose=0, optimizer="adam", learning_rate=0.01)
    seconds = time.perf_counter() - start
    plan = result.run_info["time_budget"]
    assert plan["planned_epochs"] > 1 and plan["epochs_run"] >= 2 and plan["steps_run"] <= plan["planned_steps"]
    assert seconds <= 3 * 60 + 20  # the deadline (the .keras files are written after it)
    history = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    rates = [history[str(e)]["learning_rate"] for e in range(1, plan["epochs_run"] + 1)]
    assert rates[-1] < rates[0]  # the step decay landed inside the budget
    mosaics = [history[str(e)]["mosaic"] for e in range(1, plan["epochs_run"] + 1)]
    assert mosaics[0] == 1.0  # close_mosaic=1: mosaics until the last planned epoch ...
    assert mosaics[-1] == 0.0 or plan["steps_run"] < plan["planned_steps"]  # ... which has none
    assert result.evaluation is not None

"""``python -m keras_csp demo --quick``: synthetic data, training with fit on the CPU, COCO mAP on
held-out images well above the untrained detector's, TFLite run, report and PNGs. The full
demo (the README's 14-minute run) is marked slow."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_demo(out, *flags, timeout):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               CUDA_VISIBLE_DEVICES="")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    done = subprocess.run([sys.executable, "-m", "keras_csp", "demo", "--out", str(out), *flags], env=env,
                          capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    report_path = out / "report.json"
    assert report_path.is_file(), output[-4000:]
    return done, output, json.loads(report_path.read_text())


def _check_outputs(out, report):
    for name in ("report.md", "curves.png", "predictions.png"):
        assert (out / name).is_file(), name
    for name in ("curves.png", "predictions.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 200
    assert (out / "run" / "final.weights.h5").is_file() and (out / "run" / "history.json").is_file()
    assert "mAP" in (out / "report.md").read_text() or "AP50" in (out / "report.md").read_text()
    assert report["epochs"] == len(report["history"]["loss"])


def test_quick_demo_learns(tmp_path):
    done, output, report = _run_demo(tmp_path, "--quick", timeout=900)
    assert done.returncode == 0, output[-4000:]  # the exit code says the detector learned
    assert report["learned"]
    floor, final = report["untrained"]["stats"], report["final"]["stats"]
    with open(os.path.join(report["run_dir"], "run.json")) as f:
        budget = json.load(f)["time_budget"]
    # The quick recipe (96x96, batch 32, Adam 6e-3, 3 minutes of float32 training) measured 0.30-0.32
    # at the slow Xeon's ~500 steps (three seeds) and 0.357 after the 1488 steps of a 2-core AMD EPYC
    # (README); the Xeon's own runs went down to 0.165 when busy. The floor follows the steps the
    # budget gave, so a regression shows on a fast machine and a slow one still passes.
    steps = budget["steps_run"]  # trained (epochs x steps per epoch overstates a mid-epoch stop)
    expected = 0.25 if steps >= 800 else 0.15
    assert final["AP50"] >= max(expected, 3 * floor["AP50"]), (steps, floor, final)
    assert final["AP"] > floor["AP"]
    assert report["mixed_precision"] == "none"  # float32 on every CPU (demo.py: bf16 learned less here)
    assert "held-out mAP@0.5 = " in output
    # The budget timed an evaluation at the first epoch end (the quick mode evaluates every 100
    # epochs, so it would otherwise keep a guess in reserve to the end) and kept its deadline: an
    # iterator freed after fit once stalled runs by ~55 s (tf.data autotuning, now off).
    assert report["history"]["val_AP50"][0] is not None and report["history"]["val_AP50"][-1] is not None
    assert budget["eval_seconds"] is not None
    assert report["train_seconds"] <= report["budget_minutes"] * 60 + 20
    _check_outputs(tmp_path, report)
    tflite = report["tflite"]
    assert tflite and "error" not in tflite, tflite
    assert os.path.isfile(tflite["path"]) and os.path.isfile(tflite["png"])
    assert tflite["gpu_delegate_ok"] and tflite["gpu_findings"] == 0 and os.path.isfile(tflite["gpu_path"])


@pytest.mark.slow
def test_full_demo_trains_a_useful_detector_in_the_budget(tmp_path):
    """The README's main job, in full (about 16 minutes). Measured on a 2-core Xeon @ 2.80GHz:
    mAP@0.5 0.809 after 2052 steps in the 14-minute budget (README), the target 0.8 met by a thin
    margin; this test pins 0.75, as a loaded machine fits fewer steps in the budget."""
    done, output, report = _run_demo(tmp_path, timeout=2400)
    _check_outputs(tmp_path, report)
    print(output[-2500:])
    assert done.returncode == 0
    assert report["train_seconds"] <= 15 * 60
    assert report["final"]["stats"]["AP50"] >= 0.75, report["final"]["table"]
    assert report["ok"] == (report["final"]["stats"]["AP50"] >= 0.8)


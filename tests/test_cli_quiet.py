"""The ``keras-csp`` console: no TensorFlow log line reaches it (``--help`` and a short
``train`` in a subprocess, as a user runs them), progress bars stay, no ``val_AP: nan``.

``trained_run`` (the short ``train --data obj.data --time`` run) is shared with
``test_train_to_device.py``, which checks what the run wrote."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from keras_csp._quiet import is_tf_log_line, verbose_requested, wanted

TESTS = pathlib.Path(__file__).resolve().parent
_RUN = {}


def _env():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # conftest sets it; a user has not
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _command():
    return [sys.executable, "-m", "keras_csp"]


def trained_run(tmp_path_factory):
    """Once per session: a Darknet-style folder (obj.data, classes.names, train.txt, labels/)
    and ``python -m keras_csp train --data obj.data --time 0.05`` run in it; returns
    ``(root, run folder, names, completed process)``."""
    if "run" not in _RUN:
        from keras_csp.data import write_synthetic_dataset

        root = tmp_path_factory.mktemp("darknet")
        data = write_synthetic_dataset(root, num_images=8, seed=5, min_side=64, max_side=80, max_objects=2,
                                       min_object=10)
        names = pathlib.Path(data["names"]).read_text().split()
        (root / "obj.data").write_text(f"classes = {len(names)}\ntrain = train.txt\nvalid = train.txt\n"
                                       "names = classes.names\nbackup = backup/\n")
        done = subprocess.run(
            _command() + ["train", "--data", "obj.data", "--model", "helpers:tiny_detector",
                          "--image-size", "64", "--batch-size", "4", "--time", "0.05", "--augment", "none",
                          "--out", "run", "--no-tensorboard"],
            cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
        _RUN["run"] = (root, root / "run", names, done)
    return _RUN["run"]


def _tf_lines(text):
    return [line for line in text.splitlines() if is_tf_log_line(line.strip("\r"))]


def test_the_log_line_pattern_matches_what_tensorflow_prints():
    assert is_tf_log_line("I0000 00:00:1796118189.346543    6500 port.cc:153] oneDNN custom operations are on.")
    assert is_tf_log_line("W0000 00:00:1796118217.550622    6769 op_level_cost_estimator.cc:699] Error in "
                          "PredictCost() for the op: goo.gle/debugstr    op: \"CropAndResize\"")
    assert is_tf_log_line("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert is_tf_log_line("2024-01-02 10:11:12.123456: I tensorflow/core/util/port.cc:113] oneDNN custom")
    assert not is_tf_log_line("Traceback (most recent call last):")
    assert not is_tf_log_line("ValueError: config `image_size` must be a multiple of 32; received 65")
    assert verbose_requested(["train", "--verbose", "2"]) and verbose_requested(["--verbose=2"])
    assert not verbose_requested(["train", "--verbose", "1"])
    assert wanted([], {}) and not wanted([], {"TF_CPP_MIN_LOG_LEVEL": "0"}) and not wanted(["--verbose", "2"], {})


def test_help_prints_no_tensorflow_log_line():
    done = subprocess.run(_command() + ["--help"], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "usage: keras-csp" in done.stdout
    assert _tf_lines(done.stdout + done.stderr) == [], done.stderr
    assert done.stderr == ""


def test_help_with_verbose_2_lets_tensorflow_speak():
    # The contrast: without the quiet console the same start-up prints TensorFlow's lines.
    done = subprocess.run(_command() + ["train", "--verbose", "2", "--help"], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0
    assert _tf_lines(done.stderr), "TensorFlow printed nothing at start-up: the quiet-console test proves nothing"


def test_short_train_prints_no_tensorflow_log_line_and_no_nan(tmp_path_factory):
    root, run, names, done = trained_run(tmp_path_factory)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]
    assert _tf_lines(console) == [], _tf_lines(console)[:3]
    assert "PredictCost" not in console and "absl::InitializeLog" not in console
    assert not re.search(r"val_\w+: nan", console)
    assert "━" in done.stdout  # Keras' progress bar stays
    assert "time budget 0.05 min" in done.stdout and "final.keras" in done.stdout


def test_wrong_input_is_one_line_not_a_traceback(tmp_path):
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [a, b]\n")
    done = subprocess.run(_command() + ["train", "--data", str(tmp_path / "data.yaml"), "--no-tensorboard"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("keras-csp train: error: ") and "data.yaml" in lines[0] and "`train`" in lines[0]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

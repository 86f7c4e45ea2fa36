"""The ``shared_dir`` fixture: without ../shared a test that needs it skips on a workstation
and fails under CI (``CI=true``), so the Darknet-equality proofs cannot vanish as skips."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest


@pytest.mark.parametrize("ci, outcome", [("true", "1 error"), ("", "1 skipped")])
def test_missing_shared_fails_under_ci_and_skips_elsewhere(tmp_path, ci, outcome):
    tests = tmp_path / "project" / "tests"  # ../shared of this copy does not exist
    tests.mkdir(parents=True)
    shutil.copy(pathlib.Path(__file__).with_name("conftest.py"), tests / "conftest.py")
    (tests / "test_needs_shared.py").write_text("def test_uses_it(shared_dir):\n    assert shared_dir.is_dir()\n")
    env = dict(os.environ, CI=ci)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert outcome in run.stdout, run.stdout + run.stderr
    if ci:
        assert run.returncode != 0 and "CI must provide it" in run.stdout

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


def _on_ci():
    """True under CI (``CI=true``, as GitHub Actions and most CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def shared_dir():
    """../shared next to the project (read-only reference material). Absent, the tests that
    need it skip on a workstation but fail under CI, where a skip would hide lost proofs."""
    if not SHARED.is_dir():
        message = f"../shared reference material is not present (looked for {SHARED})"
        if _on_ci():
            pytest.fail(f"{message}; CI must provide it (the Darknet-equality proofs need it)", pytrace=False)
        pytest.skip(message)
    return SHARED

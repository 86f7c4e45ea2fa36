import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir():
    """../shared next to the project (read-only reference material); skip if absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared reference material is not present")
    return SHARED

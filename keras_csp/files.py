"""Files a kill can never leave half-written (standard library only, so every layer can use it)."""

import os
import tempfile


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file in the same folder and an atomic
    rename (``os.replace``); returns ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


__all__ = ["atomic_write_text"]

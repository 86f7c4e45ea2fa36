"""Writes that never leave a partial file at the target path: temp file or folder, then rename."""

import contextlib
import os
import shutil
import tempfile


def _check_parent(path):
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"Cannot write {path}: the folder {parent} does not exist.")
    return parent


def write_bytes(path, data):
    """Write ``data`` to ``path`` atomically (a temp file in the same folder, then rename)."""
    parent = _check_parent(path)
    handle, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part",
                                    dir=parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))


def check_directory_target(path, overwrite):
    """Raise before any work when ``path`` exists and may not be replaced."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is not a folder.")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True to replace it.")
    _check_parent(path)


@contextlib.contextmanager
def directory(path, overwrite=False):
    """Yield a temp folder next to ``path``; on success it replaces ``path``, else it is removed."""
    check_directory_target(path, overwrite)
    parent = os.path.dirname(os.path.abspath(path))
    temp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(path))}.", dir=parent)
    try:
        yield temp
        if os.path.isdir(path):
            old = tempfile.mkdtemp(prefix=".old.", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
            os.replace(temp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise

"""A quiet console for the ``keras-csp`` command: TensorFlow's log lines kept off it.

TensorFlow 2.21 prints its start-up notices (oneDNN, the CUDA stub, CPU instructions) through
absl *before* absl's logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not hide them,
and they come twice (two native libraries load). What works, measured:

1. ``TF_CPP_MIN_LOG_LEVEL=2`` (set only when the user has not set it) hides the INFO and
   WARNING lines of the run itself (``W0000 ... Error in PredictCost() ... CropAndResize``
   from grappler during ``fit``); ERROR and FATAL lines stay visible.
2. While ``import tensorflow`` runs (and the physical devices are listed, where CUDA logs
   ``failed call to cuInit`` at ERROR level on a machine without a GPU driver), file
   descriptor 2 points to a temporary file. Afterwards every line that is not a TensorFlow /
   absl log line (or is a FATAL one) is written to the real stderr: nothing else is lost.
3. Python warnings from other packages are ignored (``keras_csp``'s own stay), and the
   ``tensorflow`` / ``absl`` Python loggers show errors only.

``--verbose 2`` (or a ``TF_CPP_MIN_LOG_LEVEL`` the user set) turns all of this off.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings

# Lines of TensorFlow's C++ logging: absl's "I0000 00:00:1796118189.346543    6500 port.cc:153] ..."
# and the older "2024-01-01 12:00:00.123456: I tensorflow/core/...cc:123] ...", absl's notice
# about its pre-initialisation output, and the continuation line of the CPU-instruction notice.
TF_LOG_LINE = re.compile(
    r"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-/]+:\d+\]"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] [\w.\-/]+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
    r"|INFO: Created TensorFlow Lite (?:XNNPACK )?delegate for CPU\.)"
)
_FATAL = re.compile(r"^(?:F\d{4} |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: F )")

_state = {"applied": False}


def is_tf_log_line(line):
    """Whether ``line`` is one TensorFlow / absl C++ log line (what the console should not show)."""
    return bool(TF_LOG_LINE.match(line))


def verbose_requested(argv):
    """Whether ``argv`` asks for ``--verbose 2`` (or more): then TensorFlow speaks as it likes."""
    argv = list(argv)
    for i, token in enumerate(argv):
        value = None
        if token == "--verbose" and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith("--verbose="):
            value = token.split("=", 1)[1]
        if value is not None:
            try:
                if int(value) >= 2:
                    return True
            except ValueError:
                pass
    return False


def wanted(argv=None, environ=None):
    """Whether the quiet console applies: not with ``--verbose 2``, nor when the user set
    ``TF_CPP_MIN_LOG_LEVEL`` (the user's choice stands)."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else argv
    return "TF_CPP_MIN_LOG_LEVEL" not in environ and not verbose_requested(argv)


def _replay(text, stream):
    kept = [line for line in text.splitlines(keepends=True) if not is_tf_log_line(line) or _FATAL.match(line)]
    if kept:
        stream.write("".join(kept))
        stream.flush()
    return len(kept)


class _LiveFilter:
    """fd 2 into a pipe; a thread forwards every line that is not a TensorFlow log line to
    the real stderr as it arrives (a carriage-return progress bar passes at once)."""

    def __init__(self):
        import threading

        sys.stderr.flush()
        self.saved = os.dup(2)
        self.read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _write(self, data):
        os.write(self.saved, data.encode("utf-8", "replace"))

    def _pump(self):
        pending = ""
        while True:
            chunk = os.read(self.read_end, 65536)
            if not chunk:
                break
            pending += chunk.decode("utf-8", "replace")
            *lines, pending = pending.split("\n")
            kept = [line + "\n" for line in lines if not is_tf_log_line(line) or _FATAL.match(line)]
            if "\r" in pending:  # a progress bar redrawing its line: show it now
                head, pending = pending.rsplit("\r", 1)
                kept.append(head + "\r")
            if kept:
                self._write("".join(kept))
        if pending and (not is_tf_log_line(pending) or _FATAL.match(pending)):
            self._write(pending)

    def close(self):
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # closes the pipe's last write end: the thread sees EOF
        self.thread.join(timeout=5)
        os.close(self.read_end)
        os.close(self.saved)


@contextlib.contextmanager
def filtered_stderr():
    """Within the block, lines written to fd 2 (by Python or by C++ code: CUDA's cuInit,
    LiteRT's delegate notice) reach the real stderr unless they are TensorFlow / TFLite log
    lines, as they are written. Does nothing unless the quiet console was applied."""
    if not _state["applied"]:
        yield
        return
    live = _LiveFilter()
    try:
        yield
    finally:
        live.close()


def import_tensorflow_quietly():
    """``import tensorflow`` (and Keras) with fd 2 sent to a file, then replay what was not a
    TensorFlow log line; returns the number of lines held back."""
    if "tensorflow" in sys.modules:
        return 0
    sys.stderr.flush()
    saved = os.dup(2)
    held = 0
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            if os.environ.get("TF_USE_LEGACY_KERAS", "0").strip().lower() not in ("1", "true", "yes"):
                import keras  # noqa: F401  (Keras loads more of TensorFlow's libraries)
            tf.config.list_physical_devices()  # CUDA's cuInit logs here on a machine without a driver
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = _replay(text, sys.stderr)
            held = len(text.splitlines()) - kept
    return held


def apply(argv=None):
    """Make the console quiet (see the module docstring) unless ``--verbose 2`` or the user's
    ``TF_CPP_MIN_LOG_LEVEL`` says otherwise. Call it before TensorFlow is imported."""
    if _state["applied"] or not wanted(argv):
        return False
    _state["applied"] = True
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    warnings.filterwarnings("ignore")
    warnings.filterwarnings("default", module=r"keras_csp(\.|$)")
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import_tensorflow_quietly()
    return True


def is_command_line():
    """Whether this process is the ``keras-csp`` command (or ``python -m keras_csp``)."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if script.removesuffix(".exe") == "keras-csp":
        return True
    orig = list(getattr(sys, "orig_argv", []))
    return "-m" in orig and orig.index("-m") + 1 < len(orig) and orig[orig.index("-m") + 1] in (
        "keras_csp", "keras_csp.__main__")


__all__ = ["apply", "filtered_stderr", "import_tensorflow_quietly", "is_command_line", "is_tf_log_line", "verbose_requested", "wanted"]

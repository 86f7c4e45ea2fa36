"""Timing helpers shared by the benchmarks: interleaved wall-clock rounds and a LiteRT runner.

Interleaving (every function called once per round, in turn) makes load changes on the
machine hit every contender alike, so the ratios printed next to a peer stay fair.
"""

import os
import sys
import time


def interleaved_times(functions, arg, repeats, warmup=2, force=None):
    """Per-call wall times (seconds) of each ``fn(arg)``: ``[[t, ...] per function]``.

    ``force`` turns a result into computed values (e.g. ``.numpy()`` on tensors) inside the
    timed region, so that asynchronous work is counted."""
    force = force or (lambda value: value)
    for fn in functions:
        for _ in range(warmup):
            force(fn(arg))
    times = [[] for _ in functions]
    for _ in range(repeats):
        for i, fn in enumerate(functions):
            start = time.perf_counter()
            force(fn(arg))
            times[i].append(time.perf_counter() - start)
    return times


def tflite_runner(path, threads):
    """``run(image) -> {output name: float array}`` for one ``[h, w, 3]`` float image: the
    device-side runner of ``tflite/yolo_numpy.py`` (it reads the file's JSON sidecar,
    quantizes an integer input and dequantizes outputs), so the benchmarks time what ships."""
    tflite_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tflite")
    if tflite_dir not in sys.path:
        sys.path.insert(0, tflite_dir)
    from yolo_numpy import TFLiteModel

    return TFLiteModel(str(path), threads=threads)

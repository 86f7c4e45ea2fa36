"""Timing helpers shared by the benchmarks: interleaved wall-clock rounds and a LiteRT runner.

Interleaving (every function called once per round, in turn) makes load changes on the
machine hit every contender alike, so the ratios printed next to a peer stay fair. The rounds
are ``keras_csp.export.benchmark.interleaved_times`` (what ``keras-csp benchmark`` times with).
"""

import os
import sys

from keras_csp.export.benchmark import interleaved_times


def tflite_runner(path, threads):
    """``run(image) -> {output name: float array}`` for one ``[h, w, 3]`` float image: the
    device-side runner of ``tflite/yolo_numpy.py`` (it reads the file's JSON sidecar,
    quantizes an integer input and dequantizes outputs), so the benchmarks time what ships."""
    tflite_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tflite")
    if tflite_dir not in sys.path:
        sys.path.insert(0, tflite_dir)
    from yolo_numpy import TFLiteModel

    return TFLiteModel(str(path), threads=threads)


__all__ = ["interleaved_times", "tflite_runner"]

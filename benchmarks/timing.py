"""Timing helpers shared by the benchmarks: interleaved wall-clock rounds and a LiteRT runner.

Interleaving (every function called once per round, in turn) makes load changes on the
machine hit every contender alike, so the ratios printed next to a peer stay fair.
"""

import time

import numpy as np


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
    """``run(batch) -> {output name: float array}`` for a .tflite file's serving signature
    (input ``images``): quantizes a float batch for an integer input, dequantizes outputs."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    runner = interpreter.get_signature_runner("serving_default")
    detail = runner.get_input_details()["images"]
    outputs = runner.get_output_details()

    def run(batch):
        batch = np.asarray(batch, np.float32)
        if detail["dtype"] != np.float32:
            scale, zero = detail["quantization"]
            batch = np.round(batch / scale + zero).astype(detail["dtype"])
        result = runner(images=batch)
        values = {}
        for name, value in result.items():
            scale, zero = outputs[name]["quantization"]
            values[name] = ((value.astype(np.float32) - zero) * scale
                            if scale and value.dtype != np.float32 else value)
        return values

    return run

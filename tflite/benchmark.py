#!/usr/bin/env python3
"""Latency of a .tflite file: p50 / p90 / mean of ``invoke`` over random inputs.

Needs only ai-edge-litert (or tflite-runtime) and NumPy.

    python benchmark.py model.tflite --threads 2 --runs 100
    python benchmark.py model.tflite --gpu-delegate libtensorflowlite_gpu_delegate.so

CPU runs use XNNPACK (LiteRT's default CPU delegate for float and int8 graphs). Prints one
line per model; ``--json`` prints the numbers as JSON.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import yolo_numpy  # noqa: E402


def random_input(detail, rng):
    shape, dtype = detail["shape"], detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.random(shape, dtype=np.float32).astype(dtype)


def benchmark(model_path, threads=2, runs=50, warmup=5, gpu_delegate=None, seed=0):
    """Seconds per ``invoke`` (list) after ``warmup`` runs; inputs random but fixed."""
    module = yolo_numpy._interpreter_module()
    delegates = [module.load_delegate(gpu_delegate)] if gpu_delegate else None
    interpreter = module.Interpreter(model_path=model_path, num_threads=threads,
                                     experimental_delegates=delegates)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], random_input(detail, rng))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return times


def summary(times):
    ms = np.asarray(times) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "mean_ms": float(ms.mean()), "runs": len(ms)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help=".tflite files")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--gpu-delegate", help="path of the TFLite GPU delegate library")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.threads < 1 or args.warmup < 0:
        parser.error("--runs and --threads must be >= 1, --warmup >= 0")
    results = []
    for path in args.models:
        stats = summary(benchmark(path, args.threads, args.runs, args.warmup, args.gpu_delegate))
        stats.update(model=path, threads=args.threads,
                     delegate="gpu" if args.gpu_delegate else "cpu (xnnpack)")
        results.append(stats)
        if not args.json:
            print(f"{path}: p50 {stats['p50_ms']:.2f} ms  p90 {stats['p90_ms']:.2f} ms  "
                  f"mean {stats['mean_ms']:.2f} ms  ({args.runs} runs, {args.threads} threads, "
                  f"{stats['delegate']})")
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

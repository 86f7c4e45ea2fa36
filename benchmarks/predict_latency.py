"""Batch-1 inference latency of CSPDarknet53 (ImageNet classifier, 256x256): keras_csp in
TensorFlow against timm's ``cspdarknet53`` in PyTorch, measured in the same run.

keras_csp runs ``model(x, training=False)`` in a ``tf.function`` (and with XLA), with the
package's batch norm (one ``FusedBatchNormV3`` per conv, which the graph optimizer folds into
the conv and its activation) and, for the comparison, with Keras' own batch norm (a multiply
and an add per conv: the package before this change). timm runs eager ``model(x)`` under
``torch.inference_mode()`` with as many threads as TensorFlow uses, in the benchmark
environment (``--bench-python``; torch and timm are never keras_csp dependencies). The runs
alternate (keras_csp, timm, keras_csp, timm) so a change of load hits both; medians are printed
with the ratio timm / keras_csp (above 1: keras_csp is faster).

    python benchmarks/predict_latency.py --repeats 30
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from recipe_vs_ultralytics import BENCH_PYTHON, cpu_info  # noqa: E402

TORCH_WORKER = r"""
import json, sys, time
import torch, timm
size, repeats, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
model = timm.create_model("cspdarknet53", pretrained=False).eval()
x = torch.randn(1, 3, size, size)
with torch.inference_mode():
    for _ in range(5):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
print(json.dumps({"times": times, "params": sum(p.numel() for p in model.parameters()), "torch": torch.__version__,
                  "timm": timm.__version__}))
"""


def keras_functions(size, keras_bn=False):
    """{name: callable} of keras_csp's CSPDarknet53 at ``size`` (``keras_bn``: Keras' own BN)."""
    import tensorflow as tf

    import keras_csp
    from keras_csp.backend import keras
    from keras_csp.layers import normalization

    if keras_bn:  # the package before the inference fusion: every BN through Keras' layer
        normalization.FusedBatchNormalization.call = keras.layers.BatchNormalization.call
    model = keras_csp.CSPDarknet53(weights=None, input_shape=(size, size, 3))
    functions = {}
    for name, jit in (("tf.function", False), ("tf.function + XLA", True)):
        fn = tf.function(lambda t: model(t, training=False), jit_compile=jit, autograph=False)
        functions[name] = fn
    return functions, model.count_params()


def time_keras(functions, size, repeats):
    import tensorflow as tf

    x = tf.random.uniform((1, size, size, 3))
    out = {}
    for name, fn in functions.items():
        for _ in range(5):
            fn(x).numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x).numpy()
            times.append(time.perf_counter() - start)
        out[name] = times
    return out


def time_timm(python, size, repeats, threads):
    done = subprocess.run([python, "-c", TORCH_WORKER, str(size), str(repeats), str(threads)],
                          capture_output=True, text=True)
    if done.returncode:
        return None, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of keras_csp and timm")
    parser.add_argument("--bench-python", default=BENCH_PYTHON, help="a Python with torch and timm")
    parser.add_argument("--keras-bn", action="store_true", help=argparse.SUPPRESS)  # the worker for the old path
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # one keras_csp measurement in a fresh process (the BN choice is process-wide)
        functions, params = keras_functions(args.size, keras_bn=args.keras_bn)
        print(json.dumps({"times": time_keras(functions, args.size, args.repeats), "params": params}))
        return 0

    import tensorflow as tf

    threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    rows = {}
    peer_error = None
    for _ in range(args.rounds):
        for label, extra in (("keras_csp", []), ("keras_csp, Keras BN (before)", ["--keras-bn"])):
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--size", str(args.size),
                                   "--repeats", str(args.repeats), *extra], capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            for name, times in result["times"].items():
                rows.setdefault((f"{label} {name}", result["params"]), []).extend(times)
        if os.path.exists(args.bench_python):
            peer, peer_error = time_timm(args.bench_python, args.size, args.repeats, threads)
            if peer:
                rows.setdefault((f"timm {peer['timm']} (torch {peer['torch']}) eager", peer["params"]), []).extend(
                    peer["times"])
        else:
            peer_error = f"{args.bench_python} not found"
    model, simd, _ = cpu_info()
    print(f"CPU: {model}, {os.cpu_count()} cores; flags: {' '.join(simd)}; load average {os.getloadavg()[0]:.1f}; "
          f"CSPDarknet53 classifier at {args.size}, batch 1, {threads} threads, {args.rounds} x {args.repeats} runs")
    timm_ms = next((1000 * np.median(t) for (name, _), t in rows.items() if name.startswith("timm")), None)
    print("| implementation | parameters | median ms | timm / this |")
    print("|---|---|---|---|")
    for (name, params), times in rows.items():
        ms = 1000 * float(np.median(times))
        ratio = f"{timm_ms / ms:.2f}" if timm_ms else "-"
        print(f"| {name} | {params:,} | {ms:.1f} | {ratio} |")
    if peer_error:
        print(f"timm not measured: {peer_error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

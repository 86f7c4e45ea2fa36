"""``mixed_precision="auto"``: the Keras dtype policy this machine trains fastest with.

bfloat16 pays only where the CPU multiplies in it natively (AMX or AVX512_BF16: a 4096^2
matmul measured 3.9x faster in bf16 on an AMX CPU, and no gain without either; on an AMD EPYC
with AVX512_BF16 and no AMX the recipe's detector at 320, batch 32, trained 11% faster, fit 0.665
against 0.745 s per step, and level at 128: `python benchmarks/train_throughput.py --models
demo,recipe`); float16 pays on a GPU; everywhere else float32 is the fastest. The loss, the box decode and
the weight average stay in float32 in every policy (Keras keeps variables in float32 and the
loss casts its inputs).
"""

import contextlib
import os

from keras_csp.backend import keras, tf

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
POLICIES = ("auto", "none", "mixed_float16", "mixed_bfloat16")


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (empty where /proc/cpuinfo is not readable)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def auto_policy(flags=None, gpus=None):
    """"mixed_float16" with a GPU, "mixed_bfloat16" on a CPU with native bf16 matmul, else
    "none" (float32). ``flags`` / ``gpus`` override what this machine reports (tests)."""
    if gpus is None:
        gpus = len(tf.config.list_physical_devices("GPU"))
    if gpus:
        return "mixed_float16"
    flags = cpu_flags() if flags is None else frozenset(flags)
    return "mixed_bfloat16" if flags & set(BF16_FLAGS) else "none"


@contextlib.contextmanager
def global_policy(name=None):
    """Keras' dtype policy is process-wide: restore it on exit, and set it to ``name`` inside
    when given (``"float32"`` to build a deployable copy of a model trained in mixed precision)."""
    previous = keras.mixed_precision.global_policy()
    if name is not None:
        keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def resolve_policy(name):
    """The concrete policy for a config value (``"auto"`` resolved; others as given);
    ``KERAS_CSP_MIXED_PRECISION`` overrides ``auto`` (e.g. to force float32)."""
    if name not in POLICIES:
        raise ValueError(f"mixed_precision must be one of {POLICIES}; received {name!r}")
    if name == "auto":
        return os.environ.get("KERAS_CSP_MIXED_PRECISION") or auto_policy()
    return name

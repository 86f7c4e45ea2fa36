"""``mixed_precision="auto"`` picks the policy from the hardware: bf16 only where the CPU
multiplies in bf16 natively, fp16 on a GPU, float32 otherwise."""

import pytest

from keras_csp.training.precision import auto_policy, cpu_flags, resolve_policy


def test_auto_follows_the_hardware():
    assert auto_policy(flags={"avx512f", "amx_bf16", "amx_tile"}, gpus=0) == "mixed_bfloat16"
    assert auto_policy(flags={"avx512f", "avx512_bf16"}, gpus=0) == "mixed_bfloat16"
    assert auto_policy(flags={"avx2", "avx512f", "avx512_vnni"}, gpus=0) == "none"
    assert auto_policy(flags={"amx_bf16"}, gpus=1) == "mixed_float16"


def test_this_machine_reads_its_flags(tmp_path):
    flags = cpu_flags()
    expected = "mixed_bfloat16" if flags & {"amx_bf16", "avx512_bf16"} else "none"
    assert auto_policy(gpus=0) == expected
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16\n")
    assert cpu_flags(str(fake)) == {"fpu", "sse2", "avx512_bf16"}
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_resolve_and_override(monkeypatch):
    monkeypatch.setenv("KERAS_CSP_MIXED_PRECISION", "none")
    assert resolve_policy("auto") == "none"
    assert resolve_policy("mixed_float16") == "mixed_float16"
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        resolve_policy("fp8")


def test_a_run_trained_in_bf16_saves_float32_detector_files(tmp_path):
    """``--mixed-precision auto`` trains in bf16 on AVX512_BF16 / AMX CPUs; the ``.keras`` files a
    run writes must still be float32 detectors (TFLite has no bf16 kernels; outputs not rounded)."""
    import numpy as np

    from helpers import tiny_detector
    from keras_csp.backend import keras
    from keras_csp.training.restore import save_detector_files

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        trained = tiny_detector(2, (64, 64, 3))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert any(layer.compute_dtype == "bfloat16" for layer in trained.detector.layers)
    trained.save_weights(tmp_path / "final.weights.h5")
    (path,) = save_detector_files(trained, tmp_path, ["a", "b"], which=("final",))
    saved = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert {layer.compute_dtype for layer in saved.detector.layers} == {"float32"}
    reference = tiny_detector(2, (64, 64, 3))  # the same network built in float32
    reference.load_weights(tmp_path / "final.weights.h5")
    image = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype(np.float32)
    for got, want in zip(saved.detector(image), reference.detector(image)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)

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

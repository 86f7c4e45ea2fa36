"""The reconstructed small detectors: the EFM memory claim measured with keras_csp.profile (CIO with
and without Maxout) and the report CLI. Their Table 2 / Table 4 counts: tests/test_registry_models.py."""

import pytest

import keras_csp
from keras_csp import detectors
from keras_csp.detectors.necks import EFM

# Table 2 / Table 4 counts of every registered detector: tests/test_registry_models.py (COUNTS).


def test_efm_maxout_cuts_memory_and_computation():
    """Section 3.2 / Section 1: Maxout compresses the fused pyramid. Measured with profile():
    the CIO (input + output elements) the fusion convs read and write, and the BFLOPs."""
    from keras_csp.models.small import CSPPeleeNet

    def measure(maxout):
        backbone = CSPPeleeNet(include_top=False, input_shape=(416, 416, 3))
        det = detectors.YOLODetector(backbone, EFM((64, 112, 224), maxout=maxout))
        prof = keras_csp.profile(det.detector)
        fusion = [layer for layer in prof.layers if layer.name.endswith("_out_conv")]
        fused_inputs = sum(layer.input_shape[0] * layer.input_shape[1] * layer.input_shape[2]
                           for layer in fusion)
        return fused_inputs, sum(layer.cio for layer in fusion), prof.bflops

    fused_in, fusion_cio, bflops = measure(True)
    fused_in_raw, fusion_cio_raw, bflops_raw = measure(False)
    # P3 and P4 fuse three maps (-2/3), P5 fuses two (CSPPeleeNet has no P6, -1/2).
    assert fused_in == 64 * 52 * 52 + 112 * 26 * 26 + 224 * 13 * 13
    assert fused_in_raw == 3 * 64 * 52 * 52 + 3 * 112 * 26 * 26 + 2 * 224 * 13 * 13
    assert 1 - fusion_cio / fusion_cio_raw > 0.35
    assert bflops < 0.8 * bflops_raw


def test_report_cli_prints_measured_and_published_counts(capsys):
    from keras_csp.detectors import report

    report.main(["CSPDenseNetb-Ref-PRN"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["detector", "size", "BFLOPs"]
    name, size, bflops, target, diff = lines[1].split()[:5]
    assert (name, size, float(target)) == ("CSPDenseNetb-Ref-PRN", "320", 1.59)
    assert abs(float(diff.rstrip("%"))) <= 5.0
    with pytest.raises(SystemExit):
        report.main(["NoSuchDetector"])

"""The reconstructed small detectors (Table 2, Table 4) against the paper's counts (within 5%),
and the EFM memory claim measured with keras_csp.profile (CIO with and without Maxout)."""

import pytest

import keras_csp
from keras_csp import detectors
from keras_csp.detectors.necks import EFM

# builder, input side, paper BFLOPs, paper parameters (None: not given)
TABLE4 = {
    "CSPPeleeNetEFMSAM": (416, 5.07, 4.31e6),
    "CSPPeleeNetRefEFMSAM": (320, 3.43, 5.67e6),
    "CSPDenseNetRefEFMSAM": (320, 2.89, 5.05e6),
    "CSPPeleeNetRefPRN": (320, 2.56, 4.59e6),
    "CSPPeleeNetRefPRN3l": (320, 3.15, 4.79e6),
    "CSPDenseNetRefPRN": (320, 2.01, 3.97e6),
    "CSPDenseNetbRefPRN": (320, 1.59, 1.87e6),
    "PeleeNetPRN": (416, 4.04, 3.16e6),
}
# Table 2: heads on CSPPeleeNet at 416 (BFLOPs only), and EFM(SAM) at 512 (Table 4).
TABLE2 = {
    ("CSPPeleeNet-PRN", 416): 3.590,
    ("CSPPeleeNet-PRN-3l", 416): 4.586,
    ("CSPPeleeNet-GFM", 416): 4.605,
    ("CSPPeleeNet-EFM", 416): 4.868,
    ("CSPPeleeNet-EFM(SPP)", 416): 4.863,
    ("CSPPeleeNet-EFM(SAM)", 512): 7.68,
}


def _within(measured, target, tolerance=0.05):
    return abs(measured / target - 1) <= tolerance


@pytest.mark.parametrize("builder", sorted(TABLE4))
def test_table4_reconstructions_within_5_percent(builder):
    size, bflops, params = TABLE4[builder]
    det = getattr(detectors, builder)()
    assert det.detector.input_shape[1:3] == (size, size)
    prof = keras_csp.profile(det.detector)
    assert _within(prof.bflops, bflops), f"{builder}: {prof.bflops:.3f} BFLOPs vs {bflops}"
    assert _within(prof.params, params), f"{builder}: {prof.params:,} vs {params:,.0f}"


@pytest.mark.slow
@pytest.mark.parametrize("name,size", sorted(TABLE2))
def test_table2_heads_within_5_percent(name, size):
    det = detectors.build_detector(name, input_shape=(size, size, 3))
    prof = keras_csp.profile(det.detector)
    assert _within(prof.bflops, TABLE2[(name, size)]), prof.bflops


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

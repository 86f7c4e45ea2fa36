"""benchmarks/figure7_bottleneck.py: the paper's Figure 7 (computational bottlenecks at 416x416).

Builds the three detectors once (profiling only: no weights, no training; ~10 s) and checks
what Section 4.5 says of them, and the script's table, JSON and plot.
"""

import importlib.util
import json
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                      "figure7_bottleneck.py")


def _script():
    spec = importlib.util.spec_from_file_location("figure7_bottleneck", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def figure7(tmp_path_factory):
    out = tmp_path_factory.mktemp("figure7")
    script = _script()
    result = script.main(["--sizes", "224", "--no-sam", "--json", str(out / "f7.json"),
                          "--plot", str(out / "f7.png")])
    return script, result, out


def _model(result, label):
    return next(m for m in result["models"] if m["model"] == label)


def _reading(result, compare, start):
    return next(r for r in result["readings"] if r["compare"] == compare and r["reading"].startswith(start))


def test_peleenet_yolo_bottleneck_is_in_the_head(figure7):
    _, result, _ = figure7
    yolo = _model(result, "PeleeNet-YOLO")
    assert yolo["bottleneck"]["part"] == "head"
    # Every conv tied for the maximum is one of the FPN's convs after the pyramid is merged.
    assert yolo["bottleneck_ties"] and all(name.startswith("neck_") for name in yolo["bottleneck_ties"])
    assert yolo["head_bottleneck"]["bflops"] > 4 * yolo["backbone_bottleneck"]["bflops"]


def test_peleenet_prn_bottleneck_is_a_backbone_transition(figure7):
    _, result, _ = figure7
    prn = _model(result, "PeleeNet-PRN")
    assert prn["bottleneck"]["part"] == "backbone"
    assert all("transition" in name for name in prn["bottleneck_ties"]), prn["bottleneck_ties"]
    assert prn["head_bottleneck"]["bflops"] < prn["bottleneck"]["bflops"]


def test_csp_lowers_the_backbone_bottleneck(figure7):
    _, result, _ = figure7
    pelee = _model(result, "PeleeNet-PRN")["backbone_bottleneck"]["bflops"]
    csp = _model(result, "CSPPeleeNet-EFM")["backbone_bottleneck"]["bflops"]
    assert csp < pelee
    backbone = "CSPPeleeNet vs PeleeNet backbone"
    whole = _reading(result, backbone, "per conv, whole backbone (")
    assert whole["cut"] == pytest.approx(1 - csp / pelee)
    # Leaving the stride-4 stage out gives the larger cut the paper quotes (44%).
    strided = _reading(result, backbone, "per conv, stride >= 8")
    assert strided["cut"] > whole["cut"]
    assert strided["cut"] == pytest.approx(strided["paper"], abs=0.01)
    # Resolution does not change the per-conv cut (every conv scales with H x W).
    at_224 = _reading(result, backbone, "per conv, whole backbone at 224")
    assert at_224["cut"] == pytest.approx(whole["cut"], abs=0.005)


def test_efm_cuts_the_yolo_bottleneck(figure7):
    _, result, _ = figure7
    overall = _reading(result, "CSPPeleeNet-EFM vs PeleeNet-YOLO", "per conv, whole detector")
    assert overall["old"]["name"] in _model(result, "PeleeNet-YOLO")["bottleneck_ties"]
    assert overall["new"]["name"] == _model(result, "CSPPeleeNet-EFM")["bottleneck"]["name"]
    assert overall["cut"] == pytest.approx(overall["paper"], abs=0.06)


def test_stage_sums_add_up(figure7):
    _, result, _ = figure7
    for model in result["models"]:
        assert sum(model["stage_bflops"].values()) == pytest.approx(model["bflops"])


def test_table_json_and_plot(figure7):
    script, result, out = figure7
    text = script.report(result)
    assert "| paper |" in text and "paper BFLOPs" in text
    assert "44%" in text and "80%" in text
    assert [m["model"] for m in result["models"]] == ["PeleeNet-YOLO", "PeleeNet-PRN", "CSPPeleeNet-EFM"]
    saved = json.loads((out / "f7.json").read_text())
    assert saved["readings"] == json.loads(json.dumps(result["readings"]))
    assert (out / "f7.png").stat().st_size > 1000

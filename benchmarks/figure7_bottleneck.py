"""The paper's Figure 7 (computational bottleneck of PeleeNet-YOLO, PeleeNet-PRN and
CSPPeleeNet-EFM, 416x416, 80 classes) as numbers, next to the ratios the paper quotes.

The computational bottleneck is the conv with the most BFLOPs (``Profile.bottleneck``).
Section 4.5: PeleeNet-YOLO's lies in the head where it integrates the feature pyramid,
PeleeNet-PRN's on the transition layers of the PeleeNet backbone; CSPPeleeNet-EFM "reduces
the PeleeNet backbone 44% computational bottleneck and reduces PeleeNet-YOLO 80%". For each
model this prints total BFLOPs, the bottleneck conv (backbone or head) and the backbone's
bottleneck, then the two cuts under several readings (per conv, stride >= 8 only, stage by
stage, per stage sums, other input sizes), each next to the paper's figure.

    python benchmarks/figure7_bottleneck.py [--size 416] [--plot fig7.png] [--json fig7.json]

PeleeNet-YOLO is not a named detector (the paper gives no counts for it): it is the PeleeNet
backbone with yolov3.cfg's FPN head unchanged (``YOLODetector(PeleeNet, neck="fpn")``).
The models are the library's reconstructions (docs/small_models.md); nothing is tuned here.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Figure 7's three models, in the figure's order: (label, how to build it, paper BFLOPs at 416).
MODELS = (
    ("PeleeNet-YOLO", "PeleeNet + fpn", None),  # no count in the paper
    ("PeleeNet-PRN", "PeleeNet-PRN", 4.04),  # Table 4
    ("CSPPeleeNet-EFM", "CSPPeleeNet-EFM", 4.868),  # Table 2
)
EXTRA = ("CSPPeleeNet-EFM(SAM)", "CSPPeleeNet-EFM(SAM)", 5.068)  # Table 4's final model
PAPER_BACKBONE_CUT = 0.44  # "reduces the PeleeNet backbone 44% computational bottleneck"
PAPER_OVERALL_CUT = 0.80  # "reduces PeleeNet-YOLO 80% computational bottleneck"
SIZES = (224, 320, 416, 512, 608)


def build(how, size, num_classes=80):
    """The functional network of one Figure 7 model at ``size`` x ``size``."""
    import keras_csp
    from keras_csp.detectors import YOLODetector, build_detector

    if how == "PeleeNet + fpn":
        backbone = keras_csp.PeleeNet(include_top=False, input_shape=(size, size, 3))
        detector = YOLODetector(backbone, neck="fpn", num_classes=num_classes, name="PeleeNet_YOLO")
    else:
        detector = build_detector(how, num_classes=num_classes, input_shape=(size, size, 3))
    return detector


def _layer(layer):
    return {"name": layer.name, "bflops": layer.bflops, "input": list(layer.input_shape),
            "output": list(layer.output_shape)}


def _group(name, in_backbone):
    """Stage of a backbone conv (``stem1``, ``stage2``, ...; a CSP stage's fusion conv run
    after the pool is named, and counted, with the next stage) or pyramid level of a head
    conv (``head_p3`` for ``neck_p3_*`` and ``head_p3_conv``)."""
    parts = name.split("_")
    if in_backbone:
        return parts[0]
    level = parts[1] if len(parts) > 1 and parts[1][:1] == "p" and parts[1][1:].isdigit() else "other"
    return f"head_{level}"


def analyse(label, detector, paper_bflops=None):
    """Per-model summary: totals, bottleneck conv (with ties), backbone bottleneck, per-stage sums."""
    import keras_csp

    prof = keras_csp.profile(detector.detector)
    backbone_names = {layer.name for layer in keras_csp.profile(detector.backbone).layers}
    top = prof.bottleneck
    backbone = [layer for layer in prof.layers if layer.name in backbone_names]
    head = [layer for layer in prof.layers if layer.name not in backbone_names]
    stages = {}
    for layer in prof.layers:
        key = _group(layer.name, layer.name in backbone_names)
        stages[key] = stages.get(key, 0) + layer.flops
    return {
        "model": label,
        "bflops": prof.bflops,
        "paper_bflops": paper_bflops,
        "convs": len(prof.layers),
        "bottleneck": dict(_layer(top), part="backbone" if top.name in backbone_names else "head"),
        "bottleneck_ties": [layer.name for layer in prof.layers if layer.flops == top.flops],
        "backbone_bottleneck": _layer(max(backbone, key=lambda layer: layer.flops)),
        "head_bottleneck": _layer(max(head, key=lambda layer: layer.flops)),
        "stage_bflops": {key: flops / 1e9 for key, flops in stages.items()},
        "_profile": prof,
        "_backbone_layers": backbone,
    }


def _cut(old, new):
    return 1.0 - new / old


def _reading(reading, compare, old, new, paper=None):
    return {"reading": reading, "compare": compare, "old": old, "new": new,
            "cut": _cut(old["bflops"], new["bflops"]), "paper": paper}


def _max(layers, where=lambda layer: True):
    return _layer(max((layer for layer in layers if where(layer)), key=lambda layer: layer.flops))


def _stage_max(summary, prefix):
    key, value = max(((k, v) for k, v in summary["stage_bflops"].items() if k.startswith(prefix)),
                     key=lambda kv: kv[1])
    return {"name": key, "bflops": value}


def readings(models, size):
    """Every reading of the two cuts: dicts with the compared layers / stages and the cut."""
    yolo, prn, efm = models["PeleeNet-YOLO"], models["PeleeNet-PRN"], models["CSPPeleeNet-EFM"]
    pelee_bb, csp_bb = prn["_backbone_layers"], efm["_backbone_layers"]
    backbone = "CSPPeleeNet vs PeleeNet backbone"
    rows = [
        _reading("per conv, whole backbone (the paper's definition)", backbone,
                 prn["backbone_bottleneck"], efm["backbone_bottleneck"], PAPER_BACKBONE_CUT),
        _reading("per conv, stride >= 8 only (stem and stage 1 left out)", backbone,
                 _max(pelee_bb, lambda l: l.output_shape[0] <= size // 8),
                 _max(csp_bb, lambda l: l.output_shape[0] <= size // 8), PAPER_BACKBONE_CUT),
    ]
    for stage in ("stage1", "stage2", "stage3", "stage4"):
        in_stage = lambda l, s=stage: l.name.startswith(s + "_")  # noqa: E731
        rows.append(_reading(f"per conv, {stage} only", backbone, _max(pelee_bb, in_stage),
                             _max(csp_bb, in_stage), PAPER_BACKBONE_CUT))
    rows.append(_reading("per stage (sum of the stage's convs)", backbone,
                         _stage_max(prn, "st"), _stage_max(efm, "st"), PAPER_BACKBONE_CUT))
    overall = "CSPPeleeNet-EFM vs PeleeNet-YOLO"
    rows += [
        _reading("per conv, whole detector (the paper's definition)", overall,
                 yolo["bottleneck"], efm["bottleneck"], PAPER_OVERALL_CUT),
        _reading("per stage / pyramid level (sum of its convs)", overall,
                 _stage_max(yolo, ""), _stage_max(efm, ""), PAPER_OVERALL_CUT),
    ]
    if "CSPPeleeNet-EFM(SAM)" in models:
        rows.append(_reading("per conv, with EFM(SAM) (Table 4's final model)",
                             "CSPPeleeNet-EFM(SAM) vs PeleeNet-YOLO", yolo["bottleneck"],
                             models["CSPPeleeNet-EFM(SAM)"]["bottleneck"], PAPER_OVERALL_CUT))
    rows += [
        _reading("per conv, CSPPeleeNet-EFM backbone max vs PeleeNet-YOLO", overall,
                 yolo["bottleneck"], efm["backbone_bottleneck"], PAPER_OVERALL_CUT),
        _reading("per conv, whole detector (not quoted by the paper)",
                 "CSPPeleeNet-EFM vs PeleeNet-PRN", prn["bottleneck"], efm["bottleneck"]),
    ]
    return rows


def size_readings(sizes):
    """The per-conv backbone cut (CSPPeleeNet vs PeleeNet) at other input sizes."""
    import keras_csp

    rows = []
    for size in sizes:
        maxima = []
        for builder in (keras_csp.PeleeNet, keras_csp.CSPPeleeNet):
            prof = keras_csp.profile(builder(include_top=False, input_shape=(size, size, 3)))
            maxima.append(_layer(prof.bottleneck))
        rows.append(_reading(f"per conv, whole backbone at {size}x{size}",
                             "CSPPeleeNet vs PeleeNet backbone", maxima[0], maxima[1], PAPER_BACKBONE_CUT))
    return rows


def run(size=416, num_classes=80, sizes=SIZES, sam=True, plot=None):
    """Build the models, analyse them; ``{"size", "models", "readings"}`` (JSON-ready)."""
    specs = MODELS + ((EXTRA,) if sam else ())
    models = {label: analyse(label, build(how, size, num_classes), paper) for label, how, paper in specs}
    rows = readings(models, size) + size_readings([s for s in sizes if s != size])
    if plot:
        profiles = [models[label]["_profile"] for label, _, _ in MODELS]
        profiles[0].plot(plot, profiles[1:])
    public = [{k: v for k, v in m.items() if not k.startswith("_")} for m in models.values()]
    return {"size": size, "num_classes": num_classes, "models": public, "readings": rows}


def _pct(value):
    return "-" if value is None else f"{100 * value:.0f}%"


def report(result):
    """Markdown tables: the models, then every reading of the two cuts with the paper's figure."""
    size = result["size"]
    lines = [
        f"Figure 7 at {size}x{size}, {result['num_classes']} classes (BFLOPs = 2 x multiply-adds / 1e9, convs only).",
        "",
        "| model | BFLOPs | paper BFLOPs | bottleneck conv (BFLOPs, part) | convs tied | backbone bottleneck (BFLOPs) |",
        "|---|---|---|---|---|---|",
    ]
    for m in result["models"]:
        b, bb = m["bottleneck"], m["backbone_bottleneck"]
        paper = "-" if m["paper_bflops"] is None else f"{m['paper_bflops']:.3f}"
        lines.append(
            f"| {m['model']} | {m['bflops']:.3f} | {paper} | {b['name']} ({b['bflops']:.4f}, {b['part']}) "
            f"| {len(m['bottleneck_ties'])} | {bb['name']} ({bb['bflops']:.4f}) |"
        )
    lines += [
        "",
        "| cut | reading | old: layer (BFLOPs) | new: layer (BFLOPs) | measured cut | paper |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["readings"]:
        lines.append(
            f"| {r['compare']} | {r['reading']} | {r['old']['name']} ({r['old']['bflops']:.4f}) "
            f"| {r['new']['name']} ({r['new']['bflops']:.4f}) | {_pct(r['cut'])} | {_pct(r['paper'])} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=416, help="input side (Figure 7: 416)")
    parser.add_argument("--classes", type=int, default=80, help="classes (COCO: 80)")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES),
                        help="other input sides for the backbone-only per-conv cut")
    parser.add_argument("--no-sam", action="store_true", help="skip CSPPeleeNet-EFM(SAM)")
    parser.add_argument("--plot", help="write per-layer BFLOPs / CIO bars of the three models (PNG)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    result = run(args.size, args.classes, args.sizes, sam=not args.no_sam, plot=args.plot)
    print(report(result))
    if args.plot:
        print(f"wrote {args.plot}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return result


if __name__ == "__main__":
    main()

"""keras_csp's default recipe against Ultralytics YOLO from scratch, same images, same CPU minutes.

For each set (benchmarks/realsets.py: real objects cut from real photos on real backgrounds):

1. keras_csp with defaults only: ``keras-csp train --data data.yaml --model CSPDenseNetb-Ref-PRN
   --image-size 320 --time M`` (the recipe of keras_csp/training/recipe.py fills the rest);
2. when ``ultralytics`` imports in the benchmark environment (``--bench-python``, default
   /work/benchvenv/bin/python; never a dependency of keras_csp): ``YOLO("yolo11n.yaml").train(
   time=M/60, imgsz=320, workers=2, device="cpu")`` (from scratch, offline: YOLO_OFFLINE=1);
3. both tools' best checkpoint predicts the val images at conf 0.001 (keras_csp: the reference
   NMS preset; Ultralytics: its predict API, its default NMS IoU 0.7, max_det 300), the boxes
   are written as COCO json and scored here with pycocotools against one ground-truth json built
   from the YOLO labels, outside both tools.

    python benchmarks/recipe_vs_ultralytics.py --out /tmp/rvu --minutes 4 --sets coins,photo-objects

Prints set, tool, mAP@0.5, mAP@0.5:0.95, epochs, wall minutes, and the CPU model / flags;
writes ``OUT/results.json``.
"""

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BENCH_PYTHON = "/work/benchvenv/bin/python"
MODEL = "CSPDenseNetb-Ref-PRN"
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_info():
    """(model name, SIMD flags of interest, all flags) from /proc/cpuinfo."""
    model, flags = "unknown", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    return model, [f for f in SIMD_FLAGS if f in flags], flags


def _python_with(module, python):
    """Whether ``python`` imports ``module`` (quietly)."""
    if not python or not os.path.exists(python):
        return False
    code = subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode
    return code == 0


def build_set(name, out, train, val, size, bench_python):
    """The set ``name`` in ``out`` (reused when its parameters match); returns data.yaml's path."""
    marker = os.path.join(out, "params.json")
    params = {"set": name, "train": train, "val": val, "size": size, "seed": 0}
    if os.path.exists(marker) and json.load(open(marker)) == params:
        return os.path.join(out, "data.yaml")
    python = sys.executable if _python_with("skimage", sys.executable) else bench_python
    if not _python_with("skimage", python):
        raise SystemExit("benchmarks/realsets.py needs scikit-image and scikit-learn (in --bench-python or this Python)")
    subprocess.run([python, os.path.join(HERE, "realsets.py"), out, "--set", name, "--train", str(train),
                    "--val", str(val), "--size", str(size)], check=True)
    with open(marker, "w") as f:
        json.dump(params, f)
    return os.path.join(out, "data.yaml")


def read_split(data_dir, split):
    """[(image path, [(class, x0, y0, x1, y1) pixels])] of a realsets split (YOLO labels)."""
    from PIL import Image

    rows = []
    with open(os.path.join(data_dir, f"{split}.txt")) as f:
        paths = [line.strip() for line in f if line.strip()]
    for path in paths:
        with Image.open(path) as im:
            w, h = im.size
        label = os.path.join(os.path.dirname(os.path.dirname(path)), "labels",
                             os.path.splitext(os.path.basename(path))[0] + ".txt")
        boxes = []
        with open(label) as f:
            for line in f:
                k, cx, cy, bw, bh = line.split()
                cx, cy, bw, bh = float(cx) * w, float(cy) * h, float(bw) * w, float(bh) * h
                boxes.append((int(k), cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
        rows.append((path, (w, h), boxes))
    return rows


def coco_ground_truth(rows, names):
    """One COCO ground-truth dict for the val images (ids 1..N, categories 1..C)."""
    images, annotations = [], []
    for i, (path, (w, h), boxes) in enumerate(rows, 1):
        images.append({"id": i, "file_name": os.path.basename(path), "width": w, "height": h})
        for k, x0, y0, x1, y1 in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": k + 1, "iscrowd": 0,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def score(gt, detections):
    """(mAP@0.5, mAP@0.5:0.95) of COCO ``detections`` (list of dicts) with pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = gt
        truth.createIndex()
        result = truth.loadRes(detections)
        evaluator = COCOeval(truth, result, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1]), float(evaluator.stats[0])


def _detections(image_id, boxes, scores, classes):
    return [{"image_id": image_id, "category_id": int(c) + 1, "score": float(s),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
            for b, s, c in zip(boxes, scores, classes)]


# ----------------------------------------------------------------------------- keras_csp
def run_keras_csp(data_yaml, out, minutes, size, extra=()):
    """``keras-csp train`` with defaults only (plus ``extra`` flags, to measure a variant of the
    recipe); returns (run dir, wall seconds)."""
    command = [sys.executable, "-c", "import sys; from keras_csp.cli import main; sys.exit(main(sys.argv[1:]))",
               "train", "--data", data_yaml, "--model", MODEL, "--image-size", str(size), "--time", str(minutes),
               "--out", out, "--verbose", "2", *extra]
    print("$ keras-csp " + " ".join(command[3:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return out, time.perf_counter() - start


def keras_csp_predictions(run_dir, rows, size):
    """COCO detections of the run's best detector on ``rows`` (conf 0.001, the reference NMS)."""
    from keras_csp.detectors import InferenceModel
    from keras_csp.evaluation import EVAL_NMS
    from keras_csp.training.restore import read_image, restore_detector

    detector, _ = restore_detector(run_dir, "best")
    infer = InferenceModel(detector, input_size=size, nms=EVAL_NMS)
    detections = []
    for start in range(0, len(rows), 16):
        chunk = rows[start:start + 16]
        out = infer([read_image(path) for path, _, _ in chunk])
        for j in range(len(chunk)):
            n = int(out["num_detections"][j])
            detections += _detections(start + j + 1, out["boxes"][j, :n], out["scores"][j, :n],
                                      out["classes"][j, :n])
    return detections


def keras_csp_epochs(run_dir):
    with open(os.path.join(run_dir, "history.json")) as f:
        return len(json.load(f)["epochs"])


# --------------------------------------------------------------------------- Ultralytics
def ultralytics_worker(data_yaml, out, minutes, size, model_yaml, predictions):
    """(Runs in the benchmark environment.) Train ``model_yaml`` from scratch for ``minutes``,
    predict the val images at conf 0.001 with the best weights, write COCO-ready rows."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO, settings

    settings.update({"sync": False})
    model = YOLO(model_yaml)
    model.train(data=data_yaml, time=minutes / 60.0, epochs=1000, imgsz=size, workers=2, device="cpu",
                project=out, name="train", exist_ok=True, plots=False, seed=0, verbose=False)
    weights = os.path.join(out, "train", "weights", "best.pt")
    with open(os.path.join(out, "train", "results.csv")) as f:
        epochs = max(0, len([line for line in f if line.strip()]) - 1)
    rows = read_split(os.path.dirname(os.path.abspath(data_yaml)), "val")
    best = YOLO(weights)
    detections = []
    for i, (path, _, _) in enumerate(rows, 1):
        result = best.predict(path, conf=0.001, imgsz=size, max_det=300, device="cpu", verbose=False)[0]
        b = result.boxes
        detections += _detections(i, b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy())
    with open(predictions, "w") as f:
        json.dump({"epochs": epochs, "weights": weights, "detections": detections}, f)


def run_ultralytics(bench_python, data_yaml, out, minutes, size, model_yaml):
    """The worker in a subprocess; returns (its result dict, wall seconds) or (error text, seconds)."""
    predictions = os.path.join(out, "predictions.json")
    env = dict(os.environ, YOLO_OFFLINE="1")
    command = [bench_python, os.path.abspath(__file__), "--ultralytics-worker", data_yaml, out, str(minutes),
               str(size), model_yaml, predictions]
    print(f"$ yolo train model={model_yaml} data={data_yaml} time={minutes / 60:.4f} imgsz={size} workers=2 "
          "device=cpu", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    with open(os.path.join(out, "ultralytics.log"), "w") as f:
        f.write(done.stdout + "\n" + done.stderr)
    if done.returncode:
        return "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:]), seconds
    with open(predictions) as f:
        return json.load(f), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/recipe_vs_ultralytics")
    parser.add_argument("--sets", default="coins,photo-objects")
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget per run")
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--bench-python", default=BENCH_PYTHON, help="Python with ultralytics (and scikit-image)")
    parser.add_argument("--ultralytics-model", default="yolo11n.yaml")
    parser.add_argument("--keras-csp-args", default="",
                        help="extra `keras-csp train` flags (a recipe variant), e.g. '--head-options neighbor_cells=1'")
    parser.add_argument("--tag", default="", help="suffix of the keras_csp run folder (to keep variants apart)")
    parser.add_argument("--tools", default="keras_csp,ultralytics", help="which tools to run")
    parser.add_argument("--ultralytics-worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ultralytics_worker:
        data_yaml, out, minutes, size, model_yaml, predictions = args.ultralytics_worker
        return ultralytics_worker(data_yaml, out, float(minutes), int(size), model_yaml, predictions)

    os.makedirs(args.out, exist_ok=True)
    tools = set(args.tools.split(","))
    has_ultralytics = "ultralytics" in tools and _python_with("ultralytics", args.bench_python)
    if "ultralytics" in tools and not has_ultralytics:
        print(f"ultralytics is not importable by {args.bench_python}: keras_csp rows only")
    results = []
    for name in [s for s in args.sets.split(",") if s]:
        data_dir = os.path.join(args.out, "sets", name)
        data_yaml = build_set(name, data_dir, args.train, args.val, args.size, args.bench_python)
        rows = read_split(data_dir, "val")
        with open(os.path.join(data_dir, "classes.txt")) as f:
            names = [line.strip() for line in f if line.strip()]
        gt = coco_ground_truth(rows, names)

        if "keras_csp" in tools:
            run_dir, seconds = run_keras_csp(data_yaml, os.path.join(args.out, "runs", f"{name}-keras_csp{args.tag}"),
                                             args.minutes, args.size, args.keras_csp_args.split())
            ap50, ap = score(gt, keras_csp_predictions(run_dir, rows, args.size))
            results.append({"set": name, "tool": f"keras_csp {MODEL} {args.keras_csp_args}".strip(), "AP50": ap50,
                            "AP": ap, "epochs": keras_csp_epochs(run_dir), "minutes": seconds / 60})
            print(results[-1], flush=True)
        if has_ultralytics:
            out = os.path.join(args.out, "runs", f"{name}-ultralytics")
            os.makedirs(out, exist_ok=True)
            found, seconds = run_ultralytics(args.bench_python, data_yaml, out, args.minutes, args.size,
                                             args.ultralytics_model)
            tool = f"Ultralytics {args.ultralytics_model.split('.')[0]}"
            if isinstance(found, str):
                results.append({"set": name, "tool": tool, "error": found, "minutes": seconds / 60})
            else:
                ap50, ap = score(gt, found["detections"])
                results.append({"set": name, "tool": tool, "AP50": ap50, "AP": ap, "epochs": found["epochs"],
                                "minutes": seconds / 60})
            print(results[-1], flush=True)

    model, simd, flags = cpu_info()
    print(f"\nCPU: {model}, {os.cpu_count()} cores; flags: {' '.join(simd) or 'none of ' + ', '.join(SIMD_FLAGS)}; "
          f"load average {os.getloadavg()[0]:.1f}; budget {args.minutes} min per run; "
          f"{args.train} train / {args.val} val images at {args.size}")
    print("| set | tool | mAP@0.5 | mAP@0.5:0.95 | epochs | wall minutes |")
    print("|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['set']} | {r['tool']} | failed: {r['error'].splitlines()[-1]} | | | {r['minutes']:.1f} |")
        else:
            print(f"| {r['set']} | {r['tool']} | {r['AP50']:.4f} | {r['AP']:.4f} | {r['epochs']} | {r['minutes']:.1f} |")
    with open(os.path.join(args.out, f"results{args.tag}.json"), "w") as f:
        json.dump({"cpu": model, "simd_flags": simd, "flags": flags, "minutes": args.minutes, "results": results,
                   "command": " ".join(sys.argv)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

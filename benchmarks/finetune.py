"""Fine-tuning from published weights against training from scratch, in the same CPU minutes.

What a user does with ``weights="coco"``, end to end and offline:
1. "Publish": train CSPDenseNetb-Ref-PRN on a larger set of other classes (a stand-in for COCO,
   whose weights cannot be downloaded here: the real-photo ``digits`` set of
   ``benchmarks/realsets.py``, ten classes, or ``--pretrain-set shapes``, our synthetic shapes),
   write it as a Darknet ``.weights`` file, serve it from a loopback HTTP server and register
   it in ``keras_csp.weights`` with its SHA-256.
2. Fine-tune: a detector for another dataset with other classes (the real-photo
   ``photo-objects`` set of ``benchmarks/realsets.py``: 5 classes) built with
   ``weights="<the registered name>"``: the registry downloads and verifies the file, every
   block that fits is loaded and the class-dependent head convs are re-created.
3. The same detector and recipe from scratch, for the same number of epochs (the same
   compute: the two runs differ only in their first weights; wall seconds are printed too).
Both are scored with pycocotools on the same held-out images.

    python benchmarks/realsets.py /tmp/photo --set photo-objects --train 400 --val 100 --size 320
    python benchmarks/finetune.py --data /tmp/photo --pretrain-minutes 7 --epochs 8

What it proves: the path from a registered file to a fine-tuned detector works and pays.
What it does not: the quality of real COCO weights (none were downloaded here), nor how much
COCO pretraining helps (synthetic shapes are a weak teacher for photographs).
"""

import argparse
import hashlib
import http.server
import json
import os
import platform
import tempfile
import threading
import time

MODEL = "CSPDenseNetb-Ref-PRN"
RECIPE = dict(optimizer="adam", learning_rate=3e-3, batch_size=32, augment="light", schedule="steps",
              head_options="iou_loss=ciou,iou_normalizer=0.07,iou_thresh=0.213,scale_x_y=1.05")


def _cpu():
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        name = platform.processor()
    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_int8")
    return f"{name}; {os.cpu_count()} cores; flags: {', '.join(f for f in wanted if f in flags) or 'no avx512'}"


def _serve(folder):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=folder, **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _ap(result):
    stats = result.evaluation.stats if result.evaluation is not None else None
    return (float(stats["AP50"]), float(stats["AP"])) if stats else (float("nan"), float("nan"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a realsets.py folder (its data.yaml is used)")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--pretrain-minutes", type=float, default=8.0)
    parser.add_argument("--pretrain-size", type=int, default=256)
    parser.add_argument("--pretrain-images", type=int, default=2000)
    parser.add_argument("--pretrain-set", default="digits", choices=("digits", "coins", "shapes"))
    parser.add_argument("--epochs", type=int, default=8, help="epochs of each fine-tune / scratch run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from keras_csp import weights
    from keras_csp.data import synthetic_source
    from keras_csp.training import train

    out = args.out or tempfile.mkdtemp(prefix="finetune_")
    print(f"CPU: {_cpu()}; load average at start {os.getloadavg()}")
    size = (args.pretrain_size, args.pretrain_size)
    if args.pretrain_set == "shapes":
        source = synthetic_source(os.path.join(out, "shapes"), num_images=args.pretrain_images, seed=1,
                                  image_size=size, max_objects=6, min_object=16, clutter=True)
        data_kw = {"train_source": source}
        class_names = tuple(source.class_names)
    else:
        import sys

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import realsets

        folder = realsets.write_set(os.path.join(out, args.pretrain_set), args.pretrain_set,
                                    train=args.pretrain_images, val=10, size=args.pretrain_size, seed=7)
        data_kw = {"train": os.path.join(folder, "train.txt")}
        class_names = tuple(open(os.path.join(folder, "classes.txt")).read().split("\n")[:-1])
    start = time.perf_counter()
    pretrained = train(model=MODEL, image_size=args.pretrain_size, time=args.pretrain_minutes,
                       out=os.path.join(out, "pretrain"), eval_every=1000, verbose=2, **data_kw, **RECIPE)
    print(f"pretraining: {time.perf_counter() - start:.0f} s")

    served = os.path.join(out, "served")
    os.makedirs(served, exist_ok=True)
    path = os.path.join(served, "shapes-pretrained.weights")
    pretrained.model.save_darknet_weights(path)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    httpd = _serve(served)
    os.environ["KERAS_CSP_HOME"] = os.path.join(out, "cache")
    weights.register("shapes-pretrained", url=f"http://127.0.0.1:{httpd.server_address[1]}/shapes-pretrained.weights",
                     sha256=digest, model=MODEL, classes=class_names,
                     source=f"benchmarks/finetune.py: {args.pretrain_set}, loopback")

    data = os.path.join(args.data, "data.yaml")
    rows = {}
    for label, start_weights in (("fine-tuned from the registry", "shapes-pretrained"), ("from scratch", None)):
        began = time.perf_counter()
        result = train(data=data, model=MODEL, image_size=args.image_size, epochs=args.epochs, weights=start_weights,
                       out=os.path.join(out, label.split()[0]), eval_every=1000, verbose=2, **RECIPE)
        ap50, ap = _ap(result)
        rows[label] = dict(ap50=ap50, ap=ap, epochs=len(result.history.get("loss", [])),
                           seconds=round(time.perf_counter() - began))
    httpd.shutdown()
    print(f"\n{MODEL} at {args.image_size} on {args.data}, {args.epochs} epochs each, pretrained "
          f"{args.pretrain_minutes} min on {args.pretrain_set} ({_cpu()})")
    print("| start | mAP@0.5 | mAP@0.5:0.95 | epochs | wall s |\n|---|---|---|---|---|")
    for label, row in rows.items():
        print(f"| {label} | {row['ap50']:.3f} | {row['ap']:.3f} | {row['epochs']} | {row['seconds']} |")
    with open(os.path.join(out, "finetune.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(f"load average at the end {os.getloadavg()}; results in {out}/finetune.json")


if __name__ == "__main__":
    main()

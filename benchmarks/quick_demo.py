"""The quick demo's recipe variants at a fixed number of steps (the step count of a slower CPU).

``keras-csp demo --quick`` trains to a 3-minute budget, so a fast machine runs ~3x the steps of
a slow one and hides what the slow one gets. Here every variant trains the same ``--epochs``
(62 steps each: 2000 images, batch 32), so variants compare at equal work, and the step count
can be set to what the slow machine fits (the 2-core Xeon @ 2.80GHz: ~500 steps, 8 epochs).
Each variant runs in its own process (a fresh TensorFlow), without the TFLite export.

    python benchmarks/quick_demo.py --epochs 8 --variants default "ema0:ema=0" "bf16:precision=mixed_bfloat16"
    python benchmarks/quick_demo.py --variants "lr1e-2:learning_rate=0.01" "recipe:head=recipe"

A variant is ``NAME`` or ``NAME:key=value;key=value``; keys: ``head`` (``recipe``: the package
recipe's head, or head options ``k=v,...`` merged over the quick head), ``ema``, ``ema_tau``,
``learning_rate``, ``precision`` (a ``--mixed-precision`` value), ``seed``, ``image_size``, ``batch_size``,
``train_images``, ``schedule``, ``burn_in`` (warm-up steps), ``min_object`` (pixels), ``epochs``
(this variant's own count: e.g. a smaller input fits more steps in the slow CPU's minutes).
Prints held-out mAP@0.5 / mAP@0.5:0.95, steps and seconds per step beside the CPU and its flags.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recipe_vs_ultralytics import cpu_info  # noqa: E402  (one place for the CPU line)


def parse_variant(text):
    """``"name:k=v;k=v"`` -> (name, {k: v})."""
    name, _, rest = text.partition(":")
    options = dict(item.split("=", 1) for item in rest.split(";") if item)
    return name, options


def worker(out, epochs, options):
    """(In a subprocess.) One quick demo with ``options`` applied; writes ``out/result.json``."""
    from keras_csp.training import demo
    from keras_csp.training.models import parse_head_options
    from keras_csp.training.recipe import HEAD, head_options_text

    if "head" in options:
        own = parse_head_options(demo.QUICK["head"])
        head = dict(HEAD) if options["head"] == "recipe" else {**own, **parse_head_options(options["head"])}
        demo.QUICK["head"] = head_options_text(head)
    if "learning_rate" in options:
        demo.QUICK["learning_rate"] = float(options["learning_rate"])
    if "precision" in options:
        demo.QUICK["precision"] = options["precision"]
    if "min_object" in options:
        demo.DATA = {**demo.DATA, "min_object": int(options["min_object"])}
    for key, kind in (("batch_size", int), ("train_images", int), ("schedule", str), ("burn_in", int)):
        if key in options:
            demo.QUICK[key] = kind(options[key])
    demo.DEMO_EMA = {"ema": float(options.get("ema", demo.DEMO_EMA["ema"])),
                     "ema_tau": float(options.get("ema_tau", demo.DEMO_EMA["ema_tau"]))}
    report = demo.run_demo(out=out, quick=True, epochs=int(options.get("epochs", epochs)), minutes=30.0, export=False,
                           seed=int(options.get("seed", 0)), verbose=0, image_size=int(options.get("image_size", 0)) or None)
    result = {"AP50": report["final"]["stats"]["AP50"], "AP": report["final"]["stats"]["AP"],
              "epochs": report["epochs"], "steps": report["epochs"] * report["steps_per_epoch"],
              "seconds_per_step": report["seconds_per_step"], "head": report["head_options"],
              "ema": demo.DEMO_EMA, "loss": report["history"]["loss"][-1]}
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8, help="epochs of 62 steps (8: the slow CPU's ~500 steps)")
    parser.add_argument("--variants", nargs="+", default=["default"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        out, epochs, options = args.worker
        return worker(out, int(epochs), json.loads(options))
    root = args.out or tempfile.mkdtemp(prefix="keras-csp-quick-")
    rows = []
    for text in args.variants:
        name, options = parse_variant(text)
        out = os.path.join(root, name)
        os.makedirs(out, exist_ok=True)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", out, str(args.epochs),
                        json.dumps(options)], check=True, env=env, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "result.json")) as f:
            rows.append((name, json.load(f)))
        r = rows[-1][1]
        print(f"{name}: AP50 {r['AP50']:.3f}  AP {r['AP']:.3f}  {r['steps']} steps  {r['seconds_per_step']} s/step",
              flush=True)
    model, simd, _ = cpu_info()
    print(f"\nCPU: {model}, {os.cpu_count()} cores; flags: {' '.join(simd)}; load average {os.getloadavg()[0]:.1f}")
    print(f"command: python benchmarks/quick_demo.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print("| variant | mAP@0.5 | mAP@0.5:0.95 | steps | s/step |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['AP50']:.3f} | {r['AP']:.3f} | {r['steps']} | {r['seconds_per_step']} |")
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump({"cpu": model, "flags": simd, "epochs": args.epochs, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

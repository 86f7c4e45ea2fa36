"""Model EMA on the synthetic shapes: held-out AP50 of the raw weights against their averages.

One training run of the demo's detector with the quick demo's recipe (plain synthetic set,
Adam, batch 8, BN momentum 0.9, step decay, burn-in one epoch), with several ``ModelEMA``
attached to the same optimizer (each updated after every step, as in ``keras-csp train``), so
every (decay, tau) setting averages exactly the same trajectory. Every ``--eval-every``
epochs the raw weights and each average are evaluated (COCO AP on the held-out images) and
the table is printed; the last line is the comparison at the end of the run.

    python benchmarks/ema.py                                 # 16 epochs x 50 steps (~800 steps)
    python benchmarks/ema.py --epochs 8 --train-images 200  # shorter
    python benchmarks/ema.py --settings 0.9999:2000 0.999:200 0.99:50
"""

import argparse
import json
import os
import sys
import tempfile
import time


def parse_settings(texts):
    """``["0.999:200", ...]`` -> ``[(0.999, 200.0), ...]``."""
    settings = []
    for text in texts:
        decay, _, tau = text.partition(":")
        settings.append((float(decay), float(tau or 0)))
    return settings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--settings", nargs="+", default=["0.9999:2000", "0.999:200", "0.998:100", "0.99:50"],
                        help="decay:tau of each EMA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder for the data and results.json (default: a temporary folder)")
    args = parser.parse_args(argv)

    from keras_csp.backend import keras
    from keras_csp.data import detection_dataset, synthetic_source
    from keras_csp.evaluation import EVAL_NMS, evaluate_detector
    from keras_csp.evaluation.detection import detection_function
    from keras_csp.training.demo import DATA, DEMO_HEAD, DEMO_MODEL
    from keras_csp.training.ema import ModelEMA
    from keras_csp.training.models import build_model, parse_anchors
    from keras_csp.training.optimizers import make_optimizer
    from keras_csp.training.run import anchors_text, resolve_anchors, set_bn_momentum
    from keras_csp.training.config import make_config
    from keras_csp.training.schedules import DarknetSchedule

    out = args.out or tempfile.mkdtemp(prefix="keras-csp-ema-")
    size = (args.image_size, args.image_size)
    train_source = synthetic_source(os.path.join(out, "train"), num_images=args.train_images, seed=args.seed + 1,
                                    image_size=size, **DATA)
    val_source = synthetic_source(os.path.join(out, "val"), num_images=args.val_images, seed=args.seed + 1000,
                                  image_size=size, **DATA)
    config = make_config(train=train_source.annotation_file, model=DEMO_MODEL, image_size=args.image_size,
                         anchors="auto")
    anchors = parse_anchors(anchors_text(resolve_anchors(config, train_source)))
    keras.utils.set_random_seed(args.seed)
    model = build_model(DEMO_MODEL, train_source.num_classes, args.image_size, anchors=anchors,
                        head_options=DEMO_HEAD)
    set_bn_momentum(model, 0.9)
    steps = len(train_source) // args.batch_size
    total = steps * args.epochs
    schedule = DarknetSchedule(args.learning_rate, total, "steps", burn_in=steps)
    settings = parse_settings(args.settings)
    emas = [ModelEMA(model, decay, tau) for decay, tau in settings]
    optimizer = make_optimizer("adam", schedule, weight_decay=5e-4)
    for ema in emas:
        ema.attach(optimizer)
    model.compile(optimizer=optimizer)
    train_ds = detection_dataset(train_source, image_size=args.image_size, batch_size=args.batch_size,
                                 augment=False, seed=args.seed, cache=True).repeat()
    val_ds = detection_dataset(val_source, image_size=args.image_size, batch_size=16, training=False, cache=True)
    detect = detection_function(model, EVAL_NMS)  # one traced function reads whatever weights the model holds
    names = ["raw"] + [f"ema {d:g} tau {t:g}" for d, t in settings]
    rows = []

    class Evaluate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % args.eval_every and epoch + 1 != args.epochs:
                return
            row = {"epoch": epoch + 1, "step": (epoch + 1) * steps, "loss": float(logs["loss"])}
            row["raw"] = evaluate_detector(model, val_ds, val_source, nms=EVAL_NMS, detect=detect).stats
            for name, ema in zip(names[1:], emas):
                ema.use_average()
                try:
                    row[name] = evaluate_detector(model, val_ds, val_source, nms=EVAL_NMS, detect=detect).stats
                finally:
                    ema.use_training_weights()
            rows.append(row)
            print(f"epoch {epoch + 1:3d} step {row['step']:5d}  " +
                  "  ".join(f"{n} AP50 {row[n]['AP50']:.3f}" for n in names), flush=True)

    start = time.perf_counter()
    model.fit(train_ds, epochs=args.epochs, steps_per_epoch=steps, callbacks=[Evaluate()], verbose=0)
    seconds = time.perf_counter() - start
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    print(f"\n{DEMO_MODEL}, {args.train_images} training / {args.val_images} held-out synthetic images at "
          f"{args.image_size}px, {total} steps of batch {args.batch_size} in {seconds:.0f} s "
          f"(load average {load}); command: python benchmarks/ema.py {' '.join(argv or sys.argv[1:])}")
    print("| weights | " + " | ".join(f"AP50 @ step {r['step']}" for r in rows) + " | AP @ end |")
    print("|---" * (len(rows) + 2) + "|")
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r[name]['AP50']:.3f}" for r in rows) + f" | {rows[-1][name]['AP']:.3f} |")
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "seconds": seconds, "load": load, "rows": rows}, f, indent=1)
    print(f"results: {os.path.join(out, 'results.json')}")
    return rows


if __name__ == "__main__":
    main()

"""Backbone speed on this machine, next to KerasHub's CSPNetBackbone measured in the same run.

For each model at SIZE x SIZE: kernel weights, BFLOPs, batch-1 latency (tf.function and XLA),
batch-8 throughput, one SGD training step at batch 8, and the achieved GFLOP/s. Peers are
listed when installed (keras-hub); ratios are peer time / our time (above 1: we are faster).
With ``--tflite``, also batch-1 TFLite latency (ai-edge-litert, XNNPACK, ``--threads``) of the
float32 and the full-integer int8 export (calibrated on 32 smooth random images: latency only).

    python benchmarks/backbones.py                     # the six big backbones, 256x256
    python benchmarks/backbones.py --models CSPDarknet53 --repeats 5
    python benchmarks/backbones.py --set small --size 224 320 --tflite   # the small / mobile ones
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

import keras_csp
from keras_csp.backend import keras
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/timing.py, when imported
from timing import interleaved_times, tflite_runner  # noqa: E402

PEER = "KerasHub CSPDarknet53"
BIG = ["CSPDarknet53", "Darknet53", "CSPResNet50", "ResNet50", "CSPResNeXt50", "ResNeXt50"]
SMALL = ["CSPPeleeNet", "PeleeNet", "CSPDenseNetRef", "CSPPeleeNetRef", "CSPDenseNetbRef", "CSPPeleeNetbRef",
         "DarknetRef", "CSPResNet10", "ResNet10", "CSPMobileNetV2", "MobileNetV2"]


def _force(out):
    for t in tf.nest.flatten(out):
        if hasattr(t, "numpy"):  # a tensor: wait for its value (TFLite outputs are arrays)
            t.numpy()


def interleaved(fns, arg, repeats, warmup=2):
    """Median wall time (s) of each ``fn(arg)``, the functions called in turn every round."""
    return [float(np.median(t)) for t in interleaved_times(fns, arg, repeats, warmup, force=_force)]


def classifier(backbone, classes=1000):
    """Backbone + global pooling + dense head, identical for ours and peers (training step)."""
    x = keras.layers.GlobalAveragePooling2D()(backbone.output)
    return keras.Model(backbone.input, keras.layers.Dense(classes)(x))


def train_step_fn(backbone):
    """A compiled SGD step at batch 8 on a classifier made from ``backbone``."""
    model = classifier(backbone)
    optimizer = keras.optimizers.SGD(0.001, momentum=0.9)
    labels = tf.random.uniform((8,), maxval=1000, dtype=tf.int32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    return train_step


def _infer_fn(model, jit):
    @tf.function(jit_compile=jit, autograph=False)
    def infer(x):
        return model(x, training=False)

    return infer


def measure_all(models, size, repeats):
    """Rows of latency / throughput / training numbers for ``{name: backbone}``."""
    names = list(models)
    x1 = tf.random.uniform((1, size, size, 3))
    x8 = tf.random.uniform((8, size, size, 3))
    lat = interleaved([_infer_fn(models[n], False) for n in names], x1, repeats)
    try:
        lat_xla = interleaved([_infer_fn(models[n], True) for n in names], x1, repeats)
    except Exception as err:  # noqa: BLE001 - report, do not abort the table
        print(f"XLA failed: {type(err).__name__}: {str(err)[:200]}")
        lat_xla = [float("nan")] * len(names)
    b8 = interleaved([_infer_fn(models[n], False) for n in names], x8, max(3, repeats // 2))
    train = interleaved([train_step_fn(models[n]) for n in names], x8, max(2, repeats // 3), warmup=1)
    rows = []
    for i, name in enumerate(names):
        prof = keras_csp.profile(models[name])
        rows.append({
            "name": name, "params": prof.params, "flops": prof.flops, "lat": lat[i],
            "lat_xla": lat_xla[i], "thr": 8 / b8[i], "train": train[i], "gflops_s": prof.flops / 1e9 / lat[i],
        })
    return rows


def tflite_latency(models, size, repeats, threads):
    """{name: (fp32 ms, int8 ms)}: batch-1 median latency of each model's TFLite exports,
    all files interleaved call by call."""
    from keras_csp.export import to_tflite

    rng = np.random.default_rng(0)
    coarse = rng.random((32, 8, 8, 3)).astype(np.float32)
    samples = tf.image.resize(coarse, (size, size), "bicubic").numpy().clip(0, 1)
    folder = tempfile.mkdtemp(prefix="backbone_tflite_")
    runners = {}
    for name, model in models.items():
        for variant, quantize in (("fp32", None), ("int8", "int8")):
            path = os.path.join(folder, f"{name.replace(' ', '_')}_{variant}.tflite")
            try:
                to_tflite(model, path, quantize=quantize, representative_data=samples if quantize else None)
            except Exception as err:  # noqa: BLE001 - report, do not abort the table
                print(f"{name} {variant}: export failed: {type(err).__name__}: {str(err)[:200]}")
                continue
            runners[(name, variant)] = tflite_runner(path, threads)
    keys = list(runners)
    times = interleaved([runners[k] for k in keys], samples[0], repeats)
    result = {name: [float("nan"), float("nan")] for name in models}
    for (name, variant), t in zip(keys, times):
        result[name][0 if variant == "fp32" else 1] = t
    return result


def keras_hub_peer(size):
    """KerasHub's CSPDarknet53 (the timm layout), or None when keras-hub is absent."""
    try:
        from keras_hub.models import CSPNetBackbone
        from keras_hub.src.utils.timm.convert_cspnet import convert_backbone_config
    except ImportError:
        return None
    config = convert_backbone_config({"architecture": "cspdarknet53"})
    config["image_shape"] = (size, size, 3)
    return CSPNetBackbone(**config)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="zoo names (default: --set)")
    parser.add_argument("--set", choices=("big", "small"), default="big",
                        help="big: the six ImageNet backbones; small: the mobile ones (use --size 224 / 320)")
    parser.add_argument("--size", type=int, nargs="+", default=[256], help="input side(s)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tflite", action="store_true", help="add TFLite fp32 / int8 batch-1 latency")
    parser.add_argument("--threads", type=int, default=2, help="TFLite threads")
    args = parser.parse_args()
    args.models = args.models or (BIG if args.set == "big" else SMALL)
    for size in args.size:
        run_size(args, size)


def run_size(args, size):
    print(f"\nTensorFlow {tf.__version__}, Keras {keras.__version__}, {size}x{size}, "
          f"{len(tf.config.list_physical_devices('CPU'))} CPU device(s), {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    models = {
        name: keras_csp.zoo.build(name, include_top=False, input_shape=(size, size, 3))
        for name in args.models
    }
    peer = keras_hub_peer(size)
    if peer is not None:
        models[PEER] = peer
    rows = measure_all(models, size, args.repeats)
    if args.tflite:
        lite = tflite_latency(models, size, args.repeats, args.threads)
        for row in rows:
            row["tfl_fp32"], row["tfl_int8"] = lite[row["name"]]
    _print.header = False
    for row in rows:
        _print(row)
    by_name = {r["name"]: r for r in rows}
    if PEER in by_name and "CSPDarknet53" in by_name:
        ours, hub = by_name["CSPDarknet53"], by_name[PEER]
        print(f"\nKerasHub / keras_csp CSPDarknet53 (above 1: keras_csp faster): batch-1 "
              f"{hub['lat'] / ours['lat']:.2f}x, XLA {hub['lat_xla'] / ours['lat_xla']:.2f}x, "
              f"batch-8 {ours['thr'] / hub['thr']:.2f}x, training step {hub['train'] / ours['train']:.2f}x")
    elif peer is None:
        print("\n(keras-hub not installed: no peer measured; pip install keras-hub)")
    by_name = {r["name"]: r for r in rows}
    if "CSPResNeXt50" in by_name and "CSPResNet50" in by_name:
        ratio = by_name["CSPResNeXt50"]["lat"] / by_name["CSPResNet50"]["lat"]
        print(f"CSPResNeXt50 / CSPResNet50 batch-1 latency: {ratio:.2f}x (grouped convs; target <= 1.5x)")


def _print(r):
    lite = "tfl_fp32" in r
    if not getattr(_print, "header", False):
        print(f"{'model':<22} {'weights':>11} {'BFLOPs':>7} {'b1 ms':>7} {'b1 XLA':>7} {'b8 img/s':>9} "
              f"{'train b8 s':>10} {'GFLOP/s':>8}" + (f" {'tfl fp32':>8} {'tfl int8':>8}" if lite else ""))
        _print.header = True
    print(f"{r['name']:<22} {r['params']:>11,} {r['flops'] / 1e9:>7.2f} {r['lat'] * 1e3:>7.1f} "
          f"{r['lat_xla'] * 1e3:>7.1f} {r['thr']:>9.1f} {r['train']:>10.2f} {r['gflops_s']:>8.1f}"
          + (f" {r['tfl_fp32'] * 1e3:>8.1f} {r['tfl_int8'] * 1e3:>8.1f}" if lite else ""), flush=True)


if __name__ == "__main__":
    main()

"""Build the paper's big backbones, print their kernel weights / BFLOPs / CIO next to the
paper's Table (measured with Darknet), run one forward pass, and plot Figures 7-8 style bars.

    python examples/profile_backbones.py --plot profile.png
"""

import argparse

import numpy as np

import keras_csp
from keras_csp import zoo

# Darknet's own counts at 256x256 (../shared/darknet/README.md): kernel weights, BFLOPs.
PAPER = {
    "Darknet53": (41_573_216, 18.57),
    "CSPDarknet53": (27_605_856, 13.07),
    "ResNet50": (22_734_016, 9.742),
    "CSPResNet50": (21_566_656, 8.97),
    "ResNeXt50": (22_190_784, 10.11),
    "CSPResNeXt50": (20_499_136, 7.93),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plot", help="PNG path for per-layer BFLOPs / CIO bars")
    args = parser.parse_args()
    profiles = []
    print(f"{'model':<14} {'weights':>12} {'paper':>12} {'BFLOPs':>8} {'paper':>7} {'CIO':>8}  top-1 class of a random image")
    for name, (paper_w, paper_bflops) in PAPER.items():
        model = zoo.build(name, input_shape=(256, 256, 3))
        prof = keras_csp.profile(model)
        profiles.append(prof)
        image = np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32)
        probs = model(image, training=False).numpy()
        print(f"{name:<14} {prof.params:>12,} {paper_w:>12,} {prof.bflops:>8.3f} {paper_bflops:>7.3f} "
              f"{prof.cio / 1e6:>7.1f}M  {int(probs.argmax())} (p={probs.max():.4f})")
    if args.plot:
        profiles[0].plot(args.plot, profiles[1:])
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()

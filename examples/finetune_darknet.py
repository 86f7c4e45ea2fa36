"""Fine-tune a detector from Darknet weights: a backbone file (e.g. the authors'
``csdarknet53-omega_final.weights``) or a whole-detector file of the same cfg.

    # backbone from Darknet, neck and head trained first alone for 5 epochs, then everything:
    python examples/finetune_darknet.py --train train.json --val val.json \
        --model CSPDarknet53-PANet-SPP --backbone-weights csdarknet53-omega_final.weights \
        --freeze-backbone-epochs 5 --epochs 50

    # the whole detector from a Darknet .weights of its cfg (e.g. csresnext50-panet-spp.weights):
    python examples/finetune_darknet.py --train train.json --model CSPResNeXt50-PANet-SPP \
        --weights csresnext50-panet-spp_final.weights

    # try it offline: writes a stand-in Darknet backbone file first, then fine-tunes on
    # a tiny synthetic set
    python examples/finetune_darknet.py --synthetic --model CSPDenseNetb-Ref-PRN --image-size 128

The Darknet file's conv blocks are read in cfg order (``load_darknet_weights`` /
``backbone_weights``); a file of another architecture fails with the counts that differ.
"""

import argparse
import os
import tempfile


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train")
    parser.add_argument("--val")
    parser.add_argument("--model", default="CSPDarknet53-PANet-SPP")
    parser.add_argument("--backbone-weights", help="Darknet .weights of the backbone (classifier file)")
    parser.add_argument("--weights", help="Darknet .weights of the whole detector")
    parser.add_argument("--freeze-backbone-epochs", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="stand-in weights and a tiny synthetic set")
    parser.add_argument("--image-size", type=int, default=416)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--out", default="runs/finetune")
    return parser.parse_args(argv)


def write_standin_backbone(model_name, image_size, path):
    """Save a freshly built backbone of ``model_name`` as a Darknet .weights file (what a
    downloaded ImageNet file would be), so the example runs offline."""
    from keras_csp import zoo
    from keras_csp.darknet.weights import save_conv_weights
    from keras_csp.detectors import DETECTORS

    backbone_name = DETECTORS[model_name].backbone
    backbone = zoo.build(backbone_name, include_top=False, input_shape=(image_size, image_size, 3))
    blocks = [b for b in backbone.darknet_blocks if b != "predictions"]
    save_conv_weights(backbone, blocks, path)
    return path, backbone


def main(argv=None):
    import numpy as np

    from keras_csp.training import train

    args = parse(argv)
    standin = None
    if args.synthetic:
        from keras_csp.data import ensure_synthetic_dataset

        root = tempfile.mkdtemp(prefix="finetune-")
        size = (args.image_size, args.image_size)
        args.train = ensure_synthetic_dataset(os.path.join(root, "train"), num_images=16, seed=1, image_size=size)["coco_json"]
        args.val = ensure_synthetic_dataset(os.path.join(root, "val"), num_images=8, seed=2, image_size=size)["coco_json"]
        args.backbone_weights, standin = write_standin_backbone(args.model, args.image_size,
                                                                os.path.join(root, "backbone.weights"))
    if not args.train:
        raise SystemExit("give --train (and --backbone-weights or --weights) or --synthetic")
    result = train(
        train=args.train, val=args.val, model=args.model, image_size=args.image_size, batch_size=args.batch_size,
        epochs=args.epochs, backbone_weights=args.backbone_weights, weights=args.weights,
        freeze_backbone_epochs=args.freeze_backbone_epochs, optimizer="sgd", learning_rate=args.learning_rate,
        anchors="auto", out=args.out, verbose=2 if args.synthetic else 1,
    )
    if standin is not None:  # the backbone started from the file: its first conv matches it
        first = standin.darknet_blocks[0]
        loaded = result.model.network.get_layer(f"{first}_conv").get_weights()[0]
        print(f"backbone conv '{first}' moved by {np.abs(loaded - standin.get_layer(f'{first}_conv').get_weights()[0]).max():.4g} "
              "from the Darknet file during fine-tuning")
    return result


if __name__ == "__main__":
    main()

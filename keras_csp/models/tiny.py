"""CSPDarknet53-tiny: the backbone of YOLOv4-tiny, transcribed from Darknet's yolov4-tiny.cfg.

Layers 0-26 of the cfg (Bochkovskiy et al. 2020, the Darknet project): two 3x3 stride-2
convs, then three tiny CSP stages and a last 3x3 conv. A tiny CSP stage of width ``w`` is
(cfg layers 2-9 for ``w = 64``)::

    base = 3x3 w                                  # the stage's base layer
    part = base[..., w/2:]                        # [route] groups=2 group_id=1
    a = 3x3 w/2 (part);  b = 3x3 w/2 (a)
    t = 1x1 w ([b, a])                            # [route] -1,-2; the partial transition
    out = maxpool 2x2/2 ([base, t])               # [route] -6,-1 (Section 3.1's split and merge)

Pyramid levels (identity layers ``P{n}``, stride ``2**n``): P1 the first conv, P2 / P3 / P4
the transition ``t`` of stages 1 / 2 / 3 (P4 is cfg layer 23, which yolov4-tiny's second
head reads), P5 the last 3x3 512 conv (cfg layer 26). Conv blocks are registered in cfg
order, so the first 27 layers of a yolov4-tiny ``.weights`` file (or the whole of
``yolov4-tiny.conv.29`` but its two neck convs) map onto them.
"""

from keras_csp.backend import keras
from keras_csp.layers import ChannelRange, conv_bn_act
from keras_csp.models.application import BackboneSpec, backbone_inputs, classifier_top, finish_backbone

_SPEC = BackboneSpec("CSPDarknet53Tiny", stem=(), stages=(), levels=(1, 2, 3, 4, 5),
                     default_size=256)
STAGE_WIDTHS = (64, 128, 256)
TOP_WIDTH = 512


def tiny_csp_stage(x, width, activation, name, registry):
    """One tiny CSP stage before its max-pool: returns ``(t, [base, t])`` (see the module)."""
    base = conv_bn_act(x, width, 3, activation=activation, name=f"{name}_base", registry=registry)
    part = ChannelRange(width // 2, width, name=f"{name}_split")(base)  # [route] groups=2 group_id=1
    a = conv_bn_act(part, width // 2, 3, activation=activation, name=f"{name}_conv1",
                    registry=registry)
    b = conv_bn_act(a, width // 2, 3, activation=activation, name=f"{name}_conv2",
                    registry=registry)
    t = conv_bn_act(keras.layers.Concatenate(name=f"{name}_concat")([b, a]), width, 1,
                    activation=activation, name=f"{name}_transition", registry=registry)
    return t, base


def CSPDarknet53Tiny(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    activation="leaky",
    name=None,
):
    """Instantiate CSPDarknet53-tiny, the backbone of yolov4-tiny.cfg (its layers 0-26).

    Without the top: 3,625,824 kernel weights and 5.125 BFLOPs at 416x416, the counts Darknet
    gives for those cfg layers (structure: see the module docstring). No ImageNet weights were
    published for it; its trained weights come with YOLOv4-tiny
    (``keras_csp.detectors.YOLOv4Tiny(weights="coco")``).

    Args:
        include_top: add a classifier (global average pool and 1x1 conv to ``classes``);
            the cfg has none, so it is this library's addition.
        weights: None, a Darknet ``.weights`` file whose first conv blocks are these (cfg
            order; trailing floats of a detector file are ignored without the top), or a
            Keras weights file.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: (height, width, 3); default (256, 256, 3) with the top, else
            (None, None, 3). Height and width must be at least 32.
        pooling: with include_top=False, None (4-D features), "avg" or "max".
        classes: number of classes of the top.
        classifier_activation: activation of the top (None returns logits).
        activation: leaky (the cfg's) / mish / swish / relu / linear / logistic.
        name: model name.

    Inputs are RGB floats in [0, 1]. Pyramid levels are identity layers ``P1`` .. ``P5``.
    """
    if weights == "imagenet":
        raise ValueError(
            "No ImageNet weights were published for CSPDarknet53Tiny; its trained weights come "
            "with the detector: keras_csp.detectors.YOLOv4Tiny(weights='coco'), or "
            "weights='conv.29' for the Darknet backbone file yolov4-tiny.conv.29."
        )
    inputs = backbone_inputs(_SPEC, include_top, weights, classes, input_tensor, input_shape, pooling,
                             activation, "both")

    registry = []
    x = conv_bn_act(inputs, 32, 3, 2, activation=activation, name="stem_conv1", registry=registry)
    x = keras.layers.Identity(name="P1")(x)  # /2
    x = conv_bn_act(x, 64, 3, 2, activation=activation, name="stem_conv2", registry=registry)  # /4
    for i, width in enumerate(STAGE_WIDTHS, start=1):
        t, base = tiny_csp_stage(x, width, activation, f"stage{i}", registry)
        t = keras.layers.Identity(name=f"P{i + 1}")(t)  # /4, /8, /16
        x = keras.layers.Concatenate(name=f"stage{i}_merge")([base, t])
        x = keras.layers.MaxPooling2D(2, 2, padding="same", name=f"stage{i}_pool")(x)
    x = conv_bn_act(x, TOP_WIDTH, 3, activation=activation, name="top_conv", registry=registry)
    x = keras.layers.Identity(name="P5")(x)  # /32

    x = classifier_top(x, include_top, pooling, classes, classifier_activation, registry)
    return finish_backbone(inputs, input_tensor, x, name or "CSPDarknet53Tiny", registry, weights, _SPEC.name,
                           activation, include_top)


__all__ = ["CSPDarknet53Tiny", "tiny_csp_stage"]

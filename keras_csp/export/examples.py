"""Tiny models made of keras_csp layers, to try and test the export path in seconds.

``tiny_detector`` is a two-scale functional YOLO network; ``tiny_backbone`` is a backbone
with the library's ``P3``/``P4``/``P5`` pyramid layers, so that
``keras_csp.detectors.YOLODetector(tiny_backbone(), neck=...)`` builds a real ``Detector``.

It holds every block the real CSP detectors export (Darknet conv with leaky, mish and swish,
a residual shortcut, a CSP-style split/concat, max pooling, nearest upsampling) and emits
raw outputs in the library layout (``[B, H, W, A * (5 + C)]`` from stride 8), so the whole
path from Keras to a device file runs in seconds.
"""

from keras_csp.backend import keras
from keras_csp.layers import DarknetShortcut, conv_bn_act
from keras_csp.layers.darknet_ops import NearestUpsample2D
from keras_csp.ops.head_spec import HeadSpec

ANCHORS = (((10, 14), (23, 27), (37, 58)), ((81, 82), (135, 169), (344, 319)))


def tiny_heads(num_classes=3, scale_x_y=1.05, new_coords=False):
    """The head specs of ``tiny_detector`` (strides 8 and 16, yolov4-tiny anchors)."""
    return [HeadSpec(stride, anchors, num_classes, scale_x_y=scale_x_y, new_coords=new_coords)
            for stride, anchors in zip((8, 16), ANCHORS)]


def tiny_detector(input_size=64, num_classes=3, width=8, name="tiny_detector"):
    """A functional Keras model ``image -> [stride8, stride16]`` raw YOLO logits.

    ``input_size`` must be a multiple of 16 (an int or ``(height, width)``).
    """
    height, width_px = (input_size, input_size) if isinstance(input_size, int) else input_size
    if height % 16 or width_px % 16:
        raise ValueError(f"input_size must be a multiple of 16; received {input_size!r}.")
    depth = 3 * (5 + num_classes)
    image = keras.Input((height, width_px, 3), name="image")
    x = conv_bn_act(image, width, 3, 2, activation="mish", name="stem")            # P1/2
    x = conv_bn_act(x, 2 * width, 3, 2, activation="leaky", name="down2")           # P2/4
    y = conv_bn_act(x, 2 * width, 3, activation="swish", name="res_conv")
    x = DarknetShortcut(name="res_add")([y, x])
    x = conv_bn_act(x, 4 * width, 3, 2, activation="leaky", name="down3")           # P3/8
    part1 = conv_bn_act(x, 2 * width, 1, activation="leaky", name="csp_part1")
    part2 = conv_bn_act(x, 2 * width, 1, activation="leaky", name="csp_part2")
    part2 = conv_bn_act(part2, 2 * width, 3, activation="mish", name="csp_block")
    p3 = keras.layers.Concatenate(name="csp_concat")([part2, part1])
    p4 = keras.layers.MaxPooling2D(2, 2, padding="same", name="pool4")(p3)           # P4/16
    p4 = conv_bn_act(p4, 8 * width, 3, activation="leaky", name="p4_conv")
    up = NearestUpsample2D(2, name="p4_up")(conv_bn_act(p4, 2 * width, 1, name="p4_reduce"))
    p3 = keras.layers.Concatenate(name="p3_merge")([up, p3])
    p3 = conv_bn_act(p3, 4 * width, 3, activation="leaky", name="p3_conv")
    out3 = keras.layers.Conv2D(depth, 1, name="head_stride8")(p3)
    out4 = keras.layers.Conv2D(depth, 1, name="head_stride16")(p4)
    return keras.Model(image, [out3, out4], name=name)


def tiny_backbone(input_size=64, width=8, activation="leaky", name="tiny_backbone"):
    """A CSP-style backbone ``image -> P5`` with identity layers ``P3``, ``P4``, ``P5``."""
    image = keras.Input((input_size, input_size, 3), name="image")
    x = conv_bn_act(image, width, 3, 2, activation=activation, name="stem")          # P1/2
    levels = {}
    for level in range(2, 6):
        channels = width * 2 ** min(level - 1, 3)
        x = conv_bn_act(x, channels, 3, 2, activation=activation, name=f"down{level}")
        part = conv_bn_act(x, channels // 2, 1, activation=activation, name=f"csp{level}_a")
        block = conv_bn_act(x, channels // 2, 1, activation=activation, name=f"csp{level}_b")
        block = DarknetShortcut(name=f"csp{level}_add")(
            [conv_bn_act(block, channels // 2, 3, activation=activation,
                         name=f"csp{level}_conv"), block])
        x = keras.layers.Concatenate(name=f"csp{level}_concat")([block, part])
        x = conv_bn_act(x, channels, 1, activation=activation, name=f"csp{level}_fuse")
        if level >= 3:
            x = keras.layers.Identity(name=f"P{level}")(x)                             # P{n}
            levels[level] = x
    return keras.Model(image, x, name=name)

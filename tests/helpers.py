"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on the path, and the
subprocess tests put it on PYTHONPATH).

- ``tiny_detector``: the tests' one tiny detector, a keras_csp ``Detector``; the model of every
  training test (``--model helpers:tiny_detector``, keras_csp.training's
  ``package.module:function`` factory protocol).
- ``tiny_network``: not a detector but the plain functional network (image -> one raw map per
  head) that the YOLOTask tests wrap; no batch norm unless asked, so a MirroredStrategy step
  equals the single-device step.

(keras_csp.export.examples.tiny_detector is the package's export example: a network with every
block kind the CSP detectors export, whose layer names the export tests assert.)
"""

import numpy as np

from keras_csp.backend import keras

TINY_ANCHORS = (((6, 6), (12, 12), (20, 20)), ((24, 24), (40, 40), (56, 56)))


def tiny_detector(num_classes, input_shape, anchors=None, head_options=None):
    """A real keras_csp Detector small enough to train in seconds: ``examples.tiny_backbone``
    (width 8) and a PRN neck, heads at strides 16 and 32 (``TINY_ANCHORS`` by default)."""
    from keras_csp.detectors import YOLODetector
    from keras_csp.detectors.necks import PRN
    from keras_csp.export.examples import tiny_backbone

    return YOLODetector(tiny_backbone(input_shape[0], width=8), PRN(widths=(32, 64)), num_classes=num_classes,
                        anchors=anchors or TINY_ANCHORS, head_options=head_options, name="tiny")


def tiny_network(heads, width=32, seed=0, batch_norm=False, size=64):
    """A small conv net ``image (size x size) -> one raw output per head`` for ``heads`` (strides 16
    and 32); head biases start at a low objectness. Seeded: the same weights every call."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = inputs
    for i, filters in enumerate((width // 2, width, width)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=not batch_norm, name=f"conv{i}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.LeakyReLU(0.1, name=f"act{i}")(x)
    # Leaky activations only: a graph-mode fused Conv2D+ReLU turns NaN into 0, which would hide
    # the NaN that test_nan_guard_names_the_step_and_batch injects.
    p16 = keras.layers.Conv2D(width, 3, strides=2, padding="same", name="p16")(x)
    p16 = keras.layers.LeakyReLU(0.1, name="p16_act")(p16)
    p32 = keras.layers.Conv2D(width, 3, strides=2, padding="same", name="p32")(p16)
    p32 = keras.layers.LeakyReLU(0.1, name="p32_act")(p32)
    outputs = []
    for head, feature in zip(heads, (p16, p32)):
        bias = np.zeros((head.num_anchors, 5 + head.num_classes), np.float32)
        bias[:, 4] = -4.0  # objectness prior ~ 0.018
        outputs.append(
            keras.layers.Conv2D(
                head.channels,
                1,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                bias_initializer=keras.initializers.Constant(bias.ravel()),
                name=f"head_s{head.stride}",
            )(feature)
        )
    return keras.Model(inputs, outputs, name="tiny_yolo")

"""Grouped 3x3 convolution (ResNeXt, groups=32) on CPU: three formulations, same numbers.

    python benchmarks/grouped_conv.py

Prints ms per call for Keras 3's Conv2D(groups=32) (compiled with XLA by Keras on the TF
backend), keras_csp's GroupedConv2D (TensorFlow's native grouped conv), and a split into 32
convs + concat, at the four ResNeXt stage sizes, with ratios against Keras' layer.
"""

import time

import numpy as np
import tensorflow as tf

from keras_csp.backend import keras
from keras_csp.layers import GroupedConv2D


def timed(fn, x, repeats=20):
    for _ in range(3):
        fn(x).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x).numpy()
    return (time.perf_counter() - start) / repeats * 1e3


def main():
    print(f"{'channels':>8} {'size':>5} {'keras ms':>9} {'ours ms':>8} {'split ms':>9} {'keras/ours':>10}")
    for channels, size in [(128, 64), (256, 32), (512, 16), (1024, 8)]:
        x = tf.random.uniform((1, size, size, channels))
        keras_conv = keras.layers.Conv2D(channels, 3, padding="same", groups=32, use_bias=False)
        ours = GroupedConv2D(channels, 3, padding="same", groups=32, use_bias=False)
        keras_conv.build(x.shape)
        ours.build(x.shape)
        ours.kernel.assign(keras_conv.kernel)
        kernels = tf.split(keras_conv.kernel, 32, axis=-1)

        @tf.function
        def split(t):
            parts = tf.split(t, 32, axis=-1)
            return tf.concat([tf.nn.conv2d(p, k, 1, "SAME") for p, k in zip(parts, kernels)], -1)

        np.testing.assert_allclose(ours(x).numpy(), keras_conv(x).numpy(), rtol=1e-4, atol=1e-4)
        t_keras = timed(tf.function(keras_conv), x)
        t_ours = timed(tf.function(ours), x)
        t_split = timed(split, x)
        print(f"{channels:>8} {size:>5} {t_keras:>9.2f} {t_ours:>8.2f} {t_split:>9.2f} {t_keras / t_ours:>10.2f}")


if __name__ == "__main__":
    main()

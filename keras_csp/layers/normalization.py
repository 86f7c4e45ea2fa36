"""Batch normalization that trains with TensorFlow's fused kernel.

Keras 3's ``BatchNormalization`` computes the batch moments and the normalization from
separate ops (mean, squared difference, multiply, tile ... forward and backward): profiled on
the demo detector (CSPDenseNetb-Ref-PRN, batch 32 at 128x128, 2-core Xeon, oneDNN), those ops
took ~38% of a training step's CPU time against 44% for the convolutions. ``FusedBatchNormV3``
does the same work in one op each way. At inference (and in a frozen layer) the same op with
the moving statistics replaces Keras' multiply and add, which lets TensorFlow's graph optimizer
fold it into the preceding ``Conv2D`` with the activation (one fused conv per conv block):
CSPDarknet53 at 256, batch 1, 184.8 -> 136.4 ms on a 2-core Xeon (benchmarks/predict_latency.py).
The TFLite converter folds it into the conv as it did Keras' ops. Masks, renorm and
synchronized BN take Keras' own path.
"""

from keras_csp.backend import LEGACY_KERAS, keras, register, tf


@register
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` that runs TensorFlow's fused kernel on 4-D channels-last
    inputs, in training and at inference: the same variables, momentum and biased batch variance
    as Keras' layer (outputs, gradients and moving statistics equal to float rounding; tested)."""

    def _fusable(self, inputs, mask):
        return (mask is None and not self.renorm and not self.synchronized and self.scale and self.center
                and len(inputs.shape) == 4 and self.axis in (3, -1, [3], [-1]))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)  # as Keras does: the statistics in float32 under mixed precision
        if not (training and self.trainable):  # inference, or a frozen layer: the moving statistics
            y, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=tf.cast(self.gamma, tf.float32), offset=tf.cast(self.beta, tf.float32),
                mean=tf.cast(self.moving_mean, tf.float32), variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=False)
            return tf.cast(y, self.compute_dtype)
        channels = x.shape[-1]
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=tf.cast(self.gamma, tf.float32), offset=tf.cast(self.beta, tf.float32),
            mean=tf.zeros([channels]), variance=tf.ones([channels]), epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        count = tf.cast(tf.size(x) // channels, tf.float32)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)  # the kernel's is unbiased; Keras' is not
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


def batch_norm(**kwargs):
    """The package's batch-norm layer: the fused-training one on Keras 3; tf_keras' own (already
    fused, and the class tfmot folds into convs for QAT) under ``TF_USE_LEGACY_KERAS=1``."""
    return keras.layers.BatchNormalization(**kwargs) if LEGACY_KERAS else FusedBatchNormalization(**kwargs)


__all__ = ["FusedBatchNormalization", "batch_norm"]

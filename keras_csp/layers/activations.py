"""Darknet activations as Keras layers that convert cleanly to TFLite."""

from keras_csp.backend import keras, register, tf

ACTIVATIONS = ("linear", "leaky", "relu", "mish", "swish", "logistic")


@register
class Mish(keras.layers.Layer):
    """Mish, ``x * tanh(softplus(x))`` (Misra 2019), as Darknet's ``activation=mish``.

    softplus is written ``relu(x) - log(sigmoid(|x|))`` (the same function): every
    intermediate is bounded, so full-int8 TFLite keeps its precision (``softplus`` becomes an
    unbounded EXP there), and tf_keras' grappler cannot fuse it into an unsupported
    FusedBatchNorm+Mish kernel. Darknet's softplus threshold of 20 changes nothing in float32.
    """

    def call(self, inputs):
        softplus = tf.nn.relu(inputs) - tf.math.log(tf.math.sigmoid(tf.abs(inputs)))
        return inputs * tf.math.tanh(softplus)


def check_activation(name, argument="activation"):
    """Return ``name`` if it is a supported Darknet activation, else raise a clear ValueError."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"Unknown {argument} {name!r}; expected one of {', '.join(ACTIVATIONS)}."
        )
    return name


def activation_layer(name, layer_name=None):
    """A Keras layer computing Darknet activation ``name``, or None for ``linear``."""
    check_activation(name)
    if name == "linear":
        return None
    if name == "leaky":
        # Positional slope: the keyword is ``negative_slope`` in Keras 3, ``alpha`` in tf_keras.
        return keras.layers.LeakyReLU(0.1, name=layer_name)
    if name == "relu":
        return keras.layers.ReLU(name=layer_name)
    if name == "mish":
        return Mish(name=layer_name)
    if name == "swish":
        return keras.layers.Activation("swish", name=layer_name)
    return keras.layers.Activation("sigmoid", name=layer_name)

"""Custom layers of keras_csp; every one is registered for serialization."""

from keras_csp.layers.activations import ACTIVATIONS, Mish, activation_layer, check_activation
from keras_csp.layers.conv import BN_EPSILON, GroupedConv2D, conv_bn_act, darknet_padding
from keras_csp.layers.merge import ChannelSlice, DarknetShortcut

__all__ = [
    "ACTIVATIONS",
    "BN_EPSILON",
    "ChannelSlice",
    "DarknetShortcut",
    "GroupedConv2D",
    "Mish",
    "activation_layer",
    "check_activation",
    "conv_bn_act",
    "darknet_padding",
]

"""Custom layers of keras_csp; every one is registered for serialization."""

from keras_csp.layers.activations import ACTIVATIONS, Mish, activation_layer, check_activation
from keras_csp.layers.conv import BN_EPSILON, GroupedConv2D, conv_bn_act, darknet_padding
from keras_csp.layers.merge import ChannelRange, ChannelSlice, DarknetShortcut, RepeatChannels
from keras_csp.layers.normalization import FusedBatchNormalization, batch_norm

__all__ = [
    "ACTIVATIONS",
    "BN_EPSILON",
    "ChannelRange",
    "ChannelSlice",
    "DarknetShortcut",
    "FusedBatchNormalization",
    "GroupedConv2D",
    "Mish",
    "RepeatChannels",
    "activation_layer",
    "batch_norm",
    "check_activation",
    "conv_bn_act",
    "darknet_padding",
]

# Detector layers: SPP, SAM gate, Maxout / upsample aliases, YOLO decode.
from keras_csp.layers.detection import SPP, Maxout, SpatialAttention, Upsample, YoloDecode  # noqa: E402

__all__ += ["Maxout", "SPP", "SpatialAttention", "Upsample", "YoloDecode"]

# Darknet-specific layers (Darknet interoperability).
from keras_csp.layers.darknet_ops import (  # noqa: E402
    DarknetSoftmax,
    DarknetYolo,
    NearestUpsample2D,
    Reorg,
    ScaleChannels,
)
from keras_csp.layers.pooling import ChannelMaxout, DarknetPool2D  # noqa: E402

__all__ += [
    "ChannelMaxout",
    "DarknetPool2D",
    "DarknetSoftmax",
    "DarknetYolo",
    "NearestUpsample2D",
    "Reorg",
    "ScaleChannels",
]

"""Darknet interoperability: cfg parser, cfg -> Keras builder, .weights reader and writer.

    model = keras_csp.darknet.load("csdarknet53-omega.cfg", "csdarknet53-omega_final.weights")

See :func:`load`, :func:`model_from_cfg`, :func:`parse_cfg`, :func:`infer_network`,
:func:`read_weights` / :func:`write_weights` and :func:`load_conv_weights` (for models whose
conv blocks follow :func:`keras_csp.layers.conv_bn_act`'s naming), with the cfg order of a
model's blocks from :func:`darknet_order` (it survives ``.keras`` save and load).
"""

from keras_csp.darknet.api import cfg_nms, head_specs, load, load_detector, save_weights
from keras_csp.darknet.builder import block_name, build_model, default_outputs, model_from_cfg
from keras_csp.darknet.cfg import Cfg, CfgError, Section, parse_cfg, parse_cfg_text
from keras_csp.darknet.order import DarknetBlocksModel, darknet_order
from keras_csp.darknet.spec import Network, infer_network, yolo_head_spec
from keras_csp.darknet.summary import format_summary, summarize
from keras_csp.darknet.weights import (
    DarknetWeights,
    load_conv_weights,
    read_weights,
    save_conv_weights,
    write_weights,
)

load_darknet_weights = load_conv_weights

__all__ = [
    "Cfg",
    "cfg_nms",
    "head_specs",
    "load_detector",
    "CfgError",
    "DarknetBlocksModel",
    "DarknetWeights",
    "Network",
    "Section",
    "block_name",
    "build_model",  # deprecated: model_from_cfg
    "darknet_order",
    "default_outputs",
    "format_summary",
    "infer_network",
    "load",
    "load_conv_weights",
    "load_darknet_weights",
    "model_from_cfg",
    "parse_cfg",
    "parse_cfg_text",
    "read_weights",
    "save_conv_weights",
    "yolo_head_spec",
    "save_weights",
    "summarize",
    "write_weights",
]

"""Every named backbone is the authors' cfg, conv by conv, in cfg order (so .weights map)."""

import importlib.util

import pytest

from keras_csp import zoo

REF = "darknet/cfg/reference-repo"
ICFG = f"{REF}/in_progress/darknet/icfg"
PAIRS = [
    ("csdarknet53", f"{REF}/csdarknet53.cfg"),
    ("csdarknet53-gamma", f"{REF}/csdarknet53-gamma.cfg"),
    ("csdarknet53-omega", f"{REF}/csdarknet53-omega.cfg"),
    ("darknet53", f"{REF}/darknet53.cfg"),
    ("csresnet50", f"{REF}/csresnet50.cfg"),
    ("csresnet50-omega", f"{REF}/csresnet50-omega.cfg"),
    ("csresnext50", f"{REF}/csresnext50.cfg"),
    ("csresnext50-omega", f"{REF}/csresnext50-omega.cfg"),
    ("resnext50", f"{REF}/resnext50.cfg"),
] + [
    (f"{net}-{act}", f"{ICFG}/{net}-{act}.cfg")
    for net in ("darknet53", "resnet50", "resnext50")
    for act in ("leaky", "mish", "swish", "relu")
    # The reference repo's icfg/resnext50-relu.cfg is a copy of resnext50-swish.cfg (it says
    # activation=swish throughout), so it cannot define the relu variant.
    if (net, act) != ("resnext50", "relu")
]

ACT_OF_LAYER = {"LeakyReLU": "leaky", "Mish": "mish", "ReLU": "relu", "swish": "swish", "silu": "swish", "sigmoid": "logistic"}


def _cfg_convs(shared, cfg):
    """Conv layers of a cfg from the reference weights writer's own Darknet shape inference."""
    spec = importlib.util.spec_from_file_location("make_weights", shared / "darknet/make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net, layers = module.infer_layers(str(shared / cfg))
    return net, [layer for layer in layers if layer["type"] in ("convolutional", "conv")]


def _our_convs(model):
    rows = []
    for block in model.darknet_blocks:
        conv = model.get_layer(f"{block}_conv")
        k, _, cin_g, out = conv.kernel.shape
        names = {layer.name: layer for layer in model.layers}
        act = names.get(f"{block}_act")
        if act is None:
            act_name = "linear"
        else:
            kind = type(act).__name__
            act_name = ACT_OF_LAYER.get(kind) or ACT_OF_LAYER[act.get_config()["activation"]]
        rows.append({
            "weight_shape": (out, cin_g, k, k), "stride": conv.strides[0], "groups": conv.groups,
            "bn": int(f"{block}_bn" in names), "activation": act_name,
            "out": tuple(conv.output.shape[1:]),
        })
    return rows


@pytest.mark.parametrize("name,cfg", PAIRS, ids=[p[0] for p in PAIRS])
def test_named_builder_equals_cfg(shared_dir, name, cfg):
    net, cfg_convs = _cfg_convs(shared_dir, cfg)
    model = zoo.build(name, input_shape=(net["height"], net["width"], 3))
    ours = _our_convs(model)
    assert len(ours) == len(cfg_convs)
    for i, (mine, ref) in enumerate(zip(ours, cfg_convs)):
        expected = {
            "weight_shape": tuple(ref["weight_shape"]), "stride": ref["stride_x"], "groups": ref["groups"],
            "bn": ref["batch_normalize"], "activation": ref["activation"],
            "out": (ref["out_h"], ref["out_w"], ref["out_c"]),
        }
        assert mine == expected, f"conv #{i} (cfg layer {ref['index']}) of {name}"

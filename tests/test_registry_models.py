"""Every model in keras_csp.registry, checked by one harness whose parametrization is the registry.

For each registered backbone, cfg variant and detector:

- **counts** (at the reference input size): conv kernel weights and BFLOPs against the published
  figures below (Darknet's own counts, ../shared/darknet/README.md; the paper's Tables 2, 3, 4);
  the top's output shape, or for a detector every head's output shape and every conv listed
  once in ``darknet_blocks``; a variant's activation actually applied;
- **cfg**: where the authors published a Darknet cfg, every conv block (kernel shape, stride,
  groups, batch norm, activation, output) in ``darknet_blocks`` order against the cfg, read by
  the reference weights writer's own shape inference (../shared/darknet/make_weights.py);
- **small input**: built at a small non-square size, the pyramid levels have the strides of
  their names, a forward pass is finite and not constant, and the model survives a ``.keras``
  save / load (safe mode) with equal outputs and the same pyramid.

A name added to the registry gets all of these without a line here, and fails
``test_every_registered_model_has_expected_counts`` until its published counts are written in
``COUNTS`` (a cfg variant that only changes the activation inherits its builder's) or it is
listed in ``UNCOUNTED`` with the reason. Full-size and hundreds-of-layers models run with
``-m slow``, as before the harness; a variant of the same builder with the same arguments as
another name is built once for both.
"""

import dataclasses
import importlib.util

import numpy as np
import pytest

import keras_csp
import keras_csp.detectors  # noqa: F401  (registers the detectors)
from keras_csp import registry, zoo
from keras_csp.backend import keras


@dataclasses.dataclass(frozen=True)
class Count:
    """A published count: ``params`` conv kernel weights and ``bflops`` at ``size`` x ``size``.

    ``params_tolerance`` 0 means exact; ``note`` says why a figure is missing (None).
    """

    size: int
    params: float = None
    bflops: float = None
    params_tolerance: float = 0.0
    bflops_tolerance: float = 0.01
    include_top: bool = True
    source: str = ""
    note: str = ""


DARKNET = "Darknet's count of the cfg (../shared/darknet/README.md)"


def _darknet(size, params, bflops):
    return Count(size, params, bflops, source=DARKNET)


def _paper(size, params, bflops, source):
    return Count(size, params, bflops, params_tolerance=0.05, bflops_tolerance=0.05, source=source)


# name -> published counts (one build per name and size). Backbones include their 1000-way top.
COUNTS = {
    # The big backbones at 256 (Darknet's figures).
    "Darknet53": [_darknet(256, 41_573_216, 18.576)],
    "CSPDarknet53": [_darknet(256, 27_605_856, 13.071)],
    "ResNet50": [_darknet(256, 22_734_016, 9.742)],
    "CSPResNet50": [_darknet(256, 21_566_656, 8.972)],
    "ResNeXt50": [_darknet(256, 22_190_784, 10.111)],
    "CSPResNeXt50": [_darknet(256, 20_499_136, 7.933)],
    # The small backbones: cfg-exact ones Darknet's figures, the others the paper's Table 3
    # (weights given to 0.01M), within 5%.
    "DarknetRef": [_darknet(256, 7_314_352, 0.967)],
    "ResNet10": [_darknet(256, 5_240_000, 2.273)],
    "MobileNetV2": [_darknet(224, 3_470_784, 0.859)],
    "CSPMobileNetV2": [_darknet(224, 2_513_400, 0.764)],
    "DenseNet201": [_darknet(256, 17_138_880, 10.850)],
    "CSPDarknet53Elastic": [_darknet(256, 19_045_216, 7.745)],
    "CSPResNet50Elastic": [_darknet(256, 29_795_520, 9.367)],
    "CSPResNeXt50Elastic": [_darknet(256, 16_857_792, 5.452)],
    "PeleeNet": [_paper(224, 2.79e6, 1.017, "Table 3")],
    "CSPPeleeNet": [_paper(224, 2.83e6, 0.888, "Table 3")],
    "CSPDenseNetRef": [_paper(256, 3.48e6, 0.886, "Table 3")],
    "CSPPeleeNetRef": [_paper(256, 4.10e6, 1.103, "Table 3")],
    "CSPDenseNetbRef": [_paper(256, 1.38e6, 0.631, "Table 3")],
    "CSPPeleeNetbRef": [_paper(256, 2.01e6, 0.897, "Table 3")],
    "CSPResNet10": [_paper(256, 2.73e6, 1.905, "Table 3")],
    "DenseNet201Elastic": [_paper(224, 19.48e6, 8.77, "Table 3")],
    "CSPDenseNet201Elastic": [_paper(224, 20.17e6, 7.13, "Table 3")],
    "CSPDarknet53Tiny": [Count(128, 3_625_824, include_top=False, source="Darknet's count of yolov4-tiny.cfg layers 0-26",
                               note="the backbone of YOLOv4-tiny: no classifier top, no BFLOPs published")],
    # Variants that change more than the activation (Table 3; docs/small_models.md).
    "peleenet-swish-se": [_paper(224, 2.81e6, 1.017, "Table 3")],
    "csppeleenet-swish-se": [_paper(224, 2.85e6, 0.888, "Table 3")],
    # Detectors: the cfg detectors at their cfg sizes (Darknet's figures) and the paper's
    # Table 4 at other sizes (within 1%); the reconstructions Table 4 within 5%; Table 2 gives
    # the CSPPeleeNet heads' BFLOPs only.
    "CSPResNeXt50-PANet-SPP": [
        _darknet(512, 56_853_440, 71.344),
        Count(608, 56.9e6, 100.6, 0.01, source="Table 4"),
        Count(416, 56.9e6, 47.1, 0.01, source="Table 4"),
        Count(320, 56.9e6, 27.9, 0.01, source="Table 4"),
    ],
    "CSPDarknet53-PANet-SPP": [_darknet(416, 64_296_032, 60.137)],
    "CSPResNet50-PANet-SPP": [_darknet(416, 58_256_832, 49.313)],
    "YOLOv3-SPP": [_darknet(608, 62_944_352, 141.53), Count(608, 62.9e6, 141.5, 0.01, source="Table 4")],
    "YOLOv3": [
        _darknet(416, 61_895_776, 65.879),
        Count(608, 62.3e6, 140.7, 0.01, source="Table 4"),
        Count(320, 62.3e6, 39.0, 0.01, source="Table 4"),
    ],
    "YOLOv4": [Count(608, 64_296_032, 128.459, bflops_tolerance=0.005, source=DARKNET)],
    "YOLOv4-tiny": [Count(416, 6_049_888, 6.910, bflops_tolerance=0.005, source=DARKNET)],
    "CSPPeleeNet-EFM(SAM)": [_paper(416, 4.31e6, 5.07, "Table 4"),
                             Count(512, bflops=7.68, bflops_tolerance=0.05, source="Table 2",
                                   note="Table 2 gives BFLOPs only")],
    "CSPPeleeNet-Ref-EFM(SAM)": [_paper(320, 5.67e6, 3.43, "Table 4")],
    "CSPDenseNet-Ref-EFM(SAM)": [_paper(320, 5.05e6, 2.89, "Table 4")],
    "CSPPeleeNet-Ref-PRN": [_paper(320, 4.59e6, 2.56, "Table 4")],
    "CSPPeleeNet-Ref-PRN(3l)": [_paper(320, 4.79e6, 3.15, "Table 4")],
    "CSPDenseNet-Ref-PRN": [_paper(320, 3.97e6, 2.01, "Table 4")],
    "CSPDenseNetb-Ref-PRN": [_paper(320, 1.87e6, 1.59, "Table 4")],
    "PeleeNet-PRN": [_paper(416, 3.16e6, 4.04, "Table 4")],
    **{
        name: [Count(416, bflops=bflops, bflops_tolerance=0.05, source="Table 2", note="Table 2 gives BFLOPs only")]
        for name, bflops in (("CSPPeleeNet-PRN", 3.590), ("CSPPeleeNet-PRN-3l", 4.586), ("CSPPeleeNet-GFM", 4.605),
                             ("CSPPeleeNet-EFM", 4.868), ("CSPPeleeNet-EFM(SPP)", 4.863))
    },
}
# Registered names with no published count, and why (their other checks still run).
UNCOUNTED = {
    "CSPDenseNet201": "no target in the paper and no cfg published (docs/small_models.md)",
}

REF = "reference-repo"
ICFG = f"{REF}/in_progress/darknet/icfg"
# name -> the authors' cfg under ../shared/darknet/cfg that it must equal conv by conv.
CFGS = {
    "DarknetRef": f"{REF}/darknet.cfg",
    "ResNet10": f"{REF}/resnet10.cfg",
    "MobileNetV2": f"{REF}/mobilenet-v2.cfg",
    "CSPMobileNetV2": f"{REF}/csmobilenet-v2.cfg",
    "DenseNet201": f"{ICFG}/densenet201-leaky.cfg",
    "CSPDarknet53Elastic": f"{REF}/csdarknet53-elastic.cfg",
    "CSPResNet50Elastic": f"{REF}/csresnet50-elastic.cfg",
    "CSPResNeXt50Elastic": f"{REF}/csresnext50-elastic.cfg",
    **{name: f"{REF}/{name}.cfg" for name in (
        "csdarknet53", "csdarknet53-gamma", "csdarknet53-omega", "darknet53", "csresnet50", "csresnet50-omega",
        "csresnext50", "csresnext50-omega", "resnext50")},
    # The reference repo's icfg/resnext50-relu.cfg is a copy of resnext50-swish.cfg (it says
    # activation=swish throughout), so it cannot define the relu variant.
    **{f"{net}-{act}": f"{ICFG}/{net}-{act}.cfg" for net in ("darknet53", "resnet50", "resnext50")
       for act in ("leaky", "mish", "swish", "relu") if (net, act) != ("resnext50", "relu")},
    "CSPResNeXt50-PANet-SPP": f"{REF}/csresnext50-panet-spp.cfg",
    "CSPDarknet53-PANet-SPP": f"{REF}/csdarknet53-panet-spp.cfg",
    "CSPResNet50-PANet-SPP": f"{REF}/csresnet50-panet-spp.cfg",
    "YOLOv3": "darknet-repo/yolov3.cfg",
    "YOLOv3-SPP": "darknet-repo/yolov3-spp.cfg",
    "YOLOv4": "darknet-repo/yolov4.cfg",
    "YOLOv4-tiny": "darknet-repo/yolov4-tiny.cfg",
}

# Reference-size builds (name, size) that run only with -m slow: full-size detectors at the
# paper's other sizes, hundreds-of-layers DenseNets, and variants the default suite did not
# build before the harness (their counts are their builder's: the same convs).
SLOW_COUNTS = {
    ("DenseNet201Elastic", 224), ("CSPDenseNet201Elastic", 224), ("YOLOv4", 608),
    ("CSPResNeXt50-PANet-SPP", 608), ("CSPResNeXt50-PANet-SPP", 416), ("CSPResNeXt50-PANet-SPP", 320),
    ("YOLOv3", 608), ("YOLOv3", 320), ("CSPPeleeNet-EFM(SAM)", 512), ("CSPPeleeNet-PRN", 416),
    ("CSPPeleeNet-PRN-3l", 416), ("CSPPeleeNet-GFM", 416), ("CSPPeleeNet-EFM", 416), ("CSPPeleeNet-EFM(SPP)", 416),
    ("peleenet-swish", 224), ("peleenet-mish", 224), ("peleenet-swish-se", 224), ("csppeleenet-swish", 224),
    ("csppeleenet-mish", 224), ("resnext50-relu", 256), ("densenet201-leaky", 256), ("densenet201-mish", 256),
    ("densenet201-swish", 256), ("densenet201-relu", 256),
    # test_small_backbones::test_swish_and_se_variants_match_table3 builds it by default (against CSPPeleeNet).
    ("csppeleenet-swish-se", 224),
}
# Small-input checks that run only with -m slow: hundreds of layers, the variants and the detectors.
SLOW_SMALL = {"CSPDenseNet201", "CSPDenseNet201Elastic", "CSPResNet50Elastic", "DenseNet201", "DenseNet201Elastic"}
# Small-input models whose .keras round trip runs by default (the others' with -m slow).
ROUND_TRIP_BY_DEFAULT = {"CSPResNeXt50", "csdarknet53-omega", "ResNet50", "CSPMobileNetV2"}

SMALL_BACKBONE_INPUT = (64, 128, 3)  # non-square: a swapped height and width shows
SMALL_DETECTOR_INPUT = (128, 192, 3)  # P6 (EFM) is 2 x 3 and upsamples back onto P5


def kind(name):
    return registry.kind_of(name)


def recipe(name):
    """``(builder name, preset arguments)`` a registered name builds: a cfg variant is its
    builder with arguments (zoo.VARIANTS), anything else itself."""
    if kind(name) == "variant" and name in zoo.VARIANTS:
        builder, kwargs = zoo.VARIANTS[name]
        return builder, tuple(sorted(kwargs.items()))
    return name, ()


def expected_counts(name):
    """The published counts ``name`` is held to: its own, or for a variant that only sets the
    activation its builder's (activations hold no kernel weights and cost no conv FLOPs: Darknet
    counts csdarknet53-omega as csdarknet53; Table 3 counts swish as leaky)."""
    if name in COUNTS:
        return COUNTS[name]
    builder, kwargs = recipe(name)
    if builder != name and {key for key, _ in kwargs} <= {"activation"}:
        return expected_counts(builder)
    return None


def missing_expectations(names):
    """The names among ``names`` with neither published counts nor a stated reason."""
    return [name for name in names if expected_counts(name) is None and not UNCOUNTED.get(name)]


def _param(value, slow, id):
    return pytest.param(value, marks=pytest.mark.slow, id=id) if slow else pytest.param(value, id=id)


def reference_groups():
    """One build per (builder, arguments, size, top): the registered names it stands for."""
    groups = {}
    for name in registry.names():
        for count in expected_counts(name) or ():
            builder, kwargs = recipe(name)
            names = groups.setdefault((builder, kwargs, count.size, count.include_top), [])
            if name not in names:
                names.append(name)
    return [
        _param((key, tuple(names)), any((n, key[2]) in SLOW_COUNTS for n in names),
               f"{'='.join(names)}@{key[2]}")
        for key, names in sorted(groups.items(), key=lambda kv: (kv[1][0], kv[0][2]))
    ]


def _build(name, input_shape, include_top=True):
    if kind(name) == "detector":
        return registry.build(name, input_shape=input_shape)
    return registry.build(name, include_top=include_top, input_shape=input_shape)


def _make_weights_module(shared_dir):
    spec = importlib.util.spec_from_file_location("make_weights", shared_dir / "darknet" / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ACTIVATION_OF_LAYER = {"LeakyReLU": "leaky", "Mish": "mish", "ReLU": "relu", "swish": "swish", "silu": "swish",
                       "sigmoid": "logistic", "relu": "relu"}


def our_convs(model, blocks):
    """Each conv block as the cfg states it: weight shape (filters, input channels per group, k,
    k), stride, groups, batch norm, activation, output (h, w, c). Depthwise convs count their
    groups as Darknet does (a multiplier run as repeated channels: channels before the repeat)."""
    layers = {layer.name: layer for layer in model.layers}
    rows = []
    for block in blocks:
        conv = layers[f"{block}_conv"]
        if isinstance(conv, keras.layers.DepthwiseConv2D):
            k, channels = conv.kernel_size[0], conv.input.shape[-1]
            filters, per_group = channels * conv.depth_multiplier, 1
            groups = channels // (layers[f"{block}_repeat"].repeats if f"{block}_repeat" in layers else 1)
        else:
            k, _, per_group, filters = conv.kernel.shape
            groups = conv.groups
        act = layers.get(f"{block}_act")
        if act is None:
            activation = "linear"
        else:
            activation = ACTIVATION_OF_LAYER.get(type(act).__name__) or ACTIVATION_OF_LAYER[act.get_config()["activation"]]
        rows.append({
            "weight_shape": (int(filters), int(per_group), int(k), int(k)), "stride": int(conv.strides[0]),
            "groups": int(groups), "bn": int(f"{block}_bn" in layers), "activation": activation,
            "out": tuple(conv.output.shape[1:]),
        })
    return rows


def check_against_cfg(model, blocks, shared_dir, cfg, size, name):
    net, layers = _make_weights_module(shared_dir).infer_layers(str(shared_dir / "darknet" / "cfg" / cfg))
    convs = [layer for layer in layers if layer["type"] in ("convolutional", "conv")]
    ours = our_convs(model, blocks)
    assert len(ours) == len(convs), f"{name}: {len(ours)} conv blocks, the cfg {len(convs)}"
    same_size = (net["height"], net["width"]) == (size, size)
    for i, (mine, ref) in enumerate(zip(ours, convs)):
        expected = {
            "weight_shape": tuple(ref["weight_shape"]), "stride": ref["stride_x"], "groups": ref["groups"],
            "bn": ref["batch_normalize"], "activation": ref["activation"],
            "out": (ref["out_h"], ref["out_w"], ref["out_c"]),
        }
        if not same_size:  # built at another size than the cfg's [net]: channels only
            mine = {**mine, "out": mine["out"][-1:]}
            expected["out"] = expected["out"][-1:]
        assert mine == expected, f"conv #{i} (cfg layer {ref['index']}) of {name}"


# -- the registry is covered ----------------------------------------------------------------

def test_every_registered_model_has_expected_counts():
    assert len(registry.names("backbone")) >= 25 and len(registry.names("detector")) >= 20
    missing = missing_expectations(registry.names())
    assert not missing, f"registered without published counts (add them to COUNTS, or to UNCOUNTED with the reason): {missing}"
    stale = sorted((set(COUNTS) | set(UNCOUNTED) | set(CFGS)) - set(registry.names()))
    assert not stale, f"not registered: {stale}"
    for name, counts in COUNTS.items():
        for count in counts:
            assert count.params is not None or count.bflops is not None, name
            assert count.source, name
            if count.params is None or count.bflops is None:
                assert count.note, f"{name}: say why a count is missing"


def test_a_new_name_without_counts_fails_the_harness():
    assert missing_expectations(["CSPDarknet53", "csdarknet53-omega", "CSPDenseNet201"]) == []
    assert missing_expectations(["CSPNoSuchNet", "CSPDarknet53"]) == ["CSPNoSuchNet"]


def test_variants_are_their_builders_with_arguments():
    """The harness builds a cfg variant as its builder with preset arguments (zoo.VARIANTS), once
    for every name with the same ones."""
    for name in registry.names("variant"):
        builder, _ = recipe(name)
        assert builder != name and kind(builder) == "backbone", name


# -- counts at the reference size, and the cfg ------------------------------------------------

@pytest.mark.parametrize("group", reference_groups())
def test_counts_and_cfg(group, request):
    (builder, kwargs, size, include_top), names = group
    name = names[0]
    model = _build(name, (size, size, 3), include_top)
    network = model.detector if kind(name) == "detector" else model
    prof = keras_csp.profile(network)
    for each in names:
        for count in expected_counts(each):
            if count.size != size:
                continue
            if count.params is not None:
                if count.params_tolerance:
                    assert abs(prof.params - count.params) / count.params <= count.params_tolerance, (each, prof.params)
                else:
                    assert prof.params == count.params, each  # exact: same layers as the cfg
            if count.bflops is not None:
                assert abs(prof.bflops - count.bflops) / count.bflops <= count.bflops_tolerance, (each, prof.bflops)
    if kind(name) == "detector":
        assert network.inputs[0].shape[1:3] == (size, size)
        assert [tuple(o.shape[1:]) for o in network.outputs] == [
            (size // h.stride, size // h.stride, h.channels) for h in model.heads]
        blocks = model.darknet_blocks
        convs = {layer.name[:-5] for layer in network.layers if layer.name.endswith("_conv")}
        assert sorted(convs) == sorted(blocks)  # every conv listed exactly once
    else:
        blocks = model.darknet_blocks
        if include_top:
            assert model.output_shape == (None, 1000)
    activation = dict(kwargs).get("activation")
    if activation and activation != "leaky":
        kinds = {type(layer).__name__ for layer in network.layers}
        assert {"mish": "Mish", "relu": "ReLU", "swish": "Activation"}[activation] in kinds
        assert "LeakyReLU" not in kinds
    if dict(kwargs).get("se"):
        assert "Multiply" in {type(layer).__name__ for layer in network.layers}
    cfgs = [each for each in names if each in CFGS]
    if cfgs:
        shared_dir = request.getfixturevalue("shared_dir")
        for each in cfgs:
            check_against_cfg(network, blocks, shared_dir, CFGS[each], size, each)
            if kind(each) == "detector":
                from keras_csp.darknet import infer_network

                cfg = infer_network(shared_dir / "darknet" / "cfg" / CFGS[each], (size, size))
                assert cfg.kernel_weights == prof.params


# -- a small input: pyramid, forward pass, .keras round trip ---------------------------------

def small_by_default(name):
    """Backbones (but hundreds-of-layers ones) and the variants with a default round trip."""
    return (kind(name) == "backbone" and name not in SLOW_SMALL) or name in ROUND_TRIP_BY_DEFAULT


def round_trip_with_small_input(name):
    """The round trip runs inside test_small_input (one build) where that test runs it anyway:
    a default round trip, or a check that is slow as a whole."""
    return name in ROUND_TRIP_BY_DEFAULT or not small_by_default(name)


def _small_model(name):
    if kind(name) == "detector":
        model = registry.build(name, input_shape=SMALL_DETECTOR_INPUT)
        return model, model.detector, SMALL_DETECTOR_INPUT
    model = registry.build(name, include_top=False, input_shape=SMALL_BACKBONE_INPUT)
    return model, model, SMALL_BACKBONE_INPUT


def check_round_trip(model, x, path):
    expected = model(x, training=False)
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    got = loaded(x, training=False)
    expected, got = (list(t) if isinstance(t, (list, tuple)) else [t] for t in (expected, got))
    assert len(got) == len(expected)
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-5)
    network = getattr(loaded, "detector", loaded)
    assert set(keras_csp.pyramid_outputs(network)) == set(keras_csp.pyramid_outputs(getattr(model, "detector", model)))


@pytest.mark.parametrize("name", [_param(n, not small_by_default(n), n) for n in registry.names()])
def test_small_input(name, tmp_path):
    model, network, (height, width, _) = _small_model(name)
    features = keras_csp.pyramid_outputs(network)
    assert {"P3", "P4", "P5"} <= set(features)
    for level, tensor in features.items():
        stride = 2 ** int(level[1:])
        assert tuple(tensor.shape[1:3]) == (height // stride, width // stride), level
    x = np.random.default_rng(0).random((2, height, width, 3), dtype=np.float32)
    if kind(name) == "detector":
        outputs = model(x, training=False)
        assert [tuple(o.shape) for o in outputs] == [
            (2, height // h.stride, width // h.stride, h.channels) for h in model.heads]
        values = [o.numpy() for o in outputs]
    else:
        out = model(x)
        deepest = list(features.values())[-1]
        assert tuple(out.shape[:3]) == (2,) + tuple(deepest.shape[1:3])
        values = [out.numpy()]
    for value in values:
        assert np.isfinite(value).all() and float(np.std(value)) > 0
    if round_trip_with_small_input(name):
        check_round_trip(model, x[:1], tmp_path / "model.keras")


@pytest.mark.parametrize("name", [_param(n, True, n) for n in registry.names() if not round_trip_with_small_input(n)])
def test_keras_round_trip(name, tmp_path):
    model, _, (height, width, _) = _small_model(name)
    x = np.random.default_rng(4).random((1, height, width, 3), dtype=np.float32)
    check_round_trip(model, x, tmp_path / "model.keras")

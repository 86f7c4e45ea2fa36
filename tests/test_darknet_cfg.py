"""Darknet cfg parser and shape inference: errors, defaults, and Darknet's own counts."""

import json
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_csp.darknet import CfgError, infer_network, parse_cfg, parse_cfg_text
from keras_csp.darknet.summary import format_summary, summarize

NET = "[net]\nwidth=32\nheight=32\nchannels=3\n"


def conv(filters=8, size=3, stride=1, extra=""):
    return (f"\n[convolutional]\nbatch_normalize=1\nfilters={filters}\nsize={size}\n"
            f"stride={stride}\npad=1\nactivation=leaky\n{extra}")


def error_of(text):
    with pytest.raises(CfgError) as info:
        infer_network(text)
    return info.value, str(info.value)


# ----------------------------------------------------------------------------- parsing


def test_parser_strips_whitespace_comments_and_keeps_lines():
    cfg = parse_cfg_text(
        "# comment\n[net]\n width = 64 \n;other\nheight=32\nchannels=3\n\n"
        "[conv]\nfilters = 4\n#size=7\nlayers = -1, -2\n",
        "x.cfg",
    )
    assert cfg.net.options == {"width": "64", "height": "32", "channels": "3"}
    (layer,) = cfg.layers
    assert layer.type == "convolutional" and layer.header == "conv" and layer.line == 8
    assert layer.options == {"filters": "4", "layers": "-1,-2"}
    assert layer.option_lines["layers"] == 11
    assert layer.get_list("layers") == [-1, -2]


def test_darknet_defaults_for_a_bare_convolutional():
    # csmobilenet-v2.cfg relies on these: a [convolutional] with every option commented out
    # is 1 filter, 1x1, stride 1, no padding, no batch norm, logistic.
    network = infer_network(NET + "[convolutional]\n")
    (spec,) = network.layers
    assert (spec.filters, spec.size, spec.stride_y, spec.padding) == (1, 1, 1, 0)
    assert (spec.batch_normalize, spec.activation) == (False, "logistic")
    assert spec.output_shape == (32, 32, 1)
    assert spec.weight_floats == 1 + 3  # bias + 3 kernel weights


@pytest.mark.parametrize(
    "text, pattern, line",
    [
        (NET + "[foo]\n", r"unknown section \[foo\]", 5),
        (NET + "[convolutional]\nfilterz=3\n", r"unknown option 'filterz'", 6),
        (NET + "[convolutional]\nfilters=three\n", r"filters='three': expected an integer", 6),
        (NET + "[convolutional]\nfilters\n", r"expected key=value", 6),
        (NET + "[convolutional\n", r"does not end with '\]'", 5),
        ("width=3\n[net]\n", r"before the first \[section\]", 1),
        ("[convolutional]\n" + NET, r"first section must be \[net\]", 1),
        (NET + "[convolutional]\nsize=3\nsize=5\n", r"'size' given twice \(first on line 6\)", 7),
        (NET + "[convolutional]\nactivation=elu\n", r"activation 'elu' is not supported", 6),
        (NET + "[convolutional]\nantialiasing=1\n", r"antialiasing=1 is not supported", 6),
        (NET + conv() + "\n[route]\nlayers=-1,\n", r"empty item", 15),
        (NET + conv() + "\n[route]\nlayers=-3\n", r"refers to layer -3 .*does not exist", 15),
        (NET + conv() + "\n[route]\nlayers=4\n", r"refers to layer 4 .*does not exist", 15),
        (NET + conv() + "\n[route]\nlayers=-1\ngroups=3\n", r"groups=3 does not divide the 8", 16),
        (NET + conv(filters=6, extra="groups=4\n"), r"groups=4 must divide", 13),
        (NET + "[shortcut]\nfrom=-1\n", r"cannot be the first layer", 5),
        (NET + conv() + conv(stride=2) + "\n[upsample]\nstride=2\n[shortcut]\nfrom=-2\n",
         r"cannot add layer 1 \[convolutional\] .* is 16x16x8 to the previous layer's 32x32x8", 24),
        (NET + conv(filters=20, size=1) + "\n[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\nnum=3\nclasses=2\n",
         r"must output 3\*\(2\+5\) = 21 channels", 14),
        (NET + conv(filters=21, size=1) + "\n[yolo]\nmask=0,5\nanchors=1,2,3,4\nnum=2\nclasses=2\n",
         r"mask index 5 has no anchor", 15),
        (NET + "[maxpool]\nsize=2\nstride=2\nantialiasing=2\n", r"antialiasing=2 is not supported", 8),
        (NET + "[upsample]\nstride=-2\n", r"reverse \(downsampling\)", 6),
        (NET + "[convolutional]\nshare_index=0\n", r"refers to layer 0 \(absolute 0\)", 6),
    ],
)
def test_errors_name_file_line_and_option(text, pattern, line):
    error, message = error_of(text)
    assert re.search(pattern, message), message
    assert error.line == line, message
    assert message.startswith(f"<cfg>:{line}: ")


def test_repeated_net_option_warns_and_keeps_the_first_value_like_darknet():
    with pytest.warns(UserWarning, match="'width' given twice"):
        network = infer_network(NET + "width=64\n" + conv())
    assert network.width == 32


def test_net_must_give_a_size_unless_input_size_is_passed():
    _, message = error_of("[net]\nchannels=3\n" + conv())
    assert "option height must be a positive integer" in message
    network = infer_network("[net]\nchannels=3\n" + conv(), input_size=(24, 40))
    assert network.layers[0].output_shape == (24, 40, 8)


def test_missing_cfg_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Darknet cfg not found: .*nope.cfg"):
        parse_cfg(tmp_path / "nope.cfg")


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["[net]", "[convolutional]", "[route]", "[maxpool]", "[yolo]",
                                 "width=8", "height=8", "channels=3", "filters=4", "size=3",
                                 "stride=2", "pad=1", "layers=-1", "layers=-2,-1", "from=-2",
                                 "[shortcut]", "[upsample]", "groups=2", "group_id=1",
                                 "size=2", "activation=mish", "batch_normalize=1", "=", "x",
                                 "# c", "[avgpool]", "[softmax]", "classes=1", "mask=0"]),
                max_size=24))
def test_any_text_either_infers_or_raises_cfg_error(lines):
    """The parser and inference never fail with anything but a located CfgError."""
    try:
        network = infer_network("\n".join(lines) + "\n")
    except CfgError as error:
        assert str(error).startswith("<cfg>")
    else:
        for spec in network.layers:
            assert all(d >= 1 for d in spec.output_shape)


# ---------------------------------------------------------------------- Darknet semantics


def test_maxpool_and_conv_output_sizes_follow_darknet():
    network = infer_network(
        "[net]\nwidth=13\nheight=13\nchannels=4\n"
        "[maxpool]\nsize=2\nstride=2\n"          # (13 + 1 - 2) // 2 + 1 = 7
        "[maxpool]\nsize=3\nstride=2\n"          # (7 + 2 - 3) // 2 + 1 = 4
        "[maxpool]\nsize=5\nstride=1\n"          # SPP: same size
        "[maxpool]\nsize=2\nstride=2\npadding=0\n"  # (4 - 2) // 2 + 1 = 2
        "[maxpool]\nmaxpool_depth=1\nout_channels=3\n"
        "[convolutional]\nfilters=5\nsize=4\nstride=2\npad=1\n"  # (2 + 4 - 4) // 2 + 1 = 2
    )
    assert [s.output_shape for s in network.layers] == [
        (7, 7, 4), (4, 4, 4), (4, 4, 4), (2, 2, 4), (2, 2, 3), (2, 2, 5)]


def test_route_groups_and_shortcut_channel_rules():
    network = infer_network(
        NET + conv(filters=8) + conv(filters=4)
        + "\n[route]\nlayers=0\ngroups=2\ngroup_id=1\n"  # 4 channels
        + "\n[shortcut]\nfrom=0\nactivation=leaky\n"     # 4 + 8: output keeps 4
        + "\n[route]\nlayers=-1,0\n"
    )
    shapes = [s.output_shape for s in network.layers]
    assert shapes[2:] == [(32, 32, 4), (32, 32, 4), (32, 32, 12)]
    assert network.layers[3].inputs == (2, 0)


def test_yolo_head_spec_and_detector_output_order():
    text = NET + conv(filters=16)
    text += conv(filters=12, size=1, stride=2).replace("leaky", "linear")
    text += "\n[yolo]\nmask=2,3\nanchors=1,2, 3,4, 5,6, 7,8\nnum=4\nclasses=1\nscale_x_y=1.1\n"
    text += "iou_loss=ciou\niou_normalizer=0.07\nnms_kind=greedynms\nbeta_nms=0.6\njitter=.3\n"
    text += "\n[route]\nlayers=0\n" + conv(filters=12, size=1).replace("leaky", "linear")
    text += "\n[yolo]\nmask=0,1\nanchors=1,2, 3,4, 5,6, 7,8\nnum=4\nclasses=1\n"
    network = infer_network(text)
    heads = network.heads()
    assert [h["stride"] for h in heads] == [1, 2]  # largest map first
    assert heads[0]["anchors"] == [(1.0, 2.0), (3.0, 4.0)]
    assert heads[1] == {**heads[1], "anchors": [(5.0, 6.0), (7.0, 8.0)], "scale_x_y": 1.1,
                        "iou_loss": "ciou", "iou_normalizer": 0.07, "nms_kind": "greedynms",
                        "num_classes": 1, "layer": 2}
    assert heads[0]["iou_loss"] == "mse" and heads[0]["iou_normalizer"] == 0.75  # defaults
    assert heads[0]["layer"] == 5


# ------------------------------------------------------------------ the authors' cfgs


def _all_cfgs(shared_dir):
    return sorted((shared_dir / "darknet" / "cfg").rglob("*.cfg"))


REJECTED = {
    "reference-repo/in_progress/csresnet50-elastic-panet-spp.cfg": r"different spatial sizes",
    "reference-repo/in_progress/csresnext50-elastic-panet-spp.cfg": r"different spatial sizes",
    "reference-repo/in_progress/yolov3-spp-matrix.cfg": r"share_index=115.*Darknet rejects",
}


def test_every_cfg_infers_except_the_three_darknet_rejects(shared_dir):
    root = shared_dir / "darknet" / "cfg"
    cfgs = _all_cfgs(shared_dir)
    assert len(cfgs) > 60
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in cfgs:
            key = path.relative_to(root).as_posix()
            if key in REJECTED:
                with pytest.raises(CfgError, match=REJECTED[key]) as info:
                    infer_network(path)
                assert str(info.value).startswith(f"{path}:")
                continue
            network = infer_network(path)
            assert network.kernel_weights > 0, key
            assert all(min(s.output_shape) >= 1 for s in network.layers), key


def test_rejected_elastic_cfg_builds_at_a_size_where_its_routes_align(shared_dir):
    path = shared_dir / "darknet/cfg/reference-repo/in_progress/csresnext50-elastic-panet-spp.cfg"
    network = infer_network(path, input_size=(512, 512))  # 512 / 32 = 16 is even
    assert len(network.heads()) == 3


# README rows -> the cfgs they describe (numbers are read from the README itself).
README_ROWS = {
    "darknet53": ["reference-repo/darknet53.cfg", "darknet-repo/darknet53.cfg",
                  *[f"reference-repo/in_progress/darknet/icfg/darknet53-{a}.cfg"
                    for a in ("leaky", "mish", "relu", "swish")]],
    "csdarknet53": ["reference-repo/csdarknet53.cfg", "reference-repo/csdarknet53-gamma.cfg",
                    "reference-repo/csdarknet53-omega.cfg", "darknet-repo/csdarknet53-omega.cfg"],
    "resnet50": [f"reference-repo/in_progress/darknet/icfg/resnet50-{a}.cfg"
                 for a in ("leaky", "mish", "relu", "swish")],
    "csresnet50": ["reference-repo/csresnet50.cfg", "reference-repo/csresnet50-gamma.cfg",
                   "reference-repo/csresnet50-omega.cfg"],
    "resnext50": ["reference-repo/resnext50.cfg",
                  *[f"reference-repo/in_progress/darknet/icfg/resnext50-{a}.cfg"
                    for a in ("leaky", "mish", "relu", "swish")]],
    "csresnext50": ["reference-repo/csresnext50.cfg", "reference-repo/csresnext50-gamma.cfg",
                    "reference-repo/csresnext50-omega.cfg"],
    "darknet": ["reference-repo/darknet.cfg"],  # darknet-repo's has another layout
    "resnet10": ["reference-repo/resnet10.cfg"],
    "mobilenet-v2": ["reference-repo/mobilenet-v2.cfg"],
    "csmobilenet-v2": ["reference-repo/csmobilenet-v2.cfg"],
    "csdarknet53-elastic": ["reference-repo/csdarknet53-elastic.cfg"],
    "csresnet50-elastic": ["reference-repo/csresnet50-elastic.cfg"],
    "csresnext50-elastic": ["reference-repo/csresnext50-elastic.cfg"],
    "densenet201": ["darknet-repo/densenet201.cfg",
                    *[f"reference-repo/in_progress/darknet/icfg/densenet201-{a}.cfg"
                      for a in ("leaky", "mish", "relu", "swish")]],
    "csdarknet53-panet-spp": ["reference-repo/csdarknet53-panet-spp.cfg",
                              "reference-repo/in_progress/csdarknet53-panet-spp.cfg"],
    "csresnet50-panet-spp": ["reference-repo/csresnet50-panet-spp.cfg",
                             "reference-repo/in_progress/csresnet50-panet-spp.cfg"],
    "csresnext50-panet-spp": ["reference-repo/csresnext50-panet-spp.cfg",
                              "reference-repo/csresnext50-panet-spp-giou.cfg",
                              "reference-repo/csresnext50-panet-spp-original-optimal.cfg",
                              "reference-repo/pytorch_branch/csresnext50-panet-spp.cfg"],
    "yolov3-spp": ["reference-repo/pytorch_branch/yolov3-spp.cfg", "darknet-repo/yolov3-spp.cfg"],
}


def _readme_rows(shared_dir):
    rows = {}
    for line in (shared_dir / "darknet" / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not re.match(r"^[\d,]+$", cells[2]):
            continue
        label = cells[0].split()[0]
        sizes = [int(v) for v in cells[1].split("/")]
        bflops = [float(v) for v in cells[4].split("/")]
        rows[label] = dict(text=cells[0], sizes=sizes, bflops=bflops,
                           w=int(cells[2].replace(",", "")), wbs=int(cells[3].replace(",", "")))
    return rows


def test_params_and_bflops_match_the_darknet_table(shared_dir):
    rows = _readme_rows(shared_dir)
    assert set(README_ROWS) <= set(rows), sorted(set(README_ROWS) - set(rows))
    root = shared_dir / "darknet" / "cfg"
    checked = 0
    for label, paths in README_ROWS.items():
        row = rows[label]
        for path in paths:
            net = parse_cfg(root / path).net
            size = int(net.options["width"])
            assert size in row["sizes"], path
            network = infer_network(root / path)
            assert network.kernel_weights == row["w"], path
            assert network.params_with_biases == row["wbs"], path
            expected = row["bflops"][row["sizes"].index(size)]
            assert network.bflops == pytest.approx(expected, rel=0.01), path
            checked += 1
    # The row's note gives resnet50.cfg's own figure (classifier conv before the avgpool).
    note = re.search(r"`resnet50.cfg` gives (\d+\.\d+)", rows["resnet50"]["text"])
    network = infer_network(root / "reference-repo/resnet50.cfg")
    assert network.kernel_weights == rows["resnet50"]["w"]
    assert network.bflops == pytest.approx(float(note.group(1)), rel=0.01)
    assert checked >= 40


def test_layer_shapes_match_darknets_in_every_vector(shared_dir):
    root = shared_dir / "darknet"
    by_md5 = {}
    import hashlib

    for path in _all_cfgs(shared_dir):
        by_md5[hashlib.md5(path.read_bytes()).hexdigest()] = path
    vectors = sorted((root / "vectors").glob("*.npz"))
    assert vectors
    for vector in vectors:
        meta = json.loads(str(np.load(vector)["meta_json"]))
        network = infer_network(by_md5[meta["cfg_md5"]])
        assert len(network.layers) == meta["n_layers"]
        assert list(network.input_shape) == [meta["net_whc"][1], meta["net_whc"][0],
                                             meta["net_whc"][2]]
        for layer in meta["layers"]:
            spec = network.layers[layer["index"]]
            # shape_hwc is the tensor Darknet wrote (its [softmax] reports out_whc 0x0x0)
            assert spec.type == layer["type"], (vector.name, layer["index"])
            assert spec.output_shape == tuple(layer["shape_hwc"]), (vector.name, layer["index"])


def test_summary_lists_every_layer_with_totals(shared_dir):
    path = shared_dir / "darknet/cfg/reference-repo/csmobilenet-v2.cfg"
    rows = summarize(path)
    network = infer_network(path)
    assert len(rows) == len(network.layers)
    assert sum(r["weights"] for r in rows) == network.kernel_weights
    text = format_summary(network)
    assert f"{network.kernel_weights:,} conv weights" in text
    assert f"BFLOPS {network.bflops:.3f}" in text
    assert re.search(r"^\s+1 conv\s+16/16 ", text, re.M), text.splitlines()[3]

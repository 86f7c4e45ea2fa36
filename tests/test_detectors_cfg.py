"""The cfg detectors against the authors' Darknet cfgs and Darknet's own outputs.

- (kernel weights and BFLOPs against Darknet's figures and the paper's Table 4, every conv block
  in ``darknet_blocks`` order against the cfg's conv layers: tests/test_registry_models.py);
- the FPN / FPN-SPP / PRN necks against keras_csp.darknet's cfg builder on shared weights
  (cfgs with every width divided by 16, so the check is cheap but the wiring is the cfg's);
- CSPDarknet53-PANet-SPP against Darknet's own head outputs for seeded weights.
"""

import re
import subprocess
import sys

import numpy as np
import pytest

from keras_csp import detectors
from keras_csp.backend import keras
from keras_csp.darknet import block_name, default_outputs, infer_network, load_conv_weights, model_from_cfg

def _shrunk_cfg(path, divisor=16, keep=(255,)):
    """The cfg text with every conv's filters divided by ``divisor`` (head convs kept)."""
    def shrink(match):
        value = int(match.group(2))
        return match.group(1) + str(value if value in keep else max(value // divisor, 1))

    return re.sub(r"(?m)^(filters\s*=\s*)(\d+)", shrink, path.read_text(encoding="latin-1"))


def _cfg_backbone(network, taps):
    """The cfg's own layers up to the taps, as a keras_csp backbone (P{n} identity layers),
    and the cfg's whole network (its raw head outputs) sharing those layers."""
    heads = default_outputs(network)
    model = model_from_cfg(network, outputs=list(taps.values()) + heads)
    features = model.outputs[:len(taps)]
    outputs = [keras.layers.Identity(name=lvl)(t) for lvl, t in zip(taps, features)]
    backbone = keras.Model(model.inputs[0], outputs, name="cfg_backbone")
    blocks = [block_name(spec.index) for spec in network.layers if spec.weight_floats]
    last = max(taps.values())
    backbone.darknet_blocks = tuple(block_name(spec.index) for spec in network.layers
                                    if spec.weight_floats and spec.index <= last)
    reference = keras.Model(model.inputs[0], model.outputs[len(taps):])
    return backbone, reference, blocks


def _make_weights(shared_dir, cfg_path, out):
    script = shared_dir / "darknet" / "make_weights.py"
    subprocess.run([sys.executable, str(script), str(cfg_path), str(out), "--seed", "0"],
                   check=True, capture_output=True)
    return out


CASES = {
    # cfg, divisor, taps (Darknet layer indices of the backbone maps), neck, anchors
    "yolov3": ("darknet-repo/yolov3.cfg", 16, {"P3": 36, "P4": 61, "P5": 74},
               detectors.necks.FPN(widths=(8, 16, 32))),
    "yolov3-spp": ("darknet-repo/yolov3-spp.cfg", 16, {"P3": 36, "P4": 61, "P5": 74},
                   detectors.necks.FPN(widths=(8, 16, 32), spp=True)),
    "yolov3-tiny-prn": ("darknet-repo/yolov3-tiny-prn.cfg", 1, {"P4": 8, "P5": 13},
                        detectors.necks.PRN(widths=(128, 256))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_neck_matches_the_cfg_builder_on_shared_weights(case, shared_dir, tmp_path):
    cfg, divisor, taps, neck = CASES[case]
    text = _shrunk_cfg(shared_dir / "darknet" / "cfg" / cfg, divisor)
    cfg_path = tmp_path / "net.cfg"
    cfg_path.write_text(text)
    network = infer_network(text, (96, 96))
    backbone, reference, all_blocks = _cfg_backbone(network, taps)
    anchors = detectors.heads.TINY_PRN_ANCHORS if len(taps) == 2 else None
    det = detectors.YOLODetector(backbone, neck, num_classes=80, anchors=anchors)
    weights = _make_weights(shared_dir, cfg_path, tmp_path / "net.weights")
    load_conv_weights(reference, all_blocks, weights)
    det.load_darknet_weights(weights)  # the whole file, in our block order: all-or-nothing
    x = np.random.default_rng(0).random((1, 96, 96, 3), dtype=np.float32)
    ours = det(x, training=False)
    theirs = reference(x, training=False)
    assert [tuple(o.shape) for o in ours] == [tuple(t.shape) for t in theirs]
    for a, b in zip(ours, theirs):
        b = b.numpy()
        np.testing.assert_allclose(a.numpy(), b, rtol=0, atol=1e-4 * np.abs(b).max())


def test_csdarknet53_panet_spp_reproduces_darknet(shared_dir, tmp_path):
    """Darknet's three raw head outputs for seeded weights (vectors/csdarknet53-panet-spp.npz)."""
    cfg = shared_dir / "darknet" / "cfg" / "reference-repo" / "csdarknet53-panet-spp.cfg"
    weights = _make_weights(shared_dir, cfg, tmp_path / "cd53.weights")
    det = detectors.CSPDarknet53PANetSPP(input_shape=(416, 416, 3), weights=str(weights))
    ref = np.load(shared_dir / "darknet" / "vectors" / "csdarknet53-panet-spp.npz")
    outputs = det.detector(ref["input"][None], training=False)
    for out, key in zip(outputs, ("layer_138", "layer_149", "layer_160")):
        expected = ref[key]
        assert out.shape[1:] == expected.shape
        np.testing.assert_allclose(out.numpy()[0], expected, rtol=0, atol=1e-3 * np.abs(expected).max())

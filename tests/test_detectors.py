"""YOLODetector: composition, every neck, Darknet block order, predict / InferenceModel, fit,
saving (.keras and Darknet .weights) and tf_keras; on a tiny backbone at 64x64."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_csp
from keras_csp import detectors
from keras_csp.backend import keras
from keras_csp.detectors import necks
from keras_csp.detectors.nms import NMSConfig, non_max_suppression
from keras_csp.layers import conv_bn_act
from keras_csp.ops import decode_heads

CHANNELS = {1: 16, 2: 32, 3: 128, 4: 128, 5: 256, 6: 256}


def tiny_backbone(size=64, top=6, name="tiny"):
    """A keras_csp-style backbone: a stride-2 conv per level, identity layers P1..P{top}."""
    registry = []
    inputs = keras.Input((size, size, 3), name="images")
    x = inputs
    for level in range(1, top + 1):
        x = conv_bn_act(x, CHANNELS[level], 3, 2, name=f"stage{level}", registry=registry)
        x = keras.layers.Identity(name=f"P{level}")(x)
    model = keras.Model(inputs, x, name=name)
    model.darknet_blocks = tuple(registry)
    return model


SMALL_NECKS = {
    "fpn": necks.FPN(widths=(8, 16, 32)),
    "fpn_spp": necks.FPN(widths=(8, 16, 32), spp=True),
    "panet_spp": necks.PANet(widths=(8, 16, 32)),
    "efm": necks.EFM(widths=(8, 16, 32)),
    "efm_sam": necks.EFM(widths=(8, 16, 32), attention="sam"),
    "efm_spp": necks.EFM(widths=(8, 16, 32), spp=True),
    "gfm": necks.GFM(widths=(8, 16, 32)),
    "prn": necks.PRN(widths=(16, 32)),
    "prn_3l": necks.PRN(widths=(16, 16, 32), levels=("P3", "P4", "P5")),
}


@pytest.mark.parametrize("neck", sorted(necks.NECKS))
def test_every_named_neck_builds_and_runs(neck):
    det = detectors.YOLODetector(tiny_backbone(), neck, num_classes=3)
    levels = necks.NECKS[neck].levels
    assert [h.stride for h in det.heads] == [2 ** int(lvl[1:]) for lvl in levels]
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    outputs = det(x, training=False)
    assert len(outputs) == len(levels)
    for out, head in zip(outputs, det.heads):
        assert tuple(out.shape) == (2, 64 // head.stride, 64 // head.stride, head.channels)
        assert np.isfinite(out.numpy()).all()
    # Every conv block of the network is listed once, in cfg order: backbone blocks first.
    convs = sorted(layer.name[:-5] for layer in det.detector.layers if layer.name.endswith("_conv"))
    assert sorted(det.darknet_blocks) == convs
    assert det.darknet_blocks[0] == "stage1"


def test_prediction_convs_sit_where_the_cfgs_put_them():
    fpn = detectors.YOLODetector(tiny_backbone(), SMALL_NECKS["fpn"]).darknet_blocks
    # yolov3.cfg: the stride-32 prediction comes before the P4 branch, stride 8 last.
    assert fpn.index("head_p5") < fpn.index("neck_p4_reduce") < fpn.index("head_p4")
    assert fpn[-1] == "head_p3"
    pan = detectors.YOLODetector(tiny_backbone(), SMALL_NECKS["panet_spp"]).darknet_blocks
    # panet-spp cfgs: stride 8 first, then the bottom-up path.
    assert pan.index("head_p3") < pan.index("neck_p4_down") < pan.index("head_p4")
    assert pan[-1] == "head_p5"


def test_efm_fuses_neighbours_and_gfm_all_levels():
    efm = detectors.YOLODetector(tiny_backbone(), SMALL_NECKS["efm"]).darknet_blocks
    assert {"neck_p3_from_p2_conv", "neck_p3_from_p4_conv", "neck_p5_from_p6_conv"} <= set(efm)
    assert "neck_p3_from_p5_conv" not in efm
    gfm = detectors.YOLODetector(tiny_backbone(), SMALL_NECKS["gfm"]).darknet_blocks
    assert {"neck_p3_from_p5_conv", "neck_p5_from_p3_conv"} <= set(gfm)
    assert "neck_p3_from_p2_conv" not in gfm
    names = {layer.name for layer in detectors.YOLODetector(
        tiny_backbone(), SMALL_NECKS["efm_sam"]).detector.layers}
    assert {"neck_p3_maxout", "neck_p4_sam", "neck_p5_sam_gate_conv"} <= names


def test_unused_backbone_stages_are_left_out():
    det = detectors.YOLODetector(tiny_backbone(), SMALL_NECKS["prn"])  # reads P4, P5 only
    names = {layer.name for layer in det.detector.layers}
    assert "stage6_conv" not in names and "stage6" not in det.darknet_blocks


def test_maxout_cuts_the_fused_pyramid_cio():
    """The EFM memory claim on a small scale: the fusion convs read w, not 3w, channels."""
    def fusion_input(maxout):
        det = detectors.YOLODetector(tiny_backbone(), necks.EFM(widths=(8, 16, 32), maxout=maxout))
        prof = keras_csp.profile(det.detector)
        return sum(np.prod(l.input_shape) for l in prof.layers if l.name.endswith("_out_conv"))

    with_maxout, without = fusion_input(True), fusion_input(False)
    # P3, P4 fuse three inputs, P5 fuses P4, P5, P6 (the tiny backbone has P6): 2/3 less.
    assert with_maxout * 3 == without


def test_backbone_weights_carry_over_and_backbone_view():
    backbone = tiny_backbone()
    rng = np.random.default_rng(1)
    backbone.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in backbone.get_weights()])
    x = rng.random((1, 64, 64, 3), dtype=np.float32)
    expected = keras_csp.feature_extractor(backbone, ("P3", "P5"))(x)
    det = detectors.YOLODetector(backbone, SMALL_NECKS["panet_spp"])
    features = det.backbone(x)
    assert sorted(features) == ["P1", "P2", "P3", "P4", "P5"]  # P6 is not read by PANet
    for level in ("P3", "P5"):
        np.testing.assert_allclose(features[level].numpy(), expected[level].numpy(), rtol=1e-5, atol=1e-6)


def test_heads_options_anchors_and_errors():
    det = detectors.YOLODetector(
        tiny_backbone(), SMALL_NECKS["fpn"], num_classes=2,
        anchors=[(4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (14, 15)],
        head_options=[{"scale_x_y": 1.2}, {}, {"iou_loss": "ciou"}],
    )
    assert [h.anchors for h in det.heads] == [((4, 5), (6, 7)), ((8, 9), (10, 11)), ((12, 13), (14, 15))]
    assert det.heads[0].scale_x_y == 1.2 and det.heads[2].iou_loss == "ciou"
    assert det.detector.outputs[0].shape[-1] == 2 * 7
    with pytest.raises(ValueError, match="Unknown neck"):
        detectors.YOLODetector(tiny_backbone(), "bifpn")
    with pytest.raises(ValueError, match="missing"):
        detectors.YOLODetector(tiny_backbone(top=4), "panet_spp")
    with pytest.raises(ValueError, match="split evenly"):
        detectors.YOLODetector(tiny_backbone(), SMALL_NECKS["fpn"], anchors=[(1, 2)] * 4)
    with pytest.raises(ValueError, match="first 256 channels"):
        detectors.YOLODetector(tiny_backbone(), necks.PRN(widths=(256, 32)))


def _prior_free(det):
    """Random head weights so detections are spread over the image."""
    rng = np.random.default_rng(2)
    for layer in det.detector.layers:
        if layer.name.startswith("head_") and layer.name.endswith("_conv"):
            kernel, bias = layer.get_weights()
            layer.set_weights([rng.normal(size=kernel.shape).astype(np.float32) * 0.3,
                               rng.normal(size=bias.shape).astype(np.float32)])
    return det


def test_predict_returns_fixed_size_boxes_in_pixels():
    import tensorflow as tf

    nms = NMSConfig(score_threshold=0.3, max_detections=20, pre_nms_top_k=200)
    det = _prior_free(detectors.YOLODetector(tiny_backbone(), SMALL_NECKS["panet_spp"],
                                             num_classes=3, nms=nms))
    x = np.random.default_rng(3).random((3, 64, 64, 3), dtype=np.float32)
    # The same thing by hand: decode, score, NMS, scale to pixels.
    decoded = decode_heads(det(x, training=False), det.heads, (64, 64))
    scores = decoded["objectness"][..., None] * decoded["class_probs"]
    ref = {k: v.numpy() for k, v in non_max_suppression(decoded["boxes"], scores, nms).items()}
    assert ref["num_detections"].min() > 0
    eager = det.detect(x)
    np.testing.assert_array_equal(eager["num_detections"].numpy(), ref["num_detections"])
    np.testing.assert_allclose(eager["boxes"].numpy(), ref["boxes"] * 64, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(eager["classes"].numpy(), ref["classes"])
    # predict on an evaluation-style dataset carrying the letterbox geometry maps boxes back:
    # an image of 32 x 64 (h x w) letterboxed to 64 x 64 has scale 1 and 16 rows of padding.
    info = np.tile(np.array([[32, 64], [64, 64], [1, 1], [16, 0]], np.float32), (3, 1, 1))
    data = tf.data.Dataset.from_tensor_slices((x, {"image_info": info})).batch(2)
    out = det.predict(data, verbose=0)
    assert out["boxes"].shape == (3, 20, 4) and out["classes"].dtype == np.int32
    np.testing.assert_array_equal(out["num_detections"], ref["num_detections"])
    valid = np.arange(20)[None] < ref["num_detections"][:, None]
    expected = np.clip(ref["boxes"] * 64 - np.array([0, 16, 0, 16]), 0, [64, 32, 64, 32])
    np.testing.assert_allclose(out["boxes"][valid], expected[valid], atol=1e-3)
    assert not out["boxes"][~valid].any()


def test_inference_model_undoes_the_letterbox():
    from keras_csp.data.augment import letterbox

    det = _prior_free(detectors.YOLODetector(tiny_backbone(), SMALL_NECKS["fpn"], num_classes=2,
                                             nms={"score_threshold": 0.2, "max_detections": 15}))
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 255, (40, 100, 3), dtype=np.uint8),
              rng.integers(0, 255, (90, 30, 3), dtype=np.uint8)]
    out = detectors.predict_boxes(det, images)
    assert out["boxes"].shape == (2, 15, 4)
    for i, image in enumerate(images):
        padded, _, info = letterbox(image, np.zeros((0, 4), np.float32), 64)
        x = (padded.numpy().astype(np.float32) / 255.0)[None]
        raw = det(x, training=False)
        decoded = decode_heads(raw, det.heads, (64, 64))
        scores = decoded["objectness"][..., None] * decoded["class_probs"]
        ref = non_max_suppression(decoded["boxes"], scores, det.nms_config)
        num = int(ref["num_detections"][0])
        assert num == out["num_detections"][i] > 0
        (h0, w0), _, (sy, sx), (oy, ox) = info.numpy()
        pix = ref["boxes"].numpy()[0, :num] * 64
        expected = (pix - [ox, oy, ox, oy]) / [sx, sy, sx, sy]
        expected = np.clip(expected, 0, [w0, h0, w0, h0])
        np.testing.assert_allclose(out["boxes"][i, :num], expected, atol=1e-2)
        assert (out["boxes"][i, :num, [2, 3]] <= [[w0], [h0]]).all()
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        detectors.predict_boxes(det, [np.full((8, 8, 3), 2.0, np.float32)])


def test_fit_one_step_trains_with_the_yolo_loss():
    det = detectors.YOLODetector(tiny_backbone(), SMALL_NECKS["prn"], num_classes=2)
    det.compile(optimizer=keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(5)
    x = rng.random((4, 64, 64, 3), dtype=np.float32)
    boxes = np.full((4, 3, 5), -1, np.float32)
    boxes[:, 0] = [0.2, 0.2, 0.6, 0.7, 1]
    before = [w.copy() for w in det.detector.get_weights()]
    history = det.fit(x, boxes, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = det.detector.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_keras_file_and_darknet_weights_roundtrip(tmp_path):
    det = _prior_free(detectors.YOLODetector(
        tiny_backbone(), SMALL_NECKS["efm_sam"], num_classes=2,
        nms={"method": "diou", "max_detections": 9}))
    x = np.random.default_rng(6).random((1, 64, 64, 3), dtype=np.float32)
    expected = [o.numpy() for o in det(x, training=False)]
    det.save(tmp_path / "det.keras")
    loaded = keras.models.load_model(tmp_path / "det.keras")
    assert isinstance(loaded, detectors.Detector)
    assert loaded.nms_config == det.nms_config and loaded.darknet_blocks == det.darknet_blocks
    for a, b in zip(expected, loaded(x, training=False)):
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-5, atol=1e-6)
    assert loaded.predict(x, verbose=0)["boxes"].shape == (1, 9, 4)
    # NMS settings change after training (predict is rebuilt) and survive save / load.
    loaded.nms = {"method": "greedy", "max_detections": 5, "score_threshold": 0.0}
    assert loaded.predict(x, verbose=0)["boxes"].shape == (1, 5, 4)
    loaded.save(tmp_path / "det_nms.keras")
    assert keras.models.load_model(tmp_path / "det_nms.keras").nms == NMSConfig(max_detections=5, score_threshold=0.0)
    # Darknet .weights: written in cfg order, read back into a fresh detector.
    det.save_darknet_weights(tmp_path / "det.weights")
    fresh = detectors.YOLODetector(tiny_backbone(), SMALL_NECKS["efm_sam"], num_classes=2)
    fresh.load_darknet_weights(tmp_path / "det.weights")
    for a, b in zip(expected, fresh(x, training=False)):
        np.testing.assert_allclose(b.numpy(), a, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_tf_keras_builds_predicts_and_fits(tmp_path):
    """The same detector code under tf_keras (TF_USE_LEGACY_KERAS=1)."""
    test_dir = os.path.dirname(os.path.abspath(__file__))
    script = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {test_dir!r})
        import numpy as np, tf_keras
        from keras_csp.backend import LEGACY_KERAS
        from keras_csp import detectors
        from test_detectors import SMALL_NECKS, tiny_backbone
        assert LEGACY_KERAS
        det = detectors.YOLODetector(tiny_backbone(), SMALL_NECKS["efm_sam"], num_classes=2,
                                     nms={{"score_threshold": 0.01, "max_detections": 5}})
        assert isinstance(det, tf_keras.Model)
        x = np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32")
        out = det.predict(x, verbose=0)
        assert out["boxes"].shape == (2, 5, 4), out["boxes"].shape
        from keras_csp.layers import YoloDecode
        decoded = YoloDecode(det.heads)(det(x, training=False))
        assert decoded["scores"].shape == (2, (64 + 16 + 4) * 3, 2)
        boxes = np.full((2, 2, 5), -1, np.float32); boxes[:, 0] = [0.1, 0.1, 0.5, 0.5, 1]
        det.compile(optimizer="sgd")
        loss = det.fit(x, boxes, epochs=1, verbose=0).history["loss"][0]
        assert np.isfinite(loss)
        print("ok")
        """
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")

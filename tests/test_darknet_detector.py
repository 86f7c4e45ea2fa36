"""keras_csp.darknet.load_detector: a Darknet detector cfg becomes a trainable Detector."""

import numpy as np
import pytest

from keras_csp import darknet


def test_cfg_detector_trains_and_predicts(shared_dir):
    cfg = shared_dir / "darknet/cfg/darknet-repo/yolov3-tiny-prn.cfg"
    det = darknet.load_detector(cfg, input_size=(128, 128))
    assert [h.stride for h in det.heads] == [16, 32]
    assert all(h.num_classes == 80 and len(h.anchors) == 3 for h in det.heads)
    images = np.random.default_rng(0).random((2, 128, 128, 3), dtype=np.float32)
    boxes = -np.ones((2, 4, 5), np.float32)
    boxes[:, 0] = [0.2, 0.2, 0.6, 0.7, 3]
    det.compile(optimizer="adam")
    history = det.fit(images, boxes, epochs=2, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    out = det.predict(images, verbose=0)
    assert out["boxes"].shape[0] == 2 and "num_detections" in out


def test_classifier_cfg_is_not_a_detector(shared_dir):
    with pytest.raises(ValueError, match="no \\[yolo\\] layer"):
        darknet.load_detector(shared_dir / "darknet/cfg/reference-repo/csmobilenet-v2.cfg")

"""``close_mosaic``: the pipeline reads its mosaic probability from a variable at run time, and the
callback zeroes it for the last epochs (also after a resume and under a time budget's plan)."""

import numpy as np
import pytest
from test_data_pipeline import EXACT, painted_coco  # noqa: F401  (the fixture)

from keras_csp.backend import tf
from keras_csp.data import detection_dataset
from keras_csp.training.callbacks import CloseMosaic


def _boxes(ds):
    return [b for _, b in ds.as_numpy_iterator()]


def test_the_pipeline_reads_the_mosaic_rate_when_it_runs(painted_coco):  # noqa: F811
    options = dict(image_size=64, batch_size=4, augment=EXACT, seed=3, max_boxes=12, group_size=4)
    with_mosaics = _boxes(detection_dataset(painted_coco, mosaic=True, **options))
    rate = tf.Variable(1.0)
    ds = detection_dataset(painted_coco, mosaic=rate, **options)
    for a, b in zip(_boxes(ds), with_mosaics):  # rate 1: the draws of mosaic=True
        np.testing.assert_array_equal(a, b)
    per_image = max(len(r.classes) for r in painted_coco.records)
    counts = lambda batches: [int(n) for b in batches for n in (b[..., 4] >= 0).sum(-1)]  # noqa: E731
    assert max(counts(with_mosaics)) > per_image  # a mosaic holds boxes of several images
    rate.assign(0.0)  # the same dataset object, iterated again: single images only
    assert max(counts(_boxes(ds))) <= per_image


def test_close_mosaic_sets_the_rate_from_the_epoch_and_the_plan():
    rate = tf.Variable(1.0)
    logged = []
    callback = CloseMosaic(rate, epochs=2, total_epochs=5, on=0.8, log=logged.append)
    seen = []
    for epoch in (0, 2, 3, 4):
        callback.on_epoch_begin(epoch)
        seen.append(float(rate.numpy()))
    assert seen == pytest.approx([0.8, 0.8, 0.0, 0.0]) and callback.closed_at == 3 and len(logged) == 1
    resumed = CloseMosaic(rate, epochs=2, total_epochs=5, on=0.8, log=None)
    resumed.on_epoch_begin(4)  # a run resumed in its last epoch starts without mosaics
    assert float(rate.numpy()) == 0.0
    planned = []
    budget = CloseMosaic(rate, epochs=1, total_epochs=lambda: planned[0] if planned else None, log=None)
    budget.on_epoch_begin(0)  # not planned yet: mosaics on
    assert float(rate.numpy()) == 1.0
    planned.append(3)
    budget.on_epoch_begin(2)
    assert float(rate.numpy()) == 0.0


def test_close_mosaic_config():
    from keras_csp.training.config import make_config
    from keras_csp.training.run import _mosaic_rate

    with pytest.raises(ValueError, match="close_mosaic"):
        make_config(close_mosaic=-1).validate()
    assert _mosaic_rate(make_config()) is None  # the recipe's close_mosaic=0: the fixed-rate pipeline
    assert _mosaic_rate(make_config(close_mosaic=2, augment="none")) is None  # no mosaics to close
    assert float(_mosaic_rate(make_config(close_mosaic=2, mosaic=0.5)).numpy()) == 0.5
    # train() end to end, under a time budget's planned epochs: test_train_to_device.py::test_time_budget_in_one_run

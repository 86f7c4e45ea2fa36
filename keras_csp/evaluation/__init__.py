"""Evaluation: COCO box AP through pycocotools, top-k accuracy, and the figures to look at.

- ``evaluate_detector(model, eval_dataset, source)``: AP, AP50, AP75, APs/m/l, AR@1/10/100
  (``COCOResult.stats``) and per-class AP (``COCOResult.per_class`` / ``.table()``), with
  predictions mapped to original-image pixels and the dataset's own category ids.
- ``evaluate_coco(ground_truth, detections)``: the same on COCO JSON / result dicts.
- ``COCOEvalCallback``: during ``fit``, every N epochs, logs ``val_AP`` etc. into history.
- ``top_k_accuracy`` / ``evaluate_classifier`` / ``classification_metrics``: top-1 / top-5.
- ``write_pr_curves`` / ``plot_history``: PR-curve and training-curve PNGs.
"""

from keras_csp.evaluation.callback import COCOEvalCallback
from keras_csp.evaluation.classification import classification_metrics, evaluate_classifier, top_k_accuracy
from keras_csp.evaluation.coco import (
    LOGGED_STATS,
    STAT_NAMES,
    COCOResult,
    GroundTruthBuilder,
    coco_dict,
    detections_to_coco,
    evaluate_coco,
    load_ground_truth,
)
from keras_csp.evaluation.detection import EVAL_NMS, detection_function, evaluate_detector, predict_dataset
from keras_csp.evaluation.plots import plot_history, write_pr_curves

__all__ = [
    "COCOEvalCallback", "COCOResult", "EVAL_NMS", "GroundTruthBuilder", "LOGGED_STATS", "STAT_NAMES",
    "classification_metrics", "coco_dict", "detection_function", "detections_to_coco",
    "evaluate_classifier", "evaluate_coco", "evaluate_detector", "load_ground_truth",
    "plot_history", "predict_dataset", "top_k_accuracy", "write_pr_curves",
]

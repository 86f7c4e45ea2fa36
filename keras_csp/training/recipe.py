"""The default detector training recipe, written down in one place with the evidence behind each choice.

``keras-csp train`` (``TrainConfig(recipe="csp")``, the default) fills every option the user
left unset from :data:`CSP`; ``recipe="darknet"`` keeps the plain Darknet / cfg defaults (SGD at
0.001, the model's own head: YOLOv3's mse box loss and one anchor per object for the small
detectors) so the paper's behaviour stays reachable by name. A flag the user gives always wins;
``head_options`` given by the user are merged over the recipe's head (key by key).

Sources: R = the paper's repo README (WongKinYiu/CrossStagePartialNetworks: "CIoU, Scale
Sensitivity, IoU Threshold, Greedy NMS, Mosaic"); V4 = YOLOv4's cfgs (AlexeyAB/darknet
cfg/yolov4*.cfg); V5 = YOLOv5's hyp.scratch-low; D = measured here on the 2-core CPU
(keras_csp/training/demo.py, benchmarks/ema.py).

Under a time budget (``--time``) the run also evaluates only as often as keeps the evaluations
under 10 % of the budget (``training/budget.py`` EVAL_SHARE): on coins at 320 for 15 minutes
0.965 / 0.804 mAP@0.5 / 0.5:0.95 (1162 steps) against 0.958 / 0.784 evaluating every epoch (936
steps), YOLO11n 0.936 / 0.793 in the same run (AMD EPYC, 2 cores).
"""

from keras_csp.detectors import DETECTORS
from keras_csp.training.models import parse_head_options

# The head (loss) options; each key is a HeadSpec field.
HEAD = {
    # R, "Loss function" table (CSPResNeXt50-PANet-SPP 512, COCO): MSE 38.0 AP -> GIoU 39.4 ->
    # DIoU 39.1 -> CIoU 39.6. D: the demo's 0.8 AP50 target is met with it.
    "iou_loss": "ciou",
    # The box term's weight. V4 has 0.07 (with ciou, beside Darknet's objectness summed over
    # every cell): there the box term was ~3 % of the loss (coins: box 2.8 of 86). V5's gains
    # (box 0.05 over a mean of positives, obj 1.0 over a mean of cells) weigh a positive's box
    # ~40x more against objectness. D, benchmarks/recipe_vs_ultralytics.py at 320 from scratch
    # (mAP@0.5 / 0.5:0.95): 15 minutes on coins, 1.0: 0.930 / 0.600 (300 steps) against 0.07:
    # 0.885 / 0.473 (300 steps; YOLO11n 0.897 / 0.624); 6 minutes at equal epochs, coins epoch 8
    # 0.07 / 0.5 / 1.0: 0.120 / 0.161 / 0.211 AP, photo-objects epoch 6: 0.068 / 0.072 / 0.087.
    # 2.0 (AMD EPYC, 2 cores): coins 5 minutes 0.940 / 0.642 (23 epochs) against 1.0's 0.936 /
    # 0.614 (24 epochs; YOLO11n 0.869 / 0.545); 15 minutes 0.958 / 0.784 (78 epochs, evaluating
    # every epoch) against 1.0's 0.959 / 0.764 (82 epochs; YOLO11n 0.937 / 0.795).
    "iou_normalizer": 2.0,
    # R "IoU Threshold" / V4 iou_thresh=0.213: every anchor whose shape IoU with the box exceeds
    # it is a positive too (more positives per object than YOLOv3's best anchor alone).
    "iou_thresh": 0.213,
    # R "Scale Sensitivity" / V4 scale_x_y=1.05 (the last level of yolov4.cfg; 1.2 / 1.1 on the
    # finer ones): lets the centre reach the cell edges.
    "scale_x_y": 1.05,
    # V5 (gr=1.0): a positive's objectness target is its box's IoU with the object, so the
    # scores rank tighter boxes first. D, benchmarks/recipe_vs_ultralytics.py, 6 minutes at 320
    # from scratch (mAP@0.5 / 0.5:0.95): coins 0.582 / 0.205 vs 0.427 / 0.138 without (0.569 /
    # 0.192 at the same epoch 9), photo-objects 0.505 / 0.197 vs 0.417 / 0.143 (0.439 / 0.154 at
    # the same epoch 10); those runs got 15-24% more steps in their 6 minutes (machine speed).
    "obj_iou": 1.0,
}
# Not in the head: obj_normalizer = cls_normalizer = 1.0 (V4 and the cfgs; Darknet's defaults,
# kept), ignore_thresh 0.7 (the cfgs'), label_smoothing 0 (R: "Smooth" +0.2 top-1 on ImageNet
# classification only; no detector measurement in R or here).

# The optimisation for short CPU runs; D (demo.py, the synthetic shapes at 128, equal images seen):
CSP = {
    "optimizer": "adam",      # Adam 6e-3 0.732 AP50 vs 3e-3 0.689 (34 epochs); 1.2e-2 behind throughout
    "learning_rate": 6e-3,    # SGD 0.001 (the cfgs', made for 500k-step GPU runs) barely moves in minutes
    "batch_size": 32,         # 173 images/s against 120 at batch 8 on this CPU
    "bn_momentum": 0.9,       # short runs: weights move faster than 0.99 follows
    "anchors": "auto",        # k-means on the training boxes (Darknet calc_anchors; V5 autoanchor);
                              # only when training from scratch (pretrained heads keep theirs)
    "schedule": "steps",      # x0.1 at 80 % / 90 %: cosine 0.675 vs steps 0.690 (deadline-stopped)
    "burn_in": None,          # Darknet's warm-up, min(1000, 10 % of the steps)
    "augment": "default",     # mosaic 1.0 + scale / HSV / flip (R: Mosaic 78.1 vs 77.9 top-1; V4, V5)
    "close_mosaic": 0,        # Ultralytics close_mosaic=10; D: no clear gain in short runs (below)
    # Model EMA with V5's ramp, ~500 steps averaged. D, benchmarks/ema.py: AP50 0.123 vs 0.104 raw
    # (800 steps of batch 8). 0.99 / tau 30 (~100 steps: a tenth of a 15-minute run at 320, so
    # the average at the end would follow the weights after the step decay) measured worse in
    # short runs: coins, 5 minutes with iou_normalizer 2.0, 0.927 / 0.601 against 0.940 / 0.642
    # (23 epochs each, behind at every epoch from 16 on); at 15 minutes level: 0.959 / 0.784
    # (73 epochs) against 0.998's 0.958 / 0.784 (78 epochs), both with 2.0.
    "ema": 0.998,
    "ema_tau": 100.0,
}
# For long GPU runs (not measured here; the sources' own): SGD lr 0.01, momentum 0.937, weight
# decay 5e-4, 3 warm-up epochs, EMA 0.9999 / tau 2000 (V5); lr 0.0013, burn_in 1000, steps (V4).
LONG_GPU = {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.937, "ema": 0.9999, "ema_tau": 2000.0}

# YOLOv5's extra positives (head options anchor_t=4, neighbor_cells, scale_x_y=2) are not in the
# head: benchmarks/recipe_vs_ultralytics.py, 6 minutes from scratch at 320 on the real-photo sets,
# measured mAP@0.5 / 0.5:0.95 coins 0.299 / 0.093 and photo-objects 0.408 / 0.140 with them,
# 0.426 / 0.138 and 0.423 / 0.157 without.

# Mosaic for the last epochs (Ultralytics close_mosaic=10): ``close_mosaic`` (epochs; with a time
# budget, the last N of the planned epochs) is off. D, the same benchmark and minutes, with
# ``--close-mosaic 2`` (the last 2 of 9-10 epochs): coins 0.412 / 0.127 after the same 108 steps
# as the defaults' 0.427 / 0.138, photo-objects 0.419 / 0.162 vs 0.417 / 0.143: no clear gain.

# What the plain Darknet behaviour needs: the fields' own defaults (TrainConfig.DARKNET_DEFAULTS).
RECIPES = ("csp", "darknet")


def head_options_text(options):
    """``{"iou_loss": "ciou", ...}`` -> ``"iou_loss=ciou,..."`` (the ``--head-options`` form)."""
    return ",".join(f"{k}={v}" for k, v in options.items())


HEAD_TEXT = head_options_text(HEAD)


def _own_box_loss(model):
    """The named detector's own ``iou_loss`` (YOLOv4's cfgs set ciou), or None."""
    spec = DETECTORS.get(model)
    if spec is None or not spec.head_options:
        return None
    own = spec.head_options if isinstance(spec.head_options, (list, tuple)) else [spec.head_options]
    return next((o["iou_loss"] for o in own if "iou_loss" in o), None)


def recipe_head(model, user=None):
    """The head options a run of ``model`` trains with: the recipe's head with the user's
    ``user`` (text or dict) on top; a detector whose cfg sets its own box loss (YOLOv4,
    YOLOv4-tiny) and factories (``module:function``) keep their own plus the user's."""
    user = parse_head_options(user) or {}
    if ":" in str(model) or _own_box_loss(model) is not None:
        return head_options_text(user) if user else None
    return head_options_text({**HEAD, **user})


def apply_recipe(values, darknet_defaults):
    """Fill ``values`` (a dict of TrainConfig fields; None: not given) from the named recipe.

    ``darknet_defaults``: each recipe field's plain default (used with ``recipe="darknet"``).
    Returns a new dict; the user's values are kept as given.
    """
    values = dict(values)
    anchors_given = values.get("anchors") is not None
    name = values.get("recipe") or "csp"
    if name not in RECIPES:
        raise ValueError(f"config `recipe` must be one of {RECIPES}; received {name!r}")
    values["recipe"] = name
    if name == "darknet":
        for key, default in darknet_defaults.items():
            if values.get(key) is None:
                values[key] = default
        return values
    for key, value in CSP.items():
        if values.get(key) is None:
            values[key] = value
    model = values.get("model") or "CSPDarknet53-PANet-SPP"
    if not anchors_given and (values.get("weights") or ":" in str(model)):
        values["anchors"] = None  # fine-tuning: the pretrained heads' anchors; factories: their own
    values["head_options"] = recipe_head(model, values.get("head_options"))
    return values


__all__ = ["CSP", "HEAD", "HEAD_TEXT", "LONG_GPU", "RECIPES", "apply_recipe", "head_options_text", "recipe_head"]

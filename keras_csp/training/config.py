"""Training options: one dataclass, filled from defaults, then a YAML file, then flags.

Every field is a ``keras-csp train`` flag (``image_size`` -> ``--image-size``) and a YAML
key of the same name. The run's resolved options are written to ``<out>/config.yaml``, which
``keras-csp evaluate/predict --run <out>`` read to rebuild the model.
"""

import dataclasses
import os
from typing import Optional

from keras_csp.training.checkpoints import atomic_write_text
from keras_csp.training.recipe import apply_recipe

AUGMENTS = ("default", "light", "none")


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; see ``keras-csp train --help`` for each field."""

    # data
    data: Optional[str] = None
    train: str = "synthetic"
    val: Optional[str] = None
    names: Optional[str] = None
    image_size: int = 416
    batch_size: Optional[int] = None  # recipe (training/recipe.py): 32
    augment: Optional[str] = None  # recipe: default (mosaic)
    mosaic: Optional[float] = None
    close_mosaic: Optional[int] = None  # recipe: see training/recipe.py
    mixup: Optional[float] = None
    multi_scale: Optional[str] = None
    cache: bool = False
    shuffle: bool = True
    max_boxes: Optional[int] = None  # None: sized from the data (keras_csp.data.pipeline.auto_max_boxes)
    steps_per_epoch: Optional[int] = None
    # model
    model: str = "CSPDarknet53-PANet-SPP"
    num_classes: Optional[int] = None
    anchors: Optional[str] = None  # recipe: auto (k-means) when training from scratch
    loss: Optional[str] = None
    head_options: Optional[str] = None  # recipe: CIoU, iou_thresh, scale_x_y (merged under the user's)
    weights: Optional[str] = None
    backbone_weights: Optional[str] = None
    freeze_backbone_epochs: int = 0
    bn_momentum: Optional[float] = None  # recipe: 0.9
    # optimisation
    epochs: int = 100
    time: Optional[float] = None
    optimizer: Optional[str] = None  # recipe: adam
    learning_rate: Optional[float] = None  # recipe: 6e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Optional[str] = None  # recipe: steps
    burn_in: Optional[int] = None
    ema: Optional[float] = None  # model EMA decay (0: off); recipe 0.998 / tau 100 (benchmarks/ema.py)
    ema_tau: Optional[float] = None
    mixed_precision: str = "auto"  # training/precision.py: bf16 on AMX CPUs, fp16 on GPUs
    clipnorm: Optional[float] = None
    steps_per_execution: int = 1
    # distribution
    strategy: str = "default"
    cpu_devices: int = 0
    # evaluation and outputs
    eval_every: Optional[int] = None  # 1; with a time budget: evaluations under 10 % of it (budget.EVAL_SHARE)
    eval_batches: Optional[int] = None
    out: str = "runs/train"
    backup: bool = True
    tensorboard: bool = True
    save_keras: bool = True
    seed: int = 0
    deterministic: bool = False
    verbose: int = 1
    # csp: unset options above take training/recipe.py's values; darknet: DARKNET_DEFAULTS
    recipe: str = "csp"

    def __post_init__(self):
        """Fill the options left unset (None) from the named recipe (training/recipe.py)."""
        for key, value in apply_recipe(dataclasses.asdict(self), DARKNET_DEFAULTS).items():
            object.__setattr__(self, key, value)

    def validate(self):
        """Check values; errors name the field and what was received."""
        positive = ("image_size", "batch_size", "epochs", "steps_per_execution")
        positive += tuple(name for name in ("max_boxes", "eval_every") if getattr(self, name) is not None)
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"config `{name}` must be a positive integer; received {value!r}")
        if self.image_size % 32:
            raise ValueError(f"config `image_size` must be a multiple of 32; received {self.image_size}")
        if self.augment not in AUGMENTS:
            raise ValueError(f"config `augment` must be one of {AUGMENTS}; received {self.augment!r}")
        if self.mixed_precision not in ("auto", "none", "mixed_float16", "mixed_bfloat16"):
            raise ValueError(
                "config `mixed_precision` must be auto, none, mixed_float16 or mixed_bfloat16; "
                f"received {self.mixed_precision!r}"
            )
        if not 0 <= self.freeze_backbone_epochs < self.epochs + 1:
            raise ValueError(
                f"config `freeze_backbone_epochs` must be in [0, epochs]; received {self.freeze_backbone_epochs}"
            )
        if not (self.learning_rate > 0):
            raise ValueError(f"config `learning_rate` must be > 0; received {self.learning_rate!r}")
        if self.bn_momentum is not None and not 0 <= self.bn_momentum < 1:
            raise ValueError(f"config `bn_momentum` must be in [0, 1); received {self.bn_momentum!r}")
        if self.time is not None and (isinstance(self.time, bool) or not self.time > 0):
            raise ValueError(f"config `time` must be a positive number of minutes; received {self.time!r}")
        if self.data is not None and self.train != "synthetic":
            raise ValueError(f"config `data` ({self.data}) gives the training images; `train` ({self.train}) "
                             "cannot be given too")
        if isinstance(self.close_mosaic, bool) or not isinstance(self.close_mosaic, int) or self.close_mosaic < 0:
            raise ValueError(f"config `close_mosaic` must be an integer >= 0 (epochs; 0: off); received "
                             f"{self.close_mosaic!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"config `ema` must be in [0, 1) (0: off); received {self.ema!r}")
        if not self.ema_tau >= 0:
            raise ValueError(f"config `ema_tau` must be >= 0 (0: no warm-up ramp); received {self.ema_tau!r}")
        return self

    def to_dict(self):
        return dataclasses.asdict(self)


# recipe="darknet": the plain defaults (the cfgs' SGD at 0.001, the model's own head and anchors);
# these were TrainConfig's defaults before the recipe.
DARKNET_DEFAULTS = dict(batch_size=16, augment="default", optimizer="sgd", learning_rate=0.001, schedule="steps",
                        ema=0.998, ema_tau=100.0, close_mosaic=0)

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def load_yaml(path):
    """Read a YAML (or JSON) config file as a dict of known fields."""
    import yaml

    with open(os.fspath(path), encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a training config must be a mapping of option: value; found {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {unknown}; known: {sorted(FIELDS)}")
    return data


def make_config(yaml_path=None, **overrides):
    """A validated ``TrainConfig``: defaults, then ``yaml_path``, then ``overrides`` that are
    not ``None`` (flags the user gave)."""
    values = {}
    if yaml_path:
        values.update(load_yaml(yaml_path))
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; known: {sorted(FIELDS)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values).validate()


def save_yaml(config, path):
    """Write the resolved config (``keras-csp evaluate --run`` reads it back)."""
    import yaml

    return atomic_write_text(os.fspath(path), yaml.safe_dump(config.to_dict(), sort_keys=False))


__all__ = ["AUGMENTS", "FIELDS", "TrainConfig", "load_yaml", "make_config", "save_yaml"]

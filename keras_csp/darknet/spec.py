"""Darknet layer specs and shape inference, with Darknet's defaults, formulas and checks.

:func:`infer_network` turns a parsed cfg into a :class:`Network`: one typed spec per layer
with its input and output shape (H, W, C), the layers it reads, its kernel weights, the
floats it holds in a ``.weights`` file and its BFLOPs as Darknet counts them. Everything the
Keras builder and the weights reader need is decided here, before any Keras layer exists,
so a bad cfg fails fast with an error naming its file and line.
"""

import re
import warnings
from dataclasses import dataclass, field

from keras_csp.darknet.cfg import CfgError, Section, parse_cfg
from keras_csp.layers.activations import ACTIVATIONS
from keras_csp.ops.head_spec import HeadSpec

# [net] options: geometry is used; the rest are training settings kept as raw strings.
NET_OPTIONS = {
    "batch", "subdivisions", "width", "height", "channels", "inputs", "momentum", "decay",
    "angle", "saturation", "exposure", "hue", "aspect", "learning_rate", "learning_rate_min",
    "burn_in", "max_batches", "policy", "steps", "scales", "seq_scales", "step", "scale",
    "gamma", "power", "max_crop", "min_crop", "flip", "blur", "gaussian_noise", "mixup",
    "cutmix", "mosaic", "mosaic_bound", "letter_box", "label_smooth_eps", "resize_step",
    "time_steps", "track", "augment_speed", "sequential_subdivisions", "try_fix_nan",
    "loss_scale", "dynamic_minibatch", "optimized_memory", "workspace_size_limit_MB", "adam",
    "B1", "B2", "eps", "sgdr_cycle", "sgdr_mult", "contrastive", "contrastive_jit_flip",
    "contrastive_color", "unsupervised", "attention", "adversarial_lr", "max_chart_loss",
    "ema_alpha", "equidistant_point", "num_boxes", "rotate",
}
# Options every layer may carry that only steer Darknet's training.
TRAINING_ONLY = ("stopbackward", "train_only_bn", "dont_update", "burnin_update",
                 "learning_rate", "onlyforward")
# Options whose non-default value changes inference in a way this port does not implement.
UNSUPPORTED_IF_SET = {
    "convolutional": ("antialiasing", "binary", "xnor", "bin_output", "sway", "rotate",
                      "stretch", "stretch_sway", "assisted_excitation", "deform", "coordconv",
                      "dontload", "dontloadscales"),
    "connected": ("dontload", "dontloadscales"),
    "maxpool": ("antialiasing",),
    "local_avgpool": ("antialiasing",),
    "softmax": ("spatial",),
    "scale_channels": ("scale_wh",),
    "reorg": ("reverse",),
}
# [yolo] options that only matter to Darknet's data loading (or to its gradient clipping,
# ``max_delta``, and its box tracker), plus ``uc_normalizer`` and ``beta1`` that Darknet's own
# cfgs put in [yolo] although its [yolo] never reads them.
YOLO_TRAINING_ONLY = ("jitter", "random", "resize", "max", "max_delta", "map",
                      "track_history_size", "sim_thresh", "dets_for_track", "dets_for_show",
                      "track_ciou_norm", "embedding_layer", "show_details", "uc_normalizer",
                      "beta1")
# [yolo] options that change Darknet's training in ways keras_csp's YOLO loss does not
# reproduce, with their no-op values (None: any value changes training). ``darknet.load``
# builds such cfgs (the network does not depend on them); ``load_detector`` refuses them.
YOLO_LOSS_UNSUPPORTED = {
    "truth_thresh": 1.0,
    "objectness_smooth": 0,
    "focal_loss": 0,
    "iou_thresh_kind": "iou",
    "counters_per_class": None,
}
IOU_LOSSES = ("mse", "iou", "giou", "diou", "ciou")
IOU_THRESH_KINDS = ("iou", "giou", "diou", "ciou")
NMS_KINDS = ("default", "greedynms", "diounms", "cornersnms")
# HeadSpec field -> the [yolo] option it is read from (for errors that name the option).
HEAD_OPTIONS = {
    "num_classes": "classes",
    "anchors": "mask",
    "matching_anchors": "anchors",
    "anchor_indices": "mask",
    "scale_x_y": "scale_x_y",
    "new_coords": "new_coords",
    "iou_loss": "iou_loss",
    "iou_normalizer": "iou_normalizer",
    "obj_normalizer": "obj_normalizer",
    "cls_normalizer": "cls_normalizer",
    "ignore_thresh": "ignore_thresh",
    "iou_thresh": "iou_thresh",
    "label_smoothing": "label_smooth_eps",
    "nms_kind": "nms_kind",
    "beta_nms": "beta_nms",
}


@dataclass
class LayerSpec:
    """What every Darknet layer has: position, source location, shapes and counts."""

    index: int
    type: str
    line: int
    path: str
    input_shape: tuple  # (H, W, C) of the previous layer's output
    output_shape: tuple = None
    inputs: tuple = ()  # Darknet indices read; -1 is the image
    kernel_weights: int = 0  # Darknet's "W": conv / connected kernel sizes
    weight_floats: int = 0  # floats this layer holds in a .weights file
    bflops: float = 0.0

    def where(self):
        return f"{self.path}:{self.line}: layer {self.index} [{self.type}]"

    def error(self, message):
        return CfgError(f"layer {self.index} [{self.type}]: {message}", self.path, self.line)

    @property
    def bias_scale_floats(self):
        """Biases plus BN scales (the README's "W+B+S" minus "W")."""
        return 0


@dataclass
class ConvSpec(LayerSpec):
    filters: int = 1
    size: int = 1
    stride_y: int = 1
    stride_x: int = 1
    padding: int = 0
    groups: int = 1
    batch_normalize: bool = False
    activation: str = "logistic"
    share_index: int = None  # layer whose kernel (and BN) this layer reuses

    @property
    def kernel_shape(self):
        """Darknet's weight layout (out, in / groups, k, k)."""
        return (self.filters, self.input_shape[2] // self.groups, self.size, self.size)

    @property
    def bias_scale_floats(self):
        if self.share_index is not None:
            return 0
        return self.filters * (2 if self.batch_normalize else 1)


@dataclass
class ConnectedSpec(LayerSpec):
    output: int = 1
    batch_normalize: bool = False
    activation: str = "logistic"

    @property
    def bias_scale_floats(self):
        return self.output * (2 if self.batch_normalize else 1)


@dataclass
class BatchNormSpec(LayerSpec):
    @property
    def bias_scale_floats(self):
        return 2 * self.input_shape[2]


@dataclass
class RouteSpec(LayerSpec):
    groups: int = 1
    group_id: int = 0


@dataclass
class ShortcutSpec(LayerSpec):
    activation: str = "linear"


@dataclass
class PoolSpec(LayerSpec):
    """[maxpool] and [local_avgpool]: a window pool with Darknet's padding rule."""

    mode: str = "max"
    size: int = 1
    stride_y: int = 1
    stride_x: int = 1
    padding: int = 0
    maxpool_depth: int = 0
    out_channels: int = 1


@dataclass
class GlobalAvgPoolSpec(LayerSpec):
    pass


@dataclass
class UpsampleSpec(LayerSpec):
    stride: int = 2
    scale: float = 1.0


@dataclass
class SoftmaxSpec(LayerSpec):
    groups: int = 1
    temperature: float = 1.0


@dataclass
class DropoutSpec(LayerSpec):
    probability: float = 0.2


@dataclass
class ScaleChannelsSpec(LayerSpec):
    activation: str = "linear"


@dataclass
class SamSpec(LayerSpec):
    activation: str = "linear"


@dataclass
class ReorgSpec(LayerSpec):
    stride: int = 1


@dataclass
class CostSpec(LayerSpec):
    pass


@dataclass
class YoloSpec(LayerSpec):
    """A ``[yolo]`` layer: what :func:`parse_yolo_options` read, with Darknet's defaults.

    ``anchors`` holds all ``num`` anchors (the matching pool), ``mask`` this layer's.
    ``unsupported`` lists the ``(option, value)`` pairs of :data:`YOLO_LOSS_UNSUPPORTED`
    that are set to a value that changes training.
    """

    classes: int = 20
    num: int = 1
    mask: tuple = ()
    anchors: tuple = ()  # all anchors as (w, h) pairs in input pixels
    scale_x_y: float = 1.0
    new_coords: int = 0
    iou_loss: str = "mse"
    iou_normalizer: float = 0.75
    obj_normalizer: float = 1.0
    cls_normalizer: float = 1.0
    ignore_thresh: float = 0.5
    iou_thresh: float = 1.0
    label_smoothing: float = 0.0
    nms_kind: str = "default"
    beta_nms: float = 0.6
    unsupported: tuple = ()
    options: dict = field(default_factory=dict)  # the raw [yolo] options, as written
    option_lines: dict = field(default_factory=dict)  # option -> line in the cfg

    def stride(self, net_height, net_width):
        """The integer stride of this layer's grid, or a CfgError if the input is not a
        multiple of the grid (the loss and the decoding need ``input = grid * stride``)."""
        grid_h, grid_w = self.input_shape[0], self.input_shape[1]
        if net_height % grid_h or net_width % grid_w or net_height // grid_h != net_width // grid_w:
            raise self.error(
                f"its {grid_h}x{grid_w} grid does not divide the {net_height}x{net_width} input "
                "into square cells of one integer stride; choose an input size that is a "
                f"multiple of the network's stride ({max(1, net_height // grid_h)})"
            )
        return net_height // grid_h

    def head_spec(self, net_height, net_width):
        """This [yolo] layer as a dict (see the data contract); :meth:`to_head_spec` for the
        ``HeadSpec`` the detectors use."""
        grid_h, grid_w = self.input_shape[0], self.input_shape[1]
        return {
            "stride": net_height // grid_h if grid_h else None,
            "stride_xy": (net_width / grid_w, net_height / grid_h),
            **self._head_fields(),
            "layer": self.index,
        }

    def _head_fields(self):
        """The HeadSpec fields this [yolo] section sets (one list for the dict and the spec)."""
        return {
            "anchors": [tuple(self.anchors[m]) for m in self.mask],
            "matching_anchors": [tuple(a) for a in self.anchors],
            "anchor_indices": list(self.mask),
            "num_classes": self.classes,
            "scale_x_y": self.scale_x_y,
            "new_coords": bool(self.new_coords),
            "iou_loss": self.iou_loss,
            "iou_normalizer": self.iou_normalizer,
            "obj_normalizer": self.obj_normalizer,
            "cls_normalizer": self.cls_normalizer,
            "ignore_thresh": self.ignore_thresh,
            "iou_thresh": self.iou_thresh,
            "label_smoothing": self.label_smoothing,
            "nms_kind": self.nms_kind,
            "beta_nms": self.beta_nms,
        }

    def to_head_spec(self, stride):
        """The ``HeadSpec`` of this layer at ``stride`` (an int), or a CfgError naming the
        option (and its line) that the detectors cannot honour."""
        for key, value in self.unsupported:
            raise self._option_error(
                key,
                f"option {key}={self.options[key]} changes Darknet's training in a way "
                "keras_csp's YOLO loss does not reproduce (see docs/loss.md); remove it, or "
                "use keras_csp.darknet.load() to build the network without the loss",
            )
        fields = {"stride": stride, **self._head_fields()}
        try:
            return HeadSpec(**fields)
        except ValueError as err:
            match = re.search(r"HeadSpec `(\w+)`", str(err))
            key = HEAD_OPTIONS.get(match.group(1)) if match else None
            value = f"={self.options[key]}" if key in self.options else " (Darknet's default)"
            raise self._option_error(key, f"option {key}{value}: {err}") from None

    def _option_error(self, key, message):
        line = self.option_lines.get(key, self.line)
        where = "[yolo]" if self.line is None else f"layer {self.index} [{self.type}]"
        return CfgError(f"{where}: {message}", self.path, line, key)


@dataclass
class Network:
    """A cfg with every layer's spec, at a given input size."""

    name: str
    path: str
    height: int
    width: int
    channels: int
    layers: list
    net_options: dict = field(default_factory=dict)

    @property
    def input_shape(self):
        return (self.height, self.width, self.channels)

    @property
    def yolo_layers(self):
        return [spec for spec in self.layers if isinstance(spec, YoloSpec)]

    def heads(self):
        """Head specs of the [yolo] layers, from the largest map (stride 8) to the smallest."""
        heads = [spec.head_spec(self.height, self.width) for spec in self.yolo_layers]
        return sorted(heads, key=lambda head: (head["stride_xy"][1], head["layer"]))

    def ordered_yolo_layers(self):
        """The [yolo] layers in the order of a detector's outputs: largest map first."""
        return sorted(self.yolo_layers, key=lambda spec: (-spec.input_shape[0], spec.index))

    def head_specs(self):
        """One ``HeadSpec`` per [yolo] layer, largest map first (the order of ``load``'s
        outputs); a CfgError names the option a detector cannot honour."""
        return tuple(
            spec.to_head_spec(spec.stride(self.height, self.width))
            for spec in self.ordered_yolo_layers()
        )

    @property
    def kernel_weights(self):
        return sum(spec.kernel_weights for spec in self.layers)

    @property
    def weight_floats(self):
        return sum(spec.weight_floats for spec in self.layers)

    @property
    def bflops(self):
        return sum(spec.bflops for spec in self.layers)

    @property
    def params_with_biases(self):
        """Kernel weights + biases + BN scales: the README's "W+B+S"."""
        return self.kernel_weights + sum(spec.bias_scale_floats for spec in self.layers)


# ---------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------


def _activation(section, default):
    name = section.get_str("activation", default)
    if name not in ACTIVATIONS:
        raise section.error(
            f"activation {name!r} is not supported; expected one of {', '.join(ACTIVATIONS)}",
            "activation",
        )
    return name


def _positive(section, key, value):
    if value < 1:
        raise section.error(f"option {key}={value} must be at least 1", key)
    return value


def _resolve(section, index, ref, option, layers):
    """An absolute layer index for ``ref`` (negative = relative), checked to exist."""
    absolute = index + ref if ref < 0 else ref
    if not 0 <= absolute < index:
        raise section.error(
            f"option {option} refers to layer {ref} (absolute {absolute}), which does not "
            f"exist before layer {index}",
            option,
        )
    return absolute


def _describe(spec):
    h, w, c = spec.output_shape
    return f"layer {spec.index} [{spec.type}] ({spec.path}:{spec.line}) is {h}x{w}x{c}"


def _pool_out(size, stride, padding, extent):
    return (extent + padding - size) // stride + 1


def _conv(section, base, layers):
    h, w, c = base["input_shape"]
    filters = _positive(section, "filters", section.get_int("filters", 1))
    groups = _positive(section, "groups", section.get_int("groups", 1))
    size = _positive(section, "size", section.get_int("size", 1))
    stride_x = section.get_int("stride_x", -1)
    stride_y = section.get_int("stride_y", -1)
    stride = section.get_int("stride", 1)
    if stride_x < 1:
        stride_x = stride
    if stride_y < 1:
        stride_y = stride
    _positive(section, "stride", min(stride_x, stride_y))
    dilation = section.get_int("dilation", 1)
    if dilation != 1 and size != 1:
        raise section.error(f"dilation={dilation} is not supported by this port", "dilation")
    pad = section.get_int("pad", 0)
    padding = section.get_int("padding", 0)
    if pad:
        padding = size // 2
    batch_normalize = bool(section.get_int("batch_normalize", 0))
    activation = _activation(section, "logistic")
    if c % groups or filters % groups:
        raise section.error(
            f"groups={groups} must divide both the input channels ({c}) and filters ({filters})",
            "groups",
        )
    out_h = (h + 2 * padding - size) // stride_y + 1
    out_w = (w + 2 * padding - size) // stride_x + 1
    if out_h < 1 or out_w < 1:
        raise section.error(
            f"a {size}x{size} kernel with stride {stride_y}x{stride_x} and padding {padding} "
            f"on a {h}x{w} input gives an empty output"
        )
    share = section.get_int("share_index", None)
    spec = ConvSpec(
        **base,
        output_shape=(out_h, out_w, filters),
        filters=filters,
        size=size,
        stride_y=stride_y,
        stride_x=stride_x,
        padding=padding,
        groups=groups,
        batch_normalize=batch_normalize,
        activation=activation,
    )
    spec.kernel_weights = (c // groups) * filters * size * size
    spec.bflops = 2.0 * spec.kernel_weights * out_h * out_w / 1e9
    if share is not None:
        spec.share_index = _resolve(section, spec.index, share, "share_index", layers)
        _check_share(section, spec, layers[spec.share_index])
    else:
        spec.weight_floats = spec.kernel_weights + filters * (4 if batch_normalize else 1)
    return spec


def _check_share(section, spec, other):
    if not isinstance(other, ConvSpec):
        raise section.error(
            f"share_index={spec.share_index} refers to layer {other.index} [{other.type}] "
            f"({other.path}:{other.line}), which is not a [convolutional]; Darknet rejects this cfg",
            "share_index",
        )
    if other.kernel_shape != spec.kernel_shape or other.batch_normalize != spec.batch_normalize:
        raise section.error(
            f"share_index={spec.share_index}: layer {other.index} ({other.path}:{other.line}) has "
            f"kernel {other.kernel_shape} (batch_normalize={int(other.batch_normalize)}) but this "
            f"layer needs {spec.kernel_shape} (batch_normalize={int(spec.batch_normalize)}) for its "
            f"{spec.input_shape[2]}-channel input; Darknet rejects this cfg",
            "share_index",
        )
    if (other.stride_y, other.stride_x, other.padding, other.groups) != (
        spec.stride_y, spec.stride_x, spec.padding, spec.groups
    ):
        raise section.error(
            f"share_index={spec.share_index}: a shared convolution must have the same stride, "
            f"padding and groups as layer {other.index} in this port",
            "share_index",
        )


def _connected(section, base, layers):
    h, w, c = base["input_shape"]
    output = _positive(section, "output", section.get_int("output", 1))
    batch_normalize = bool(section.get_int("batch_normalize", 0))
    activation = _activation(section, "logistic")
    spec = ConnectedSpec(**base, output_shape=(1, 1, output), output=output,
                         batch_normalize=batch_normalize, activation=activation)
    spec.kernel_weights = h * w * c * output
    spec.weight_floats = spec.kernel_weights + output * (4 if batch_normalize else 1)
    spec.bflops = 2.0 * spec.kernel_weights / 1e9
    return spec


def _batchnorm(section, base, layers):
    spec = BatchNormSpec(**base, output_shape=base["input_shape"])
    spec.weight_floats = 4 * base["input_shape"][2]
    return spec


def _route(section, base, layers):
    index = base["index"]
    refs = section.get_list("layers", int, required=True)
    sources = [_resolve(section, index, ref, "layers", layers) for ref in refs]
    groups = _positive(section, "groups", section.get_int("groups", 1))
    group_id = section.get_int("group_id", 0)
    if not 0 <= group_id < groups:
        raise section.error(f"group_id={group_id} must be in [0, groups={groups})", "group_id")
    first = layers[sources[0]]
    channels = 0
    for source in sources:
        spec = layers[source]
        if spec.output_shape[:2] != first.output_shape[:2]:
            raise section.error(
                f"inputs have different spatial sizes: {_describe(first)} but {_describe(spec)}; "
                "[route] concatenates along channels only, and Darknet rejects this cfg at "
                f"this input size"
            )
        if spec.output_shape[2] % groups:
            raise section.error(
                f"groups={groups} does not divide the {spec.output_shape[2]} channels of "
                f"{_describe(spec)}",
                "groups",
            )
        channels += spec.output_shape[2] // groups
    out = (first.output_shape[0], first.output_shape[1], channels)
    base = {**base, "inputs": tuple(sources)}
    return RouteSpec(**base, output_shape=out, groups=groups, group_id=group_id)


def _shortcut(section, base, layers):
    index = base["index"]
    if index == 0:
        raise section.error("a [shortcut] cannot be the first layer")
    refs = section.get_list("from", int, required=True)
    sources = [_resolve(section, index, ref, "from", layers) for ref in refs]
    activation = _activation(section, "linear")
    weights_type = section.get_str("weights_type", "none")
    if weights_type != "none":
        raise section.error(
            f"weights_type={weights_type} (weighted shortcut) is not supported by this port",
            "weights_type",
        )
    normalization = section.get_str("weights_normalization", "none")
    if normalization != "none":
        raise section.error("weights_normalization needs weights_type", "weights_normalization")
    h, w, c = base["input_shape"]
    for source in sources:
        sh, sw, _ = layers[source].output_shape
        same = (sh, sw) == (h, w)
        strided = sh > h and sw > w and sh % h == 0 and sw % w == 0 and sh // h == sw // w
        if not (same or strided):
            raise section.error(
                f"cannot add {_describe(layers[source])} to the previous layer's {h}x{w}x{c}: "
                "the source must have the same size or be larger by an integer stride"
            )
    spec = ShortcutSpec(**{**base, "inputs": (index - 1, *sources)}, output_shape=(h, w, c),
                        activation=activation)
    spec.bflops = h * w * c * len(sources) / 1e9
    return spec


def _pool(section, base, layers, mode):
    h, w, c = base["input_shape"]
    stride = _positive(section, "stride", section.get_int("stride", 1))
    stride_x = _positive(section, "stride_x", section.get_int("stride_x", stride))
    stride_y = _positive(section, "stride_y", section.get_int("stride_y", stride))
    size = _positive(section, "size", section.get_int("size", stride))
    padding = section.get_int("padding", size - 1)
    depth = section.get_int("maxpool_depth", 0) if mode == "max" else 0
    out_channels = section.get_int("out_channels", 1) if mode == "max" else 1
    if padding < 0:
        raise section.error(f"padding={padding} must not be negative", "padding")
    if depth:
        _positive(section, "out_channels", out_channels)
        if out_channels > c:
            raise section.error(
                f"out_channels={out_channels} exceeds the {c} input channels of the maxout",
                "out_channels",
            )
        out = (h, w, out_channels)
    else:
        out = (_pool_out(size, stride_y, padding, h), _pool_out(size, stride_x, padding, w), c)
        if out[0] < 1 or out[1] < 1:
            raise section.error(f"a {size}x{size} pool on a {h}x{w} input gives an empty output")
        if padding // 2 > (size - 1):
            raise section.error(
                f"padding={padding} leaves windows entirely outside the image", "padding"
            )
    spec = PoolSpec(**base, output_shape=out, mode=mode, size=size, stride_y=stride_y,
                    stride_x=stride_x, padding=padding, maxpool_depth=depth,
                    out_channels=out_channels)
    spec.bflops = size * size * c * out[0] * out[1] / 1e9
    return spec


def _maxpool(section, base, layers):
    return _pool(section, base, layers, "max")


def _local_avgpool(section, base, layers):
    return _pool(section, base, layers, "avg")


def _avgpool(section, base, layers):
    return GlobalAvgPoolSpec(**base, output_shape=(1, 1, base["input_shape"][2]))


def _upsample(section, base, layers):
    h, w, c = base["input_shape"]
    stride = section.get_int("stride", 2)
    if stride < 1:
        raise section.error(
            f"stride={stride}: reverse (downsampling) [upsample] is not supported", "stride"
        )
    scale = section.get_float("scale", 1.0)
    return UpsampleSpec(**base, output_shape=(h * stride, w * stride, c), stride=stride,
                        scale=scale)


def _softmax(section, base, layers):
    groups = _positive(section, "groups", section.get_int("groups", 1))
    temperature = section.get_float("temperature", 1.0)
    if section.get_str("tree") is not None:
        raise section.error("hierarchical softmax (tree=) is not supported", "tree")
    section.ignore("noloss")
    h, w, c = base["input_shape"]
    if (h * w * c) % groups:
        raise section.error(f"groups={groups} does not divide the {h * w * c} inputs", "groups")
    return SoftmaxSpec(**base, output_shape=base["input_shape"], groups=groups,
                       temperature=temperature)


def _dropout(section, base, layers):
    probability = section.get_float("probability", 0.2)
    if not 0.0 <= probability < 1.0:
        raise section.error(f"probability={probability} must be in [0, 1)", "probability")
    section.ignore("dropblock", "dropblock_size_rel", "dropblock_size_abs")
    return DropoutSpec(**base, output_shape=base["input_shape"], probability=probability)


def _from_one(section, base, layers):
    index = base["index"]
    ref = section.get_int("from", required=True)
    return _resolve(section, index, ref, "from", layers)


def _scale_channels(section, base, layers):
    source = _from_one(section, base, layers)
    activation = _activation(section, "linear")
    shape = layers[source].output_shape
    if base["input_shape"] != (1, 1, shape[2]):
        h, w, c = base["input_shape"]
        raise section.error(
            f"the previous layer's {h}x{w}x{c} output must be 1x1x{shape[2]} to scale the "
            f"channels of {_describe(layers[source])}"
        )
    return ScaleChannelsSpec(**{**base, "inputs": (base["index"] - 1, source)},
                             output_shape=shape, activation=activation)


def _sam(section, base, layers):
    source = _from_one(section, base, layers)
    activation = _activation(section, "linear")
    shape = layers[source].output_shape
    if base["input_shape"] != shape:
        h, w, c = base["input_shape"]
        raise section.error(
            f"the previous layer's {h}x{w}x{c} output must match {_describe(layers[source])}"
        )
    return SamSpec(**{**base, "inputs": (base["index"] - 1, source)}, output_shape=shape,
                   activation=activation)


def _reorg(section, base, layers):
    h, w, c = base["input_shape"]
    stride = _positive(section, "stride", section.get_int("stride", 1))
    if h % stride or w % stride:
        raise section.error(f"stride={stride} must divide the {h}x{w} input", "stride")
    return ReorgSpec(**base, output_shape=(h // stride, w // stride, c * stride * stride),
                     stride=stride)


def _cost(section, base, layers):
    section.ignore("type", "scale", "ratio", "noobject_scale", "thresh")
    return CostSpec(**base, output_shape=base["input_shape"])


def parse_yolo_options(section):
    """Read every option of a ``[yolo]`` section, with Darknet's defaults: the one place
    where [yolo] options become typed values (``HeadSpec`` fields and ``unsupported``).

    As in Darknet's parse_yolo, ``num`` anchors are read from ``anchors`` (extra values are
    ignored, missing ones are 0.5 px; both warn) and ``mask`` defaults to ``range(num)``.
    """
    classes = section.get_int("classes", 20)
    total = _positive(section, "num", section.get_int("num", 1))
    mask = section.get_list("mask", int, default=list(range(total)))
    anchors = section.get_list("anchors", float, default=[])
    if len(anchors) % 2:
        raise section.error(f"anchors has {len(anchors)} values; expected (w, h) pairs", "anchors")
    pairs = [tuple(anchors[i:i + 2]) for i in range(0, len(anchors), 2)]
    if len(pairs) != total:
        what = (f"uses the first {total}" if len(pairs) > total
                else f"sets the other {total - len(pairs)} to 0.5 x 0.5 pixels")
        warnings.warn(
            f"{section.where('anchors' if 'anchors' in section.options else 'num')}: [yolo] "
            f"anchors has {len(pairs)} pairs but num={total}; Darknet {what}, and so does keras_csp",
            stacklevel=3,
        )
        pairs = (pairs + [(0.5, 0.5)] * total)[:total]
    for m in mask:
        if not 0 <= m < total:
            raise section.error(f"mask index {m} has no anchor (num={total} anchors)", "mask")
    if len(set(mask)) != len(mask):
        raise section.error(f"mask {mask} repeats an anchor", "mask")
    iou_loss = section.get_str("iou_loss", "mse")
    if iou_loss not in IOU_LOSSES:
        raise section.error(f"iou_loss={iou_loss!r}; expected one of {IOU_LOSSES}", "iou_loss")
    nms_kind = section.get_str("nms_kind", "default")
    if nms_kind not in NMS_KINDS:
        raise section.error(f"nms_kind={nms_kind!r}; expected one of {NMS_KINDS}", "nms_kind")
    thresh_kind = section.get_str("iou_thresh_kind", "iou")
    if thresh_kind not in IOU_THRESH_KINDS:
        raise section.error(
            f"iou_thresh_kind={thresh_kind!r}; expected one of {IOU_THRESH_KINDS}", "iou_thresh_kind"
        )
    read = {
        "truth_thresh": section.get_float("truth_thresh", 1.0),
        "objectness_smooth": section.get_int("objectness_smooth", 0),
        "focal_loss": section.get_int("focal_loss", 0),
        "iou_thresh_kind": thresh_kind,
        "counters_per_class": section.get_str("counters_per_class"),
    }
    unsupported = tuple(
        (key, read[key]) for key, neutral in YOLO_LOSS_UNSUPPORTED.items()
        if key in section.options and (neutral is None or read[key] != neutral)
    )
    fields = dict(
        classes=classes,
        num=total,
        mask=tuple(mask),
        anchors=tuple(pairs),
        scale_x_y=section.get_float("scale_x_y", 1.0),
        new_coords=section.get_int("new_coords", 0),
        iou_loss=iou_loss,
        iou_normalizer=section.get_float("iou_normalizer", 0.75),
        obj_normalizer=section.get_float("obj_normalizer", 1.0),
        cls_normalizer=section.get_float("cls_normalizer", 1.0),
        ignore_thresh=section.get_float("ignore_thresh", 0.5),
        iou_thresh=section.get_float("iou_thresh", 1.0),
        label_smoothing=section.get_float("label_smooth_eps", 0.0),
        nms_kind=nms_kind,
        beta_nms=section.get_float("beta_nms", 0.6),
        unsupported=unsupported,
        options=dict(section.options),
        option_lines=dict(section.option_lines),
    )
    section.ignore(*YOLO_TRAINING_ONLY)
    return fields


def _yolo(section, base, layers):
    fields = parse_yolo_options(section)
    h, w, c = base["input_shape"]
    count, classes = len(fields["mask"]), fields["classes"]
    expected = count * (classes + 5)
    if c != expected:
        raise section.error(
            f"its input has {c} channels but mask has {count} anchors and classes={classes}, "
            f"so the preceding layer must output {count}*({classes}+5) = {expected} channels "
            "(filters= of the [convolutional] before it)"
        )
    return YoloSpec(**base, output_shape=base["input_shape"], **fields)


def yolo_head_spec(options, stride, path="<[yolo] options>"):
    """The ``HeadSpec`` of one Darknet ``[yolo]`` section given as a dict of option strings:
    the same parser and checks as a cfg file's [yolo], so a section gives the same spec, or the
    same error, either way: ``num`` anchors of ``anchors`` form the matching pool, ``mask`` picks
    this scale's (``range(num)`` when absent), and training options the loss does not
    reproduce raise ``ValueError``."""
    section = Section(type="yolo", line=None, path=path, header="yolo")
    for key, value in options.items():
        section.options[str(key)] = "".join(str(value).split())
    fields = parse_yolo_options(section)
    section.ignore(*TRAINING_ONLY)
    section.check_all_used()
    base = dict(index=0, type="yolo", line=None, path=path, input_shape=(1, 1, 0))
    return YoloSpec(**base, **fields).to_head_spec(stride)


_INFER = {
    "convolutional": (_conv, ConvSpec),
    "connected": (_connected, ConnectedSpec),
    "batchnorm": (_batchnorm, BatchNormSpec),
    "route": (_route, RouteSpec),
    "shortcut": (_shortcut, ShortcutSpec),
    "maxpool": (_maxpool, PoolSpec),
    "local_avgpool": (_local_avgpool, PoolSpec),
    "avgpool": (_avgpool, GlobalAvgPoolSpec),
    "upsample": (_upsample, UpsampleSpec),
    "softmax": (_softmax, SoftmaxSpec),
    "dropout": (_dropout, DropoutSpec),
    "scale_channels": (_scale_channels, ScaleChannelsSpec),
    "sam": (_sam, SamSpec),
    "reorg": (_reorg, ReorgSpec),
    "yolo": (_yolo, YoloSpec),
    "cost": (_cost, CostSpec),
}


def _check_unsupported(section):
    for key in UNSUPPORTED_IF_SET.get(section.type, ()):
        raw = section.get_str(key)
        if raw is not None and raw not in ("0", "0.0", "none"):
            raise section.error(f"option {key}={raw} is not supported by this port", key)


def _net_geometry(cfg, input_size):
    net = cfg.net
    height = net.get_int("height", 0)
    width = net.get_int("width", 0)
    channels = net.get_int("channels", 0)
    net.ignore(*NET_OPTIONS)
    net.check_all_used()
    if input_size is not None:
        try:
            height, width = (int(v) for v in input_size)
        except (TypeError, ValueError):
            raise ValueError(f"input_size must be (height, width), got {input_size!r}") from None
        if height < 1 or width < 1:
            raise ValueError(f"input_size must be positive, got {input_size!r}")
    for key, value in (("height", height), ("width", width), ("channels", channels)):
        if value < 1:
            raise net.error(
                f"option {key} must be a positive integer (got {value}); this port builds "
                "image models with a fixed input size",
                key,
            )
    return height, width, channels


def infer_network(cfg, input_size=None):
    """Parse (if needed) and shape-infer a cfg; ``input_size=(h, w)`` overrides [net]."""
    cfg = parse_cfg(cfg)
    for section in [cfg.net, *cfg.layers]:
        section.used.clear()
    height, width, channels = _net_geometry(cfg, input_size)
    layers = []
    shape = (height, width, channels)
    for index, section in enumerate(cfg.layers):
        infer, _ = _INFER[section.type]
        base = dict(index=index, type=section.type, line=section.line, path=section.path,
                    input_shape=shape, inputs=(index - 1,))
        _check_unsupported(section)
        spec = infer(section, base, layers)
        section.ignore(*TRAINING_ONLY)
        section.check_all_used()
        layers.append(spec)
        shape = spec.output_shape
    net_options = {k: v for k, v in cfg.net.options.items()}
    return Network(name=cfg.name, path=cfg.path, height=height, width=width, channels=channels,
                   layers=layers, net_options=net_options)

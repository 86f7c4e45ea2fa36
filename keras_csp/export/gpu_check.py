"""Which ops and tensors of a .tflite file the TFLite GPU delegate cannot run, and why.

``tf.lite.experimental.Analyzer(gpu_compatibility=True)`` calls TOPK_V2, CUMSUM and 5-D
transposes compatible, so it cannot be trusted. These rules are re-derived from the
delegate's own code, ``tensorflow/lite/delegates/gpu/common/model_builder.cc`` (the op ->
parser table ``NewOperationParser``, every parser's ``CheckMaxSupportedOpVersion``, and
``GetOpsToReplace`` / ``IsAllAllowedTensors``: no tensor of rank >= 5, non-constant tensors
float32/float16 only, int8/uint8 with quantized models) and from
``tensorflow/lite/tools/versioning/gpu_compatibility.cc`` (the per-op argument checks), plus
the documentation page of supported ops. An op with no parser in ``model_builder.cc`` is
reported even when ``gpu_compatibility.cc`` lists it (e.g. GATHER, GELU): the delegate
builds its graph from the parsers. Two rules go beyond "is there a parser":
CUMSUM is parsed for float input and a constant axis, but its kernel ignores ``exclusive``
and ``reverse`` and maps the axis through ``{BATCH, WIDTH, HEIGHT, CHANNELS}``, so only a
last-axis (or 4-D batch-axis) sum is right and the others are reported; and an op's
version is its opcode's, the maximum over all ops of that type in the file (one bool
STRIDED_SLICE makes every STRIDED_SLICE version 3, which the delegate refuses).

Reads the flatbuffer with the LiteRT / TFLite schema module only (no TensorFlow).
Run as ``python -m keras_csp.export.gpu_check model.tflite``; exit status 1 on findings.
"""

import dataclasses
import re
import sys

# op -> highest version the delegate parses (None: the parser checks no version).
SUPPORTED_OPS = {
    "ABS": 2, "ADD": 2, "AVERAGE_POOL_2D": 2, "BATCH_MATMUL": None, "CAST": None,
    "CONCATENATION": 2, "CONV_2D": 6, "COS": 2, "CUMSUM": 1, "DENSIFY": 1,
    "DEPTHWISE_CONV_2D": 6, "DEPTH_TO_SPACE": None, "DEQUANTIZE": 3, "DIV": 2, "EQUAL": 2,
    "ELU": 2, "EXP": 2, "FLOOR": 2, "FLOOR_DIV": 2, "FLOOR_MOD": 2, "FULLY_CONNECTED": 9,
    "GREATER": 2, "GREATER_EQUAL": 2, "HARD_SWISH": None, "LESS": 2, "LESS_EQUAL": 2,
    "LOGISTIC": 2, "LOG": 2, "LSTM": 4, "MAXIMUM": 2, "MAX_POOL_2D": 2, "MEAN": None,
    "MINIMUM": 2, "MIRROR_PAD": 2, "MUL": 3, "NEG": 2, "NOT_EQUAL": 2, "ONE_HOT": 1,
    "PACK": None, "PAD": 2, "POW": 2, "REDUCE_MAX": None, "REDUCE_MIN": None,
    "REDUCE_PROD": None, "QUANTIZE": 2, "RELU": 2, "RELU6": 2, "RELU_N1_TO_1": None,
    "LEAKY_RELU": 2, "PRELU": 1, "RESHAPE": 1, "RESIZE_BILINEAR": 3,
    "RESIZE_NEAREST_NEIGHBOR": 3, "RSQRT": 2, "SELECT_V2": 1, "SIN": 2, "SLICE": 2,
    "SOFTMAX": 2, "SPACE_TO_DEPTH": 2, "SPLIT": None, "SPLIT_V": None, "SQRT": 2, "SQUARE": 2,
    "SQUARED_DIFFERENCE": 2, "STRIDED_SLICE": 2, "SUB": 2, "SUM": None, "TANH": 2,
    "TILE": None, "TRANSPOSE": 2, "TRANSPOSE_CONV": 3,
}
QUANT_OPS = {"QUANTIZE", "DEQUANTIZE"}  # parsed only when quantized models are allowed
CUSTOM_OPS = {"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D",
              "Resampler"}
ONE_INPUT_ELEMENTWISE = {"ABS", "COS", "ELU", "EXP", "FLOOR", "LOG", "LOGISTIC", "NEG",
                         "RSQRT", "SIN", "SQRT", "SQUARE", "TANH"}
TWO_INPUT_ELEMENTWISE = {"ADD", "DIV", "EQUAL", "FLOOR_DIV", "FLOOR_MOD", "GREATER",
                         "GREATER_EQUAL", "LESS", "LESS_EQUAL", "MAXIMUM", "MINIMUM", "MUL",
                         "NOT_EQUAL", "POW", "SQUARED_DIFFERENCE", "SUB"}
LOGICAL_OPS = {"GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "EQUAL", "NOT_EQUAL"}
WEIGHTED_OPS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2),
                "TRANSPOSE_CONV": (1, 3)}  # op -> (weights input, bias input)
FUSED_ACTIVATION_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D",
                        "MUL", "SUB", "DIV"}
RESOURCE_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
_SIGN_BIT = 5  # ActivationFunctionType.SIGN_BIT, the one fused activation the delegate lacks

# Keras layers known to lower to ops the delegate rejects, and what to use instead.
LAYER_HINTS = {
    "UpSampling2D": "Keras 3 lowers nearest UpSampling2D to a rank-5 reshape + tile; use "
                    "keras_csp.layers.darknet_ops.NearestUpsample2D (one "
                    "RESIZE_NEAREST_NEIGHBOR)",
    "DepthwiseConv2D": "a depth multiplier > 1 is delegated only on 1-channel inputs; "
                       "duplicate the channels first (a constant 1x1 conv) and use "
                       "depth_multiplier=1",
}

KINDS = ("op", "version", "flex", "custom", "rank", "dtype", "weights", "dynamic", "params")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing the GPU delegate cannot run.

    ``kind`` is one of ``KINDS``; ``op_index`` is the position in the execution plan (None
    for a model-level finding); ``layer`` is the Keras layer the op or tensor came from,
    read from the tensor names (None when the name does not tell).
    """

    kind: str
    op: str
    message: str
    op_index: int = None
    tensor: str = None
    layer: str = None
    hint: str = None

    def __str__(self):
        where = f"#{self.op_index} " if self.op_index is not None else ""
        layer = f" [layer {self.layer}]" if self.layer else ""
        hint = f" -> {self.hint}" if self.hint else ""
        return f"{where}{self.op}{layer} ({self.kind}): {self.message}{hint}"


@dataclasses.dataclass
class GpuReport:
    """The checker's answer: ``findings`` (empty when the whole graph can be delegated)."""

    source: str
    num_ops: int
    op_counts: dict
    findings: list
    supported_ops: int
    partitions: int

    @property
    def ok(self):
        return not self.findings

    def layers(self):
        """Keras layers with at least one finding, in graph order."""
        return list(dict.fromkeys(f.layer for f in self.findings if f.layer))

    def summary(self):
        """One line per (kind, op, message) with its count and first layers, most common first."""
        groups = {}
        for finding in self.findings:
            message = re.sub(r"\[[-\d, ]*\]", "[...]", finding.message)  # shapes vary
            if finding.kind == "dynamic" and finding.op == "TENSOR":
                message = "tensor(s) with unknown dimensions"
            key = (finding.kind, finding.op, message, finding.hint)
            groups.setdefault(key, []).append(finding.layer)
        lines = []
        for (kind, op, message, hint), layers in sorted(groups.items(),
                                                       key=lambda item: -len(item[1])):
            named = list(dict.fromkeys(layer for layer in layers if layer))
            where = f" in {len(named)} layer(s): {', '.join(named[:3])}" if named else ""
            more = ", ..." if len(named) > 3 else ""
            hint = f" -> {hint}" if hint else ""
            lines.append(f"{len(layers)} x {op} ({kind}){where}{more}: {message}{hint}")
        return lines

    def __str__(self, limit=20):
        head = (
            f"GPU delegate check of {self.source}: {len(self.findings)} finding(s) in "
            f"{self.num_ops} ops; {self.supported_ops} ops delegable in {self.partitions} "
            "partition(s)"
        )
        if len(self.findings) <= limit:
            return "\n".join([head] + [f"  {finding}" for finding in self.findings])
        return "\n".join([head, "  grouped (report.findings lists every one):"]
                         + [f"  {line}" for line in self.summary()])


def _schema():
    """The flatbuffer schema module: LiteRT's, else the one inside TensorFlow."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:  # pragma: no cover - depends on what is installed
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def _enum_names(enum_class):
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def _decode(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class _Graph:
    """The main subgraph of a .tflite file in the shape the rules need."""

    def __init__(self, content):
        schema = _schema()
        if content[4:8] != b"TFL3":
            raise ValueError("Not a TFLite flatbuffer: the file identifier is not 'TFL3'.")
        model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
        if not model.subgraphs:
            raise ValueError("The TFLite model has no subgraph.")
        self.num_subgraphs = len(model.subgraphs)
        graph = model.subgraphs[0]
        self.op_names = _enum_names(schema.BuiltinOperator)
        self.type_names = _enum_names(schema.TensorType)
        self.tensors = graph.tensors or []
        self.buffers = model.buffers or []
        self.operators = graph.operators or []
        self.inputs = self._ids(graph.inputs)
        self.codes = model.operatorCodes or []
        self.producer = {}
        self.consumers = {}
        for index, op in enumerate(self.operators):
            for t in self._ids(op.outputs):
                self.producer[t] = index
            for t in self._ids(op.inputs):
                self.consumers.setdefault(t, []).append(index)

    @staticmethod
    def _ids(ids):
        return [int(i) for i in (ids if ids is not None else []) if i >= 0]

    def op_name(self, op):
        code = self.codes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = self.op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            return "CUSTOM", _decode(code.customCode) or ""
        return name, None

    def version(self, op):
        return int(self.codes[op.opcodeIndex].version)

    def name(self, t):
        return _decode(self.tensors[t].name) or f"tensor_{t}"

    def shape(self, t):
        shape = self.tensors[t].shape
        return [int(d) for d in shape] if shape is not None else []

    def signature(self, t):
        sig = self.tensors[t].shapeSignature
        return [int(d) for d in sig] if sig is not None and len(sig) else self.shape(t)

    def dtype(self, t):
        return self.type_names.get(self.tensors[t].type, str(self.tensors[t].type))

    def is_constant(self, t):
        tensor = self.tensors[t]
        if tensor.isVariable or not tensor.buffer or tensor.buffer >= len(self.buffers):
            return False
        buffer = self.buffers[tensor.buffer]
        return (buffer.data is not None and len(buffer.data) > 0) or bool(buffer.size)

    def constant_value(self, t):
        """A small constant tensor as a list of Python numbers, else None."""
        import numpy as np

        if not self.is_constant(t):
            return None
        buffer = self.buffers[self.tensors[t].buffer]
        if buffer.data is None:
            return None
        dtype = {"INT32": np.int32, "INT64": np.int64, "FLOAT32": np.float32}.get(self.dtype(t))
        if dtype is None:
            return None
        return np.frombuffer(bytes(np.asarray(buffer.data, np.uint8)), dtype).tolist()


def _layer_index(model):
    """Every layer of a Keras model by name (nested models included, the model itself not:
    its name prefixes every tensor) -> its class name."""
    names = {}
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        names[layer.name] = type(layer).__name__
        stack.extend(getattr(layer, "layers", []) or [])
    return names


def layer_of(tensor_name, layer_names=None):
    """The Keras layer a TFLite tensor name comes from, or None.

    Names look like ``functional_1/c2_conv_1/convolution`` (TF appends ``_N`` to a
    re-entered name scope), several joined by ``;`` after fusion, the op that absorbed the
    others last (``act;bn;conv``): it is tried first. With ``layer_names`` (a set or dict)
    the scope must name a real layer; without it the second scope, ``_N`` stripped, is taken.
    """
    if not tensor_name:
        return None
    for name in reversed(tensor_name.split(";")):
        scopes = name.split(":")[0].split("/")
        if layer_names is not None:
            for scope in scopes[:-1] if len(scopes) > 1 else scopes:
                for candidate in (scope, re.sub(r"_\d+$", "", scope)):
                    if candidate in layer_names:
                        return candidate
        elif len(scopes) >= 3:
            return re.sub(r"_\d+$", "", scopes[1])
    return None


def _read(model):
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), "<bytes>"
    path = str(model)
    with open(path, "rb") as handle:
        return handle.read(), path


class _Checker:
    def __init__(self, graph, allow_quant, layer_names):
        self.g = graph
        self.allow_quant = allow_quant
        self.layer_names = layer_names
        self.findings = []
        self.ok_ops = []

    def layer(self, index=None, tensor=None):
        layer = layer_of(self.g.name(tensor), self.layer_names) if tensor is not None else None
        if layer is None and index is not None:
            # Output names first; model outputs are renamed (StatefulPartitionedCall:0), so
            # then the op's constant inputs (axes, shapes), named after the layer too.
            # A conv's output is named after the activation fused into it: kernel first.
            op = self.g.operators[index]
            constants = [t for t in self.g._ids(op.inputs) if self.g.is_constant(t)]
            candidates = self.g._ids(op.outputs) + constants
            if self.g.op_name(op)[0] in WEIGHTED_OPS:  # fused conv + act: the kernel's layer
                candidates = constants + self.g._ids(op.outputs)
            for t in candidates:
                layer = layer_of(self.g.name(t), self.layer_names)
                if layer:
                    break
        return layer

    def add(self, kind, op, message, index=None, tensor=None, layer=None):
        name = self.g.name(tensor) if tensor is not None else None
        layer = layer or self.layer(index, tensor)
        hint = LAYER_HINTS.get((self.layer_names or {}).get(layer))
        self.findings.append(Finding(kind, op, message, index, name, layer, hint))

    # -- whole-graph rules -------------------------------------------------------------

    def check_dynamic(self):
        """Unknown dimensions: each graph input, then one finding per layer for the rest."""
        inputs = set(self.g.inputs)
        grouped = {}
        for t in range(len(self.g.tensors)):
            signature = self.g.signature(t)
            if not any(d < 0 for d in signature):
                continue
            if t in inputs:
                self.add("dynamic", "INPUT", f"input shape {signature} has an unknown "
                         "dimension; the delegate needs static shapes (export with a fixed "
                         "batch of 1 and a fixed input size)", tensor=t)
            else:
                grouped.setdefault(self.layer(tensor=t), []).append(t)
        for layer, tensors in grouped.items():
            first = tensors[0]
            self.add("dynamic", "TENSOR", f"{len(tensors)} tensor(s) with unknown dimensions, "
                     f"e.g. {self.g.name(first)} {self.g.signature(first)}", tensor=first,
                     layer=layer)

    def check_subgraphs(self):
        if self.g.num_subgraphs > 1:
            self.add("op", "SUBGRAPH", f"the model has {self.g.num_subgraphs} subgraphs "
                     "(control flow); only the main one can be delegated")

    # -- per-op rules ------------------------------------------------------------------

    def runtime_inputs(self, op):
        return [t for t in self.g._ids(op.inputs) if not self.constantish(t)]

    def constantish(self, t):
        """Constant, or a DEQUANTIZE of a constant (fp16 / int8 weights)."""
        if self.g.is_constant(t):
            return True
        producer = self.g.producer.get(t)
        if producer is None:
            return False
        op = self.g.operators[producer]
        return self.g.op_name(op)[0] == "DEQUANTIZE" and all(
            self.g.is_constant(i) for i in self.g._ids(op.inputs))

    def check_op(self, index, op):
        name, custom = self.g.op_name(op)
        before = len(self.findings)
        label = custom if custom is not None else name
        if custom is not None:
            if custom.startswith("Flex"):
                self.add("flex", label, "a Flex (SELECT_TF_OPS) op: TensorFlow kernel, never "
                         "on the GPU, and it needs the Flex delegate library", index)
            elif custom not in CUSTOM_OPS:
                self.add("custom", label, "custom op the GPU delegate has no parser for",
                         index)
            self.check_tensors(index, op, name)
        elif name in RESOURCE_OPS:
            self.add("weights", name, "reads or writes resource variables at run time (a "
                     "model converted with live variables, e.g. from_concrete_functions)",
                     index)
        elif name not in SUPPORTED_OPS or (name in QUANT_OPS and not self.allow_quant
                                           and not self.fp16_dequantize(op, name)):
            self.add("op", name, "operation is not supported by the GPU delegate", index)
            self.check_tensors(index, op, name)
        else:
            limit = SUPPORTED_OPS[name]
            version = self.g.version(op)
            if limit is not None and version > limit:
                self.add("version", name, f"op version {version}; the delegate parses up "
                         f"to version {limit}", index)
            self.check_tensors(index, op, name)
            self.check_weights(index, op, name)
            self.check_params(index, op, name)
        if len(self.findings) == before:
            self.ok_ops.append(index)

    def fp16_dequantize(self, op, name):
        if name != "DEQUANTIZE":
            return False
        inputs = self.g._ids(op.inputs)
        return bool(inputs) and self.g.dtype(inputs[0]) == "FLOAT16" and self.g.is_constant(
            inputs[0])

    def check_tensors(self, index, op, name):
        allowed_in = {"FLOAT32", "FLOAT16"}
        allowed_out = {"FLOAT32", "FLOAT16"}
        if self.allow_quant:
            allowed_in |= {"INT8", "UINT8"}
            allowed_out |= {"INT8", "UINT8"}
        if name in LOGICAL_OPS:
            allowed_out.add("BOOL")
        if name == "CAST":
            allowed_in |= {"BOOL", "INT32"}
            allowed_out.add("INT32")
        if name == "ONE_HOT":
            allowed_in.add("INT32")
        for side, ids, allowed in (("input", op.inputs, allowed_in),
                                   ("output", op.outputs, allowed_out)):
            for t in self.g._ids(ids):
                shape = self.g.shape(t)
                if len(shape) >= 5:
                    self.add("rank", name, f"{side} tensor of rank {len(shape)} {shape}; the "
                             "delegate handles rank <= 4 only", index, t)
                if not self.g.is_constant(t) and not self.g.tensors[t].isVariable:
                    dtype = self.g.dtype(t)
                    if dtype not in allowed:
                        self.add("dtype", name, f"{side} tensor of type {dtype}; the delegate "
                                 f"takes {'/'.join(sorted(allowed))} here", index, t)

    def check_weights(self, index, op, name):
        if name not in WEIGHTED_OPS:
            return
        inputs = [int(i) for i in op.inputs]
        for position in WEIGHTED_OPS[name]:
            if position < len(inputs) and inputs[position] >= 0:
                t = inputs[position]
                if not self.constantish(t):
                    what = "weights" if position == WEIGHTED_OPS[name][0] else "bias"
                    self.add("weights", name, f"{what} are not a constant buffer; the "
                             "delegate bakes constant weights into its kernels", index, t)

    def check_params(self, index, op, name):
        g, options = self.g, op.builtinOptions
        inputs = g._ids(op.inputs)
        outputs = g._ids(op.outputs)
        runtime = self.runtime_inputs(op)

        def fail(message, tensor=None):
            self.add("params", name, message, index, tensor)

        if name in FUSED_ACTIVATION_OPS and options is not None:
            if getattr(options, "fusedActivationFunction", 0) == _SIGN_BIT:
                fail("fused SIGN_BIT activation is not supported")
        if name in ONE_INPUT_ELEMENTWISE and (len(runtime) != 1 or len(inputs) != 1):
            fail(f"needs exactly one runtime input and no constant, has {len(runtime)} "
                 f"runtime of {len(inputs)}")
        if name in TWO_INPUT_ELEMENTWISE:
            if len(inputs) != 2:
                fail(f"needs two inputs, has {len(inputs)}")
            elif not runtime:
                fail("both inputs are constants; the delegate needs a runtime input")
            elif inputs[0] == inputs[1] and name not in ("ADD", "MUL"):
                fail("the same tensor twice as input is not supported")
        if name == "MUL" and len(inputs) == 2:
            a, b = g.shape(inputs[0]), g.shape(inputs[1])
            if len(a) == len(b) and any(x < y for x, y in zip(a, b)) and any(
                    y < x for x, y in zip(a, b)):
                fail(f"broadcasts both ways ({a} x {b}); one input must be at least as large "
                     "as the other in every dimension")
        if name in LOGICAL_OPS:
            consumers = g.consumers.get(outputs[0], []) if outputs else []
            cast_to_float = len(consumers) == 1 and g.op_name(
                g.operators[consumers[0]])[0] == "CAST" and g.dtype(
                g._ids(g.operators[consumers[0]].outputs)[0]) in ("FLOAT32", "FLOAT16")
            if not cast_to_float:
                fail("a comparison is delegated only when its one consumer is a CAST to float")
        if name == "CAST" and inputs and outputs:
            src, dst = g.dtype(inputs[0]), g.dtype(outputs[0])
            floats = ("FLOAT32", "FLOAT16")
            fine = (src == "BOOL" and dst in floats) or (src in floats and dst == "BOOL") or (
                src in ("FLOAT32", "INT32") and dst in ("FLOAT32", "INT32"))
            if not fine:
                fail(f"cast from {src} to {dst} is not supported")
        if name in ("RESHAPE", "TRANSPOSE", "TILE", "RESIZE_BILINEAR",
                    "RESIZE_NEAREST_NEIGHBOR", "PAD", "MIRROR_PAD", "QUANTIZE",
                    "SPACE_TO_DEPTH", "DEPTH_TO_SPACE") and len(runtime) != 1:
            fail(f"needs exactly one runtime input, has {len(runtime)} (a shape or size "
                 "computed at run time instead of a constant)")
        if name in ("PAD", "MIRROR_PAD") and len(inputs) > 1:
            pads = g.shape(inputs[1])
            if pads not in ([4, 2], [3, 2]):
                fail(f"paddings of shape {pads}; the delegate takes 4x2 or 3x2")
            if name == "MIRROR_PAD" and options is not None and options.mode != 0:
                fail("only REFLECT mirror padding is supported")
        if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"):
            if len(inputs) < 2 or not g.is_constant(inputs[1]) or g.dtype(inputs[1]) != "INT32":
                fail("axes must be a constant int32 tensor")
            if len(runtime) != 1:
                fail(f"needs exactly one runtime input, has {len(runtime)}")
        if name == "SOFTMAX" and options is not None and options.beta != 1:
            fail(f"beta {options.beta} != 1 is not supported")
        if name == "RESIZE_BILINEAR" and options is not None:
            if options.alignCorners and options.halfPixelCenters:
                fail("align_corners together with half_pixel_centers is not supported")
        if name in ("SLICE", "STRIDED_SLICE"):
            needed = 3 if name == "SLICE" else 4
            rank = len(g.shape(inputs[0])) if inputs else 0
            if len(inputs) < needed:
                fail(f"needs {needed} inputs, has {len(inputs)}")
            if rank not in (3, 4):
                fail(f"input of rank {rank}; slicing is supported for rank 3 or 4 only")
        if name == "STRIDED_SLICE" and options is not None:
            for mask in ("ellipsisMask", "newAxisMask", "shrinkAxisMask"):
                if getattr(options, mask, 0):
                    fail(f"{mask} is not supported")
            strides = g.constant_value(inputs[3]) if len(inputs) > 3 else None
            if strides is not None and any(s <= 0 for s in strides):
                fail(f"strides {strides}: reverse or zero strides are not supported")
        if name == "TRANSPOSE" and len(inputs) > 1:
            perm = g.shape(inputs[1])
            if not perm or not 2 <= perm[0] <= 4:
                fail(f"permutation of length {perm[0] if perm else 0}; the delegate takes 2 to 4")
        if name in ("SPACE_TO_DEPTH", "DEPTH_TO_SPACE") and options is not None:
            if options.blockSize <= 1:
                fail(f"block_size {options.blockSize} must be > 1")
        if name == "DEPTHWISE_CONV_2D" and options is not None and inputs and outputs:
            shape_in = g.shape(inputs[0])
            if len(shape_in) != 4 or len(g.shape(outputs[0])) != 4:
                fail("input and output must be rank 4")
            elif options.depthMultiplier != 1 and shape_in[3] != 1:
                fail(f"depth_multiplier {options.depthMultiplier} on {shape_in[3]} channels; "
                     "the delegate takes a multiplier only on 1-channel inputs")
        if name == "FULLY_CONNECTED" and options is not None:
            if options.weightsFormat != 0:
                fail("non-default (shuffled) weights format")
            if inputs and g.is_constant(inputs[0]):
                fail("constant input is not supported")
            if options.keepNumDims and inputs and outputs and len(g.shape(inputs[0])) != len(
                    g.shape(outputs[0])):
                fail("keep_num_dims with a rank change is not supported")
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV") and len(runtime) > 2:
            fail(f"{len(runtime)} runtime inputs; at most 2")
        if name == "DEQUANTIZE" and inputs and g.dtype(inputs[0]) == "INT16":
            fail("int16 dequantization is not supported")
        if name == "CUMSUM":
            self.check_cumsum(op, inputs, fail)
        if name == "SELECT_V2" and len(inputs) == 3:
            floats = ("FLOAT32", "FLOAT16")
            if g.dtype(inputs[0]) not in floats + ("BOOL",) or any(
                    g.dtype(t) not in floats for t in inputs[1:]):
                fail("condition must be bool/float and both branches float")

    def check_cumsum(self, op, inputs, fail):
        g, options = self.g, op.builtinOptions
        if len(inputs) != 2:
            fail("needs 2 inputs")
            return
        if g.dtype(inputs[0]) not in ("FLOAT32", "FLOAT16"):
            fail(f"input of type {g.dtype(inputs[0])}; only float is supported")
        axis = g.constant_value(inputs[1])
        if axis is None or g.dtype(inputs[1]) != "INT32":
            fail("axis must be a constant int32 tensor")
            return
        if options is not None and (options.exclusive or options.reverse):
            fail("exclusive / reverse are ignored by the delegate's CUMSUM kernel (it keeps "
                 "only the axis), so the GPU result would differ")
        rank = len(g.shape(inputs[0]))
        axis = axis[0] % rank if rank else 0
        # CumsumOperationParser maps tflite axis + 4 - rank through {BATCH, WIDTH, HEIGHT,
        # CHANNELS}: only the last axis (and the batch axis of a 4-D tensor) land right.
        if axis != rank - 1 and not (rank == 4 and axis == 0):
            fail(f"cumulative sum along axis {axis} of a rank-{rank} tensor: the delegate "
                 "maps that axis to a different one ({BATCH, WIDTH, HEIGHT, CHANNELS} table "
                 "in model_builder.cc), so it would run but sum the wrong way")


def _partitions(num_ops, ok_ops):
    """Runs of delegable ops in execution order: roughly the delegate's partitions."""
    ok = set(ok_ops)
    runs, previous = 0, False
    for index in range(num_ops):
        current = index in ok
        runs += current and not previous
        previous = current
    return runs


def check_gpu_compatibility(tflite_model, model=None, allow_quant=True):
    """Check a .tflite file (path or bytes) against the TFLite GPU delegate's rules.

    ``model``, the Keras model it was exported from, makes layer attribution exact.
    ``allow_quant`` mirrors the delegate's quantized-model flag (on by default in
    ``TfLiteGpuDelegateOptionsV2Default``): QUANTIZE / DEQUANTIZE and int8 / uint8
    activations are accepted. Returns a ``GpuReport``; ``report.ok`` is True when every op
    can run on the GPU.
    """
    content, source = _read(tflite_model)
    graph = _Graph(content)
    layer_names = _layer_index(model) if model is not None else None
    checker = _Checker(graph, allow_quant, layer_names)
    checker.check_subgraphs()
    for index, op in enumerate(graph.operators):
        checker.check_op(index, op)
    checker.check_dynamic()
    counts = {}
    for op in graph.operators:
        name, custom = graph.op_name(op)
        counts[custom or name] = counts.get(custom or name, 0) + 1
    return GpuReport(
        source=source,
        num_ops=len(graph.operators),
        op_counts=counts,
        findings=checker.findings,
        supported_ops=len(checker.ok_ops),
        partitions=_partitions(len(graph.operators), checker.ok_ops),
    )


def main(argv=None):
    """``python -m keras_csp.export.gpu_check FILE.tflite [...]``: print reports."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("files", nargs="+", help=".tflite files to check")
    parser.add_argument("--no-quant", action="store_true",
                        help="check as if the delegate's quantized-model flag were off")
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        report = check_gpu_compatibility(path, allow_quant=not args.no_quant)
        print(report)
        status |= not report.ok
    return status


if __name__ == "__main__":
    sys.exit(main())

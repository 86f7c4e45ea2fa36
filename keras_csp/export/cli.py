"""``keras-csp export``: SavedModel / TFLite export and the GPU-delegate check from the shell.

    keras-csp export tflite MODEL OUT.tflite [--quantize int8 --calibration DIR] [--nms builtin]
    keras-csp export tflite --run RUN [--weights best|final] OUT.tflite
    keras-csp export saved-model MODEL OUT_DIR [--input-type uint8 --letterbox --nms]
    keras-csp export gpu-check FILE.tflite [--model MODEL]

MODEL is a ``.keras`` / ``.h5`` file (e.g. a training run's ``final.keras``), a training run
folder, or a zoo name (``CSPDarknet53``, ``csdarknet53-omega``, built with ``--weights`` and
``--input-size``). ``--run RUN`` takes a run's ``best`` (default) or ``final`` detector; its
class names go into the ``.labels.txt`` beside a TFLite file. Detectors' head specs come from
the model, or from ``--heads heads.json`` (a list of HeadSpec configs).
"""

import json
import os

from keras_csp import zoo
from keras_csp._quiet import filtered_stderr
from keras_csp.backend import keras
from keras_csp.export import calibration, check_gpu_compatibility, serving, to_saved_model, to_tflite
from keras_csp.training.restore import load_keras_detector, restore_detector, weights_only_hint


def _input_size(text):
    if text is None:
        return None
    parts = [int(p) for p in str(text).lower().replace("x", ",").split(",") if p.strip()]
    if len(parts) == 1:
        return (parts[0], parts[0])
    if len(parts) == 2:
        return tuple(parts)
    raise ValueError(f"--input-size must be N or HxW; received {text!r}.")


RUN_WEIGHTS = ("best", "final", "last")


def _is_run(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "run.json"))


def load_model(source, input_size=None, weights=None, run=None):
    """A Keras model from a saved file, a training run (``run`` or ``source`` a run folder;
    ``weights`` best / final / last) or a zoo name."""
    if run is not None or (source is not None and _is_run(source)):
        if weights is not None and weights not in RUN_WEIGHTS and not str(weights).endswith(".keras"):
            raise ValueError(f"with a training run, --weights is one of {', '.join(RUN_WEIGHTS)}; received "
                             f"{weights!r}")
        detector, _ = restore_detector(run or source, weights or "best")
        return detector
    if source is None:
        raise ValueError("expected a model: a .keras file, a training run folder (or --run RUN), or a zoo name")
    if source.endswith(".weights.h5") or (os.path.isfile(source) and source.endswith(".weights")):
        raise ValueError(weights_only_hint(source))
    if os.path.isdir(source) and not os.path.isfile(os.path.join(source, "saved_model.pb")):
        raise ValueError(f"{source}: expected a training run folder (with run.json), a .keras file or a zoo name")
    if os.path.exists(source):
        if source.endswith(".keras"):
            return load_keras_detector(source)
        return keras.models.load_model(source, compile=False)
    if source not in zoo.names():
        raise ValueError(f"{source!r} is neither a model file, a training run folder nor a zoo name "
                         f"({', '.join(zoo.names())})")
    if isinstance(weights, str) and weights.endswith(".weights.h5"):
        folder = os.path.dirname(weights) or "."
        if os.path.isfile(os.path.join(folder, "run.json")):
            raise ValueError(f"{weights} belongs to the training run {folder}, whose classes and anchors a zoo "
                             f"model does not have: use --run {folder}, or {os.path.join(folder, 'final.keras')}")
    shape = None if input_size is None else (input_size[0], input_size[1], 3)
    return zoo.build(source, weights=weights, input_shape=shape, include_top=False)


def _model_labels(model, path):
    """Class names from ``--labels`` or else the detector's own (a training run's)."""
    return _labels(path) or (list(model.class_names) if getattr(model, "class_names", None) else None)


def _heads(path):
    if not path:
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _labels(path):
    if not path:
        return None
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def _common(parser):
    parser.add_argument("model", nargs="?", help=".keras / .h5 file, a training run folder, or a zoo name "
                        "(leave out with --run)")
    parser.add_argument("output", help="output path")
    parser.add_argument("--run", help="a training run folder: export its best (or --weights final) detector")
    parser.add_argument("--input-size", help="export input size: N or HxW (default: model's)")
    parser.add_argument("--weights", help="with --run or a run folder: best | final | last; zoo models: "
                        "None, 'imagenet' or a file")
    parser.add_argument("--verbose", type=int, default=1, help="2: TensorFlow's log lines and tracebacks on errors")
    parser.add_argument("--heads", help="JSON list of HeadSpec configs (default: the model's)")
    parser.add_argument("--max-detections", type=int, default=100)
    parser.add_argument("--iou-threshold", type=float, default=0.45)
    parser.add_argument("--score-threshold", type=float, default=0.25)


def add_export_parser(subparsers):
    """Add ``export`` with its ``tflite``, ``saved-model`` and ``gpu-check`` sub-commands."""
    parser = subparsers.add_parser("export", help="export to TFLite / SavedModel, check GPU",
                                   description=__doc__)
    jobs = parser.add_subparsers(dest="export_command", required=True)

    lite = jobs.add_parser("tflite", help="write a .tflite file (builtin ops only) + sidecar")
    _common(lite)
    lite.add_argument("--quantize", choices=["none", "float16", "dynamic", "int8", "qat"],
                      default="none")
    lite.add_argument("--calibration",
                      help="int8: folder / glob of real images from your dataset")
    lite.add_argument("--num-calibration", type=int, default=calibration.DEFAULT_SAMPLES,
                      help=f"int8: calibration images (default {calibration.DEFAULT_SAMPLES})")
    lite.add_argument("--input-type", choices=["float32", "uint8", "int8"], default="float32")
    lite.add_argument("--output-type", choices=["float32", "uint8", "int8"], default="float32")
    lite.add_argument("--nms", choices=["none", "builtin"], default="none")
    lite.add_argument("--labels", help="class names, one per line (copied beside the file)")
    lite.add_argument("--strict", action="store_true",
                      help="exit 1 when the GPU-delegate check has findings")
    lite.set_defaults(handler=run_tflite)

    saved = jobs.add_parser("saved-model", help="write a SavedModel (serving_default)")
    _common(saved)
    saved.add_argument("--input-type", choices=["float32", "uint8"], default="float32")
    saved.add_argument("--letterbox", action="store_true",
                       help="take images of any size, letterbox in the graph")
    saved.add_argument("--nms", action="store_true", help="decode + NMS in the graph")
    saved.add_argument("--batch-size", type=int, help="fixed batch (default: any)")
    saved.add_argument("--overwrite", action="store_true")
    saved.set_defaults(handler=run_saved_model)

    check = jobs.add_parser("gpu-check", help="list what the TFLite GPU delegate cannot run")
    check.add_argument("files", nargs="+", help=".tflite files")
    check.add_argument("--model", help="the Keras model (file or zoo name) for layer names")
    check.add_argument("--no-quant", action="store_true",
                       help="as if the delegate's quantized-model flag were off")
    check.set_defaults(handler=run_gpu_check)
    return parser


def run_tflite(args):
    size = _input_size(args.input_size)
    model = load_model(args.model, size, args.weights, args.run)
    quantize = None if args.quantize == "none" else args.quantize
    data = None
    if args.calibration:
        data = calibration.calibration_images(
            args.calibration, serving.resolve_input_size(model, size), args.num_calibration)
    with filtered_stderr():  # LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate" while checking the file
        result = to_tflite(
            model, args.output, quantize=quantize, representative_data=data,
            num_calibration_samples=args.num_calibration, input_type=args.input_type,
            output_type=args.output_type, nms=args.nms, heads=_heads(args.heads), input_size=size,
            max_detections=args.max_detections, iou_threshold=args.iou_threshold,
            score_threshold=args.score_threshold, labels=_model_labels(model, args.labels))
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.2f} MB) and {result.sidecar_path}")
    print(result.gpu_report)
    return 1 if args.strict and not result.gpu_report.ok else 0


def run_saved_model(args):
    size = _input_size(args.input_size)
    model = load_model(args.model, size, args.weights, args.run)
    path = to_saved_model(
        model, args.output, input_size=size, input_type=args.input_type,
        letterbox=args.letterbox, nms=args.nms, heads=_heads(args.heads),
        max_detections=args.max_detections, iou_threshold=args.iou_threshold,
        score_threshold=args.score_threshold, batch_size=args.batch_size,
        overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def run_gpu_check(args):
    model = load_model(args.model) if args.model else None
    status = 0
    for path in args.files:
        report = check_gpu_compatibility(path, model=model, allow_quant=not args.no_quant)
        print(report)
        status |= not report.ok
    return status

"""Export a trained detector for phones (TFLite, GPU delegate) and for Jetson (SavedModel for
TF-TRT / ONNX tools).

    # from a training run: fp16 for the Android / iOS GPU delegate, int8 for CPUs / NPUs
    python examples/export_mobile.py --run runs/coco --calibration images/val --out export/

    # offline try with an untrained small detector and synthetic calibration images:
    python examples/export_mobile.py --synthetic --out /tmp/export

Writes ``detector_fp16.tflite`` (NMS inside: boxes, scores, classes, num_detections),
``detector_int8.tflite`` (calibrated on ~200 real images; raw heads, NMS on the CPU with
``tflite/detect.py``), each with a JSON sidecar and labels, and ``saved_model/`` (uint8 input,
letterbox and NMS in the graph). The GPU-delegate report says which ops would fall back to
the CPU.

On a Jetson: convert ``saved_model/`` with TF-TRT (``tf.experimental.tensorrt.Converter``)
or to ONNX with tf2onnx, then build a TensorRT engine with ``trtexec``.
"""

import argparse
import os
import tempfile


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a keras-csp train output folder")
    parser.add_argument("--weights", default="best", help="best | final | last, or a weights file")
    parser.add_argument("--calibration", help="folder of real images for int8 (default: none, skip int8)")
    parser.add_argument("--synthetic", action="store_true", help="untrained small detector, synthetic images")
    parser.add_argument("--model", default="CSPDenseNetb-Ref-PRN")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


def main(argv=None):
    from keras_csp.export import calibration_images, to_saved_model, to_tflite

    args = parse(argv)
    if args.synthetic:
        from keras_csp.data import write_synthetic_dataset
        from keras_csp.data.synthetic import SHAPE_CLASSES
        from keras_csp.training.models import build_model

        detector = build_model(args.model, len(SHAPE_CLASSES), args.image_size)
        names = list(SHAPE_CLASSES)
        images = write_synthetic_dataset(tempfile.mkdtemp(prefix="calibration-"), num_images=12, seed=3,
                                         min_side=64, max_side=160)["images"]
        args.calibration = args.calibration or images
    elif args.run:
        from keras_csp.training.restore import restore_detector

        detector, info = restore_detector(args.run, args.weights)
        names = info["class_names"]
    else:
        raise SystemExit("give --run DIR (a trained run) or --synthetic")
    os.makedirs(args.out, exist_ok=True)
    size = detector.network.inputs[0].shape[1]
    fp16 = to_tflite(detector, os.path.join(args.out, "detector_fp16.tflite"), quantize="float16", nms="builtin",
                     labels=names)
    print(f"{fp16.path}: {fp16.size_bytes / 2**20:.2f} MB; GPU delegate: "
          f"{'every op' if fp16.gpu_report.ok else fp16.gpu_report.summary()}")
    results = {"fp16": fp16}
    if args.calibration:
        samples = calibration_images(args.calibration, (size, size))
        int8 = to_tflite(detector, os.path.join(args.out, "detector_int8.tflite"), quantize="int8",
                         representative_data=samples, labels=names)
        print(f"{int8.path}: {int8.size_bytes / 2**20:.2f} MB (int8, {len(samples)} calibration images)")
        results["int8"] = int8
    saved = to_saved_model(detector, os.path.join(args.out, "saved_model"), input_type="uint8", letterbox=True,
                           nms=True, overwrite=True)
    print(f"{saved}: SavedModel for TF-TRT / tf2onnx (uint8 images of any size in, boxes in their pixels out)")
    results["saved_model"] = saved
    return results


if __name__ == "__main__":
    main()

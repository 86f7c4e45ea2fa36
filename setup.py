from setuptools import find_packages, setup

EXTRAS = {
    "coco": ["pycocotools>=2.0.7"],
    "tfds": ["tensorflow-datasets>=4.9"],
    "tfmot": ["tf-keras~=2.21.0", "tensorflow-model-optimization>=0.8"],
    "litert": ["ai-edge-litert>=2.0"],
    "plot": ["matplotlib>=3.7"],
    "onnx": ["tf2onnx>=1.17", "onnxruntime>=1.18"],  # the Jetson path: SavedModel -> ONNX -> TensorRT
}
# The README's main job (keras-csp demo): COCO mAP, the TFLite run, the curves.
EXTRAS["demo"] = EXTRAS["coco"] + EXTRAS["litert"] + EXTRAS["plot"]
EXTRAS["test"] = sorted(
    set(sum(EXTRAS.values(), []))
    | {"pytest>=8", "pytest-xdist>=3", "hypothesis>=6", "pyyaml>=6", "pillow>=10"}
)

setup(
    name="keras_csp",
    version="0.1.0",
    description="CSPNet backbones and real-time detectors for Keras 3 / TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_csp", "keras_csp.*"]),
    install_requires=[
        "tensorflow-cpu~=2.21.0; platform_machine!='aarch64'",
        "tensorflow~=2.21.0; platform_machine=='aarch64'",
        "keras>=3.10",
        "numpy>=1.26",
        "pillow>=10",
        "pyyaml>=6",
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["keras-csp=keras_csp.cli:main"]},
)

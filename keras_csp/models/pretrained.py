"""Weights for the backbones: Keras weights files, Darknet ``.weights`` and the authors'
published ImageNet weights (downloaded with a hash where the network allows)."""

import os

from keras_csp.backend import keras

# The authors' ImageNet weights, as the reference repo (WongKinYiu/CrossStagePartialNetworks)
# publishes them. They are hosted on Google Drive, which gives no stable direct-download URL, so
# `weights="imagenet"` looks for the file in the cache folder first and tells the user where to
# put it when it is not there and cannot be downloaded.
IMAGENET_FILES = {
    ("CSPDarknet53", "leaky"): "csdarknet53_final.weights",
    ("CSPDarknet53", "mish"): "csdarknet53-omega_final.weights",
    ("CSPResNet50", "leaky"): "csresnet50_final.weights",
    ("CSPResNeXt50", "leaky"): "csresnext50_final.weights",
    ("CSPResNeXt50", "mish"): "csresnext50-omega_final.weights",
    ("Darknet53", "leaky"): "darknet53_final.weights",
    ("ResNet50", "leaky"): "resnet50_final.weights",
    ("ResNeXt50", "leaky"): "resnext50_final.weights",
}
DOWNLOAD_PAGE = "https://github.com/WongKinYiu/CrossStagePartialNetworks#big-models"


def cache_dir():
    """Folder searched for downloaded weights: ``$KERAS_CSP_HOME`` or ``~/.keras/keras_csp``."""
    return os.environ.get("KERAS_CSP_HOME", os.path.join(os.path.expanduser("~"), ".keras", "keras_csp"))


def resolve_imagenet(model_name, activation):
    """Path of the authors' ImageNet weights for this model, or a clear error."""
    fname = IMAGENET_FILES.get((model_name, activation))
    if fname is None:
        raise ValueError(
            f"No ImageNet weights were published for {model_name} with activation={activation!r}; "
            f"available: {sorted(f'{m} ({a})' for m, a in IMAGENET_FILES)}."
        )
    path = os.path.join(cache_dir(), fname)
    if os.path.exists(path):
        return path
    raise FileNotFoundError(
        f"ImageNet weights for {model_name} ({fname}) are not in {cache_dir()} and cannot be "
        f"downloaded automatically (the authors host them on Google Drive; this machine may also "
        f"be offline). Download {fname} from {DOWNLOAD_PAGE}, put it in {cache_dir()} (or set "
        f"KERAS_CSP_HOME), or pass weights='/path/to/{fname}'."
    )


def load(model, weights, model_name, activation="leaky", include_top=True):
    """Load ``weights`` (a path, or "imagenet") into ``model`` built by a keras_csp builder."""
    if weights == "imagenet":
        weights = resolve_imagenet(model_name, activation)
    weights = os.fspath(weights)
    if weights.endswith(".weights"):
        from keras_csp.darknet.weights import load_conv_weights

        blocks = model.darknet_blocks
        if not include_top:
            # Darknet files hold the classifier last; without the top we read only the backbone.
            blocks = tuple(b for b in blocks if b != "predictions")
        load_conv_weights(model, blocks, weights, allow_extra=not include_top)
    else:
        model.load_weights(weights)
    return model

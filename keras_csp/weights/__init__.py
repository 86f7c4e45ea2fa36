"""Trained weights by name: the registry of published files and their verified download.

``keras_csp.CSPDarknet53(weights="imagenet")`` or ``detectors.YOLOv4Tiny(weights="coco")``
go through :func:`resolve`; ``keras-csp weights list | fetch NAME | verify FILE`` is the CLI.
Standard library only: this package sits at the bottom of the import graph.
"""

import os

from keras_csp.weights.classes import COCO_CLASSES
from keras_csp.weights.download import (
    WeightsDownloadError,
    WeightsNotFoundError,
    cache_dir,
    cached_path,
    fetch,
    file_checksum,
    verify,
)
from keras_csp.weights.registry import WeightsEntry, aliases, find, get, names, register, unregister


def resolve(weights, model, progress=True, **model_kwargs):
    """What a builder's ``weights=`` argument means for ``model`` built with ``model_kwargs``.

    Returns ``(path, entry)``: an existing file -> ``(path, None)``; a registered name or an
    alias of ``model`` (``"coco"``, ``"imagenet"``, ``"conv.29"``) -> the fetched, verified
    file and its :class:`WeightsEntry`. Anything else is a ValueError listing what exists.
    """
    if weights is None:
        return None, None
    if isinstance(weights, os.PathLike) or (isinstance(weights, str) and os.path.exists(weights)):
        path = os.fspath(weights)
        if not os.path.exists(path):
            raise FileNotFoundError(f"weights file {path} does not exist.")
        return path, None
    if not isinstance(weights, str):
        raise TypeError(f"`weights` must be None, a file path or a registered name; received {type(weights).__name__}.")
    entry = find(model, weights, **model_kwargs)
    if entry is None and weights in names():
        entry = get(weights)
        if entry.model != model:
            raise ValueError(f"Weights {weights!r} are for {entry.model}, not {model}.")
    if entry is None:
        available = [f"{a} ({', '.join(f'{k}={v}' for k, v in kw)})" if kw else a for a, kw in aliases(model)]
        raise ValueError(
            f"{model}: weights={weights!r} is neither an existing file nor a registered name. "
            f"Available for {model}: {available or 'none'}; registered names: {names(model) or 'none'}; "
            f"or register your own with keras_csp.weights.register(...).")
    return fetch(entry, progress=progress), entry


__all__ = [
    "COCO_CLASSES", "WeightsDownloadError", "WeightsNotFoundError", "WeightsEntry", "aliases", "cache_dir", "cached_path",
    "fetch", "file_checksum", "find", "get", "names", "register", "resolve", "unregister", "verify",
]

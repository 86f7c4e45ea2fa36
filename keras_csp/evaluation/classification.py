"""Top-1 / top-5 accuracy of a classifier (the backbones' ImageNet-style numbers)."""

import numpy as np

from keras_csp.backend import keras


def top_k_accuracy(labels, probabilities, ks=(1, 5)):
    """Top-k accuracies of ``probabilities [N, C]`` against integer ``[N]`` or one-hot /
    soft ``[N, C]`` labels (their argmax). Returns ``{"top1": ..., "top5": ...}``."""
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(axis=-1)
    if probabilities.ndim != 2 or len(labels) != len(probabilities):
        raise ValueError(
            f"need probabilities [N, C] and N labels; received shapes {probabilities.shape} and {labels.shape}"
        )
    # Ties count against the label (a constant output is not 100% top-5).
    true_score = probabilities[np.arange(len(labels)), labels]
    rank = (probabilities >= true_score[:, None]).sum(axis=-1) - 1
    return {f"top{k}": float(np.mean(rank < k)) if len(labels) else 0.0 for k in ks}


def classification_metrics(top_k=5):
    """Metrics for ``compile``: ``top1`` and ``top{k}`` accuracy on one-hot labels."""
    return [
        keras.metrics.CategoricalAccuracy(name="top1"),
        keras.metrics.TopKCategoricalAccuracy(k=top_k, name=f"top{top_k}"),
    ]


def evaluate_classifier(model, dataset, ks=(1, 5), max_batches=None):
    """Top-k accuracy of ``model`` over ``dataset`` of ``(images, labels)`` batches."""
    labels, outputs = [], []
    for step, (images, y) in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        outputs.append(np.asarray(model(images, training=False)))
        labels.append(np.asarray(y))
    if not outputs:
        raise ValueError("the evaluation dataset is empty")
    return top_k_accuracy(np.concatenate(labels), np.concatenate(outputs), ks)


__all__ = ["classification_metrics", "evaluate_classifier", "top_k_accuracy"]

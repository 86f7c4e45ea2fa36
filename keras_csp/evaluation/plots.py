"""PNG figures: per-class precision-recall curves and training curves (matplotlib, Agg), and
``results.csv`` (one row per epoch). The validation pictures are in ``pictures``.

Every figure is written to a temporary file first and moved into place, so a reader (or a
killed run) never sees half a PNG.
"""

import math
import os
import re
import tempfile


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("the PNG figures need matplotlib: pip install 'keras_csp[plot]'") from err

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path, dpi=100):
    """Write ``figure`` to ``path`` atomically (temp file in the same folder, then rename)."""
    plt = _pyplot()
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", prefix=".tmp-", dir=folder)
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _safe_name(name):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "class"


def write_pr_curves(result, out_dir, grid_name="pr_curves.png"):
    """Per-class precision-recall curves of a ``COCOResult``.

    Writes ``pr_<class>.png`` per class with ground truth (precision against recall at IoU
    0.5, 0.75 and averaged over 0.5:0.95, COCO's 101-point interpolation, all areas, 100
    detections) and a grid of all classes at IoU 0.5 in ``grid_name``. Returns the paths.
    """
    import numpy as np

    if result.precision is None:
        return []
    plt = _pyplot()
    recall = result.recall_thresholds
    ious = list(np.round(result.iou_thresholds, 2))
    paths = []
    rows = [(k, r) for k, r in enumerate(result.per_class) if r["num_gt"] > 0]

    def curve(k, t):
        p = np.asarray(result.precision[t, :, k, 0, -1], float)
        return np.where(p < 0, np.nan, p)

    for k, row in rows:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        for t, label in ((ious.index(0.5), "IoU 0.50"), (ious.index(0.75), "IoU 0.75")):
            ax.plot(recall, curve(k, t), label=f"{label}  AP {np.nanmean(curve(k, t)):.3f}")
        mean = np.nanmean(np.stack([curve(k, t) for t in range(len(ious))]), axis=0)
        ax.plot(recall, mean, "--", label=f"IoU .50:.95  AP {row['AP']:.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"{row['name']} (id {row['category_id']}, {row['num_gt']} objects)")
        ax.legend(loc="lower left", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(save_figure(fig, os.path.join(out_dir, f"pr_{k:03d}_{_safe_name(row['name'])}.png")))
    if rows and grid_name:
        cols = min(4, len(rows))
        nrows = math.ceil(len(rows) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(3 * cols, 2.8 * nrows), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        t = ious.index(0.5)
        for ax, (k, row) in zip(axes.ravel(), rows):
            ax.axis("on")
            ax.plot(recall, curve(k, t))
            ax.set(xlim=(0, 1), ylim=(0, 1.02), title=f"{row['name']}: AP50 {row['AP50']:.2f}")
            ax.grid(alpha=0.3)
        fig.suptitle("precision-recall at IoU 0.5")
        fig.tight_layout()
        paths.append(save_figure(fig, os.path.join(out_dir, grid_name)))
    return paths


def plot_history(history, path, title=None):
    """Training curves from a Keras history dict (``{"loss": [...], "val_AP": [...], ...}``).

    One panel for the losses (``loss`` and its parts, ``val_loss``), one for the COCO numbers
    (``val_AP``, ``val_AP50``, ...) and one for the learning rate when logged; NaN entries
    (epochs without an evaluation) are skipped. Returns ``path``.
    """
    import numpy as np

    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    history = {k: [np.nan if v is None else float(v) for v in vs] for k, vs in history.items() if vs}
    losses = [k for k in history if k.endswith("loss")]
    metrics = [k for k in history if re.match(r"^(val_)?(AP|AR|top)", k) and not k.startswith(("val_AR", "AR"))]
    for k in metrics:  # pycocotools' -1: nothing to measure (e.g. no large objects)
        history[k] = [np.nan if v < 0 else v for v in history[k]]
    metrics = [k for k in metrics if np.isfinite(history[k]).any()]
    panels = [("loss", losses, True), ("COCO / accuracy", metrics, False)]
    if "learning_rate" in history or "lr" in history:
        panels.append(("learning rate", ["learning_rate" if "learning_rate" in history else "lr"], False))
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 3.8), squeeze=False)
    for ax, (name, keys, log_scale) in zip(axes[0], panels):
        for key in keys:
            values = np.asarray(history[key], float)
            epochs = np.arange(1, len(values) + 1)
            ok = np.isfinite(values)
            ax.plot(epochs[ok], values[ok], "o-" if ok.sum() < 30 else "-", markersize=3, label=key)
        if log_scale and all(np.nanmin(np.asarray(history[k], float)) > 0 for k in keys):
            ax.set_yscale("log")
        ax.set(xlabel="epoch", title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, never 1.5
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def results_columns(history):
    """Column order of ``results.csv``: training losses, learning rate, then validation."""
    keys = [k for k, v in history.items() if v is not None]
    train = sorted(k for k in keys if not k.startswith("val_") and k.endswith("loss"))
    rate = [k for k in ("learning_rate", "lr") if k in keys]
    other = sorted(k for k in keys if not k.startswith("val_") and k not in train + rate)
    val = sorted((k for k in keys if k.startswith("val_")), key=lambda k: (not k.endswith("loss"), k))
    return train + rate + other + val


def write_results_csv(history, path):
    """``results.csv``: one row per epoch (1-based ``epoch`` first), training losses and
    validation metrics; a cell is empty where the epoch has no value (not evaluated). Written
    atomically; returns ``path``.
    """
    import csv
    import io

    columns = results_columns(history)
    epochs = max((len(history[k]) for k in columns), default=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch"] + columns)
    for e in range(epochs):
        row = [e + 1]
        for k in columns:
            v = history[k][e] if e < len(history[k]) else None
            row.append("" if v is None or not math.isfinite(float(v)) else f"{float(v):.6g}")
        writer.writerow(row)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".csv", prefix=".tmp-", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(buffer.getvalue())
    os.replace(tmp, path)
    return path


__all__ = ["plot_history", "results_columns", "save_figure", "write_pr_curves", "write_results_csv"]

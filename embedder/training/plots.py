"""PNG plots of fine-tuning results: confusion matrix, ROC curves, learning curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay


def _figure(width: float, height: float) -> tuple[Figure, object]:
    """A figure and its axes, made without pyplot so that no global matplotlib backend is chosen."""
    figure = Figure(figsize=(width, height))
    return figure, figure.add_subplot()


def _plain(text: str) -> str:
    """A label drawn as typed: '$' would start matplotlib's mathtext, which fails on '$x^{$'."""
    return str(text).replace("$", r"\$")


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path) -> Path:
    """The confusion matrix (rows: true class, columns: predicted)."""
    figure, axes = _figure(1.2 * len(classes) + 3, 1.2 * len(classes) + 2.5)
    display = ConfusionMatrixDisplay(np.array(matrix), display_labels=[_plain(c) for c in classes])
    display.plot(ax=axes, colorbar=False)
    axes.tick_params(axis="x", labelrotation=45)
    return _save(figure, path)


def plot_roc(scores: np.ndarray, truth: np.ndarray, classes: list[str], path: Path) -> Path:
    """ROC curve of the positive class (two classes) or one-vs-rest curves of each class."""
    figure, axes = _figure(5, 5)
    positives = [1] if len(classes) == 2 else range(len(classes))
    for c in positives:
        if 0 < (truth == c).sum() < len(truth):
            RocCurveDisplay.from_predictions(truth == c, scores[:, c], name=_plain(classes[c]), ax=axes)
    axes.plot([0, 1], [0, 1], ls=":", color="grey")
    return _save(figure, path)


def plot_learning_curve(summary: pd.DataFrame, metric: str, path: Path) -> Path:
    """Mean ± standard deviation of ``metric`` against the number of labels per class."""
    figure, axes = _figure(5, 4)
    axes.errorbar(
        summary["labels_per_class"],
        summary[f"{metric}_mean"],
        yerr=summary[f"{metric}_std"],
        marker="o",
        capsize=4,
    )
    axes.set_xscale("log")
    axes.set_xlabel("labels per class")
    axes.set_ylabel(metric.replace("_", " "))
    axes.grid(alpha=0.3)
    return _save(figure, path)

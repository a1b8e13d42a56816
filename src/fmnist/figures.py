"""The pipeline's images, as PNG bytes: pure functions of arrays, no files, no global state.

Uses Matplotlib's object API (no pyplot), so nothing here touches a display or a backend.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fmnist.dataset import CLASS_NAMES, NUM_CLASSES


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No software or date stamp: the same figure gives the same bytes.
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def sample_grid(images: np.ndarray, labels: np.ndarray, per_class: int) -> bytes:
    """The first `per_class` images of each class, one row per class."""
    fig = Figure(figsize=(per_class * 0.9 + 1.6, NUM_CLASSES * 0.9))
    axes = fig.subplots(NUM_CLASSES, per_class, squeeze=False)
    for c in range(NUM_CLASSES):
        picks = np.flatnonzero(labels == c)[:per_class]
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(picks):
                ax.imshow(images[picks[j]], cmap="gray", vmin=0, vmax=255)
        axes[c, 0].text(-4, 14, CLASS_NAMES[c], ha="right", va="center", fontsize=8)
    fig.suptitle("Training samples per class")
    return _png(fig)


def confusion_matrix(cm: np.ndarray, title: str = "Confusion matrix (test set)") -> bytes:
    """The confusion matrix with counts in each cell (rows: true class, columns: predicted)."""
    fig = Figure(figsize=(10, 8))
    ax = fig.subplots()
    image = ax.imshow(cm, interpolation="nearest", cmap="Blues")
    fig.colorbar(image)
    ticks = np.arange(NUM_CLASSES)
    ax.set_xticks(ticks, CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(ticks, CLASS_NAMES)
    threshold = cm.max() / 2.0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            color = "white" if cm[i, j] > threshold else "black"
            ax.text(j, i, f"{cm[i, j]:d}", ha="center", va="center", color=color)
    ax.set_ylabel("True label")
    ax.set_xlabel("Predicted label")
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


def training_curves(log: pd.DataFrame) -> bytes:
    """Accuracy and loss per epoch, training and validation (the notebook's two panels)."""
    fig = Figure(figsize=(15, 5))
    axes = fig.subplots(1, 2)
    epochs = log["step"] + 1 if "step" in log else pd.Series(dtype=float)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for split, label in (("train", "Training"), ("val", "Validation")):
            column = f"{split}/{metric}"
            if column in log:
                ax.plot(epochs, log[column], label=label, linewidth=2)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(metric.capitalize())
        ax.set_title(f"Model {metric}")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend()
        else:  # a model trained elsewhere: say so rather than draw empty axes
            ax.text(0.5, 0.5, "no training log", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return _png(fig)


def misclassified(
    images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, confidence: np.ndarray, limit: int
) -> bytes:
    """Up to `limit` misclassified images, the most confidently wrong first."""
    wrong = np.flatnonzero(y_true != y_pred)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:limit]
    cols = 5
    rows = max(1, -(-len(wrong) // cols))
    fig = Figure(figsize=(cols * 2.2, rows * 2.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), wrong):
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(
            f"true: {CLASS_NAMES[y_true[i]]}\npred: {CLASS_NAMES[y_pred[i]]} ({confidence[i]:.0%})",
            fontsize=8,
        )
    fig.suptitle(f"Misclassified test images ({len(np.flatnonzero(y_true != y_pred))} in all)")
    fig.tight_layout()
    return _png(fig)


def message(text: str) -> bytes:
    """A figure that only says `text` (for a figure an architecture cannot have)."""
    fig = Figure(figsize=(6, 2))
    fig.text(0.5, 0.5, text, ha="center", va="center")
    return _png(fig)


def filters(kernels: np.ndarray, layer: str) -> bytes:
    """First-layer kernels (H, W, 1, F), min-max normalised, in a grid of 8 per row."""
    count = kernels.shape[-1]
    span = kernels.max() - kernels.min()
    normalised = (kernels - kernels.min()) / (span if span else 1.0)
    cols = 8
    rows = -(-count // cols)
    fig = Figure(figsize=(15, rows * 2))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < count:
            ax.imshow(normalised[:, :, 0, i], cmap="viridis")
            ax.set_title(f"F{i}", fontsize=8)
    size = f"{kernels.shape[0]}×{kernels.shape[1]}"
    fig.suptitle(f"Learned filters of {layer} ({count} filters, {size} each)")
    fig.tight_layout()
    return _png(fig)


def feature_maps(image: np.ndarray, maps: Sequence[tuple[str, np.ndarray]], title: str) -> bytes:
    """The input image and the first channel of each layer's output (H, W, C) beside it."""
    fig = Figure(figsize=(3 * (len(maps) + 1), 3))
    axes = fig.subplots(1, len(maps) + 1, squeeze=False)[0]
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title(f"Input\n{image.shape[0]}×{image.shape[1]}×1")
    for ax, (name, fmap) in zip(axes[1:], maps):
        ax.imshow(fmap[:, :, 0], cmap="viridis")
        ax.set_title(f"{name}\n{'×'.join(map(str, fmap.shape))}")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)

"""The time-to-accuracy figure of `candidates.py` and `recipe_runs.py` (the pipeline's own
figures, which stages draw, are `fmnist.figures`)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def time_to_accuracy(curves: dict[str, tuple[Sequence[float], Sequence[float]]]) -> bytes:
    """A PNG of validation accuracy against training seconds, one line per run:
    {label: (seconds at the end of each epoch, accuracy after it)}."""
    fig = Figure(figsize=(9, 5.5))
    ax = fig.subplots()
    for label, (seconds, accuracy) in curves.items():
        ax.plot(seconds, np.asarray(accuracy) * 100, marker=".", linewidth=1.5, label=label)
    ax.set_xlabel("Training seconds (end of each epoch)")
    ax.set_ylabel("Validation accuracy, one view (%)")
    ax.set_title("Time to accuracy")
    lows = [min(a) for _, a in curves.values() if len(a)]
    if lows:  # the first epochs' low figures would squash the part that decides
        ax.set_ylim(max(min(lows) * 100, 85.0), None)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()

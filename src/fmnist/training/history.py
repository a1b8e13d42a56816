"""The per-epoch training log: written with DVCLive by `train`, read back by `evaluate`.

This module owns the log's names and layout, so the writer and the readers agree.
"""

from __future__ import annotations

from pathlib import Path

import keras
import pandas as pd
from dvclive import Live

# Keras' name in `logs` -> the name logged (and plotted by `dvc plots`).
LOGGED = {
    "loss": "train/loss",
    "accuracy": "train/accuracy",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
}
LEARNING_RATE = "learning_rate"


def open_log(live_dir: str | Path, resume: bool = False) -> Live:
    """A DVCLive logger for `live_dir` that leaves `dvc.yaml` and DVC experiments alone."""
    return Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None)


class EpochLogger(keras.callbacks.Callback):
    """Log the epoch's metrics and learning rate to DVCLive, one step per epoch."""

    def __init__(self, live: Live):
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        for key, name in LOGGED.items():
            if key in logs:
                self.live.log_metric(name, float(logs[key]))
        self.live.log_metric(
            LEARNING_RATE, float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        )
        self.live.next_step()


def read_history(live_dir: str | Path) -> pd.DataFrame:
    """The log as a table: one row per epoch (`step`), one column per logged name."""
    plots = Path(live_dir) / "plots" / "metrics"
    columns = {}
    for name in (*LOGGED.values(), LEARNING_RATE):
        path = plots / f"{name}.tsv"
        if path.is_file():
            table = pd.read_csv(path, sep="\t")
            columns[name] = table.set_index("step")[table.columns[-1]]
    return pd.DataFrame(columns).rename_axis("step").reset_index()

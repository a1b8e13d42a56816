"""Resuming a killed training run from its last completed epoch, with the same result.

After every epoch `Checkpoint` writes, in one atomic step, everything the rest of the run depends
on: the model's variables (weights, and the dropout layers' random-number state), the
optimizer's (Adam's moments, its step and learning rate), the state of EarlyStopping and
ReduceLROnPlateau (their counters, best value and best weights), and a copy of the DVCLive log.
The next `dvc repro` finds it and continues from the next epoch; with the per-epoch shuffling of
`inputs.training_dataset` the resumed run computes exactly what an uninterrupted one would have.

Keras' own `BackupAndRestore` keeps only weights, optimizer and epoch: the callbacks' state and
the dropout random state would restart, and the model would differ from an uninterrupted run's.

The backup lives outside DVC's outputs (DVC deletes a stage's outputs before running it) in a
directory named by a fingerprint of everything that shapes the run (model and train params,
the training data, the code, the TensorFlow and Keras versions), so a changed run never resumes
a stale backup. It is removed once the model is saved.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fmnist import atomic
from fmnist.errors import PipelineError
from fmnist.params import Params, params_to_dict

STATE_FILE = "state.json"
VARIABLES_FILE = "variables.npz"
BEST_WEIGHTS_FILE = "best_weights.npz"
LOG_DIR = "live"

# The attributes of the Keras callbacks that carry state from epoch to epoch.
_CALLBACK_STATE = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
}


def fingerprint(params: Params, data_files: list[Path]) -> str:
    """A short hash of what determines a training run: params, data, code and library versions."""
    digest = hashlib.sha256()
    config = {"model": params_to_dict(params.model), "train": params_to_dict(params.train)}
    digest.update(json.dumps(config, sort_keys=True).encode())
    digest.update(f"tensorflow {tf.__version__} keras {keras.__version__}".encode())
    for path in [*data_files, *sorted(Path(__file__).parents[1].rglob("*.py"))]:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


@dataclass
class Saved:
    """A checkpoint read back: the epochs completed and the state to restore."""

    directory: Path
    epochs_done: int
    stopped: bool
    callbacks: list[dict]
    variables: list[np.ndarray]
    best_weights: list[np.ndarray] | None


def load(directory: Path) -> Saved | None:
    """The checkpoint in `directory`, or None when there is none (or only a partial one)."""
    try:
        state = json.loads((directory / STATE_FILE).read_text())
        with np.load(directory / VARIABLES_FILE, allow_pickle=False) as data:
            variables = [data[f"v{i}"] for i in range(len(data.files))]
        best = None
        if (directory / BEST_WEIGHTS_FILE).is_file():
            with np.load(directory / BEST_WEIGHTS_FILE, allow_pickle=False) as data:
                best = [data[f"v{i}"] for i in range(len(data.files))]
        return Saved(
            directory, state["epochs_done"], state["stopped"], state["callbacks"], variables, best
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise PipelineError(
            f"{directory}: unreadable training backup ({exc!r}); delete it to start over"
        ) from None


def restore_log(saved: Saved, live_dir: Path) -> None:
    """Put the DVCLive log as it was at the checkpoint back in `live_dir`."""
    if live_dir.exists():
        shutil.rmtree(live_dir)
    if (saved.directory / LOG_DIR).is_dir():
        shutil.copytree(saved.directory / LOG_DIR, live_dir)


def _state_variables(model: keras.Model) -> list:
    # Model variables include the dropout layers' seed-generator state, which `save_weights`
    # leaves out; without it a resumed run would draw different dropout masks.
    return [*model.variables, *model.optimizer.variables]


class Checkpoint(keras.callbacks.Callback):
    """Save the whole training state after each epoch; restore a saved one when training starts.

    Must come last in the callback list: it saves what the other callbacks did this epoch,
    and restores their state after their own `on_train_begin` has reset it.
    """

    def __init__(self, directory: Path, live_dir: Path, saved: Saved | None = None):
        super().__init__()
        self.directory = directory
        self.live_dir = live_dir
        self.saved = saved
        self.stateful: list[keras.callbacks.Callback] = []

    @property
    def epochs_done(self) -> int:
        """Epochs completed before this run (0 without a saved state)."""
        return self.saved.epochs_done if self.saved else 0

    @property
    def stopped(self) -> bool:
        """True when the saved run had already stopped early (nothing left to train)."""
        return bool(self.saved and self.saved.stopped)

    def track(self, callbacks: list[keras.callbacks.Callback]) -> None:
        """Save and restore the state of these callbacks (those that have any) too."""
        self.stateful = [cb for cb in callbacks if type(cb) in _CALLBACK_STATE]

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.saved is None:
            return
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        targets = _state_variables(self.model)
        if len(targets) != len(self.saved.variables):
            raise PipelineError(f"{self.directory}: the training backup does not fit this model")
        for variable, value in zip(targets, self.saved.variables):
            variable.assign(value)
        for cb, state in zip(self.stateful, self.saved.callbacks):
            for name, value in state.items():
                setattr(cb, name, value)
            if isinstance(cb, keras.callbacks.EarlyStopping):
                cb.best_weights = self.saved.best_weights

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        state = {
            "epochs_done": epoch + 1,
            "stopped": bool(self.model.stop_training),
            "callbacks": [
                {name: _plain(getattr(cb, name)) for name in _CALLBACK_STATE[type(cb)]}
                for cb in self.stateful
            ],
        }
        with atomic.atomic_path(self.directory) as tmp:
            tmp.mkdir()
            arrays = [keras.ops.convert_to_numpy(v) for v in _state_variables(self.model)]
            np.savez(tmp / VARIABLES_FILE, **{f"v{i}": a for i, a in enumerate(arrays)})
            best = next((cb.best_weights for cb in self.stateful if _has_best(cb)), None)
            if best is not None:
                np.savez(tmp / BEST_WEIGHTS_FILE, **{f"v{i}": a for i, a in enumerate(best)})
            if self.live_dir.is_dir():
                shutil.copytree(self.live_dir, tmp / LOG_DIR)
            # Written last: a directory without it is not a checkpoint.
            (tmp / STATE_FILE).write_text(json.dumps(state))


def _has_best(cb: keras.callbacks.Callback) -> bool:
    return isinstance(cb, keras.callbacks.EarlyStopping) and cb.best_weights is not None


def _plain(value):
    """A callback attribute as JSON (numpy scalars to Python numbers)."""
    return value.item() if isinstance(value, np.generic) else value

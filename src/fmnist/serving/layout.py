"""The package's layout: the files a model version ships, and loading it back.

saved_model.pb, variables/, assets/, fingerprint.pb   the SavedModel (`serving_default`)
model.keras                                           the native Keras model
metadata/model_card.md                                what it is for, how good, limits
metadata/metrics.json                                 test metrics, overall and per class
metadata/params.json                                  every param it was made with
metadata/confusion_matrix.png                         from the `evaluate` stage
metadata/class_names.json                             class id -> name
metadata/lineage.json                                 data hashes, code, inputs, machines,
                                                      inference latency and throughput
"""

from pathlib import Path

import keras

from fmnist import atomic
from fmnist.errors import PipelineError
from fmnist.model import saving

MODEL_FILE = "model.keras"
SAVED_MODEL_FILE = "saved_model.pb"
METADATA_DIR = "metadata"
MODEL_CARD_FILE = "model_card.md"
CLASS_NAMES_FILE = "class_names.json"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
LINEAGE_FILE = "lineage.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"


def load_package(path: str | Path) -> tuple[keras.Model, dict]:
    """Load a package: the Keras model (safe mode) and its metadata files by name."""
    path = Path(path)
    if not (path / MODEL_FILE).is_file():
        raise PipelineError(f"{path}: not a model package (no {MODEL_FILE})")
    meta = {
        name: atomic.read_json(path / METADATA_DIR / name, "package")
        for name in (CLASS_NAMES_FILE, PARAMS_FILE, METRICS_FILE, LINEAGE_FILE)
    }
    return saving.load_model(path / MODEL_FILE), meta

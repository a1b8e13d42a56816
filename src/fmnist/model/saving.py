"""The model that ships: a float32 copy of the trained network, saved with stable bytes."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import keras
from keras import layers

from fmnist import atomic
from fmnist.dataset import IMAGE_SHAPE
from fmnist.errors import PipelineError
from fmnist.model.architectures import FusedBatchNormalization
from fmnist.model.tta import with_test_time_augmentation
from fmnist.params import ModelParams


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Layers made inside compute under the Keras dtype policy `name` (the global one after)."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def for_inference(trained: keras.Model, p: ModelParams) -> keras.Model:
    """What is saved and shipped: the trained network, averaged over test-time views if
    `p.tta_flip` or `p.tta_shift`.

    A copy, without what `compile` attached (loss, optimizer and its state): a Keras archive
    stores those, and this project's loss would then stop plain Keras from loading the file.
    It computes in float32 whatever precision trained it (the weights are float32 either way):
    the same answers on every machine, with no bfloat16 emulated where a CPU lacks it, and a
    SavedModel that agrees with it (in bfloat16 the two kernels' roundings differ).
    """
    with dtype_policy("float32"):
        network = keras_copy(trained, "float32")
        network.set_weights(trained.get_weights())
        return with_test_time_augmentation(network, p) if p.tta_flip or p.tta_shift else network


def keras_copy(model: keras.Model, policy: str | None = None) -> keras.Model:
    """A new, uncompiled model of `model`'s layers (a Sequential, as every architecture is), in
    Keras' own classes: `FusedBatchNormalization` becomes Keras' BatchNormalization, so that
    plain Keras loads it. Every layer computes under dtype `policy` if given. New weights."""

    def copy(layer: layers.Layer) -> layers.Layer:
        fused = isinstance(layer, FusedBatchNormalization)
        new = (layers.BatchNormalization if fused else type(layer)).from_config(layer.get_config())
        if policy:
            new.dtype_policy = policy
        return new

    return keras.Sequential(
        [keras.Input(shape=IMAGE_SHAPE), *map(copy, model.layers)], name=model.name
    )


def _renumber_shared(config, ids: dict | None = None):
    """`config` with each `shared_object_id` (Keras uses the Python `id()` of the object, which
    differs from process to process) replaced by its order of first appearance."""
    ids = {} if ids is None else ids
    if isinstance(config, list):
        return [_renumber_shared(item, ids) for item in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key == "shared_object_id":
            value = ids.setdefault(value, len(ids))
        out[key] = _renumber_shared(value, ids)
    return out


def save_model(model: keras.Model, path: str | Path) -> None:
    """Save `model` as a `.keras` archive atomically, with bytes that depend only on the model."""
    with atomic.atomic_path(path) as tmp:
        raw = tmp.with_name("raw.keras")
        model.save(raw)
        out = io.BytesIO()
        with zipfile.ZipFile(raw) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in sorted(src.infolist(), key=lambda i: i.filename):
                data = src.read(info)
                if info.filename == "metadata.json":
                    meta = json.loads(data)
                    meta.pop("date_saved", None)
                    data = json.dumps(meta, sort_keys=True).encode()
                elif info.filename == "config.json":
                    data = json.dumps(_renumber_shared(json.loads(data)), sort_keys=True).encode()
                # `model.save` stamps the wall-clock time: restamped, same weights, same bytes.
                dst.writestr(atomic.zip_entry(info.filename), data)
        raw.unlink()
        tmp.write_bytes(out.getvalue())


def load_model(path: str | Path) -> keras.Model:
    """Load a `.keras` model in Keras' safe mode (no arbitrary code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no model there; run `dvc repro train`")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    # TypeError: a config naming a function or class that is not registered. RuntimeError:
    # h5py's for a damaged HDF5 weights file ("Unable to synchronously check link existence").
    except (ValueError, TypeError, OSError, RuntimeError, zipfile.BadZipFile, KeyError) as exc:
        # Keras' messages span lines and quote whole layer configs: one line, cut short.
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 300 else detail[:300] + "…"
        raise PipelineError(f"{path}: not a loadable Keras model ({detail})") from None

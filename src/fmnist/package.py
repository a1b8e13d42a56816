"""Stage `package`: the trained model as a serving-ready, self-describing directory.

`models/package/` is laid out the way the seed write-up's registry stores a version, and is a
TensorFlow SavedModel directory that TensorFlow Serving and Vertex AI's prebuilt TensorFlow
containers load as it is:

    saved_model.pb, variables/, assets/, fingerprint.pb   the SavedModel (`serving_default`)
    model.keras                                           the native Keras model
    metadata/model_card.md                                what it is for, how good, limits
    metadata/metrics.json                                 test metrics, overall and per class
    metadata/params.json                                  every param it was made with
    metadata/confusion_matrix.png                         from the `evaluate` stage
    metadata/class_names.json                             class id -> name
    metadata/lineage.json                                 data hashes, code, inputs, machines,
                                                          inference latency and throughput

The `serving_default` signature takes raw uint8 pixels and scales them itself with
`fmnist.inputs.preprocess`, so a client cannot feed it wrongly scaled floats.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from fmnist import atomic, device, inputs, lineage, models
from fmnist.dataset import CLASS_NAMES, IMAGE_SHAPE
from fmnist.errors import PipelineError, report_errors
from fmnist.params import ModelParams, PackageParams, Params, load_params, params_to_dict

MODEL_FILE = "model.keras"
SAVED_MODEL_FILE = "saved_model.pb"
METADATA_DIR = "metadata"
MODEL_CARD_FILE = "model_card.md"
CLASS_NAMES_FILE = "class_names.json"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
LINEAGE_FILE = "lineage.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"

SIGNATURE = "serving_default"
INPUT_NAME = "pixels"
# The SavedModel's input: a batch of raw 8-bit grayscale images, 0 = black, 255 = white.
INPUT_SPEC = tf.TensorSpec((None, *IMAGE_SHAPE), tf.uint8, name=INPUT_NAME)
# The SavedModel must reproduce the Keras model to this tolerance (float32 rounding).
MAX_PROBABILITY_DIFFERENCE = 1e-5


@dataclass(frozen=True)
class Sources:
    """The files a package is made from: the outputs of the earlier stages."""

    model: Path
    manifest: Path
    metrics: Path
    per_class: Path
    train_record: Path
    confusion_matrix: Path

    def files(self) -> dict[str, Path]:
        """Every source by role, in a fixed order."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def input_contract() -> dict:
    """What the packaged model expects, recorded in the package and shown in the model card."""
    return {
        "saved_model": {
            "signature": SIGNATURE,
            "input": {INPUT_NAME: {"dtype": "uint8", "shape": [None, *IMAGE_SHAPE]}},
            "scaling": "none by the client: raw pixels 0..255 (0 = black); the model divides "
            "by 255 itself",
            "outputs": {
                "probabilities": {"dtype": "float32", "shape": [None, len(CLASS_NAMES)]},
                "class_ids": {"dtype": "int32", "shape": [None]},
                "class_names": {"dtype": "string", "shape": [None]},
            },
        },
        "keras": {
            "file": MODEL_FILE,
            "input": {"dtype": "float32", "shape": [None, *IMAGE_SHAPE]},
            "scaling": "pixel / 255 (fmnist.inputs.preprocess), so 0.0 is black, 1.0 white",
            "output": "class probabilities (None, 10)",
        },
        "class_names": list(CLASS_NAMES),
    }


def export_saved_model(model: keras.Model, path: Path) -> None:
    """Write `model` as a SavedModel at `path` whose `serving_default` takes uint8 pixels."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    names = tf.constant(CLASS_NAMES)

    def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        probs = model(inputs.preprocess(pixels), training=False)  # (B, 10)
        probs = tf.cast(probs, tf.float32)
        ids = tf.argmax(probs, axis=1, output_type=tf.int32)  # (B,)
        return {"probabilities": probs, "class_ids": ids, "class_names": tf.gather(names, ids)}

    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[INPUT_SPEC])
    archive.write_out(str(path), verbose=False)


def load_serving_fn(path: str | Path) -> Callable[..., dict[str, tf.Tensor]]:
    """The `serving_default` signature of the SavedModel at `path` (call it with pixels=)."""
    path = Path(path)
    if not (path / SAVED_MODEL_FILE).is_file():
        raise PipelineError(f"{path}: no SavedModel there (no {SAVED_MODEL_FILE})")
    return tf.saved_model.load(str(path)).signatures[SIGNATURE]


def check_saved_model(model: keras.Model, serve: Callable, images: np.ndarray) -> float:
    """Largest probability difference between the SavedModel and the Keras model on `images`.

    Raises `PipelineError` above `MAX_PROBABILITY_DIFFERENCE`: a package whose two formats
    disagree must not be shipped.
    """
    served = serve(**{INPUT_NAME: tf.constant(images.reshape(-1, *IMAGE_SHAPE))})
    expected = model.predict(inputs.preprocess(images), verbose=0)
    diff = float(np.abs(served["probabilities"].numpy() - expected).max())
    if diff > MAX_PROBABILITY_DIFFERENCE:
        raise PipelineError(
            f"the SavedModel and the Keras model disagree by {diff:.2g} in probability "
            f"(allowed {MAX_PROBABILITY_DIFFERENCE})"
        )
    return diff


def speed_summary(latencies_s: list[float], batch_s: list[float], batch_size: int) -> dict:
    """Latency p50/p95 (ms) of single images and throughput (images/s) of full batches."""
    ms = np.asarray(latencies_s) * 1000.0
    return {
        "latency_ms_p50": round(float(np.percentile(ms, 50)), 3),
        "latency_ms_p95": round(float(np.percentile(ms, 95)), 3),
        "latency_runs": len(latencies_s),
        "throughput_images_per_s": round(batch_size * len(batch_s) / float(np.sum(batch_s)), 1),
        "throughput_batch_size": batch_size,
        "throughput_runs": len(batch_s),
    }


def measure_speed(serve: Callable, p: PackageParams) -> dict:
    """Time the serving signature on this machine: batch-1 latency and large-batch throughput."""
    rng = np.random.default_rng(0)  # the content does not change a CNN's cost, only its shape
    one = tf.constant(rng.integers(0, 256, (1, *IMAGE_SHAPE), dtype=np.uint8))
    batch = tf.constant(
        rng.integers(0, 256, (p.throughput_batch_size, *IMAGE_SHAPE), dtype=np.uint8)
    )

    def timed(x: tf.Tensor) -> float:
        start = time.perf_counter()
        serve(**{INPUT_NAME: x})["probabilities"].numpy()  # .numpy() waits for a GPU
        return time.perf_counter() - start

    for _ in range(p.warmup_runs):
        timed(one)
        timed(batch)
    latencies = [timed(one) for _ in range(p.latency_runs)]
    batches = [timed(batch) for _ in range(p.throughput_runs)]
    return speed_summary(latencies, batches, p.throughput_batch_size)


def packaging_machine() -> dict:
    """The machine the speed was measured on (it differs from the training machine)."""
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "device": f"GPU x{len(gpus)}" if gpus else f"CPU ({device.cpu_model()})",
        "onednn": device.onednn_enabled(),  # moves CPU speed both ways (README, "Inference")
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": sys.version.split()[0],
    }


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _tta_sentence(model: dict) -> str:
    """The model card's words for the test-time augmentation that `model` params select."""
    flip, shift = model.get("tta_flip"), model.get("tta_shift")
    if not (flip or shift):
        return ""
    views = "each image and its mirror image" if flip else "each image"
    if shift:
        views += f", {'each ' if flip else ''}also moved {shift} px right, left, down and up"
    count = ModelParams(tta_flip=bool(flip), tta_shift=shift or 0).tta_views
    return f" It averages its probabilities over {views} (test-time augmentation: {count} views)."


def model_card(params: dict, metrics: dict, lineage_record: dict) -> str:
    """The model card (Markdown): intended use, data, architecture, metrics, limits, versions."""
    model, train = params["model"], params["train"]
    optimizer = "AdamW" if train.get("weight_decay") else "Adam"
    training, speed = lineage_record["training"], lineage_record["inference"]
    packaging = lineage_record["packaging"]
    per_class = metrics["per_class"]
    worst = sorted(per_class, key=lambda r: r["f1"])[:3]
    splits = [s for s in ("train", "val", "test") if s in metrics]
    test = metrics["test"]
    code = lineage_record["code"]
    commit = code.get("commit") or "unknown"
    if code.get("dirty"):
        # The usual case: `dvc repro` runs before the commit that records its results. The
        # registered version's dvc.lock pins the exact inputs (their MD5s are in lineage.json).
        commit += " (with uncommitted changes: the version's dvc.lock pins the inputs)"
    raw = lineage_record["data"].get("raw", {})
    return "\n".join(
        [
            f"# Model card: Fashion-MNIST classifier ({model['arch']})",
            "",
            "## Intended use",
            "",
            "Classifies 28×28 grayscale images of single clothing items, centred on a black "
            "background as in Fashion-MNIST, into ten classes: "
            + ", ".join(CLASS_NAMES)
            + ". It is a teaching and benchmarking model. It is not meant for photographs "
            "taken in the wild, colour images, other image sizes, or any decision about people.",
            "",
            "## Input and output",
            "",
            f"- SavedModel signature `{SIGNATURE}`: input `{INPUT_NAME}`, uint8, shape "
            "(batch, 28, 28, 1), raw pixels 0..255 (0 = black). Do not scale: the model divides "
            "by 255 itself. Outputs `probabilities` (float32, (batch, 10)), `class_ids` (int32) "
            "and `class_names` (string).",
            f"- `{MODEL_FILE}` (Keras): float32 (batch, 28, 28, 1) scaled to [0, 1] by "
            "`fmnist.inputs.preprocess`; returns probabilities.",
            "- `fmnist predict` reads PNG/JPEG, IDX, Kaggle CSV and `.npy` and applies the same "
            "preprocessing.",
            "",
            "## Data",
            "",
            "Fashion-MNIST (Zalando Research, MIT licence; 60,000 training and 10,000 test "
            f"images in the official release); {params['prepare']['val_fraction']:.0%} of the "
            "training set is held out, stratified, for validation "
            f"(seed {params['prepare']['seed']}). SHA-256 of the "
            "decompressed raw files:",
            "",
            _table(["file", "sha256"], [[f"`{k}`", f"`{v}`"] for k, v in sorted(raw.items())]),
            "",
            "## Architecture and training",
            "",
            f"- Architecture `{model['arch']}` (see `src/fmnist/models.py`), "
            f"{training.get('parameters', 'unknown')} parameters; filters {model['filters']}, "
            f"kernel {model['kernel_size']}, dropout {model['dropout']}." + _tta_sentence(model),
            f"- {optimizer}, {train.get('schedule', 'plateau')} schedule, learning rate "
            f"{train['learning_rate']}, batch {train['batch_size']}, "
            f"{training.get('epochs_run', '?')} of at most {train['epochs']} epochs, seed "
            f"{train['seed']}.",
            f"- Trained on {training.get('device', 'unknown')}, precision "
            f"{training.get('precision', 'unknown')}, in {training.get('train_seconds', '?')} s.",
            "",
            "## Metrics",
            "",
            _table(
                ["split", "accuracy", "loss"],
                [[s, f"{metrics[s]['accuracy']:.4f}", f"{metrics[s]['loss']:.4f}"] for s in splits],
            ),
            "",
            f"Test set: macro F1 {test.get('f1_macro', float('nan')):.4f}, weighted F1 "
            f"{test.get('f1_weighted', float('nan')):.4f}. Per class (test set):",
            "",
            _table(
                ["class", "precision", "recall", "F1", "support"],
                [
                    [r["class"], f"{r['precision']:.4f}", f"{r['recall']:.4f}"]
                    + [f"{r['f1']:.4f}", r["support"]]
                    for r in per_class
                ],
            ),
            "",
            f"The confusion matrix is `{CONFUSION_MATRIX_FILE}` beside this card.",
            "",
            "## Inference speed (on the packaging machine)",
            "",
            f"{packaging['device']}, TensorFlow's oneDNN kernels "
            f"{'on' if packaging['onednn'] else 'off'}: latency p50 {speed['latency_ms_p50']} ms, "
            f"p95 {speed['latency_ms_p95']} ms at batch 1 ({speed['latency_runs']} calls); "
            f"{speed['throughput_images_per_s']} images/s at batch "
            f"{speed['throughput_batch_size']}. The model needs no GPU.",
            "",
            "## Limitations",
            "",
            "- The weakest classes on the test set: "
            + ", ".join(f"{r['class']} (F1 {r['f1']:.2f})" for r in worst)
            + ". Shirt, T-shirt/top, Pullover and Coat look alike at 28×28.",
            "- There is no 'none of these' class: any input is forced into one of the ten, and "
            "the probabilities are not calibrated.",
            "- Images unlike Fashion-MNIST (not centred, light background, photos) are out of "
            "distribution; accuracy on them is unknown.",
            "",
            "## Versions",
            "",
            f"- Code commit: {commit}",
            f"- Trained with TensorFlow {training.get('tensorflow', '?')}, Keras "
            f"{training.get('keras', '?')}, Python {training.get('python', '?')}.",
            f"- Packaged {lineage_record['packaged_at']} with TensorFlow "
            f"{packaging['tensorflow']}.",
            "",
        ]
    )


def package_metrics(metrics: dict, per_class: pd.DataFrame) -> dict:
    """The evaluate stage's metrics with the per-class report added under `per_class`."""
    return {**metrics, "per_class": per_class.to_dict(orient="records")}


def build_package(out: Path, src: Sources, params: Params) -> dict:
    """Write the package directory at `out` in one atomic step, once it is proven to load.

    Returns the inference speed measured on the exported SavedModel.
    """
    if not src.model.is_file():
        raise PipelineError(f"{src.model}: no model there; run `dvc repro train`")
    if not src.confusion_matrix.is_file():
        raise PipelineError(f"{src.confusion_matrix}: missing; run `dvc repro evaluate`")
    try:
        per_class = pd.read_csv(src.per_class)
    except FileNotFoundError:
        raise PipelineError(f"{src.per_class}: missing; run `dvc repro evaluate`") from None
    metrics = package_metrics(lineage.read_json(src.metrics, "evaluate"), per_class)
    params_dict = params_to_dict(params)
    with atomic.atomic_path(out) as tmp:
        model = models.load_model(src.model)
        export_saved_model(model, tmp)
        shutil.copyfile(src.model, tmp / MODEL_FILE)
        serve = load_serving_fn(tmp)
        probe = np.random.default_rng(1).integers(0, 256, (32, *IMAGE_SHAPE), dtype=np.uint8)
        check_saved_model(model, serve, probe)
        record = {
            "data": lineage.read_json(src.manifest, "prepare"),
            "code": lineage.git_commit(),
            # The MD5 of each input file, as DVC records them in dvc.lock for this stage.
            "inputs": {str(path): lineage.file_md5(path) for path in src.files().values()},
            "training": lineage.read_json(src.train_record, "train"),
            "packaging": packaging_machine(),
            "inference": measure_speed(serve, params.package),
            "input": input_contract(),
            "packaged_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        meta = tmp / METADATA_DIR
        meta.mkdir()
        shutil.copyfile(src.confusion_matrix, meta / CONFUSION_MATRIX_FILE)
        atomic.write_json(meta / CLASS_NAMES_FILE, list(CLASS_NAMES))
        atomic.write_json(meta / PARAMS_FILE, params_dict)
        atomic.write_json(meta / METRICS_FILE, metrics)
        atomic.write_json(meta / LINEAGE_FILE, record)
        atomic.write_text(meta / MODEL_CARD_FILE, model_card(params_dict, metrics, record))
        load_package(tmp)
    return record["inference"]


def load_package(path: str | Path) -> tuple[keras.Model, dict]:
    """Load a package: the Keras model (safe mode) and its metadata files by name."""
    path = Path(path)
    if not (path / MODEL_FILE).is_file():
        raise PipelineError(f"{path}: not a model package (no {MODEL_FILE})")
    meta = {
        name: lineage.read_json(path / METADATA_DIR / name, "package")
        for name in (CLASS_NAMES_FILE, PARAMS_FILE, METRICS_FILE, LINEAGE_FILE)
    }
    return models.load_model(path / MODEL_FILE), meta


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    parser.add_argument("--per-class", type=Path, default=Path("metrics/per_class.csv"))
    parser.add_argument("--train-record", type=Path, default=Path("metrics/train.json"))
    parser.add_argument(
        "--confusion-matrix", type=Path, default=Path("metrics/figures/confusion_matrix.png")
    )
    parser.add_argument("--out", type=Path, default=Path("models/package"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    src = Sources(
        args.model,
        args.manifest,
        args.metrics,
        args.per_class,
        args.train_record,
        args.confusion_matrix,
    )
    speed = build_package(args.out, src, params)
    print(
        f"package: {args.out} written and loaded back; latency p50 {speed['latency_ms_p50']} ms, "
        f"p95 {speed['latency_ms_p95']} ms; {speed['throughput_images_per_s']} images/s at "
        f"batch {speed['throughput_batch_size']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

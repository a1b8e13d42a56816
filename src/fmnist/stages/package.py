"""Stage `package`: the trained model as a serving-ready, self-describing directory.

`models/package/` is laid out the way the seed write-up's registry stores a version, and is a
TensorFlow SavedModel directory that TensorFlow Serving and Vertex AI's prebuilt TensorFlow
containers load as it is:

    saved_model.pb, variables/, assets/, fingerprint.pb   the SavedModel (`serving_default`,
                                                          `serving_averaged`, `serving_bytes`)
    model.keras                                           the native Keras model
    metadata/model_card.md                                what it is for, how good, limits
    metadata/metrics.json                                 test metrics, overall and per class
    metadata/params.json                                  every param it was made with
    metadata/confusion_matrix.png                         from the `evaluate` stage
    metadata/class_names.json                             class id -> name
    metadata/lineage.json                                 data hashes, code, inputs, machines,
                                                          inference latency and throughput
    metadata/ood.json                                     the out-of-distribution threshold and
                                                          its rates on tuning and held-out sets
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from fmnist import atomic, git
from fmnist.dataset import CLASS_NAMES, IMAGE_SHAPE, SPLIT_NAMES, load_split
from fmnist.errors import PipelineError, report_errors
from fmnist.model import saving, tta
from fmnist.params import ModelParams, Params, load_params, params_to_dict
from fmnist.serving import calibration
from fmnist.serving.card import model_card
from fmnist.serving.layout import (
    CLASS_NAMES_FILE,
    CONFUSION_MATRIX_FILE,
    LINEAGE_FILE,
    METADATA_DIR,
    METRICS_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    PARAMS_FILE,
    load_package,
)
from fmnist.serving.signatures import (
    AVERAGED_SIGNATURE,
    SIGNATURE,
    check_saved_model,
    export_saved_model,
    input_contract,
    load_signatures,
    measure_speed,
    with_features,
)
from fmnist.training import device


@dataclass(frozen=True)
class Sources:
    """The files a package is made from: the outputs of the earlier stages."""

    model: Path
    manifest: Path
    metrics: Path
    per_class: Path
    train_record: Path
    confusion_matrix: Path
    # The prepared splits: the out-of-distribution detector is fitted, tuned and measured on them.
    train: Path
    val: Path
    test: Path

    def files(self) -> dict[str, Path]:
        """Every source by role, in a fixed order."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


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
    metrics = package_metrics(atomic.read_json(src.metrics, "evaluate"), per_class)
    params_dict = params_to_dict(params)
    with atomic.atomic_path(out) as tmp:
        model = saving.load_model(src.model)
        single = with_features(tta.network(model), ModelParams(tta_flip=False, tta_shift=0))
        splits = [load_split(path) for path in (src.train, src.val, src.test)]
        detector, ood_report = calibration.calibrate(single, *splits, params.package)
        export_saved_model(model, tmp, params.model, detector)
        shutil.copyfile(src.model, tmp / MODEL_FILE)
        served = load_signatures(tmp)
        probe = np.random.default_rng(1).integers(0, 256, (32, *IMAGE_SHAPE), dtype=np.uint8)
        check_saved_model(model, served[AVERAGED_SIGNATURE], probe)
        check_saved_model(tta.network(model), served[SIGNATURE], probe)
        serve = served[SIGNATURE]
        record = {
            "data": atomic.read_json(src.manifest, "prepare"),
            "code": git.git_commit(),
            # The MD5 of each input file, as DVC records them in dvc.lock for this stage.
            "inputs": {str(path): atomic.file_md5(path) for path in src.files().values()},
            "training": atomic.read_json(src.train_record, "train"),
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
        atomic.write_json(meta / calibration.REPORT_FILE, ood_report)
        atomic.write_text(
            meta / MODEL_CARD_FILE, model_card(params_dict, metrics, record, ood_report)
        )
        load_package(tmp)
    return record["inference"]


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
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
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
        *(args.data / f"{name}.npz" for name in SPLIT_NAMES),
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

"""Stage `package`: the trained model as a serving-ready, self-describing directory.

`models/package/` is laid out the way the seed write-up's registry stores a version, and is a
TensorFlow SavedModel directory that TensorFlow Serving and Vertex AI's prebuilt TensorFlow
containers load as it is (the layout: `fmnist.serving.layout`; the signatures, pixels and
encoded images: `fmnist.serving.signatures`; the out-of-distribution threshold and its rates,
fitted and tuned on the prepared train and val splits and measured on test:
`metadata/ood.json`, `fmnist.serving.calibration`). Its bytes depend only on the
model and the metadata it is made from: the inference speed measured here and the time go to
a run record outside it (`metrics/runs/package.json`), and its lineage names no git commit
(registration and `fmnist lineage` supply the commit; the package records what each stage ran
with: params, code and data hashes). Before writing anything it checks that every stage's
provenance record agrees with these params and with dvc.lock (`fmnist.provenance`).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmnist import atomic, dvcfiles, provenance
from fmnist.dataset import CLASS_NAMES, IMAGE_SHAPE, SPLIT_NAMES, load_split
from fmnist.errors import PipelineError, report_errors
from fmnist.model import saving, tta
from fmnist.params import ModelParams, Params, flatten, load_params, params_to_dict
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
    write_manifest,
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
    provenance: Path  # the directory of the stages' provenance records, STAGE.json

    def record(self, stage: str) -> Path:
        """Where `stage`'s provenance record is."""
        return self.provenance / f"{stage}.json"

    def files(self) -> dict[str, Path]:
        """Every source file by role, in a fixed order."""
        roles = [name for name in self.__dataclass_fields__ if name != "provenance"]
        files = {name: getattr(self, name) for name in roles}
        return files | {f"{s}_provenance": self.record(s) for s in provenance.UPSTREAM}


def package_metrics(metrics: dict, per_class: pd.DataFrame) -> dict:
    """The evaluate stage's metrics with the per-class report added under `per_class`."""
    return {**metrics, "per_class": per_class.to_dict(orient="records")}


def read_lock(path: Path) -> dict | None:
    """dvc.lock as DVC has written it so far, or None where the stage runs without DVC."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return dvcfiles.parse(text, str(path))


def check_provenance(src: Sources, params: Params, lock: dict | None) -> dict[str, dict]:
    """The upstream stages' provenance records, once they agree with `params` and `lock`."""
    records = {stage: provenance.read(src.record(stage), stage) for stage in provenance.UPSTREAM}
    provenance.check(records, flatten(params_to_dict(params)), "params.yaml", lock)
    return records


def build_package(out: Path, src: Sources, params: Params, lock: dict | None = None) -> dict:
    """Write the package directory at `out` in one atomic step, once it is proven to load.

    Returns the inference speed measured on the exported SavedModel (not written into it).
    """
    if not src.model.is_file():
        raise PipelineError(f"{src.model}: no model there; run `dvc repro train`")
    if not src.confusion_matrix.is_file():
        raise PipelineError(f"{src.confusion_matrix}: missing; run `dvc repro evaluate`")
    try:
        per_class = pd.read_csv(src.per_class)
    except FileNotFoundError:
        raise PipelineError(f"{src.per_class}: missing; run `dvc repro evaluate`") from None
    records = check_provenance(src, params, lock)
    metrics = package_metrics(atomic.read_json(src.metrics, "evaluate"), per_class)
    params_dict = params_to_dict(params)
    training = atomic.read_json(src.train_record, "train")
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
        speed = measure_speed(serve, params.package)
        record = {
            "data": atomic.read_json(src.manifest, "prepare"),
            # The MD5 of each input file, as DVC records them in dvc.lock for this stage.
            "inputs": {str(path): atomic.file_md5(path) for path in src.files().values()},
            "training": training,
            "input": input_contract(),
            # What every stage ran with (its params and code), this one's last.
            "provenance": records | {"package": provenance.record("package", params)},
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
        write_manifest(tmp)
        load_package(tmp)
    return speed


def run_record(speed: dict) -> dict:
    """What one packaging run measured, kept outside the package: when, where, how fast."""
    return {
        "packaged_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "packaging": device.machine(),
        "inference": speed,
    }


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--manifest", type=Path, default=Path("data/prepared/manifest.json"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    parser.add_argument("--per-class", type=Path, default=Path("metrics/per_class.csv"))
    parser.add_argument("--train-record", type=Path, default=Path("metrics/runs/train.json"))
    parser.add_argument(
        "--confusion-matrix", type=Path, default=Path("metrics/figures/confusion_matrix.png")
    )
    parser.add_argument(
        "--provenance",
        type=Path,
        default=Path("metrics/provenance"),
        help="the directory of the stages' provenance records",
    )
    parser.add_argument(
        "--lock", type=Path, default=Path("dvc.lock"), help="the lock the records must match"
    )
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--out", type=Path, default=Path("models/package"))
    parser.add_argument(
        "--run-record",
        type=Path,
        default=Path("metrics/runs/package.json"),
        help="where the speed measured here and the time go (outside the package)",
    )
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
        args.provenance,
    )
    speed = build_package(args.out, src, params, read_lock(args.lock))
    atomic.write_json(args.run_record, run_record(speed))
    print(
        f"package: {args.out} written, verified and loaded back; latency p50 "
        f"{speed['latency_ms_p50']} ms, p95 {speed['latency_ms_p95']} ms; "
        f"{speed['throughput_images_per_s']} images/s at batch {speed['throughput_batch_size']} "
        f"(in {args.run_record})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

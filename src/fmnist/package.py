"""Stage `package`: the trained model in a self-describing directory that loads on its own.

`models/package/` holds the model, its class names, the params and metrics it was made with,
and `lineage.json`: the content hashes of the raw and prepared data, the code commit, and the
machine and software that trained it.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from pathlib import Path

import keras

from fmnist import atomic, lineage, models
from fmnist.dataset import CLASS_NAMES, IMAGE_SHAPE
from fmnist.errors import PipelineError, report_errors
from fmnist.params import load_params, params_to_dict

MODEL_FILE = "model.keras"
CLASS_NAMES_FILE = "class_names.json"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
LINEAGE_FILE = "lineage.json"


def input_contract() -> dict:
    """What the packaged model expects: documented in the package, checked by `predict`."""
    return {
        "shape": [None, *IMAGE_SHAPE],
        "dtype": "float32",
        "scaling": "pixel / 255, so 0.0 is black and 1.0 is white; uint8 source pixels",
    }


def build_package(
    out: Path, model_path: Path, params: dict, metrics: dict, manifest: dict, train_record: dict
) -> None:
    """Write the package directory at `out` in one atomic step, once it is proven to load."""
    if not model_path.is_file():
        raise PipelineError(f"{model_path}: no model there; run `dvc repro train`")
    with atomic.atomic_path(out) as tmp:
        tmp.mkdir()
        shutil.copyfile(model_path, tmp / MODEL_FILE)
        atomic.write_json(tmp / CLASS_NAMES_FILE, list(CLASS_NAMES))
        atomic.write_json(tmp / PARAMS_FILE, params)
        atomic.write_json(tmp / METRICS_FILE, metrics)
        atomic.write_json(
            tmp / LINEAGE_FILE,
            {
                "data": manifest,
                "code": lineage.git_commit(),
                "training": train_record,
                "input": input_contract(),
                "packaged_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            },
        )
        load_package(tmp)


def load_package(path: str | Path) -> tuple[keras.Model, dict]:
    """Load a package: the Keras model (safe mode) and its metadata files."""
    path = Path(path)
    if not (path / MODEL_FILE).is_file():
        raise PipelineError(f"{path}: not a model package (no {MODEL_FILE})")
    meta = {
        name: lineage.read_json(path / name, "package")
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
    parser.add_argument("--train-record", type=Path, default=Path("metrics/train.json"))
    parser.add_argument("--out", type=Path, default=Path("models/package"))
    args = parser.parse_args(argv)
    params = params_to_dict(load_params(args.params))
    build_package(
        args.out,
        args.model,
        params,
        lineage.read_json(args.metrics, "evaluate"),
        lineage.read_json(args.manifest, "prepare"),
        lineage.read_json(args.train_record, "train"),
    )
    print(f"package: {args.out} written (and loaded back before it was moved into place)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

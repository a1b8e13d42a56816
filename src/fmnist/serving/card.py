"""The model card: intended use, data, architecture, metrics, limits, versions (Markdown).

The words are the template `model_card.md.j2` beside this module; this module gathers what it
shows from the package's params, metrics and lineage record.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import jinja2

from fmnist.dataset import CLASS_NAMES, version_summary
from fmnist.params import ModelParams
from fmnist.serving.layout import CONFUSION_MATRIX_FILE, MODEL_FILE
from fmnist.serving.signatures import (
    AVERAGED_SIGNATURE,
    BYTES_INPUT_NAME,
    BYTES_SIGNATURE,
    INPUT_NAME,
    SIGNATURE,
)
from fmnist.tables import markdown_table

TEMPLATE = "model_card.md.j2"


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,  # a misspelt name fails instead of printing nothing
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )
    env.filters["fmt"] = format
    env.globals["table"] = markdown_table
    env.filters["rates"] = _rates
    text = importlib.resources.files("fmnist.serving").joinpath(TEMPLATE).read_text("utf-8")
    return env.from_string(text)


def lock_text(training: dict) -> str:
    """Which lock the training environment was installed from, as a phrase."""
    if not training.get("lock_sha256"):
        return "the environment was not installed from a lock"
    drift = training.get("lock_drift") or []
    changed = f", except {', '.join(drift)}" if drift else ""
    return (
        f"the environment installed from `{training['lock_file']}` "
        f"(SHA-256 {training['lock_sha256'][:12]}…){changed}"
    )


def dataset_version(record: dict | None) -> str:
    """The model card's sentence on a dataset version of its own ("" for the canonical one)."""
    if record is None or record.get("canonical"):
        return ""
    return (
        f" **This model was trained on a dataset version of its own** ({version_summary(record)})."
    )


def _rates(rates: dict) -> str:
    """`{"blank": 0.98}` as `blank 98.0%`, for the out-of-distribution section."""
    return ", ".join(f"{name.replace('_', ' ')} {rate:.1%}" for name, rate in rates.items())


def model_card(
    params: dict, metrics: dict, lineage_record: dict, ood_report: dict | None = None
) -> str:
    """The model card (Markdown): intended use, data, architecture, metrics, limits, versions."""
    model = params["model"]
    # Params of an older package may lack the test-time augmentation keys: none then.
    flip, shift = bool(model.get("tta_flip")), model.get("tta_shift") or 0
    splits = [s for s in ("train", "val", "test") if s in metrics]
    per_class = metrics["per_class"]
    context: dict[str, Any] = {
        "model": model,
        "train": params["train"],
        "prepare": params["prepare"],
        "training": lineage_record["training"],
        "test": metrics["test"],
        "tta_flip": flip,
        "tta_shift": shift,
        "tta_views": ModelParams(tta_flip=flip, tta_shift=shift).tta_views,
        "raw_files": [
            [f"`{name}`", f"`{digest}`"]
            for name, digest in sorted(lineage_record["data"].get("raw", {}).items())
        ],
        "split_rows": [
            [s, f"{metrics[s]['accuracy']:.4f}", f"{metrics[s]['loss']:.4f}"] for s in splits
        ],
        "class_rows": [
            [r["class"], *(f"{r[k]:.4f}" for k in ("precision", "recall", "f1")), r["support"]]
            for r in per_class
        ],
        "weakest": sorted(per_class, key=lambda r: r["f1"])[:3],
        "class_names": CLASS_NAMES,
        "signature": SIGNATURE,
        "averaged_signature": AVERAGED_SIGNATURE,
        "bytes_signature": BYTES_SIGNATURE,
        "input_name": INPUT_NAME,
        "bytes_input_name": BYTES_INPUT_NAME,
        "ood": ood_report,
        "model_file": MODEL_FILE,
        "confusion_matrix_file": CONFUSION_MATRIX_FILE,
        "nan": float("nan"),
        "lock_text": lock_text(lineage_record["training"]),
        "dataset_version": dataset_version(lineage_record["data"].get("dataset")),
    }
    return _template().render(context)

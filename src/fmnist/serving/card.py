"""The model card: intended use, data, architecture, metrics, limits, versions (Markdown)."""

from fmnist.dataset import CLASS_NAMES
from fmnist.params import ModelParams
from fmnist.serving.layout import CONFUSION_MATRIX_FILE, MODEL_FILE
from fmnist.serving.signatures import (
    AVERAGED_SIGNATURE,
    BYTES_INPUT_NAME,
    BYTES_SIGNATURE,
    INPUT_NAME,
    SIGNATURE,
)


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


def _ood_lines(report: dict | None) -> list[str]:
    """The model card's section on the out-of-distribution flag, from `calibration`'s report."""
    if not report:
        return []
    held = report["held_out"]

    def listed(rates: dict) -> str:
        return ", ".join(f"{name.replace('_', ' ')} {rate:.1%}" for name, rate in rates.items())

    return [
        "## Out-of-distribution flag",
        "",
        f"Every signature returns `ood_score` and `out_of_distribution` (score above "
        f"{report['threshold']:.3f}): the Mahalanobis distance of the image's features to the "
        "nearest class of the training data (`fmnist.serving.ood`). The threshold was chosen "
        "on the validation split, product photos made from it and synthetic "
        "out-of-distribution sets, never the test set. On held-out sets it flags "
        f"(false alarms) {listed(held['false_alarm'])}, and detects "
        f"{listed(held['detection'])}.",
        "",
    ]


def model_card(
    params: dict, metrics: dict, lineage_record: dict, ood_report: dict | None = None
) -> str:
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
            "by 255 itself. Outputs `probabilities` (float32, (batch, 10)), `class_ids` (int32), "
            "`class_names` (string), `ood_score` (float32) and `out_of_distribution` (bool). "
            f"`{AVERAGED_SIGNATURE}`: the same, averaged over the test-time views. "
            f"`{BYTES_SIGNATURE}`: input `{BYTES_INPUT_NAME}`, encoded PNG/JPEG/GIF/BMP/WebP "
            "images (string, (batch,)), converted as Fashion-MNIST's images were in TensorFlow "
            "ops; it adds `error` (string, empty when the image could be used).",
            f"- `{MODEL_FILE}` (Keras): float32 (batch, 28, 28, 1) scaled to [0, 1] by "
            "`fmnist.training.inputs.preprocess`; returns probabilities.",
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
            f"- Architecture `{model['arch']}` (see `src/fmnist/model/architectures.py`), "
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
            *_ood_lines(ood_report),
            "## Limitations",
            "",
            "- The weakest classes on the test set: "
            + ", ".join(f"{r['class']} (F1 {r['f1']:.2f})" for r in worst)
            + ". Shirt, T-shirt/top, Pullover and Coat look alike at 28×28.",
            "- There is no 'none of these' class: any input is forced into one of the ten, and "
            "the probabilities are not calibrated.",
            "- Images unlike Fashion-MNIST (not centred, light background, photos) are out of "
            f"distribution: send photos to `{BYTES_SIGNATURE}`, which converts them, and check "
            "`out_of_distribution`.",
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

"""Stage `evaluate`: score the trained model on the test set and draw what it learned.

Writes `metrics/eval.json` (loss, accuracy and number of examples on every split, the training
split a fixed sample of `evaluate.train_sample` images; precision, recall and F1, macro and
weighted, on the test set), `metrics/per_class.csv` (the per-class report),
`metrics/predictions.csv` (true and predicted class of each test image, for DVC's confusion
plot) and the figures: confusion matrix, training curves, misclassified examples, first-layer
filters and feature maps.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from fmnist import atomic, figures, provenance
from fmnist.dataset import CLASS_NAMES, NUM_CLASSES, SPLIT_NAMES, Split, load_split
from fmnist.errors import ParamsError, PipelineError, report_errors
from fmnist.model import saving, tta
from fmnist.params import EvaluateParams, load_params
from fmnist.training import history, inputs

# Probabilities are clipped before the log so that a confident mistake costs a finite loss.
_EPSILON = 1e-7
# Seeds the choice of `evaluate.train_sample` training images: the same ones on every run.
_SAMPLE_SEED = 0


def predict(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities (N, 10) for uint8 images (N, 28, 28)."""
    ds = inputs.dataset(images, np.zeros(len(images), np.uint8), batch_size).map(lambda x, _: x)
    return np.asarray(model.predict(ds, verbose=0), dtype=np.float64)


def sample(split: Split, size: int) -> Split:
    """`size` examples of `split` picked at random without replacement, always the same ones
    (in their original order); the whole split if `size` is 0 or not smaller."""
    images, labels = split
    if not size or size >= len(labels):
        return split
    picked = np.sort(np.random.default_rng(_SAMPLE_SEED).choice(len(labels), size, replace=False))
    return images[picked], labels[picked]


def loss_and_accuracy(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Mean sparse categorical cross-entropy and accuracy."""
    picked = np.clip(probs[np.arange(len(labels)), labels], _EPSILON, 1.0)
    return {
        "loss": float(-np.log(picked).mean()),
        "accuracy": float((probs.argmax(axis=1) == labels).mean()),
    }


def classification_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1, macro- and weighted-averaged over the classes."""
    out = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            labels, predicted, labels=range(NUM_CLASSES), average=average, zero_division=0
        )
        out |= {
            f"precision_{average}": float(p),
            f"recall_{average}": float(r),
            f"f1_{average}": float(f),
        }
    return out


def per_class_report(labels: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    """Precision, recall, F1 and support per class."""
    p, r, f, support = precision_recall_fscore_support(
        labels, predicted, labels=range(NUM_CLASSES), zero_division=0
    )
    return pd.DataFrame(
        {"class": CLASS_NAMES, "precision": p, "recall": r, "f1": f, "support": support}
    ).round(4)


def activation_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The convolution and pooling layers up to the last convolution (the notebook's maps)."""
    kinds = (keras.layers.Conv2D, keras.layers.MaxPooling2D)
    picked = [layer for layer in model.layers if isinstance(layer, kinds)]
    convs = [i for i, layer in enumerate(picked) if isinstance(layer, keras.layers.Conv2D)]
    last_conv = max(convs, default=-1)
    return picked[: last_conv + 1]


def filter_and_feature_figures(
    model: keras.Model, image: np.ndarray, label: int
) -> tuple[bytes, bytes]:
    """PNGs of the first convolution's kernels and of the feature maps of `image`."""
    model = tta.network(model)
    picked = activation_layers(model)
    if not picked:
        note = figures.message(f"The {model.name} model has no convolution layers.")
        return note, note
    first = picked[0]
    kernels = np.asarray(first.get_weights()[0])
    probe = keras.Model(inputs=model.inputs, outputs=[layer.output for layer in picked])
    outputs = probe(inputs.preprocess(image[None]), training=False)
    maps = [(layer.name, np.asarray(out[0], np.float32)) for layer, out in zip(picked, outputs)]
    title = f"Feature maps progression: {CLASS_NAMES[label]}"
    return figures.filters(kernels, first.name), figures.feature_maps(image, maps, title)


@dataclass(frozen=True)
class Evaluation:
    """What the stage writes: the metrics, the per-class report, each test image's true and
    predicted class, and the figures (file name -> PNG bytes)."""

    scores: dict[str, dict]
    per_class: pd.DataFrame
    predictions: pd.DataFrame
    figures: dict[str, bytes]


def evaluate(
    model: keras.Model, splits: dict[str, Split], training_log: pd.DataFrame, p: EvaluateParams
) -> Evaluation:
    """Score `model` on every split (the training split a fixed sample of
    `p.train_sample`), and draw the confusion matrix, training curves (`training_log`, the
    DVCLive history), misclassified test images, first-layer filters and feature maps."""
    splits = {**splits, "train": sample(splits["train"], p.train_sample)}
    test_images, test_labels = splits["test"]
    if p.feature_map_image >= len(test_labels):
        raise ParamsError(
            f"evaluate.feature_map_image {p.feature_map_image} is past the test set's "
            f"{len(test_labels)} images"
        )
    scores, probs = {}, {}
    for name, (images, labels) in splits.items():
        probs[name] = predict(model, images, p.batch_size)
        scores[name] = loss_and_accuracy(labels, probs[name]) | {"examples": len(labels)}
    predicted = probs["test"].argmax(axis=1)  # (N,)
    scores["test"] |= classification_metrics(test_labels, predicted)

    names = np.array(CLASS_NAMES)
    cm = confusion_matrix(test_labels, predicted, labels=range(NUM_CLASSES))
    confidence = probs["test"].max(axis=1)
    filters_png, maps_png = filter_and_feature_figures(
        model, test_images[p.feature_map_image], int(test_labels[p.feature_map_image])
    )
    return Evaluation(
        scores=scores,
        per_class=per_class_report(test_labels, predicted),
        predictions=pd.DataFrame({"actual": names[test_labels], "predicted": names[predicted]}),
        figures={
            "confusion_matrix.png": figures.confusion_matrix(cm),
            "training_curves.png": figures.training_curves(training_log),
            "misclassified.png": figures.misclassified(
                test_images, test_labels, predicted, confidence, p.misclassified
            ),
            "filters.png": filters_png,
            "feature_maps.png": maps_png,
        },
    )


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--live-dir", type=Path, default=Path("metrics/train"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    parser.add_argument("--per-class", type=Path, default=Path("metrics/per_class.csv"))
    parser.add_argument("--predictions", type=Path, default=Path("metrics/predictions.csv"))
    parser.add_argument("--figures", type=Path, default=Path("metrics/figures"))
    parser.add_argument("--provenance", type=Path, default=Path("metrics/provenance/evaluate.json"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    p = params.evaluate
    if not args.live_dir.is_dir():
        # A typo would otherwise pass as "no training log" on the curves' panels.
        raise PipelineError(
            f"--live-dir {args.live_dir}: no such directory: name train's DVCLive log "
            "(metrics/train in the pipeline), or an empty directory for a model trained elsewhere"
        )
    model = saving.load_model(args.model)
    splits = {name: load_split(args.data / f"{name}.npz") for name in SPLIT_NAMES}
    result = evaluate(model, splits, history.read_history(args.live_dir), p)

    for name, png in result.figures.items():
        atomic.write_bytes(args.figures / name, png)
    atomic.write_text(args.per_class, result.per_class.to_csv(index=False))
    atomic.write_text(args.predictions, result.predictions.to_csv(index=False))
    atomic.write_json(args.metrics, result.scores)
    provenance.write(args.provenance, "evaluate", params)
    t = result.scores["test"]
    print(
        f"evaluate: test accuracy {t['accuracy']:.4f}, loss {t['loss']:.4f}, F1 {t['f1_macro']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

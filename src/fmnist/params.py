"""Typed, validated pipeline parameters: the one place that reads `params.yaml`.

Every key of `params.yaml` maps to a field below with its documented default. Loading checks
the whole file before any work starts: an unknown key (a typo such as `train.learnign_rate`), a
missing key, a value of the wrong type or out of range is a `ParamsError` that names the key and
says what is allowed. DVC would otherwise let a typo through silently and train with the old
value.

Run as a module (`python -m fmnist.params params.yaml`) it only validates: the `params` stage of
`dvc.yaml` does that on every change to the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from fmnist.errors import ParamsError

# The official download location; unreachable on offline machines, so it is tried last.
OFFICIAL_BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# Where the Debian/Ubuntu package `dataset-fashion-mnist` installs the four IDX files.
DEBIAN_DATASET_DIR = "/usr/share/datasets/fashion-mnist"

Architecture = Literal["gap_cnn", "bn_cnn", "dense", "bn_gap_cnn"]
Precision = Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"]
Schedule = Literal["plateau", "cosine"]
Distribute = Literal["auto", "none", "one_device", "mirrored", "multi_worker"]
FillMode = Literal["nearest", "constant", "reflect", "wrap"]
Monitor = Literal["val_loss", "val_accuracy"]
Padding = Literal["same", "valid"]


def _field(
    default: Any, *, lo: float | None = None, hi: float | None = None, open_lo: bool = False
):
    """A dataclass field with an allowed range [lo, hi] (or (lo, hi] when `open_lo`)."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "open_lo": open_lo})


@dataclass(frozen=True)
class FetchParams:
    """Where the `fetch` stage looks for the four Fashion-MNIST IDX files, in order."""

    # A directory with the IDX files (.gz or not) or the Kaggle CSV pair; "" skips it.
    # The environment variable FMNIST_DATA_DIR names another one, searched next.
    source_dir: str = ""
    # The Debian/Ubuntu package's directory; "" skips it.
    system_dir: str = DEBIAN_DATASET_DIR
    # Base URL of the official `*-ubyte.gz` downloads; "" skips the download.
    base_url: str = OFFICIAL_BASE_URL
    # Seconds before a download attempt is given up.
    timeout_s: float = _field(30.0, lo=0, open_lo=True)
    # Check the decompressed content against the canonical SHA-256 digests. Turn off only
    # for a dataset of your own in the same format (the tests' synthetic one, for example).
    verify_checksums: bool = True


@dataclass(frozen=True)
class PrepareParams:
    """The train/validation split and the data checks of the `prepare` stage."""

    # Fraction of the training set held out, stratified by class, for validation.
    val_fraction: float = _field(0.1, lo=0, hi=0.5, open_lo=True)
    # Seed of the split (the seed notebook's `random_state`).
    seed: int = _field(42, lo=0)
    # Largest allowed ratio of the most to the least frequent class in a split.
    max_class_imbalance: float = _field(1.5, lo=1)
    # Images per class in the sample grid.
    samples_per_class: int = _field(8, lo=1, hi=32)


@dataclass(frozen=True)
class ModelParams:
    """The architecture (see `fmnist.model.architectures`). Defaults: this project's recipe,
    under 100k parameters; the seeds' are the recipes `notebook` and `writeup` in recipes.yaml."""

    # gap_cnn: the seed notebook's CNN; bn_cnn: the write-up's CNN; dense: the baseline;
    # bn_gap_cnn: the notebook's design with BatchNorm and several convolutions per stage.
    arch: Architecture = "bn_gap_cnn"
    # Filters of the three convolution stages (all but dense; the notebook: 32, 64, 128).
    # Multiples of 16 train fastest with bfloat16 BatchNorm (models.FusedBatchNormalization).
    filters: tuple[int, ...] = (16, 48, 64)
    kernel_size: int = _field(3, lo=1, hi=7)
    # Convolution padding (the notebook: same, which keeps 28x28 until the first pooling; the
    # write-up names none, so its recipe takes Keras' default, valid).
    padding: Padding = "same"
    # Convolutions per stage (bn_gap_cnn).
    convs_per_stage: int = _field(2, lo=1, hi=4)
    # Dropout after each convolution block (bn_cnn).
    conv_dropout: float = _field(0.25, lo=0, hi=0.9)
    # Dropout before the classifier (all architectures; the seeds: 0.5). Off by default: the
    # default model under-fits (the README's ablation).
    dropout: float = _field(0.0, lo=0, hi=0.9)
    # Width of the hidden Dense layer (bn_cnn, dense).
    dense_units: int = _field(128, lo=1)
    # Test-time augmentation: the saved model averages its probabilities for each image and
    # its mirror image (same weights, twice the inference work; evaluate, package and predict
    # all use it). Training and its val_* metrics see the plain network.
    tta_flip: bool = True
    # Test-time augmentation: also average over each view moved this many pixels right, left,
    # down and up (5 times the inference work; 10 with tta_flip). 0: off (the seeds). Chosen
    # on the validation set: 1 px beat 2 px there (see the README).
    tta_shift: int = _field(1, lo=0, hi=3)

    @property
    def tta_views(self) -> int:
        """The views the saved model averages over (1: none): times the inference work."""
        return (2 if self.tta_flip else 1) * (5 if self.tta_shift else 1)

    def __post_init__(self) -> None:
        if len(self.filters) != 3 or any(f < 1 for f in self.filters):
            raise ParamsError(
                f"model.filters: expected three positive filter counts, got {list(self.filters)}"
            )


@dataclass(frozen=True)
class EarlyStoppingParams:
    """Keras EarlyStopping (notebook and write-up: val_loss, patience 10, restore best)."""

    monitor: Monitor = "val_loss"
    # Epochs without improvement before training stops; 0 turns early stopping off (the
    # seeds: 10; the cosine schedule runs all its epochs).
    patience: int = _field(0, lo=0)
    restore_best_weights: bool = True


@dataclass(frozen=True)
class ReduceLRParams:
    """Keras ReduceLROnPlateau (notebook: factor 0.5, patience 5, min 1e-7)."""

    monitor: Monitor = "val_loss"
    factor: float = _field(0.5, lo=0, hi=1, open_lo=True)
    # Epochs without improvement before the rate is cut; 0 turns the schedule off (the
    # notebook: 5; off under the cosine schedule).
    patience: int = _field(0, lo=0)
    min_lr: float = _field(1e-7, lo=0)


@dataclass(frozen=True)
class AugmentParams:
    """Random training-time transforms; all zero/false means no augmentation (the notebook).

    Defaults: light transforms that suit 28x28 garments (±2 px shifts, mirror images); the
    write-up's are the recipe `writeup`."""

    # Maximum rotation in degrees (write-up: 15).
    rotation_deg: float = _field(0.0, lo=0, hi=180)
    # Maximum shift as a fraction of width and height (write-up: 0.15).
    shift: float = _field(0.07, lo=0, hi=0.5)
    # Maximum shear factor, the tangent of the shear angle (the `writeup` recipe: 0.0026, the
    # 0.15° that Keras' ImageDataGenerator makes of the write-up's "shear range 15%").
    shear: float = _field(0.0, lo=0, hi=1)
    # Maximum zoom in or out as a fraction (write-up: 0.15).
    zoom: float = _field(0.0, lo=0, hi=0.9)
    horizontal_flip: bool = True
    # Upside-down images too (not in the write-up's table, but Keras' `RandomFlip()` flips both
    # ways unless told "horizontal"; the README measures it with the write-up's recipe).
    vertical_flip: bool = False
    # How pixels outside the image are filled (write-up: nearest).
    fill_mode: FillMode = "constant"
    # Probability of blanking one random rectangle per image (random erasing). Off by default:
    # the default model under-fits (the README's ablation).
    erase_prob: float = _field(0.0, lo=0, hi=1)
    # Largest side, in pixels, of the erased rectangle.
    erase_size: int = _field(10, lo=1, hi=28)

    @property
    def enabled(self) -> bool:
        """True when any transform is on."""
        geometric = self.rotation_deg or self.shift or self.shear or self.zoom
        flips = self.horizontal_flip or self.vertical_flip
        return bool(geometric or flips or self.erase_prob)


@dataclass(frozen=True)
class TrainParams:
    """Optimisation of the `train` stage. Defaults: this project's recipe, sized for a 2-core
    CPU in under 30 minutes; the seeds' are the recipes `notebook` and `writeup`."""

    epochs: int = _field(30, lo=1)
    # The batch of one replica; the global batch is this times the replicas
    # (fmnist.training.distribute).
    batch_size: int = _field(128, lo=1)
    # Adam's (peak) learning rate for one replica.
    learning_rate: float = _field(3e-3, lo=0, hi=1, open_lo=True)
    # plateau: constant, cut by `reduce_lr` (the seeds); cosine: linear warm-up for
    # `warmup_epochs`, then cosine decay to zero at the last epoch.
    schedule: Schedule = "cosine"
    # At most epochs - 1: a shorter run (`-S train.epochs=1`) warms up for all but its last.
    warmup_epochs: int = _field(1, lo=0)
    # Decoupled weight decay (AdamW) when > 0; the seeds use plain Adam.
    weight_decay: float = _field(0.005, lo=0, hi=1)
    # Cross-entropy against labels smoothed towards uniform: (1 - this) on the true class, the
    # rest spread over all classes. 0: plain cross-entropy (the seeds).
    label_smoothing: float = _field(0.0, lo=0, hi=0.5)
    # auto: several workers if TF_CONFIG names them, all GPUs if more than one, else none
    # (TensorFlow's default strategy: one device). See fmnist.training.distribute.
    distribute: Distribute = "auto"
    # Multiply the learning rate by the number of replicas (the linear scaling rule).
    scale_lr_with_replicas: bool = True
    # Seeds weight initialisation, shuffling, dropout and augmentation.
    seed: int = _field(42, lo=0)
    # auto: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with AMX or AVX-512 BF16, else float32.
    precision: Precision = "auto"
    # TensorFlow op determinism: same data, params and code give the same model.
    deterministic: bool = True
    early_stopping: EarlyStoppingParams = field(default_factory=EarlyStoppingParams)
    reduce_lr: ReduceLRParams = field(default_factory=ReduceLRParams)
    augment: AugmentParams = field(default_factory=AugmentParams)

    @property
    def warmup(self) -> int:
        """The warm-up epochs that run: `warmup_epochs`, leaving at least one epoch to decay."""
        return min(self.warmup_epochs, self.epochs - 1)

    def __post_init__(self) -> None:
        if self.schedule == "cosine" and self.reduce_lr.patience:
            raise ParamsError(
                "train.schedule is cosine, which sets the rate itself: set "
                "train.reduce_lr.patience to 0"
            )


@dataclass(frozen=True)
class EvaluateParams:
    """What the `evaluate` stage computes and draws."""

    batch_size: int = _field(1000, lo=1)
    # Misclassified test images shown in the grid.
    misclassified: int = _field(25, lo=1, hi=100)
    # Index of the test image whose feature maps are drawn (the notebook uses 0).
    feature_map_image: int = _field(0, lo=0)
    # Training images scored (a fixed random sample; 0: all): the train loss and accuracy are
    # a diagnostic of under- or over-fitting, and scoring all 54,000 through every
    # test-time view would cost minutes.
    train_sample: int = _field(10_000, lo=0)


@dataclass(frozen=True)
class PackageParams:
    """How the `package` stage measures inference speed on the packaging machine, and fits
    the out-of-distribution detector (`fmnist.serving.ood`)."""

    # Untimed calls first, so that tracing and memory allocation do not count.
    warmup_runs: int = _field(5, lo=0, hi=1000)
    # Timed single-image calls; their p50 and p95 are the recorded latency.
    latency_runs: int = _field(50, lo=1, hi=10000)
    # Batch size and timed calls of the throughput measurement (images per second).
    throughput_batch_size: int = _field(256, lo=1, hi=65536)
    throughput_runs: int = _field(5, lo=1, hi=1000)
    # Out-of-distribution threshold: flag at most this fraction of validation images (and of
    # product photos made from them); within that, the one that best separates them from the
    # synthetic out-of-distribution sets.
    ood_max_false_alarm: float = _field(0.01, lo=0, hi=0.5, open_lo=True)
    # Training images the detector's class statistics are fitted on (a fixed sample; 0: all).
    ood_fit_sample: int = _field(10_000, lo=0)
    # Images in each synthetic out-of-distribution set and photo set (tuning and held out).
    ood_set_size: int = _field(500, lo=1, hi=10_000)


@dataclass(frozen=True)
class Params:
    """Everything in `params.yaml`, grouped by stage."""

    fetch: FetchParams = field(default_factory=FetchParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    package: PackageParams = field(default_factory=PackageParams)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate `path`; raise `ParamsError` listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found; run from the repository root") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    try:
        return params_from_dict(data if data is not None else {})
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def params_from_dict(data: Any) -> Params:
    """Build `Params` from a nested mapping, checking every key, type and range."""
    errors: list[str] = []
    params = _build(Params, data, "", errors)
    if errors:
        raise ParamsError(_join(errors))
    return params


def params_to_dict(params: Any) -> dict[str, Any]:
    """The nested mapping of `params` (tuples as lists), as `params.yaml` spells it."""
    out = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if dataclasses.is_dataclass(value):
            value = params_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _join(errors: list[str]) -> str:
    if len(errors) == 1:
        return errors[0]
    return f"{len(errors)} problems:\n" + "\n".join(f"  - {e}" for e in errors)


def _build(cls: type, data: Any, prefix: str, errors: list[str]) -> Any:
    where = prefix or "the top level"
    if not isinstance(data, dict):
        errors.append(f"{where}: expected a mapping of keys, got {_describe(data)}")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    for key in data:
        if key not in fields:
            dotted = _dotted(prefix, str(key))
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{_dotted(prefix, close[0])}'?)" if close else ""
            errors.append(
                f"unknown key '{dotted}'{hint}; valid keys in {where}: {', '.join(fields)}"
            )
    kwargs = {}
    before = len(errors)
    for name, f in fields.items():
        dotted = _dotted(prefix, name)
        if name not in data:
            default = f.default if f.default_factory is dataclasses.MISSING else "a mapping"
            errors.append(f"missing key '{dotted}' (its default is {_yaml(default)})")
            continue
        kwargs[name] = _convert(hints[name], data[name], dotted, f.metadata, errors)
    if len(errors) > before:
        return None
    try:
        return cls(**kwargs)
    except ParamsError as exc:
        errors.append(str(exc))
        return None


def _convert(hint: Any, value: Any, key: str, meta: Any, errors: list[str]) -> Any:
    """Check `value` against the type `hint` and the range in `meta`; return the typed value."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, errors)
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            errors.append(
                f"'{key}': {_describe(value)} is not one of {', '.join(map(str, choices))}"
            )
        return value
    if origin is tuple:
        (item_hint, _) = get_args(hint)
        if not isinstance(value, list):
            errors.append(f"'{key}': expected a list, got {_describe(value)}")
            return None
        return tuple(_convert(item_hint, v, f"{key}[{i}]", {}, errors) for i, v in enumerate(value))
    converted = _scalar(hint, value)
    if converted is None:
        errors.append(f"'{key}': expected {_TYPE_NAMES[hint]}, got {_describe(value)}")
        return None
    problem = _range_problem(converted, meta)
    if problem:
        errors.append(f"'{key}': {converted!r} is out of range; {problem}")
    return converted


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
# PyYAML reads `1e-3` (no dot) as a string; accept such spellings of a number for float keys.
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _scalar(hint: type, value: Any) -> Any:
    if hint is bool:
        return value if isinstance(value, bool) else None
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if hint is float:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return float(value) if math.isfinite(value) else None
        if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
            number = float(value)  # "1e999" is inf
            return number if math.isfinite(number) else None
        return None
    if hint is str:
        return value if isinstance(value, str) else None
    raise TypeError(f"unsupported params type {hint!r}")


def _range_problem(value: Any, meta: Any) -> str:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None and hi is None:
        return ""
    below = lo is not None and (value <= lo if meta.get("open_lo") else value < lo)
    above = hi is not None and value > hi
    if not (below or above):
        return ""
    low = "" if lo is None else (f"> {lo}" if meta.get("open_lo") else f">= {lo}")
    high = "" if hi is None else f"<= {hi}"
    return "it must be " + " and ".join(p for p in (low, high) if p)


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _yaml(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def main(argv: list[str] | None = None) -> int:
    """Validate a params file; exit 1 with the list of problems if it is not valid."""
    parser = argparse.ArgumentParser(description="Validate params.yaml against fmnist's schema.")
    parser.add_argument("params", nargs="?", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        load_params(args.params)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.params}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())

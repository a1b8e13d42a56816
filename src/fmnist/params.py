"""Typed, validated pipeline parameters: the one place that reads `params.yaml`.

Every key of `params.yaml` maps to a field below, with its documented default (the docstring
under the field; `params.schema.json` carries them to editors). Loading checks the whole file
before any work starts: an unknown key (a typo such as `train.learnign_rate`), a missing key,
a value of the wrong type or out of range is a `ParamsError` that names the key and says what
is allowed, every problem at once. DVC would otherwise let a typo through silently and train
with the old value.

pydantic does the checking; this module keeps the messages in the project's words (dotted
keys, "did you mean", the default of a missing key). It also owns dotted keys (`flatten`,
`with_overrides`), as `dvc exp run -S train.epochs=5` spells them.

Its `main` only validates: the `params` stage of `dvc.yaml` runs it on every change to the file
(`python -m fmnist.stages params params.yaml`), as do `fmnist params` and `python -m
fmnist.params`. `--schema` prints the JSON Schema.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import functools
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
import pydantic
import pydantic.dataclasses
import yaml
from pydantic import BeforeValidator, Field, Strict, field_validator, model_validator
from pydantic_core import PydanticCustomError

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
Dataset = Literal["canonical", "custom"]
# `train.init_from`: "", [ARTIFACT@]vX.Y.Z, or [ARTIFACT#]STAGE (GTO's names).
INIT_FROM = re.compile(r"|([\w.-]+@)?v\d+\.\d+\.\d+|([\w.-]+#)?[A-Za-z][\w-]*")

# PyYAML reads `1e-3` (no dot) as a string; such a spelling of a number is still a number.
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _number(value: Any) -> Any:
    """An int or a number written as text, as a float; anything else is left to fail."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return value
    if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        return float(value)  # "1e999" is inf, refused as not finite
    return value


def _sequence(value: Any) -> Any:
    """Only a list (or a tuple, from Python) makes a tuple field: not a set, a string or a map."""
    if isinstance(value, (list, tuple)):
        return value
    raise PydanticCustomError("list_type", "expected a list")


# Strict: a bool is not a number, 1 is not true, 3 is not a string.
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
IntList = Annotated[tuple[Int, ...], BeforeValidator(_sequence)]


def Number(**bounds: float) -> Any:
    """The type of a finite float within `bounds` (`gt`, `ge`, `lt`, `le`); an int or a number as
    text is one too, a bool is not. (The text is read before the bounds are checked, and the
    bounds stay visible to the JSON Schema.)"""
    return Annotated[
        float, Strict(), Field(allow_inf_nan=False, **bounds), BeforeValidator(_number)
    ]


_CONFIG = pydantic.ConfigDict(extra="forbid", use_attribute_docstrings=True)


def _section(cls: type) -> type:
    """A frozen pydantic dataclass whose direct construction (`ModelParams(...)`,
    `dataclasses.replace`) raises `ParamsError`, as loading a file does."""
    cls = pydantic.dataclasses.dataclass(frozen=True, config=_CONFIG)(cls)
    validated_init = cls.__init__

    @functools.wraps(validated_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validated_init(self, *args, **kwargs)
        except pydantic.ValidationError as exc:
            raise ParamsError(_join([m for _, m in _problems(type(self), exc)])) from None

    cls.__init__ = __init__
    return cls


def _rule(message: str) -> PydanticCustomError:
    """A cross-field rule broken; `message` names the keys in full."""
    return PydanticCustomError("params_rule", message)


@_section
class FetchParams:
    """Which dataset version the `fetch` stage gets, and where it looks for it, in order."""

    dataset: Dataset = "canonical"
    """canonical: Fashion-MNIST itself, from the first source below that has it; its checksums
    must match. custom: a version of your own (corrected labels, added or removed images) from
    `source_dir` only; the run records how it differs from the canonical dataset."""
    source_dir: Str = ""
    """A directory with the IDX files (.gz or not) or the Kaggle CSV pair (.csv or .csv.gz); ""
    skips it. The environment variable FMNIST_DATA_DIR names another one, searched next (for the
    canonical dataset only: a custom one is named in params, so lineage shows it)."""
    system_dir: Str = DEBIAN_DATASET_DIR
    """The Debian/Ubuntu package's directory; "" skips it."""
    base_url: Str = OFFICIAL_BASE_URL
    """Base URL of the official `*-ubyte.gz` downloads; "" skips the download."""
    timeout_s: Number(gt=0) = 30.0
    """Seconds before a download attempt is given up."""

    @model_validator(mode="after")
    def _custom_names_its_directory(self) -> FetchParams:
        if self.dataset == "custom" and not self.source_dir:
            raise _rule(
                "fetch.dataset is custom: set fetch.source_dir to the directory that holds "
                "your dataset version (IDX files or the Kaggle CSV pair)"
            )
        return self


@_section
class PrepareParams:
    """The train/validation split and the data checks of the `prepare` stage."""

    val_fraction: Number(gt=0, le=0.5) = 0.1
    """Fraction of the training set held out, stratified by class, for validation."""
    seed: Annotated[Int, Field(ge=0)] = 42
    """Seed of the split (the seed notebook's `random_state`)."""
    max_class_imbalance: Number(ge=1) = 1.5
    """Largest allowed ratio of the most to the least frequent class in a split."""
    samples_per_class: Annotated[Int, Field(ge=1, le=32)] = 8
    """Images per class in the sample grid."""


@_section
class ModelParams:
    """The architecture (see `fmnist.model.architectures`). Defaults: this project's recipe,
    under 100k parameters; the seeds' are the recipes `notebook` and `writeup` in recipes.yaml."""

    arch: Architecture = "bn_gap_cnn"
    """gap_cnn: the seed notebook's CNN; bn_cnn: the write-up's CNN; dense: the baseline;
    bn_gap_cnn: the notebook's design with BatchNorm and several convolutions per stage."""
    filters: IntList = (16, 48, 64)
    """Filters of the three convolution stages (all but dense; the notebook: 32, 64, 128).
    Multiples of 16 suit the oneDNN kernels (docs/measurements.md)."""
    kernel_size: Annotated[Int, Field(ge=1, le=7)] = 3
    padding: Padding = "same"
    """Convolution padding (the notebook: same, which keeps 28x28 until the first pooling; the
    write-up names none, so its recipe takes Keras' default, valid)."""
    convs_per_stage: Annotated[Int, Field(ge=1, le=4)] = 2
    """Convolutions per stage (bn_gap_cnn)."""
    conv_dropout: Number(ge=0, le=0.9) = 0.25
    """Dropout after each convolution block (bn_cnn)."""
    dropout: Number(ge=0, le=0.9) = 0.0
    """Dropout before the classifier (all architectures; the seeds: 0.5). Off by default: the
    default model under-fits (docs/measurements.md, "Regularisation, measured")."""
    dense_units: Annotated[Int, Field(ge=1)] = 128
    """Width of the hidden Dense layer (bn_cnn, dense)."""
    tta_flip: Bool = True
    """Test-time augmentation: the saved model averages its probabilities for each image and
    its mirror image (same weights, twice the inference work; evaluate, package and predict
    all use it). Training and its val_* metrics see the plain network."""
    tta_shift: Annotated[Int, Field(ge=0, le=3)] = 1
    """Test-time augmentation: also average over each view moved this many pixels right, left,
    down and up (5 times the inference work; 10 with tta_flip). 0: off (the seeds). Chosen on
    the validation set (docs/measurements.md, "Test-time shifts, measured")."""

    @field_validator("filters")
    @classmethod
    def _three_stages(cls, filters: tuple[int, ...]) -> tuple[int, ...]:
        if len(filters) != 3 or any(f < 1 for f in filters):
            raise _rule(f"expected three positive filter counts, got {list(filters)}")
        return filters

    @property
    def tta_views(self) -> int:
        """The views the saved model averages over (1: none): times the inference work."""
        return (2 if self.tta_flip else 1) * (5 if self.tta_shift else 1)


@_section
class EarlyStoppingParams:
    """Keras EarlyStopping (notebook and write-up: val_loss, patience 10, restore best)."""

    monitor: Monitor = "val_loss"
    patience: Annotated[Int, Field(ge=0)] = 0
    """Epochs without improvement before training stops; 0 turns early stopping off (the
    seeds: 10; the cosine schedule runs all its epochs)."""
    restore_best_weights: Bool = True


@_section
class ReduceLRParams:
    """Keras ReduceLROnPlateau (notebook: factor 0.5, patience 5, min 1e-7)."""

    monitor: Monitor = "val_loss"
    factor: Number(gt=0, le=1) = 0.5
    patience: Annotated[Int, Field(ge=0)] = 0
    """Epochs without improvement before the rate is cut; 0 turns the schedule off (the
    notebook: 5; off under the cosine schedule)."""
    min_lr: Number(ge=0) = 1e-7


@_section
class AugmentParams:
    """Random training-time transforms; all zero/false means no augmentation (the notebook).

    Defaults: light transforms that suit 28x28 garments (±0.4 px shifts, mirror images); the
    write-up's are the recipe `writeup`."""

    rotation_deg: Number(ge=0, le=180) = 0.0
    """Maximum rotation in degrees (write-up: 15)."""
    shift: Number(ge=0, le=0.5) = 0.014
    """Maximum shift as a fraction of width and height (write-up: 0.15)."""
    shear: Number(ge=0, le=1) = 0.0
    """Maximum shear factor, the tangent of the shear angle (the `writeup` recipe: 0.0026, the
    0.15° that Keras' ImageDataGenerator makes of the write-up's "shear range 15%")."""
    zoom: Number(ge=0, le=0.9) = 0.0
    """Maximum zoom in or out as a fraction (write-up: 0.15)."""
    horizontal_flip: Bool = True
    alternate_flips: Bool = False
    """With `horizontal_flip`: a random half of the images starts mirrored and each image
    changes side every epoch (airbench's alternating flip), instead of a coin toss per image
    and epoch. See docs/performance.md#time-to-accuracy."""
    vertical_flip: Bool = False
    """Upside-down images too (not in the write-up's table, but Keras' `RandomFlip()` flips
    both ways unless told "horizontal")."""
    fill_mode: FillMode = "constant"
    """How pixels outside the image are filled (write-up: nearest)."""
    erase_prob: Number(ge=0, le=1) = 0.0
    """Probability of blanking one random rectangle per image (random erasing). Off by
    default: the default model under-fits (docs/measurements.md, "Regularisation, measured")."""
    erase_size: Annotated[Int, Field(ge=1, le=28)] = 10
    """Largest side, in pixels, of the erased rectangle."""

    @model_validator(mode="after")
    def _alternating_needs_a_flip(self) -> AugmentParams:
        # Alone, the switch would do nothing and say nothing: a run that looks like a test of
        # alternating flips but trains without flips.
        if self.alternate_flips and not self.horizontal_flip:
            raise _rule(
                "train.augment.alternate_flips alternates the mirror image: set "
                "train.augment.horizontal_flip to true, or alternate_flips to false"
            )
        return self

    @property
    def enabled(self) -> bool:
        """True when any transform is on."""
        geometric = self.rotation_deg or self.shift or self.shear or self.zoom
        flips = self.horizontal_flip or self.vertical_flip
        return bool(geometric or flips or self.erase_prob)


@_section
class TrainParams:
    """Optimisation of the `train` stage. Defaults: this project's recipe, sized for a 2-core
    CPU in 8 minutes in float32; the seeds' are the recipes `notebook` and `writeup`."""

    epochs: Annotated[Int, Field(ge=1)] = 18
    batch_size: Annotated[Int, Field(ge=1)] = 128
    """The batch of one replica; the global batch is this times the replicas
    (fmnist.training.distribute)."""
    learning_rate: Number(gt=0, le=1) = 0.0105
    """Adam's (peak) learning rate for one replica."""
    schedule: Schedule = "cosine"
    """plateau: constant, cut by `reduce_lr` (the seeds); cosine: linear warm-up for
    `warmup_epochs`, then cosine decay to zero at the last epoch."""
    warmup_epochs: Annotated[Int, Field(ge=0)] = 1
    """At most epochs - 1: a shorter run (`-S train.epochs=1`) warms up for all but its last."""
    weight_decay: Number(ge=0, le=1) = 0.036
    """Decoupled weight decay (AdamW) when > 0; the seeds use plain Adam."""
    decay_norms_and_biases: Bool = True
    """false: weight decay spares BatchNorm's scales and offsets and every bias, and shrinks
    only the kernels."""
    label_smoothing: Number(ge=0, le=0.5) = 0.039
    """Cross-entropy against labels smoothed towards uniform: (1 - this) on the true class, the
    rest spread over all classes. 0: plain cross-entropy (the seeds)."""
    distribute: Distribute = "auto"
    """auto: several workers if TF_CONFIG names them, all GPUs if more than one, else none
    (TensorFlow's default strategy: one device). See fmnist.training.distribute."""
    scale_lr_with_replicas: Bool = True
    """Multiply the learning rate by the number of replicas (the linear scaling rule)."""
    seed: Annotated[Int, Field(ge=0)] = 42
    """Seeds weight initialisation, shuffling, dropout and augmentation."""
    precision: Precision = "auto"
    """auto: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with AMX or AVX-512 BF16, else
    float32."""
    deterministic: Bool = True
    """TensorFlow op determinism: same data, params and code give the same model."""
    init_from: Str = ""
    """Warm start: the registered model whose weights start training, a version
    (`fashion-mnist-cnn@v1.2.0` or `v1.2.0`) or a stage (`prod`); "" trains from scratch. The
    `parent` stage fetches its package through DVC; the architecture must be the same."""
    early_stopping: EarlyStoppingParams = Field(default_factory=EarlyStoppingParams)
    reduce_lr: ReduceLRParams = Field(default_factory=ReduceLRParams)
    augment: AugmentParams = Field(default_factory=AugmentParams)

    @field_validator("init_from")
    @classmethod
    def _a_registry_name(cls, init_from: str) -> str:
        if not INIT_FROM.fullmatch(init_from):
            raise _rule(
                f"{init_from!r} is neither a registered version (fashion-mnist-cnn@v1.2.0, "
                'v1.2.0) nor a stage (prod); "" trains from scratch'
            )
        return init_from

    @model_validator(mode="after")
    def _one_schedule(self) -> TrainParams:
        if self.schedule == "cosine" and self.reduce_lr.patience:
            raise _rule(
                "train.schedule is cosine, which sets the rate itself: set "
                "train.reduce_lr.patience to 0"
            )
        return self

    @property
    def warmup(self) -> int:
        """The warm-up epochs that run: `warmup_epochs`, leaving at least one epoch to decay."""
        return min(self.warmup_epochs, self.epochs - 1)


@_section
class EvaluateParams:
    """What the `evaluate` stage computes and draws."""

    batch_size: Annotated[Int, Field(ge=1)] = 1000
    misclassified: Annotated[Int, Field(ge=1, le=100)] = 25
    """Misclassified test images shown in the grid."""
    feature_map_image: Annotated[Int, Field(ge=0)] = 0
    """Index of the test image whose feature maps are drawn (the notebook uses 0)."""
    train_sample: Annotated[Int, Field(ge=0)] = 10_000
    """Training images scored (a fixed random sample; 0: all): the train loss and accuracy are
    a diagnostic of under- or over-fitting, and scoring all 54,000 through every test-time
    view would cost minutes."""


@_section
class PackageParams:
    """How the `package` stage measures inference speed on the packaging machine, and fits
    the out-of-distribution detector (`fmnist.serving.ood`)."""

    warmup_runs: Annotated[Int, Field(ge=0, le=1000)] = 5
    """Untimed calls first, so that tracing and memory allocation do not count."""
    latency_runs: Annotated[Int, Field(ge=1, le=10000)] = 50
    """Timed single-image calls; their p50 and p95 are the recorded latency."""
    throughput_batch_size: Annotated[Int, Field(ge=1, le=65536)] = 256
    """Batch size of the throughput measurement (images per second)."""
    throughput_runs: Annotated[Int, Field(ge=1, le=1000)] = 5
    """Timed calls of the throughput measurement."""
    ood_max_false_alarm: Number(gt=0, le=0.5) = 0.01
    """Out-of-distribution threshold: flag at most this fraction of validation images (and of
    product photos made from them); within that, the one that best separates them from the
    synthetic out-of-distribution sets."""
    ood_fit_sample: Annotated[Int, Field(ge=0)] = 10_000
    """Training images the detector's class statistics are fitted on (a fixed sample; 0: all)."""
    ood_set_size: Annotated[Int, Field(ge=1, le=10_000)] = 500
    """Images in each synthetic out-of-distribution set and photo set (tuning and held out)."""


@_section
class Params:
    """Everything in `params.yaml`, grouped by stage."""

    fetch: FetchParams = Field(default_factory=FetchParams)
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    package: PackageParams = Field(default_factory=PackageParams)


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
        raise ParamsError(f"{path}: not valid YAML{_yaml_problem(exc)}") from None
    try:
        return params_from_dict(data if data is not None else {})
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def params_from_dict(data: Any) -> Params:
    """Build `Params` from a nested mapping, checking every key, type and range."""
    problems = _missing(Params, data, "")
    try:
        params = _adapter(Params).validate_python(data)
    except pydantic.ValidationError as exc:
        problems += _problems(Params, exc)
    if problems:
        # In the order of params.yaml's sections (pydantic reports missing keys apart).
        order = list(_fields(Params)) + [""]
        problems.sort(key=lambda p: order.index(p[0] if p[0] in order else ""))
        raise ParamsError(_join([message for _, message in problems]))
    return params


def params_to_dict(params: Any) -> dict[str, Any]:
    """The nested mapping of `params` (tuples as lists), as `params.yaml` spells it."""
    return _adapter(type(params)).dump_python(params, mode="json")


@functools.cache
def _adapter(cls: type) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(cls)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of `params.yaml`: every key, its type, range, default and meaning.

    Every key is required, as `load_params` requires it (the default is what a missing key
    would be reported with)."""
    schema = _adapter(Params).json_schema()
    for node in [schema, *schema.get("$defs", {}).values()]:
        if "properties" in node:
            node["required"] = list(node["properties"])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "params.yaml of the fmnist pipeline",
        **{k: v for k, v in schema.items() if k != "title"},
    }


# --- dotted keys ------------------------------------------------------------------------------


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted key: leaf value} (`{"train": {"epochs": 5}}` ->
    `{"train.epochs": 5}`); a value that is not a mapping is the leaf `prefix`."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def with_overrides(base: Mapping, overrides: Mapping[str, Any]) -> dict:
    """A copy of `base` (a params mapping) with each dotted key of `overrides` set, as
    `dvc exp run -S` sets it; a key `base` does not have is a `ParamsError`."""
    out = copy.deepcopy(dict(base))
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node: Any = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise ParamsError(f"'{dotted}' is not a key of params.yaml")
        node[leaf] = value
    return out


# --- messages ---------------------------------------------------------------------------------

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_MAPPING_ERRORS = {"dataclass_type", "dataclass_exact_type", "dict_type"}
_UNKNOWN_KEY_ERRORS = {"unexpected_keyword_argument", "invalid_key"}


def _join(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


def _fields(cls: type) -> dict[str, pydantic.fields.FieldInfo]:
    return cls.__pydantic_fields__


def _is_section(annotation: Any) -> bool:
    return dataclasses.is_dataclass(annotation) and hasattr(annotation, "__pydantic_fields__")


# A problem: the top-level section it is in ("" for none) and its message.
Problem = tuple[str, str]


def _missing(cls: type, data: Any, prefix: str) -> list[Problem]:
    """Keys of `cls` that `data` lacks, with their defaults (pydantic would fill them in
    silently; a params file must spell every key)."""
    if not isinstance(data, Mapping):
        return []  # pydantic reports that it is not a mapping
    problems = []
    for name, info in _fields(cls).items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name not in data:
            default = "a mapping" if _is_section(info.annotation) else _yaml(info.default)
            message = f"missing key '{dotted}' (its default is {default})"
            problems.append((dotted.split(".")[0], message))
        elif _is_section(info.annotation):
            problems += _missing(info.annotation, data[name], dotted)
    return problems


def _problems(cls: type, exc: pydantic.ValidationError) -> list[Problem]:
    return [
        (str(error["loc"][0]) if error["loc"] else "", _problem(cls, error))
        for error in exc.errors()
    ]


def _dotted(loc: tuple) -> str:
    """('model', 'filters', 1) -> 'model.filters[1]'."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _problem(cls: type, error: Any) -> str:
    """One pydantic error in the project's words, naming the key in dotted form."""
    loc, kind, value = error["loc"], error["type"], error["input"]
    if kind in _UNKNOWN_KEY_ERRORS:  # the last part of `loc` is the key itself
        parent = _dotted(loc[:-1])
        valid = list(_fields(_annotation(cls, loc[:-1]) if loc[:-1] else cls))
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f" (did you mean '{parent + '.' if parent else ''}{close[0]}'?)" if close else ""
        key = f"{parent}.{loc[-1]}" if parent else str(loc[-1])
        where = parent or "the top level"
        return f"unknown key '{key}'{hint}; valid keys in {where}: {', '.join(valid)}"
    key = _dotted(loc)
    if kind == "params_rule":
        rule = error["msg"]
        return rule if not loc or _is_section(_annotation(cls, loc)) else f"{key}: {rule}"
    if kind in _MAPPING_ERRORS:
        return f"{key or 'the top level'}: expected a mapping of keys, got {_describe(value)}"
    annotation = _annotation(cls, loc)
    if kind == "literal_error":
        choices = ", ".join(map(str, get_args(annotation)))
        return f"'{key}': {_describe(value)} is not one of {choices}"
    if kind in _RANGE_ERRORS:
        info = _field_info(cls, loc)
        number = float(value) if annotation is float else value
        return f"'{key}': {number!r} is out of range; it must be {_bounds(info)}"
    if get_origin(annotation) is tuple:
        return f"'{key}': expected a list, got {_describe(value)}"
    if annotation in _TYPE_NAMES:
        return f"'{key}': expected {_TYPE_NAMES[annotation]}, got {_describe(value)}"
    return f"'{key}': {error['msg']}"  # a check the messages above do not word


def _field_info(cls: type, loc: tuple) -> pydantic.fields.FieldInfo:
    """The field at the key path `loc` (names and list indices) below `cls`."""
    names = [part for part in loc if isinstance(part, str)]
    for name in names[:-1]:
        cls = _fields(cls)[name].annotation
    return _fields(cls)[names[-1]]


def _annotation(cls: type, loc: tuple) -> Any:
    """The type at `loc`: a section class, a scalar type, a Literal, or a list's item type."""
    annotation = _field_info(cls, loc).annotation
    if isinstance(loc[-1], int):  # an item of a list field
        annotation = get_args(annotation)[0]
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _bounds(info: pydantic.fields.FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Ge):
            parts.append(f">= {item.ge}")
        elif isinstance(item, annotated_types.Lt):
            parts.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.Le):
            parts.append(f"<= {item.le}")
    return " and ".join(parts)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, on one line: `at line 4, column 1: expected ',' or ']', but got
    '<stream end>' (while parsing a flow sequence at line 3)`."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f": {exc}".replace("\n", " ")
    what = f"{exc.problem}"
    if exc.context:
        start = exc.context_mark
        what += f" ({exc.context}" + (f" at line {start.line + 1})" if start else ")")
    return f" at line {mark.line + 1}, column {mark.column + 1}: {what}"


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _yaml(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def main(argv: list[str] | None = None) -> int:
    """Validate a params file; exit 1 with the list of problems if it is not valid. With
    `--schema`, print the JSON Schema of params.yaml instead."""
    parser = argparse.ArgumentParser(
        prog="fmnist params", description="Validate params.yaml against fmnist's schema."
    )
    parser.add_argument(
        "params", nargs="?", default="params.yaml", help="the file to check (default: %(default)s)"
    )
    parser.add_argument(
        "--schema",
        action="store_true",
        help="print the JSON Schema of params.yaml instead (how params.schema.json is made: "
        "`fmnist params --schema > params.schema.json`)",
    )
    args = parser.parse_args(argv)
    if args.schema:
        print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
        return 0
    try:
        load_params(args.params)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.params}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())

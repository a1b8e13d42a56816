"""Hostile input gets a clear error, never a crash: property tests of every reader of user files.

Each reader is fed what a broken download, a wrong file or a malicious sender could give it.
Whatever the bytes, it either returns data that passes the pipeline's own checks or raises the
pipeline's error type (`DataError`, `ParamsError`, `PipelineError`), whose message the stage
prints as one `error:` line. Any other exception is a bug that hypothesis shrinks to a minimal
example. A file's header must never make a reader allocate what the header declares.
"""

from __future__ import annotations

import copy
import errno
import gzip
import json
import pathlib
import re
import tracemalloc
import zipfile

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import helpers
from fmnist import atomic, dataset
from fmnist.dataset import CSV_COLUMNS, NUM_CLASSES, PIXELS
from fmnist.errors import DataError, ParamsError, PipelineError
from fmnist.model import architectures, saving
from fmnist.params import ModelParams, Params, flatten, params_from_dict, params_to_dict
from fmnist.training import resume

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# For readers that cost milliseconds per call (pandas, Keras).
FEWER = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))

# --- IDX -------------------------------------------------------------------------------------


def check_parsed(array: np.ndarray, ndim: int) -> None:
    assert array.dtype == np.uint8 and array.ndim == ndim


def idx_header(dims: list[int], magic: bytes = b"\0\0\x08") -> bytes:
    return magic + bytes([len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


@FAST
@given(data=st.binary(max_size=600), ndim=st.sampled_from([1, 3]))
def test_any_bytes_parse_as_idx_or_raise_data_error(data, ndim):
    try:
        check_parsed(dataset.parse_idx(data, "f", ndim=ndim), ndim)
    except DataError as exc:
        assert str(exc).startswith("f: ")


@FAST
@given(
    dims=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=5),
    body=st.binary(max_size=300),
    ndim=st.sampled_from([1, 3]),
)
def test_declared_sizes_never_allocate_what_they_declare(dims, body, ndim):
    """Headers declaring up to 2^32 items per dimension (10^48 bytes) cost nothing to refuse."""
    data = idx_header(dims) + body
    tracemalloc.start()
    try:
        check_parsed(dataset.parse_idx(data, "f", ndim=ndim), ndim)
    except DataError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 1_000_000


@FAST
@given(
    cut=st.integers(0, 16 + 3 * 784 - 1),
    magic=st.binary(min_size=3, max_size=3),
)
def test_truncated_or_mislabelled_idx_is_refused(cut, magic):
    blob = dataset.encode_idx(np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DataError):
        dataset.parse_idx(blob[:cut], "f", ndim=3)
    if magic != blob[:3]:
        with pytest.raises(DataError, match="bad IDX magic number"):
            dataset.parse_idx(magic + blob[3:], "f", ndim=3)


@FAST
@given(labels=st.lists(st.integers(0, 255), min_size=1, max_size=20))
def test_labels_out_of_range_are_refused_by_the_split_check(labels):
    labels = np.array(labels, np.uint8)
    images = np.zeros((len(labels), 28, 28), np.uint8)
    if (labels < NUM_CLASSES).all():
        dataset.parse_idx_split(dataset.encode_idx(images), dataset.encode_idx(labels), "test")
    else:
        with pytest.raises(DataError, match="out of range 0..9"):
            dataset.parse_idx_split(dataset.encode_idx(images), dataset.encode_idx(labels), "test")


def test_a_split_whose_files_disagree_is_refused():
    images, labels = np.zeros((3, 28, 28), np.uint8), np.zeros(4, np.uint8)
    with pytest.raises(DataError, match="3 images but labels have shape"):
        dataset.parse_idx_split(dataset.encode_idx(images), dataset.encode_idx(labels), "train")


# --- gzip ------------------------------------------------------------------------------------


@FAST
@given(data=st.binary(max_size=300))
def test_any_gzip_lookalike_decompresses_or_raises_data_error(data):
    data = b"\x1f\x8b" + data
    try:
        assert isinstance(dataset.decompress(data, "f.gz"), bytes)
    except DataError as exc:
        assert str(exc).startswith("f.gz: ")


@FAST
@given(cut=st.integers(2, 200), flip=st.integers(10, 200))
def test_truncated_or_corrupted_gzip_is_refused(cut, flip):
    blob = gzip.compress(np.random.default_rng(0).bytes(2000), mtime=0)
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        dataset.decompress(blob[:cut], "f.gz")
    damaged = bytearray(blob)
    damaged[flip] ^= 0xFF
    with pytest.raises(DataError):  # the CRC catches what inflate does not
        dataset.decompress(bytes(damaged), "f.gz")


def test_a_gzip_bomb_stops_at_the_limit_without_inflating_it(monkeypatch):
    monkeypatch.setattr(dataset, "MAX_FILE_BYTES", 4 << 20)
    bomb = gzip.compress(b"\0" * (64 << 20), mtime=0)  # 64 MB in 64 kB
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="decompresses to more than"):
            dataset.decompress(bomb, "bomb.gz")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 32 << 20


# --- CSV -------------------------------------------------------------------------------------

HEADER = ",".join(CSV_COLUMNS)
HOSTILE_CELLS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "NaN", "inf", "-1", "256", "3.0", "3.5", "1e3", "abc", '"', "0x1"]),
    st.text(max_size=5),
)


def valid_row(label: int = 0) -> list[str]:
    return [str(label), *["0"] * PIXELS]


def check_csv(data: bytes) -> None:
    try:
        images, labels = dataset.parse_csv(data, "f.csv")
    except DataError as exc:
        assert str(exc).startswith("f.csv: ")
        return
    dataset.check_split(images, labels, "f.csv")


@FEWER
@given(
    rows=st.integers(1, 3),
    edits=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, PIXELS), HOSTILE_CELLS), min_size=1, max_size=4
    ),
)
def test_csv_with_hostile_cells_parses_or_raises_data_error(rows, edits):
    table = [valid_row(i % NUM_CLASSES) for i in range(rows)]
    for row, col, cell in edits:
        table[row % rows][col] = cell
    text = HEADER + "\n" + "\n".join(",".join(r) for r in table) + "\n"
    check_csv(text.encode("utf-8", "surrogatepass"))


@FEWER
@given(data=st.binary(max_size=400))
def test_any_bytes_parse_as_csv_or_raise_data_error(data):
    check_csv(data)
    check_csv(HEADER.encode() + b"\n" + data)


@FEWER
@given(cut=st.integers(0, 2 * (len(HEADER) + 2 * PIXELS + 4)))
def test_truncated_csv_parses_or_raises_data_error(cut):
    text = HEADER + "\n" + "\n".join(",".join(valid_row(c)) for c in (1, 2)) + "\n"
    check_csv(text.encode()[:cut])


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("nan", "row 1, column 'pixel5': an empty or NaN cell is not an integer"),
        ("", "row 1, column 'pixel5': an empty or NaN cell is not an integer"),
        ("abc", "row 1, column 'pixel5': 'abc' is not an integer"),
        ("2.5", "row 1, column 'pixel5': 2.5 is not an integer"),
        ("3.0", "row 1, column 'pixel5': 3.0 is not an integer"),
        ("256", "row 1, column 'pixel5': pixel 256 is outside 0..255"),
    ],
)
def test_csv_errors_name_the_row_and_column(cell, message):
    row = valid_row(3)
    row[5] = cell
    with pytest.raises(DataError, match=message):
        dataset.parse_csv((HEADER + "\n" + ",".join(row) + "\n").encode(), "f.csv")


def test_empty_csv_and_header_only_csv_are_refused():
    with pytest.raises(DataError, match="not a readable CSV"):
        dataset.parse_csv(b"", "f.csv")
    with pytest.raises(DataError, match="has a header but no rows"):
        dataset.parse_csv(HEADER.encode() + b"\n", "f.csv")


# --- prepared splits (.npz) ------------------------------------------------------------------


def test_a_pickled_npy_in_a_prepared_split_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "train.npz"
    np.savez(path, images=np.array([object()], dtype=object), labels=np.zeros(1, np.uint8))
    with pytest.raises(DataError, match="not a prepared split"):
        dataset.load_split(path)


@FEWER
@given(data=st.binary(max_size=300))
def test_any_bytes_load_as_a_split_or_raise_data_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("npz") / "train.npz"
    path.write_bytes(data)
    with pytest.raises(DataError):
        dataset.load_split(path)


# --- params ----------------------------------------------------------------------------------

DEFAULTS = params_to_dict(Params())


LEAVES = [tuple(dotted.split(".")) for dotted in flatten(DEFAULTS)]
HOSTILE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.sampled_from([0, -1, 0.0, -0.5, 1.5, 1e308, -1e-9]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["1e999", "-1e-3", "nan", "inf", "1e-3", "abc"]),
    st.lists(st.integers(-5, 300), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None)
@example(edits=[(("fetch", "timeout_s"), "1e999")], drop=None)  # a string that reads as inf
@given(
    edits=st.lists(st.tuples(st.sampled_from(LEAVES), HOSTILE_VALUES), min_size=1, max_size=3),
    drop=st.sampled_from([None, *LEAVES]),
)
def test_hostile_params_load_or_raise_params_error_naming_the_key(edits, drop):
    data = copy.deepcopy(DEFAULTS)
    for path, value in edits:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    if drop is not None:
        node = data
        for key in drop[:-1]:
            node = node[key]
        del node[drop[-1]]
    try:
        params = params_from_dict(data)
    except ParamsError as exc:
        keys = [".".join(path) for path, _ in edits] + ([".".join(drop)] if drop else [])
        assert any(key in str(exc) for key in keys), str(exc)
        return
    # Whatever loads is usable: every number finite, every size at least 1.
    loaded = params_to_dict(params)
    for path in LEAVES:
        value = loaded
        for key in path:
            value = value[key]
        if isinstance(value, float):
            assert np.isfinite(value), path
    assert params.train.epochs >= 1 and params.train.batch_size >= 1
    assert 0 < params.train.learning_rate <= 1 and 0 <= params.model.dropout < 1


@given(
    key=st.sampled_from(["train.epochs", "train.batch_size", "evaluate.batch_size"]),
    value=st.integers(-(2**40), 0),
)
def test_zero_or_negative_sizes_are_refused(key, value):
    section, name = key.split(".")
    data = copy.deepcopy(DEFAULTS)
    data[section][name] = value
    with pytest.raises(ParamsError, match=rf"'{key}': {value} is out of range; it must be >= 1"):
        params_from_dict(data)


@pytest.mark.parametrize("text", ["", "[1, 2]", "train: {epochs: [", "\x00", "7"])
def test_a_params_file_that_is_not_a_mapping_is_refused(tmp_path, text):
    from fmnist.params import load_params

    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError):
        load_params(path)


# --- model files -----------------------------------------------------------------------------


def test_a_model_file_with_a_lambda_layer_is_refused_and_its_code_never_runs(tmp_path):
    marker = str(tmp_path / "code-ran")
    # What an attacker would put in the lambda runs on any machine that loads the file unsafely:
    # Keras stores a lambda's bytecode in the file.
    payload = keras.layers.Lambda(lambda x, m=marker: (pathlib.Path(m).touch(), x)[1])
    model = keras.Sequential([keras.Input((28, 28, 1)), payload])
    model.save(tmp_path / "sent.keras")
    pathlib.Path(marker).unlink(missing_ok=True)  # building the model ran it once
    with pytest.raises(PipelineError, match="sent.keras: not a loadable Keras model.*safe_mode"):
        saving.load_model(tmp_path / "sent.keras")
    assert not pathlib.Path(marker).exists()


def test_a_model_file_naming_an_unknown_function_is_refused(tmp_path):
    def named(x):
        return x

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(named)])
    model.save(tmp_path / "sent.keras")
    with pytest.raises(PipelineError, match="sent.keras: not a loadable Keras model"):
        saving.load_model(tmp_path / "sent.keras")


@FEWER
@given(data=st.binary(max_size=300))
def test_any_bytes_load_as_a_model_or_raise_pipeline_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("model") / "m.keras"
    path.write_bytes(data)
    with pytest.raises(PipelineError):
        saving.load_model(path)


def test_a_zip_that_is_not_a_keras_model_is_refused(tmp_path):
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "os.system"}))
    with pytest.raises(PipelineError, match="not a loadable Keras model"):
        saving.load_model(path)


def test_saved_model_config_does_not_hold_process_ids(tmp_path):
    """Keras writes `id()` of shared objects into config.json; they would change the bytes."""
    p = ModelParams()  # mirror-averaged: one network called twice, a shared object
    model = saving.for_inference(architectures.build(p), p)
    saving.save_model(model, tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        text = archive.read("config.json").decode()
    ids = [int(i) for i in re.findall(r'"shared_object_id": (\d+)', text)]
    assert ids and max(ids) < 10
    assert saving.load_model(tmp_path / "m.keras").count_params() == model.count_params()


# --- outputs that cannot be written ----------------------------------------------------------


def test_an_output_under_a_regular_file_gives_a_clear_error(tmp_path):
    """A path that cannot be a directory: refused even for root (where chmod does not stop it)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    with pytest.raises(PipelineError, match="cannot create directory .*not-a-dir"):
        atomic.write_json(blocker / "metrics" / "eval.json", {"accuracy": 1.0})
    assert blocker.read_text() == "a file"


def test_a_full_disk_keeps_the_old_output_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "eval.json"
    target.write_text("old")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    with pytest.raises(PipelineError, match="cannot write .*eval.json: No space left on device"):
        atomic.write_json(target, {"accuracy": 1.0})
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_a_stage_given_an_unwritable_output_fails_with_one_error_line(tmp_path, idx_source, capsys):
    from fmnist.stages import fetch

    params = tmp_path / "params.yaml"
    params.write_text((helpers.ROOT / "params.yaml").read_text())
    helpers.set_params(
        params,
        {
            "fetch.dataset": "custom",
            "fetch.source_dir": str(idx_source),
            "fetch.system_dir": "",
            "fetch.base_url": "",
        },
    )
    (tmp_path / "data").write_text("a file where the data directory should be")
    out = ["--out", str(tmp_path / "data" / "raw"), "--provenance", str(tmp_path / "prov.json")]
    assert fetch.main(["--params", str(params), *out]) == 1
    assert capsys.readouterr().err.startswith("error: cannot create directory")


# --- training backups ------------------------------------------------------------------------


def test_a_damaged_training_backup_is_reported_not_used(tmp_path):
    (tmp_path / resume.STATE_FILE).write_text("{}")
    (tmp_path / resume.VARIABLES_FILE).write_bytes(b"not an npz")
    with pytest.raises(PipelineError, match="unreadable training backup"):
        resume.load(tmp_path)
    assert resume.load(tmp_path / "absent") is None

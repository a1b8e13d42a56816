"""Integrity on load: a package's SHA-256 manifest, checked by every reader; damaged model files
give one error line. Hypothesis feeds the readers what a broken copy or a tamperer could give."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmnist import atomic
from fmnist.errors import PipelineError
from fmnist.model import saving
from fmnist.serving import layout
from fmnist.serving.layout import MANIFEST, IntegrityError
from fmnist.tools import registry

FAST = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
FEWER = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

FILES = {
    "saved_model.pb": b"graph" * 40,
    "variables/variables.index": b"index",
    "variables/variables.data-00000-of-00001": bytes(range(256)),
    "model.keras": b"PK\x03\x04 a model",
    "metadata/params.json": b'{"train": {"epochs": 2}}\n',
}


def make_package(root: Path) -> Path:
    """A package-shaped directory of small files, with its manifest."""
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    layout.write_manifest(root)
    return root


@pytest.fixture
def package(tmp_path) -> Path:
    return make_package(tmp_path / "package")


def test_the_manifest_lists_every_file_in_sha256sum_format(package):
    manifest = layout.verify_package(package)
    assert sorted(manifest) == sorted(FILES)
    lines = (package / MANIFEST).read_text().splitlines()
    assert lines == sorted(lines, key=lambda line: line[66:])
    digest, name = lines[0].split("  ")
    assert atomic.file_sha256(package / name) == digest


def test_dir_md5_is_the_hash_dvc_records_for_a_directory(tmp_path):
    """Checked against DVC's own tree hashing (dvc_data), which writes dvc.lock's `.dir` hash."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    package = make_package(tmp_path / "package")
    fs = LocalFileSystem()
    _, _, tree = build(HashFileDB(fs, str(tmp_path / "odb")), str(package), fs, "md5")
    assert atomic.dir_md5(package) == tree.hash_info.value


@FAST
@given(name=st.sampled_from(sorted(FILES)), offset=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_any_changed_byte_is_refused_naming_the_file(tmp_path_factory, name, offset, flip):
    package = make_package(tmp_path_factory.mktemp("p"))
    data = bytearray((package / name).read_bytes())
    data[offset % len(data)] ^= flip
    (package / name).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"{name}: SHA-256 .* differs from the manifest"):
        layout.verify_package(package)


@FAST
@given(
    name=st.text(
        st.characters(codec="utf-8", exclude_characters="/\\\0"), min_size=1, max_size=20
    ).filter(lambda n: n not in (".", "..")),
    data=st.binary(max_size=50),
)
def test_a_foreign_file_is_refused_naming_it(tmp_path_factory, name, data):
    package = make_package(tmp_path_factory.mktemp("p"))
    try:
        (package / "variables" / name).write_bytes(data)
    except OSError:
        return  # a name this filesystem cannot hold
    with pytest.raises(IntegrityError, match="not part of the package"):
        layout.verify_package(package)


def test_a_missing_file_and_a_missing_manifest_are_refused(package):
    (package / "model.keras").unlink()
    with pytest.raises(IntegrityError, match=r"model.keras: missing \(listed in"):
        layout.verify_package(package)
    (package / MANIFEST).unlink()
    with pytest.raises(IntegrityError, match="SHA256SUMS: missing"):
        layout.verify_package(package)
    with pytest.raises(IntegrityError, match="not a model package"):
        layout.verify_package(package / "absent")


@FAST
@given(text=st.binary(max_size=400))
def test_any_manifest_bytes_verify_or_raise_integrity_error(tmp_path_factory, text):
    package = make_package(tmp_path_factory.mktemp("p"))
    (package / MANIFEST).write_bytes(text)
    with pytest.raises(IntegrityError, match="SHA256SUMS"):
        layout.verify_package(package)


@pytest.mark.parametrize(
    "name", ["../outside", "/etc/passwd", "a/../../b", "metadata/SHA256SUMS", "a\\b", "./x"]
)
def test_a_manifest_naming_a_path_outside_the_package_is_refused(package, name):
    with open(package / MANIFEST, "a") as stream:
        stream.write(f"{'0' * 64}  {name}\n")
    with pytest.raises(IntegrityError, match="not a path inside the package"):
        layout.verify_package(package)


def test_a_rewritten_manifest_is_caught_by_the_version_dvc_hash(package):
    expected = atomic.dir_md5(package)
    layout.verify_package(package, expected)
    (package / "model.keras").write_bytes(b"another model")
    layout.write_manifest(package)  # a tamperer who also rewrites the manifest
    layout.verify_package(package)  # consistent with itself...
    with pytest.raises(IntegrityError, match="is not the .* that the version's dvc.lock records"):
        layout.verify_package(package, expected)  # ...but not the version that was registered


def test_the_verify_package_command_is_one_line_either_way(package, capsys):
    assert registry.verify_main([str(package)]) == 0
    assert capsys.readouterr().out.strip() == f"{package}: {len(FILES)} files match {MANIFEST}"
    (package / "saved_model.pb").write_bytes(b"changed")
    assert registry.verify_main([str(package)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "saved_model.pb" in err


# --- a model file damaged inside a valid zip ---------------------------------------------------


def small_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.keras"
    saving.save_model(small_model(), path)
    return path


def rezip(path: Path, out: Path, edit) -> None:
    """Copy a .keras archive with `edit(bytes) -> bytes` applied to its HDF5 weights: every
    CRC valid, and the modification time kept, as a careful tamperer would."""
    stat = path.stat()
    buffer = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, edit(data) if info.filename.endswith(".h5") else data)
    out.write_bytes(buffer.getvalue())
    os.utime(out, (stat.st_atime, stat.st_mtime))


def zero_first_kernel(h5: bytes) -> bytes:
    """The weights file with its first convolution kernel set to zeros."""
    buffer = io.BytesIO(h5)
    with h5py.File(buffer, "r+") as weights:
        kernels = []
        weights.visititems(
            lambda name, obj: (
                kernels.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim == 4 else None
            )
        )
        weights[kernels[0]][...] = 0
    return buffer.getvalue()


def test_a_crc_valid_rezip_with_a_zeroed_kernel_loads_but_the_manifest_refuses_it(
    model_file, tmp_path
):
    package = tmp_path / "package"
    package.mkdir()
    (package / "model.keras").write_bytes(model_file.read_bytes())
    layout.write_manifest(package)
    rezip(model_file, package / "model.keras", zero_first_kernel)
    with zipfile.ZipFile(package / "model.keras") as archive:
        assert archive.testzip() is None  # every CRC is valid
    tampered = saving.load_model(package / "model.keras")  # Keras loads it without a word
    assert not np.asarray(tampered.get_layer("conv").kernel).any()
    with pytest.raises(IntegrityError, match=r"model.keras: SHA-256 .* differs"):
        layout.load_package(package)


@FEWER
@given(offset=st.integers(0, 2047), value=st.integers(0, 255))
def test_a_damaged_hdf5_inside_a_keras_archive_is_one_error(
    model_file, tmp_path_factory, offset, value
):
    """Mostly the HDF5 header and its first structures, where h5py raises RuntimeError."""

    def damage(h5: bytes) -> bytes:
        data = bytearray(h5)
        data[offset % len(data)] = value
        return bytes(data)

    out = tmp_path_factory.mktemp("bad") / "m.keras"
    rezip(model_file, out, damage)
    try:
        saving.load_model(out)
    except PipelineError as exc:
        message = str(exc)
        assert message.startswith(f"{out}: not a loadable Keras model (") and "\n" not in message


@pytest.mark.parametrize("offset", [0, 8])  # the HDF5 signature, the superblock version
def test_a_damaged_hdf5_header_is_refused_in_one_line(model_file, tmp_path, offset):
    out = tmp_path / "m.keras"
    rezip(model_file, out, lambda h5: h5[:offset] + bytes([h5[offset] ^ 0xFF]) + h5[offset + 1 :])
    with pytest.raises(PipelineError, match=r"m.keras: not a loadable Keras model \(") as caught:
        saving.load_model(out)
    assert "\n" not in str(caught.value)


def test_the_package_metadata_readers_name_a_broken_file(package):
    for name in ("class_names.json", "metrics.json"):
        (package / "metadata" / name).write_text("{}")
    (package / "metadata" / "lineage.json").write_text("{not json")
    with pytest.raises(PipelineError, match=r"lineage.json: not valid JSON"):
        layout.load_metadata(package)

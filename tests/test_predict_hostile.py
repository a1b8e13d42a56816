"""`fmnist predict` given hostile files: one `error:` line and exit 1, never a crash or a change.

Written against the command's contract (`fmnist predict FILE`, run in a reproduced repo so the
default package `models/package` is there), not its internals. If its arguments change,
adjust `predict_argv` only.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fmnist import cli
from helpers import png_header

pytestmark = pytest.mark.slow

FEW = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
# Each example of --preprocess loads the SavedModel: fewer of them.
FEWER = settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))


def predict_argv(path) -> list[str]:
    return ["predict", str(path)]


@pytest.fixture(scope="module")
def repo(reproduced_repo, tmp_path_factory):
    copy = tmp_path_factory.mktemp("predict") / "repo"
    shutil.copytree(reproduced_repo, copy, symlinks=True)
    return copy


def snapshot(repo) -> dict[str, str]:
    """Hashes of everything predict must leave alone."""
    files = [p for d in ("data", "metrics", "models") for p in (repo / d).rglob("*") if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def refused(repo, monkeypatch, capsys, name: str, data: bytes) -> str:
    """Run predict on a file holding `data`; check it failed cleanly; return its error."""
    path = repo.parent / name
    path.write_bytes(data)
    before = snapshot(repo)
    monkeypatch.chdir(repo)
    code = cli.main(predict_argv(path))
    err = capsys.readouterr().err
    assert code == 1, f"predict accepted {name}"
    assert err.startswith("error: ") and "Traceback" not in err
    assert snapshot(repo) == before
    return err


def png(array: np.ndarray) -> bytes:
    """`array` as PNG bytes, in the mode Pillow gives its dtype and shape (uint16: I;16)."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


GOOD_PNG = png(np.zeros((28, 28), np.uint8))


@FEW
@given(data=st.binary(max_size=200))
def test_random_bytes_as_png_jpeg_npy_idx_csv(repo, monkeypatch, capsys, data):
    for name in ("x.png", "x.jpg", "x.npy", "x-ubyte", "x.csv"):
        refused(repo, monkeypatch, capsys, name, data)


@FEW
@given(cut=st.integers(0, len(GOOD_PNG) - 1))
def test_truncated_png(repo, monkeypatch, capsys, cut):
    refused(repo, monkeypatch, capsys, "cut.png", GOOD_PNG[:cut])


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("rgb.png", np.zeros((28, 28, 3), np.uint8)),
        ("rgba.png", np.zeros((28, 28, 4), np.uint8)),
        ("big.png", np.zeros((32, 32), np.uint8)),
        ("tiny.png", np.zeros((1, 1), np.uint8)),
        ("wide16.png", np.zeros((28, 28), np.uint16)),
    ],
)
def test_wrong_size_or_mode_images(repo, monkeypatch, capsys, name, array):
    refused(repo, monkeypatch, capsys, name, png(array))


def test_a_png_declaring_a_huge_image_is_refused_without_decoding_it(repo, monkeypatch, capsys):
    data = png_header(100_000, 100_000)  # 10^10 grey pixels
    refused(repo, monkeypatch, capsys, "bomb.png", data)


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("pickled.npy", np.array([{"a": 1}], dtype=object)),
        ("floats3d.npy", np.zeros((2, 28, 28, 3), np.float32)),
        ("shape.npy", np.zeros((2, 30, 30), np.uint8)),
        ("empty.npy", np.zeros((0, 28, 28), np.uint8)),
        ("negative.npy", -np.ones((1, 28, 28), np.int16)),
        ("nan.npy", np.full((1, 28, 28), np.nan, np.float32)),
    ],
)
def test_hostile_npy(repo, monkeypatch, capsys, name, array):
    out = io.BytesIO()
    np.save(out, array, allow_pickle=True)
    err = refused(repo, monkeypatch, capsys, name, out.getvalue())
    if name == "pickled.npy":
        assert "pickle" in err.lower()


# --- with --preprocess: photos of any kind, each bad one its own line ----------------------

PHOTO = png(np.pad(np.full((20, 10), 40, np.uint8), 30, constant_values=250))  # dark on light


def answered_beside_a_good_photo(repo, monkeypatch, capsys, name: str, data: bytes) -> str:
    """Run `predict --preprocess` on a good photo and a file holding `data`: the good one is
    answered, the bad one is one `error:` line; return that line."""
    good, bad = repo.parent / "good.png", repo.parent / name
    good.write_bytes(PHOTO)
    bad.write_bytes(data)
    before = snapshot(repo)
    monkeypatch.chdir(repo)
    code = cli.main(["predict", "--preprocess", "--json", str(good), str(bad)])
    captured = capsys.readouterr()
    results = {r["input"]: r for r in json.loads(captured.out)["results"]}
    assert "top" in results[str(good)]
    errors = captured.err.splitlines()
    assert snapshot(repo) == before and "Traceback" not in captured.err
    if "error" in results[str(bad)]:
        assert code == 1 and errors == [f"error: {bad}: {results[str(bad)]['error']}"]
        return errors[0]
    assert code == 0 and not errors  # bytes that happen to be a usable image
    return ""


@FEWER
@given(data=st.binary(max_size=200))
def test_random_bytes_as_photos(repo, monkeypatch, capsys, data):
    answered_beside_a_good_photo(repo, monkeypatch, capsys, "x.jpg", data)


@FEWER
@given(cut=st.integers(0, len(PHOTO) - 1))
def test_truncated_photos(repo, monkeypatch, capsys, cut):
    line = answered_beside_a_good_photo(repo, monkeypatch, capsys, "cut.png", PHOTO[:cut])
    assert line


@pytest.mark.parametrize(
    ("name", "image", "message"),
    [
        ("tiny.png", Image.new("RGB", (1, 1)), "smaller than 8×8"),
        ("wide.png", Image.new("L", (200, 4)), "the image is 200×4 pixels"),
        ("empty.jpg", None, "empty: no image bytes"),
    ],
)
def test_images_too_small_or_empty(repo, monkeypatch, capsys, name, image, message):
    data = b""
    if image is not None:
        out = io.BytesIO()
        image.save(out, format="PNG")
        data = out.getvalue()
    assert message in answered_beside_a_good_photo(repo, monkeypatch, capsys, name, data)


def test_a_photo_declaring_a_huge_size_is_refused_without_decoding_it(repo, monkeypatch, capsys):
    data = png_header(10_000, 10_000, color_type=2)  # 10^8 RGB pixels
    line = answered_beside_a_good_photo(repo, monkeypatch, capsys, "bomb.png", data)
    assert "10000×10000 pixels, more than" in line


@pytest.mark.parametrize("mode", ["P", "I;16", "CMYK", "LA"])
def test_palette_16_bit_cmyk_and_alpha_photos_are_answered(repo, monkeypatch, capsys, mode):
    photo = Image.open(io.BytesIO(PHOTO))
    if mode == "I;16":
        photo = Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257)
    else:
        photo = photo.convert(mode)
    out = io.BytesIO()
    photo.save(out, format="JPEG" if mode == "CMYK" else "PNG")
    name = "cmyk.jpg" if mode == "CMYK" else f"{mode[0].lower()}.png"
    assert answered_beside_a_good_photo(repo, monkeypatch, capsys, name, out.getvalue()) == ""

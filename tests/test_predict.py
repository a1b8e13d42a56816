"""`fmnist predict`: the input readers, their refusals, and the command end to end."""

from __future__ import annotations

import gzip
import json
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import helpers
from fmnist.dataset import encode_csv, encode_idx, load_split
from fmnist.errors import ImageError
from fmnist.tools import predict


@pytest.fixture
def images(tiny_data):
    return tiny_data["test"][0][:5]  # (5, 28, 28) uint8


def save_png(path, array, mode="L"):
    Image.fromarray(array).convert(mode).save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_grayscale_image_is_read_as_its_pixels(tmp_path, images, suffix):
    path = save_png(tmp_path / f"a{suffix}", images[0])
    labels, got = predict.read_inputs(path)
    assert labels == [str(path)] and got.shape == (1, 28, 28) and got.dtype == np.uint8
    if suffix == ".png":  # lossless
        np.testing.assert_array_equal(got[0], images[0])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p, a: save_png(p, a, "RGB"), "a RGB image (3 channels); expected 8-bit grayscale"),
        (lambda p, a: save_png(p, a, "RGBA"), "a RGBA image (4 channels)"),
        (lambda p, a: save_png(p, np.zeros((32, 32), np.uint8)), "is 32×32 pixels; expected 28×28"),
        (lambda p, a: save_png(p, np.zeros((28, 27), np.uint8)), "is 27×28 pixels"),
        (
            lambda p, a: p.write_bytes(save_png(p, a).read_bytes()[:200]),
            "not a readable image, or truncated",
        ),
        (lambda p, a: p.write_bytes(b"not an image at all"), "not a readable image"),
    ],
)
def test_bad_images_are_refused_naming_the_file(tmp_path, images, make, message):
    path = tmp_path / "bad.png"
    make(path, images[0])
    with pytest.raises(ImageError) as err:
        predict.read_inputs(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_npy_in_every_documented_shape(tmp_path, images):
    for name, array, count in (
        ("one.npy", images[0], 1),
        ("one_c.npy", images[0][..., None], 1),
        ("batch.npy", images, 5),
        ("batch_c.npy", images[..., None], 5),
    ):
        np.save(tmp_path / name, array)
        labels, got = predict.read_inputs(tmp_path / name)
        assert len(labels) == count and got.shape == (count, 28, 28), name
    np.testing.assert_array_equal(got, images)
    assert labels[1] == f"{tmp_path / 'batch_c.npy'}[1]"


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (
            np.zeros((2, 28, 28), np.float32),
            "dtype float32; expected uint8 pixels 0..255, not scaled",
        ),
        (np.zeros((2, 28, 28, 3), np.uint8), "shape (2, 28, 28, 3)"),
        (np.zeros((32, 32), np.uint8), "shape (32, 32)"),
        (np.zeros((0, 28, 28), np.uint8), "holds no images"),
        (np.array([{"a": 1}], dtype=object), "not a readable .npy array"),  # a pickle
    ],
)
def test_bad_npy_is_refused(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(ImageError, match=r"bad\.npy: ") as err:
        predict.read_inputs(path)
    assert message in str(err.value)


def test_idx_plain_and_gzipped_and_truncated(tmp_path, images):
    blob = encode_idx(images)
    (tmp_path / "imgs-idx3-ubyte").write_bytes(blob)
    (tmp_path / "imgs-idx3-ubyte.gz").write_bytes(gzip.compress(blob))
    for name in ("imgs-idx3-ubyte", "imgs-idx3-ubyte.gz"):
        np.testing.assert_array_equal(predict.read_inputs(tmp_path / name)[1], images)
    (tmp_path / "cut-idx3-ubyte").write_bytes(blob[:-10])
    with pytest.raises(ImageError, match=r"cut-idx3-ubyte: truncated"):
        predict.read_inputs(tmp_path / "cut-idx3-ubyte")
    (tmp_path / "labels-idx1-ubyte").write_bytes(encode_idx(np.zeros(5, np.uint8)))
    with pytest.raises(ImageError, match="expected 3"):
        predict.read_inputs(tmp_path / "labels-idx1-ubyte")


def test_kaggle_csv_rows(tmp_path, images):
    path = tmp_path / "rows.csv"
    path.write_bytes(encode_csv(images, np.arange(5, dtype=np.uint8)))
    labels, got = predict.read_inputs(path)
    np.testing.assert_array_equal(got, images)
    assert labels[4] == f"{path}[4]"
    frame = pd.read_csv(path)
    frame.iloc[2, 7] = 300
    frame.to_csv(path, index=False)
    with pytest.raises(ImageError, match=r"rows\.csv: row 3, column 'pixel7': pixel 300"):
        predict.read_inputs(path)


def test_top_k_orders_by_probability_and_table_shows_names():
    probs = np.array([[0.1, 0.6, 0.3, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 0.2, 0.8]])
    tops = predict.top_k(probs, 2)
    assert [[t["class"] for t in top] for top in tops] == [
        ["Trouser", "Pullover"],
        ["Ankle boot", "Bag"],
    ]
    assert tops[0][0]["probability"] == pytest.approx(0.6)
    table = predict.format_table(["a.png", "b.png"], tops)
    assert table.splitlines()[1].split() == ["a.png", "Trouser", "0.600", "Pullover", "0.300"]


# --- the command on a package the pipeline made ---------------------------------------------


def fmnist(*args, cwd, check=True):
    return helpers.run([sys.executable, "-m", "fmnist.cli", *args], cwd=cwd, check=check)


@pytest.mark.slow
def test_pngs_of_test_images_get_the_classes_evaluation_gave(reproduced_repo, tmp_path):
    images, _ = load_split(reproduced_repo / "data/prepared/test.npz")
    paths = [str(save_png(tmp_path / f"test{i}.png", images[i])) for i in range(12)]
    out = fmnist("predict", "models/package", *paths, "--json", cwd=reproduced_repo).stdout
    got = [row["top"][0]["class"] for row in json.loads(out)]
    evaluated = pd.read_csv(reproduced_repo / "metrics/predictions.csv")["predicted"][:12]
    assert got == list(evaluated)
    table = fmnist("predict", paths[0], "-k", "2", cwd=reproduced_repo).stdout  # default package
    assert table.splitlines()[1].split()[:2] == [paths[0], got[0]]


@pytest.mark.slow
def test_a_bad_input_fails_with_one_line_naming_it(reproduced_repo, tmp_path, images):
    good = save_png(tmp_path / "good.png", images[0])
    rgb = save_png(tmp_path / "colour.png", images[0], "RGB")
    proc = fmnist("predict", str(good), str(rgb), cwd=reproduced_repo, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {rgb}: a RGB image (3 channels); expected 8-bit grayscale (mode L, one "
        "channel) like Fashion-MNIST. Convert it first, e.g. with Pillow's Image.convert('L')"
    ]
    assert "Traceback" not in proc.stderr

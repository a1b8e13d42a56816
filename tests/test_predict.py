"""`fmnist predict`: the input readers, their refusals, and the command end to end."""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

import helpers
from fmnist.dataset import encode_csv, encode_idx, load_split
from fmnist.errors import ImageError
from fmnist.serving import signatures, synthetic
from fmnist.tools import image_files, predict


@pytest.fixture
def images(tiny_data):
    return tiny_data["test"][0][:5]  # (5, 28, 28) uint8


def save_png(path, array, mode="L"):
    Image.fromarray(array).convert(mode).save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_grayscale_image_is_read_as_its_pixels(tmp_path, images, suffix):
    path = save_png(tmp_path / f"a{suffix}", images[0])
    labels, got = image_files.read_inputs(path)
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
        (lambda p, a: p.write_bytes(b"not an image at all"), "not a PNG or JPEG image"),
    ],
)
def test_bad_images_are_refused_naming_the_file(tmp_path, images, make, message):
    path = tmp_path / "bad.png"
    make(path, images[0])
    with pytest.raises(ImageError) as err:
        image_files.read_inputs(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_npy_in_every_documented_shape(tmp_path, images):
    for name, array, count in (
        ("one.npy", images[0], 1),
        ("one_c.npy", images[0][..., None], 1),
        ("batch.npy", images, 5),
        ("batch_c.npy", images[..., None], 5),
    ):
        np.save(tmp_path / name, array)
        labels, got = image_files.read_inputs(tmp_path / name)
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
        image_files.read_inputs(path)
    assert message in str(err.value)


def test_idx_plain_and_gzipped_and_truncated(tmp_path, images):
    blob = encode_idx(images)
    (tmp_path / "imgs-idx3-ubyte").write_bytes(blob)
    (tmp_path / "imgs-idx3-ubyte.gz").write_bytes(gzip.compress(blob))
    for name in ("imgs-idx3-ubyte", "imgs-idx3-ubyte.gz"):
        np.testing.assert_array_equal(image_files.read_inputs(tmp_path / name)[1], images)
    (tmp_path / "cut-idx3-ubyte").write_bytes(blob[:-10])
    with pytest.raises(ImageError, match=r"cut-idx3-ubyte: truncated"):
        image_files.read_inputs(tmp_path / "cut-idx3-ubyte")
    (tmp_path / "labels-idx1-ubyte").write_bytes(encode_idx(np.zeros(5, np.uint8)))
    with pytest.raises(ImageError, match="expected 3"):
        image_files.read_inputs(tmp_path / "labels-idx1-ubyte")


def test_kaggle_csv_rows(tmp_path, images):
    path = tmp_path / "rows.csv"
    path.write_bytes(encode_csv(images, np.arange(5, dtype=np.uint8)))
    labels, got = image_files.read_inputs(path)
    np.testing.assert_array_equal(got, images)
    assert labels[4] == f"{path}[4]"
    frame = pd.read_csv(path)
    frame.iloc[2, 7] = 300
    frame.to_csv(path, index=False)
    with pytest.raises(ImageError, match=r"rows\.csv: row 3, column 'pixel7': pixel 300"):
        image_files.read_inputs(path)


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


def test_directories_are_searched_recursively_by_extension(tmp_path, images):
    (tmp_path / "a/b").mkdir(parents=True)
    for name in ("a/1.png", "a/b/2.JPG", "a/b/3.webp", "a/notes.txt", "a/b/4.jpeg"):
        (tmp_path / name).write_bytes(b"x")
    found = image_files.expand([tmp_path / "a", tmp_path / "x.npy"], image_files.IMAGE_SUFFIXES)
    names = [str(p.relative_to(tmp_path)) for p in found]
    assert names == ["a/1.png", "a/b/2.JPG", "a/b/4.jpeg", "x.npy"]
    photos = image_files.expand([tmp_path / "a"], image_files.PREPROCESS_SUFFIXES)
    assert "a/b/3.webp" in [str(p.relative_to(tmp_path)) for p in photos]


def test_every_file_is_read_and_the_bad_ones_are_recorded_not_raised(tmp_path, images):
    good = save_png(tmp_path / "good.png", images[0])
    rgb = save_png(tmp_path / "colour.png", images[0], "RGB")
    np.save(tmp_path / "two.npy", images[:2])
    got = image_files.read_all([good, rgb, tmp_path / "missing.png", tmp_path / "two.npy"], False)
    assert got.order == [str(good), str(rgb), str(tmp_path / "missing.png"),
                         f"{tmp_path / 'two.npy'}[0]", f"{tmp_path / 'two.npy'}[1]"]  # fmt: skip
    assert set(got.errors) == {str(rgb), str(tmp_path / "missing.png")}
    assert got.errors[str(tmp_path / "missing.png")] == "no such file or directory"
    assert sum(len(a) for a in got.pixel_arrays) == 3
    with_photos = image_files.read_all([good, rgb], preprocess=True)
    assert with_photos.encoded == [str(good), str(rgb)] and not with_photos.errors


def test_the_first_argument_is_the_package_only_if_it_is_one(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/saved_model.pb").write_bytes(b"")
    (tmp_path / "imgs").mkdir()

    def split(*items):
        return predict.split_arguments(
            argparse.Namespace(items=list(items), version=None, stage=None)
        )

    assert split(str(tmp_path / "pkg"), "a.png") == (tmp_path / "pkg", [Path("a.png")])
    assert split(str(tmp_path / "imgs")) == (predict.DEFAULT_PACKAGE, [tmp_path / "imgs"])


def test_when_no_input_can_be_used_no_model_is_loaded(tmp_path, monkeypatch, capsys, images):
    """Bad files fail at once: nothing is fetched or loaded for them (no package is needed)."""
    rgb = save_png(tmp_path / "colour.png", images[0], "RGB")

    def load(*_):
        raise AssertionError("the SavedModel was loaded")

    monkeypatch.setattr(signatures, "load_signatures", load)
    monkeypatch.chdir(tmp_path)
    code = predict.main([str(rgb), str(tmp_path / "missing.png"), "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    assert [line.split(":")[1].strip() for line in err.splitlines()] == [
        str(rgb),
        str(tmp_path / "missing.png"),
    ]
    assert json.loads(out)["model"] is None


# --- the command on a package the pipeline made ---------------------------------------------


def fmnist(*args, cwd, check=True):
    return helpers.run([sys.executable, "-m", "fmnist.cli", *args], cwd=cwd, check=check)


@pytest.mark.slow
def test_pngs_of_test_images_get_the_classes_evaluation_gave(reproduced_repo, tmp_path):
    images, _ = load_split(reproduced_repo / "data/prepared/test.npz")
    paths = [str(save_png(tmp_path / f"test{i:02d}.png", images[i])) for i in range(12)]
    argv = ["predict", "models/package", "--averaged", "--json", str(tmp_path)]
    answer = json.loads(fmnist(*argv, cwd=reproduced_repo).stdout)
    assert answer["model"] == {"package": "models/package"}  # a directory: no version, no commit
    assert [row["input"] for row in answer["results"]] == paths  # the directory, in order
    got = [row["top"][0]["class"] for row in answer["results"]]
    evaluated = pd.read_csv(reproduced_repo / "metrics/predictions.csv")["predicted"][:12]
    assert got == list(evaluated)  # evaluate scores the averaged model
    for row in answer["results"]:
        assert isinstance(row["out_of_distribution"], bool) and row["ood_score"] >= 0
    lines = fmnist("predict", paths[0], "-k", "2", cwd=reproduced_repo).stdout.splitlines()
    assert lines[0] == "answered by the package in models/package"
    assert lines[2].split()[0] == paths[0]  # the default package and signature


@pytest.mark.slow
def test_bad_files_get_one_line_each_and_the_others_are_answered(reproduced_repo, tmp_path, images):
    good = save_png(tmp_path / "good.png", images[0])
    rgb = save_png(tmp_path / "colour.png", images[0], "RGB")
    (tmp_path / "junk.png").write_bytes(b"junk")
    proc = fmnist("predict", str(good), str(rgb), str(tmp_path / "junk.png"), "nowhere.png",
                  cwd=reproduced_repo, check=False)  # fmt: skip
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {rgb}: a RGB image (3 channels); expected 8-bit grayscale (mode L, one "
        "channel) like Fashion-MNIST. Use --preprocess to convert photos, or convert it "
        "yourself, e.g. with Pillow's Image.convert('L')",
        f"error: {tmp_path / 'junk.png'}: not a PNG or JPEG image (Pillow cannot identify it)",
        "error: nowhere.png: no such file or directory",
    ]
    assert "Traceback" not in proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()[2:]] == [str(good)]


@pytest.mark.slow
def test_preprocess_answers_photos_as_serving_bytes_does(reproduced_repo, tmp_path, images):
    photos = synthetic.product_photos(images, seed=0)
    for i, photo in enumerate(photos):
        (tmp_path / f"photo{i}.img").write_bytes(photo)
        (tmp_path / f"photo{i}.png").write_bytes(photo)  # a JPEG named .png is still read
    (tmp_path / "huge.png").write_bytes(helpers.png_header(20_000, 20_000))
    argv = ["predict", "--preprocess", "--json", "-k", "10", str(tmp_path)]
    proc = fmnist(*argv, cwd=reproduced_repo, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        f"error: {tmp_path / 'huge.png'}: the image is 20000×20000 pixels, more than "
        "16,777,216 (4096×4096); downscale it first"
    )
    rows = {Path(r["input"]).name: r for r in json.loads(proc.stdout)["results"]}
    serve = signatures.load_signatures(reproduced_repo / "models/package")
    out = serve[signatures.BYTES_SIGNATURE](image_bytes=tf.constant(photos))
    for i in range(len(photos)):
        row = rows[f"photo{i}.png"]
        by_class = {t["class_id"]: t["probability"] for t in row["top"]}
        np.testing.assert_allclose(
            [by_class[c] for c in range(10)], out["probabilities"].numpy()[i], atol=1e-5
        )
        assert row["out_of_distribution"] == bool(out["out_of_distribution"].numpy()[i])
    assert "photo0.img" not in rows  # not an image extension

"""The package: SavedModel with its three signatures, model card, metadata, lineage, speed,
and the out-of-distribution detector."""

from __future__ import annotations

import io
import json
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

import helpers
from fmnist.dataset import CLASS_NAMES, load_split
from fmnist.errors import PipelineError
from fmnist.model import architectures, tta
from fmnist.params import ModelParams, params_from_dict, params_to_dict
from fmnist.serving import card, ood, preprocess, signatures, synthetic
from fmnist.training import inputs

SAVED_MODEL_CLI = shutil.which("saved_model_cli") or ""


P = helpers.SERVED_PARAMS  # the `exported` fixture's (conftest.py)
SINGLE = ModelParams(tta_flip=False, tta_shift=0)


def test_speed_summary_percentiles_and_throughput():
    latencies = [0.001 * i for i in range(1, 101)]  # 1..100 ms
    out = signatures.speed_summary(latencies, [0.5, 0.5], batch_size=256)
    assert out["latency_ms_p50"] == pytest.approx(50.5)
    assert out["latency_ms_p95"] == pytest.approx(95.05)
    assert out["throughput_images_per_s"] == pytest.approx(512.0)
    assert out["latency_runs"] == 100 and out["throughput_runs"] == 2


def test_serving_default_is_the_network_alone_on_uint8_pixels(exported, tiny_data):
    model, _, path = exported
    serve = signatures.load_serving_fn(path)
    images = tiny_data["test"][0]  # (100, 28, 28) uint8
    out = serve(pixels=tf.constant(images[..., None]))
    expected = tta.network(model).predict(inputs.preprocess(images), verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-6)
    ids = expected.argmax(axis=1)
    np.testing.assert_array_equal(out["class_ids"].numpy(), ids)
    assert [n.decode() for n in out["class_names"].numpy()] == [CLASS_NAMES[i] for i in ids]
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8"):
        serve(pixels=tf.constant(images[..., None] / 255.0, tf.float32))  # scaled floats


def test_serving_averaged_is_the_keras_model_with_its_views(exported, tiny_data):
    model, _, path = exported
    serve = signatures.load_serving_fn(path, signatures.AVERAGED_SIGNATURE)
    images = tiny_data["test"][0]
    out = serve(pixels=tf.constant(images[..., None]))
    expected = model.predict(inputs.preprocess(images), verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-6)
    single = signatures.load_serving_fn(path)(pixels=tf.constant(images[..., None]))
    assert not np.allclose(single["probabilities"].numpy(), expected, atol=1e-4)


def test_every_signature_scores_out_of_distribution_as_the_detector(exported, tiny_data):
    model, detector, path = exported
    images = tiny_data["test"][0]
    single = signatures.with_features(tta.network(model), SINGLE)
    expected = detector.score(signatures.features_of(single, images)[1])
    for name in (signatures.SIGNATURE, signatures.AVERAGED_SIGNATURE):
        out = signatures.load_serving_fn(path, name)(pixels=tf.constant(images[..., None]))
        np.testing.assert_allclose(out["ood_score"].numpy(), expected, rtol=1e-4)
        flags = out["out_of_distribution"].numpy()
        np.testing.assert_array_equal(flags, out["ood_score"].numpy() > detector.threshold)
        assert 0 < flags.sum() < len(images)


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def test_serving_bytes_is_the_preprocessing_then_serving_default(exported, tiny_data):
    _, _, path = exported
    served = signatures.load_signatures(path)
    images = tiny_data["test"][0][:6]
    photos = synthetic.product_photos(images, seed=0)
    batch = [*photos[:3], b"junk", png(np.zeros((1, 1), np.uint8)), *photos[3:]]
    out = served[signatures.BYTES_SIGNATURE](image_bytes=tf.constant(batch))
    pixels, errors = preprocess.images_to_pixels(tf.constant(photos))
    assert not any(errors.numpy())
    expected = served[signatures.SIGNATURE](pixels=pixels)
    good = [0, 1, 2, 5, 6, 7]
    for name in signatures.OUTPUTS:  # floats: another batch, another summation order
        got, want = out[name].numpy()[good], expected[name].numpy()
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, name)
    errors = [e.decode() for e in out["error"].numpy()]
    assert [bool(e) for e in errors] == [False] * 3 + [True, True] + [False] * 3
    assert errors[3].startswith("not an image") and "1×1" in errors[4]
    for bad in (3, 4):  # emptied, not a guess
        assert out["class_ids"].numpy()[bad] == -1 and out["class_names"].numpy()[bad] == b""
        assert not out["probabilities"].numpy()[bad].any()


@pytest.mark.slow  # a second export
def test_a_savedmodel_compiled_with_xla_answers_the_same(exported, tiny_data, tmp_path):
    model, detector, path = exported
    signatures.export_saved_model(model, tmp_path / "xla", P, detector, jit_compile=True)
    images = tf.constant(tiny_data["test"][0][:16, ..., None])
    for name in (signatures.SIGNATURE, signatures.AVERAGED_SIGNATURE):
        plain = signatures.load_serving_fn(path, name)(pixels=images)
        xla = signatures.load_serving_fn(tmp_path / "xla", name)(pixels=images)
        np.testing.assert_allclose(xla["probabilities"], plain["probabilities"], atol=1e-5)


@pytest.mark.parametrize(("arch", "width"), [("gap_cnn", 8 + 16 + 24), ("bn_cnn", 8 + 16 + 24)])
def test_features_are_each_stage_averaged_and_the_dense_network_its_penultimate(arch, width):
    p = ModelParams(arch=arch, filters=(8, 16, 24), dense_units=12)
    features = signatures.with_features(architectures.build(p), p).output[1]
    assert features.shape[-1] == width
    dense = signatures.with_features(
        architectures.build(ModelParams(arch="dense", dense_units=12)), SINGLE
    )
    assert dense.output[1].shape[-1] == 12


def test_features_of_answers_every_image_as_the_model_does_across_batches(tiny_data):
    import keras

    keras.utils.set_random_seed(0)
    single = signatures.with_features(architectures.build(helpers.SERVED_PARAMS), SINGLE)
    images = tiny_data["test"][0][:23]  # batches of 5: the last one short
    probs, features = signatures.features_of(single, images, batch_size=5)
    x = inputs.preprocess(images)
    want_probs, want_features = single(x, training=False)
    np.testing.assert_allclose(probs, want_probs, atol=1e-6)
    np.testing.assert_allclose(features[:, :-1], want_features, atol=1e-5)
    np.testing.assert_array_equal(features[:, -1], ood.extent(x).numpy())


def test_check_saved_model_refuses_a_savedmodel_of_another_model(exported, tiny_data):
    import keras

    _, _, path = exported
    keras.utils.set_random_seed(1)
    other = architectures.build(P)
    with pytest.raises(PipelineError, match="disagree"):
        signatures.check_saved_model(
            other, signatures.load_serving_fn(path), tiny_data["test"][0][:8]
        )


@pytest.mark.slow  # a subprocess that imports TensorFlow
@pytest.mark.skipif(not SAVED_MODEL_CLI, reason="saved_model_cli (ships with tensorflow) missing")
def test_saved_model_cli_shows_the_documented_signatures(exported):
    _, _, path = exported
    shown = helpers.run([SAVED_MODEL_CLI, "show", "--dir", str(path), "--all"], cwd=path).stdout
    blocks = {
        name: shown[shown.index(f"signature_def['{name}']") :].split("signature_def[")[1]
        for name in ("serving_default", "serving_averaged", "serving_bytes")
    }
    for name in ("serving_default", "serving_averaged"):
        assert "inputs['pixels']" in blocks[name]
        assert "dtype: DT_UINT8" in blocks[name] and "shape: (-1, 28, 28, 1)" in blocks[name]
    assert "inputs['image_bytes']" in blocks["serving_bytes"]
    assert "dtype: DT_STRING" in blocks["serving_bytes"]
    for block in blocks.values():
        for output in signatures.OUTPUTS:
            assert f"outputs['{output}']" in block
        assert "shape: (-1, 10)" in block
        assert "tensorflow/serving/predict" in block
    assert "outputs['error']" in blocks["serving_bytes"]


def card_inputs() -> tuple[dict, dict, dict]:
    params = yaml.safe_load((helpers.ROOT / "params.yaml").read_text())
    per_class = [
        {"class": n, "precision": 0.9, "recall": 0.9, "f1": 0.9 - 0.05 * i, "support": 100}
        for i, n in enumerate(CLASS_NAMES)
    ]
    split = {"accuracy": 0.91, "loss": 0.25}
    metrics = {"train": split, "val": split, "test": {**split, "f1_macro": 0.9}}
    metrics["per_class"] = per_class
    record = {
        "training": {"parameters": 93962, "epochs_run": 3, "device": "CPU (x)"},
        "data": {"raw": {"t10k-images-idx3-ubyte": "ff00"}},
    }
    return params, metrics, record


def test_model_card_has_every_section_and_the_real_numbers():
    text = card.model_card(*card_inputs())
    for section in (
        "## Intended use",
        "## Input and output",
        "## Data",
        "## Architecture and training",
        "## Metrics",
        "## Inference speed",
        "## Limitations",
        "## Versions",
    ):
        assert section in text
    assert "| Ankle boot | 0.9000 | 0.9000 | 0.4500 | 100 |" in text
    # The weakest classes are named from the per-class F1, lowest first.
    assert "Ankle boot (F1 0.45), Bag (F1 0.50), Sneaker (F1 0.55)" in text
    assert "93962 parameters" in text and "`ff00`" in text
    assert "uint8" in text and "(batch, 28, 28, 1)" in text
    # Speed and time are measured per run: the card points at the run record instead.
    assert "`metrics/runs/package.json`" in text and "latency p50" not in text
    assert "`fmnist lineage fashion-mnist-cnn@vX.Y.Z`" in text  # the commit is the tag's


def test_model_card_names_a_custom_dataset_version():
    params, metrics, record = card_inputs()
    assert "dataset version of its own" not in card.model_card(params, metrics, record)
    custom = {
        "canonical": False,
        "train": {"examples": 60_000, "added": 0, "removed": 0, "relabelled": 7},
        "test": {"examples": 10_000, "added": 0, "removed": 0, "relabelled": 0},
    }
    record["data"]["dataset"] = custom
    text = card.model_card(params, metrics, record)
    assert (
        "**This model was trained on a dataset version of its own** (custom, against canonical "
        "Fashion-MNIST: train 60,000 examples (7 relabelled), test 10,000 examples (unchanged))"
    ) in text


def test_model_card_reports_the_ood_rates_on_held_out_sets():
    report = {
        "threshold": 1.5,
        "held_out": {
            "false_alarm": {"test": 0.007, "test_photos": 0.004},
            "detection": {"inverted": 1.0, "handwritten_digits": 0.95},
        },
    }
    text = card.model_card(*card_inputs(), report)
    assert "## Out-of-distribution flag" in text
    assert "score above 1.500" in text
    assert "test 0.7%, test photos 0.4%" in text and "handwritten digits 95.0%" in text
    assert "## Out-of-distribution flag" not in card.model_card(*card_inputs())


@pytest.mark.parametrize(
    ("flip", "shift", "says"),
    [
        (False, 0, None),
        (True, 0, "over each image and its mirror image (test-time augmentation: 2 views)"),
        (False, 2, "over each image, also moved 2 px right, left, down and up (test-time "),
        (True, 1, "its mirror image, each also moved 1 px right, left, down and up (test-time "),
    ],
)
def test_model_card_says_which_views_the_model_averages(flip, shift, says):
    params, metrics, record = card_inputs()
    params["model"] |= {"tta_flip": flip, "tta_shift": shift}
    text = card.model_card(params, metrics, record)
    if says is None:
        assert "test-time augmentation" not in text
    else:
        assert says in text.replace("\n", " ")
        assert f"{(1 + flip) * (5 if shift else 1)} views)" in text


# --- end to end, on the tiny repo the pipeline has run in -----------------------------------


@pytest.mark.slow
def test_package_has_the_seed_layout(reproduced_repo):
    pkg = reproduced_repo / "models/package"
    for name in ("saved_model.pb", "variables/variables.index", "assets", "model.keras"):
        assert (pkg / name).exists(), name
    meta = pkg / "metadata"
    for name in (
        "model_card.md",
        "metrics.json",
        "params.json",
        "confusion_matrix.png",
        "class_names.json",
        "lineage.json",
        "ood.json",
    ):
        assert (meta / name).is_file(), name
    assert (meta / "confusion_matrix.png").read_bytes() == (
        reproduced_repo / "metrics/figures/confusion_matrix.png"
    ).read_bytes()
    metrics = json.loads((meta / "metrics.json").read_text())
    assert [r["class"] for r in metrics["per_class"]] == list(CLASS_NAMES)
    assert (
        metrics["test"] == json.loads((reproduced_repo / "metrics/eval.json").read_text())["test"]
    )
    assert (meta / "SHA256SUMS").is_file()
    # What one run measured is kept outside the package, whose bytes must not change.
    lineage = json.loads((meta / "lineage.json").read_text())
    assert not {"packaged_at", "inference", "packaging", "code"} & set(lineage)
    assert not {"train_seconds", "images_per_second"} & set(lineage["training"])
    assert set(lineage["provenance"]) == {"fetch", "prepare", "train", "evaluate", "package"}
    run = json.loads((reproduced_repo / "metrics/runs/package.json").read_text())
    speed = run["inference"]
    assert 0 < speed["latency_ms_p50"] <= speed["latency_ms_p95"]
    assert speed["throughput_images_per_s"] > 0 and speed["throughput_batch_size"] == 64
    assert run["packaged_at"] and run["packaging"]["device"]


@pytest.mark.slow
def test_the_ood_threshold_is_chosen_on_validation_and_measured_on_held_out_sets(
    reproduced_repo,
):
    pkg = reproduced_repo / "models/package"
    report = json.loads((pkg / "metadata/ood.json").read_text())
    assert report["tuning"]["false_alarm"].keys() == {"val", "val_photos"}
    assert report["held_out"]["false_alarm"].keys() == {"test", "test_photos"}
    new_families = {"handwritten_digits", "typeset_letters", "scribbles", "photographed_scribbles"}
    assert new_families <= report["held_out"]["detection"].keys()
    assert not new_families & report["tuning"]["detection"].keys()
    assert max(report["tuning"]["false_alarm"].values()) <= report["max_false_alarm"]
    # The SavedModel carries that threshold: it flags the validation images the report says.
    images, _ = load_split(reproduced_repo / "data/prepared/val.npz")
    out = signatures.load_serving_fn(pkg)(pixels=tf.constant(images[..., None]))
    flagged = float(out["out_of_distribution"].numpy().mean())
    assert flagged == pytest.approx(report["tuning"]["false_alarm"]["val"], abs=1e-4)
    assert set(report["accuracy"]) == {"val", "val_photos", "test", "test_photos"}


@pytest.mark.slow
def test_lineage_inputs_match_dvc_lock(reproduced_repo):
    lock = yaml.safe_load((reproduced_repo / "dvc.lock").read_text())["stages"]["package"]
    locked = {d["path"]: d["md5"] for d in lock["deps"] if not d["path"].startswith("src/")}
    meta = reproduced_repo / "models/package/metadata"
    assert json.loads((meta / "lineage.json").read_text())["inputs"] == locked
    # Through the schema: PyYAML reads a dumped `1e-07` back as a string.
    locked_params = params_to_dict(params_from_dict(lock["params"]["params.yaml"]))
    assert json.loads((meta / "params.json").read_text()) == locked_params


@pytest.mark.slow
def test_savedmodel_predicts_like_keras_on_the_test_set(reproduced_repo, tmp_path):
    # In a fresh process, as a server would load it: nothing of fmnist but the test data.
    images, _ = load_split(reproduced_repo / "data/prepared/test.npz")
    np.save(tmp_path / "test_images.npy", images)
    (tmp_path / "one.png").write_bytes(png(images[0]))
    script = f"""
import numpy as np, tensorflow as tf, keras
pkg = "{reproduced_repo / "models/package"}"
images = np.load("{tmp_path / "test_images.npy"}")
signatures = tf.saved_model.load(pkg).signatures
served = signatures["serving_averaged"](pixels=tf.constant(images[..., None]))
model = keras.saving.load_model(pkg + "/model.keras", compile=False)
expected = model.predict(images[..., None].astype("float32") / 255.0, verbose=0)
np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
assert (served["class_ids"].numpy() == expected.argmax(1)).all()
# The bytes signature needs no Python either: TensorFlow Serving has none.
png = open("{tmp_path / "one.png"}", "rb").read()
out = signatures["serving_bytes"](image_bytes=tf.constant([png, b"junk"]))
assert out["error"].numpy()[0] == b"" and out["error"].numpy()[1] != b""
print("same", len(images))
"""
    out = helpers.run([sys.executable, "-c", script], cwd=tmp_path).stdout
    assert out.split() == ["same", str(len(images))]

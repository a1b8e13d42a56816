"""Exports for servers: TensorFlow Serving's layout and integer versions, Vertex AI's model
upload (checked as the training job spec is), and request bodies."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil

import jsonschema
import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from fmnist.errors import PipelineError
from fmnist.tools import examples, export
from helpers import ROOT

SCHEMA = json.loads((ROOT / "tests/schemas/vertex_model_upload.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
DOCS = ROOT / "docs/serving.md"
versions = st.tuples(st.integers(0, 99), st.integers(0, 999), st.integers(0, 999))


@pytest.mark.parametrize(
    ("version", "number"),
    [("v1.2.3", 1_002_003), ("v0.0.1", 1), ("v1.0.0", 1_000_000), ("v12.999.999", 12_999_999)],
)
def test_the_integer_version(version, number):
    assert export.integer_version(version) == number


@given(a=versions, b=versions)
def test_a_later_semantic_version_is_a_higher_integer(a, b):
    ints = [export.integer_version("v{}.{}.{}".format(*v)) for v in (a, b)]
    assert (a < b) == (ints[0] < ints[1]) and (a == b) == (ints[0] == ints[1])


@pytest.mark.parametrize(
    ("version", "message"),
    [("v1.1000.0", "below 1000"), ("v1.0.1000", "below 1000"), ("1.2.3", "vMAJOR.MINOR.PATCH")],
)
def test_versions_that_have_no_integer_are_refused(version, message):
    with pytest.raises(PipelineError, match=message):
        export.integer_version(version)


def test_export_refuses_a_directory_that_is_not_a_package(tmp_path):
    (tmp_path / "pkg").mkdir()
    with pytest.raises(PipelineError, match="not a model package"):
        export.export_for_serving(tmp_path / "pkg", tmp_path / "base", "v1.0.0")
    assert not (tmp_path / "base").exists()


def test_export_never_overwrites_a_version_a_server_may_be_loading(tmp_path, capsys):
    target = tmp_path / "base/fashion-mnist-cnn/1000000"
    target.mkdir(parents=True)
    (target / "saved_model.pb").write_bytes(b"served")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/saved_model.pb").write_bytes(b"new")
    argv = ["--version", "v1.0.0", "--base", str(tmp_path / "base")]
    assert export.main([*argv, "--package", str(tmp_path / "pkg")]) == 1
    assert capsys.readouterr().err == (
        f"error: {target} exists already: a server may be loading it. Remove it first to "
        "replace it\n"
    )
    assert (target / "saved_model.pb").read_bytes() == b"served"


# --- Vertex AI ---------------------------------------------------------------------------


def upload(**override) -> dict:
    args = {"version": "v1.2.3", "artifact_uri": "gs://bucket/models/fmnist/v1.2.3/"}
    args |= {"image": export.VERTEX_IMAGE, "commit": "0123456789abcdef"} | override
    return export.vertex_upload(**args)


def test_the_upload_fits_vertex_ais_reference():
    body = upload()
    VALIDATOR.validate(body)
    model = body["model"]
    assert model["artifactUri"] == "gs://bucket/models/fmnist/v1.2.3"  # the package directory
    assert model["containerSpec"] == {"imageUri": export.VERTEX_IMAGE}
    assert model["versionAliases"] == ["v1-2-3"]
    assert model["labels"] == {"version": "v1-2-3", "commit": "0123456789ab"}


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda m: m["labels"].update(version="v1.2.3"), "v1.2.3"),
        (lambda m: m.update(versionAliases=["1.2.3"]), "1.2.3"),
        (lambda m: m.update(artifactUri="/tmp/package"), "/tmp/package"),
        (lambda m: m["containerSpec"].update(imageUri="tensorflow/serving"), "tensorflow/serving"),
        (lambda m: m.update(artifactURI="gs://b/p"), "artifactURI"),
        (lambda m: m.pop("containerSpec"), "containerSpec"),
    ],
)
def test_the_schema_rejects_what_vertex_ai_would(change, where):
    body = upload()
    change(body["model"])
    errors = list(VALIDATOR.iter_errors(body))
    assert errors and any(where in str(e) for e in errors)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"artifact_uri": "s3://bucket/x"}, "--artifact-uri"),
        ({"artifact_uri": "gs://"}, "--artifact-uri"),
        ({"version": "latest"}, "vMAJOR.MINOR.PATCH"),
    ],
)
def test_invalid_uploads_are_refused_before_rendering(override, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        upload(**override)


def test_the_docs_show_the_upload_the_command_renders(capsys):
    """Each `fmnist vertex-model` example in docs/serving.md is followed by its output."""
    text = DOCS.read_text()
    shown = re.findall(r"```bash\n(fmnist vertex-model[^`]*?)\n```\n+```yaml\n(.*?)```", text, re.S)
    assert shown
    for command, output in shown:
        assert export.vertex_main(shlex.split(command)[2:]) == 0
        assert capsys.readouterr().out == output, command
        VALIDATOR.validate(yaml.safe_load(output))
        gcloud = [line[5:] for line in output.splitlines() if line.startswith("#    ")]
        assert any(line.startswith("gcloud ai models upload") for line in gcloud)


# --- request bodies ----------------------------------------------------------------------


@pytest.fixture
def files(tmp_path, tiny_data):
    images, labels = tiny_data["test"][0][:3], tiny_data["test"][1][:3]
    examples.write_examples(images, labels, tmp_path / "ex", seed=0)
    return tmp_path / "ex", images


def test_examples_are_the_test_images_and_photos_named_by_class(files):
    out, images = files
    pixels = sorted((out / "pixels").iterdir())
    photos = sorted((out / "photos").iterdir())
    assert len(pixels) == len(photos) == 3
    assert re.fullmatch(r"0000-[a-z-]+\.png", pixels[0].name)
    np.testing.assert_array_equal(np.asarray(Image.open(pixels[1])), images[1])
    assert {Image.open(p).mode for p in photos} == {"RGB"}
    assert [p.stem for p in pixels] == [p.stem for p in photos]


@pytest.mark.parametrize("columnar", [False, True])
def test_pixel_requests_in_both_formats(files, tmp_path, columnar, capsys):
    out, images = files
    paths = [str(p) for p in sorted((out / "pixels").iterdir())]
    argv = [*paths, "--signature", "serving_averaged"] + (["--columnar"] if columnar else [])
    assert export.request_main(argv) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["signature_name"] == "serving_averaged"
    values = body["inputs"]["pixels"] if columnar else body["instances"]
    np.testing.assert_array_equal(np.array(values)[..., 0], images)


def test_the_default_signature_is_not_named_in_the_request(files, capsys):
    out, _ = files
    assert export.request_main([str(next((out / "pixels").iterdir()))]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"instances"}


@pytest.mark.parametrize("columnar", [False, True])
def test_bytes_requests_carry_the_files_in_base64(files, columnar, capsys, tmp_path):
    out, _ = files
    paths = sorted((out / "photos").iterdir())
    target = tmp_path / "photos.json"
    argv = [*map(str, paths), "--signature", "serving_bytes", "--out", str(target)]
    assert export.request_main(argv + (["--columnar"] if columnar else [])) == 0
    body = json.loads(target.read_text())
    assert body["signature_name"] == "serving_bytes"
    if columnar:
        values = body["inputs"]["image_bytes"]
    else:
        values = [row["image_bytes"] for row in body["instances"]]
    assert [base64.b64decode(v["b64"]) for v in values] == [p.read_bytes() for p in paths]


def test_a_photo_cannot_be_a_pixel_request(files, capsys):
    out, _ = files
    photo = next((out / "photos").iterdir())
    assert export.request_main([str(photo)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {photo}: a RGB image") and "serving_bytes" in err


def test_the_commands_are_in_the_cli():
    from fmnist.cli import COMMANDS

    assert {"export", "vertex-model", "request", "examples"} <= set(COMMANDS)


@pytest.mark.slow
def test_export_writes_a_registered_package_into_tf_servings_layout(reproduced_repo, tmp_path):
    package = tmp_path / "package"
    shutil.copytree(reproduced_repo / "models/package", package)
    base = tmp_path / "base"
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert (
            export.main(["--version", "v2.3.4", "--base", str(base), "--package", str(package)])
            == 0
        )
    finally:
        os.chdir(cwd)
    version = base / "fashion-mnist-cnn/2003004"
    assert (version / "saved_model.pb").read_bytes() == (package / "saved_model.pb").read_bytes()
    assert sorted(p.name for p in (base / "fashion-mnist-cnn").iterdir()) == ["2003004"]
    assert (version / "variables").is_dir() and (version / "metadata/model_card.md").is_file()

"""TensorFlow Serving's REST predict contract over the package's SavedModel (tests/tf_serving.py
implements it; no TF Serving binary is available here), and the requests docs/serving.md
documents, sent end to end to the layout `fmnist export` writes."""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import shutil
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

import helpers
import tf_serving
from fmnist.dataset import CLASS_NAMES
from fmnist.serving import synthetic
from helpers import ROOT

NAME = "fashion-mnist-cnn"
OUTPUTS = {"probabilities", "class_ids", "class_names", "ood_score", "out_of_distribution"}


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    """The exported SavedModel as version 1002003 of a model base path that also holds an
    older version and a half-copied one, served over HTTP: (server, base URL)."""
    _, _, path = exported
    base = tmp_path_factory.mktemp("serving")
    shutil.copytree(path, base / NAME / "1002003")
    shutil.copytree(path, base / NAME / "1000000")
    (base / NAME / ".1003000.tmp").mkdir()  # what `fmnist export` stages: not a version
    model = tf_serving.ModelServer(base, NAME)
    with tf_serving.serve(model) as url:
        yield model, url


def post(url: str, path: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


PREDICT = f"/v1/models/{NAME}:predict"


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def test_the_latest_version_is_served(server):
    model, url = server
    assert model.version == 1002003
    with urllib.request.urlopen(url + f"/v1/models/{NAME}", timeout=30) as response:
        status = json.loads(response.read())["model_version_status"]
    assert status == [{"version": "1002003", "state": "AVAILABLE", "status": {}}]


def test_rows_columns_and_named_instances_give_the_same_answers(server, tiny_data):
    _, url = server
    images = tiny_data["test"][0][:3, ..., None].tolist()  # (3, 28, 28, 1)
    status, rows = post(url, PREDICT, {"instances": images})
    assert status == 200 and len(rows["predictions"]) == 3
    assert set(rows["predictions"][0]) == OUTPUTS
    assert rows["predictions"][0]["class_names"] in CLASS_NAMES
    _, named = post(url, PREDICT, {"instances": [{"pixels": image} for image in images]})
    assert named == rows
    _, columns = post(url, PREDICT, {"inputs": {"pixels": images}})
    _, bare = post(url, PREDICT, {"inputs": images})
    assert bare == columns
    outputs = columns["outputs"]
    assert set(outputs) == OUTPUTS and len(outputs["class_ids"]) == 3
    for name in OUTPUTS:
        got = [row[name] for row in rows["predictions"]]
        if name in ("probabilities", "ood_score"):
            np.testing.assert_allclose(got, outputs[name], rtol=1e-5, atol=1e-6)
        else:
            assert got == outputs[name], name


def test_a_signature_and_a_version_named_in_the_request(server, tiny_data):
    _, url = server
    images = tiny_data["test"][0][:2, ..., None].tolist()
    body = {"signature_name": "serving_averaged", "instances": images}
    status, averaged = post(url, f"/v1/models/{NAME}/versions/1002003:predict", body)
    _, single = post(url, PREDICT, {"instances": images})
    assert status == 200
    assert averaged["predictions"][0]["probabilities"] != single["predictions"][0]["probabilities"]
    status, answer = post(url, f"/v1/models/{NAME}/versions/1000000:predict", body)
    assert status == 404 and answer["error"].startswith("Servable not found")


def test_encoded_images_in_base64_rows_and_columns_with_a_bad_one_answered_alone(server, tiny_data):
    _, url = server
    photos = synthetic.product_photos(tiny_data["test"][0][:2], seed=0)
    values = [b64(photos[0]), b64(b"not an image"), b64(photos[1])]
    body = {"signature_name": "serving_bytes", "instances": [{"image_bytes": v} for v in values]}
    status, rows = post(url, PREDICT, body)
    assert status == 200
    predictions = rows["predictions"]
    assert [bool(p["error"]) for p in predictions] == [False, True, False]
    assert predictions[1]["error"].startswith("not an image in a format")
    assert predictions[1]["class_ids"] == -1 and predictions[1]["class_names"] == ""
    _, bare = post(url, PREDICT, {"signature_name": "serving_bytes", "instances": values})
    assert bare == rows  # one input: an instance may be its value
    body = {"signature_name": "serving_bytes", "inputs": {"image_bytes": [values[0], values[2]]}}
    _, columns = post(url, PREDICT, body)
    assert columns["outputs"]["class_ids"] == [
        predictions[0]["class_ids"],
        predictions[2]["class_ids"],
    ]


PIXELS = np.zeros((1, 28, 28, 1), int).tolist()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "JSON Parse error"),
        ([1, 2], "Expected a JSON object"),
        ({"signature_name": "serving_default"}, "Missing 'inputs' or 'instances' key"),
        ({"instances": PIXELS, "inputs": PIXELS}, "only one of 'inputs' or 'instances'"),
        ({"signature_name": "predict", "instances": PIXELS}, 'Serving signature name: "predict"'),
        ({"instances": {"pixels": PIXELS}}, "Expecting 'instances' to be an list/array"),
        ({"instances": [{"image": PIXELS[0]}]}, "expected an object naming ['pixels']"),
        ({"inputs": {"images": PIXELS}}, "'inputs' must name the inputs ['pixels']"),
        ({"instances": (np.ones((1, 28, 28, 1)) / 2).tolist()}, "not of expected type: uint8"),
        ({"instances": np.full((1, 28, 28, 1), 256).tolist()}, "not of expected type: uint8"),
        ({"instances": np.zeros((1, 32, 32, 1), int).tolist()}, "shape [1, 32, 32, 1]"),
        ({"instances": np.zeros((1, 28, 28), int).tolist()}, "does not match [-1, 28, 28, 1]"),
        (
            {"signature_name": "serving_bytes", "instances": [{"b64": "%%%"}]},
            "Unable to base64 decode",
        ),
        (
            {"signature_name": "serving_bytes", "instances": [3]},
            "not of expected type: string",
        ),
    ],
)
def test_bad_requests_get_an_http_400_with_an_error(server, body, message):
    _, url = server
    status, answer = post(url, PREDICT, body)
    assert status == 400 and set(answer) == {"error"}
    assert message in answer["error"], answer["error"]


def test_an_unknown_model_is_a_404(server):
    _, url = server
    status, answer = post(url, "/v1/models/mnist:predict", {"instances": PIXELS})
    assert status == 404 and "mnist" in answer["error"]


# --- the documented requests, end to end -------------------------------------------------


def documented_commands() -> tuple[list[str], list[tuple[str, str]]]:
    """(the `fmnist` commands of docs/serving.md's TensorFlow Serving section that write files,
    (request file, URL path) of each documented `curl`)."""
    text = (ROOT / "docs/serving.md").read_text()
    section = text[text.index("## TensorFlow Serving") : text.index("## Vertex AI")]
    commands = [
        line.strip()
        for block in re.findall(r"```bash\n(.*?)```", text[: text.index("## Vertex AI")], re.S)
        if not block.startswith("# needs:")
        for line in block.splitlines()
        if line.startswith("fmnist ")
    ]
    curls = re.findall(r"curl -s -d @(\S+) http://localhost:8501(\S+)", section)
    return commands, curls


def test_the_docs_document_a_request_for_each_signature():
    commands, curls = documented_commands()
    assert len(curls) >= 4
    signatures = set()
    for command in commands:
        if command.startswith("fmnist request"):
            found = re.search(r"--signature (\S+)", command)
            signatures.add(found[1] if found else "serving_default")
    assert signatures == {"serving_default", "serving_averaged", "serving_bytes"}
    assert any("--columnar" in c for c in commands)


@pytest.mark.slow
def test_the_documented_requests_work_against_the_exported_layout(reproduced_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(reproduced_repo, repo, symlinks=True)
    commands, curls = documented_commands()
    for command in commands:
        argv = shlex.split(command)[1:]
        if argv[0] == "predict" and "--version" in argv:
            continue  # needs the registry; tests/test_registry.py fetches versions
        if argv[0] == "export":  # the package at hand, not fetched from a remote
            argv += ["--package", "models/package"]
        target = None
        if ">" in argv:
            target, argv = repo / argv[argv.index(">") + 1], argv[: argv.index(">")]
        argv = [a for p in argv for a in (sorted(map(str, repo.glob(p))) or [p])]  # the shell's *
        argv = [a.removeprefix(f"{repo}/") for a in argv]
        proc = helpers.run([sys.executable, "-m", "fmnist.cli", *argv], cwd=repo)
        if target:
            target.write_text(proc.stdout)
    model = tf_serving.ModelServer(repo / "serving", NAME)
    assert model.version == 1_000_000  # v1.0.0
    with tf_serving.serve(model) as url:
        for request, path in curls:
            status, answer = post(url, path, (repo / request).read_bytes())
            assert status == 200, (request, answer)
            rows = answer.get("predictions") or [
                dict(zip(answer["outputs"], values)) for values in zip(*answer["outputs"].values())
            ]
            assert rows and all(set(row) >= OUTPUTS for row in rows), request
            assert all(not row.get("error") for row in rows), request

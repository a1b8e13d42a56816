"""The release flow end to end on the tiny repository, with the real dvc, gto and fmnist
commands: register, promote in order through the gates, a skipped stage and a worse model
refused, a hand-made prod tag withdrawn, prod deprecated, and every documented way of fetching
prod answering with the right version. Also: the SavedModel stores each weight once, a tampered
package is refused by `predict`, and two commands at once are caught at `package`. (That the
package is the same bytes after `dvc repro -f package` is in tests/test_reliability.py, with
the other outputs of a forced rerun.)

docs/release.md documents this flow; this test is its authority."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

import helpers
from fmnist.dataset import load_split
from fmnist.model import saving
from fmnist.tools import registry
from helpers import dvc, git
from test_integrity import rezip, zero_first_kernel

NAME = registry.ARTIFACT
# The `gto` script installed beside this Python (gto has no `python -m gto`).
GTO = shutil.which("gto", path=str(Path(sys.executable).parent)) or "gto"

pytestmark = pytest.mark.slow


def fmnist(*args: str, cwd: Path, check: bool = True):
    return helpers.run([sys.executable, "-m", "fmnist.cli", *args], cwd=cwd, check=check)


def gto(*args: str, cwd: Path):
    return helpers.run([GTO, *args], cwd=cwd)


def refused(proc, *needles: str) -> str:
    """The one error line of a refused command, which must name every needle."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # (TensorFlow's own start-up lines may show: the tests set TF_CPP_MIN_LOG_LEVEL.)
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    for needle in needles:
        assert needle in line, line
    return line


def commit_and_push(repo: Path, message: str) -> None:
    git("add", "-A", cwd=repo)
    git("commit", "-qm", message, cwd=repo)
    dvc("push", "-q", cwd=repo)


@pytest.fixture
def repo(reproduced_repo, tmp_path) -> Path:
    """A copy of the reproduced tiny repo with a local DVC remote, its results committed."""
    path = tmp_path / "repo"
    shutil.copytree(reproduced_repo, path, symlinks=True)
    dvc("remote", "add", "-d", "local", str(tmp_path / "remote"), cwd=path)
    commit_and_push(path, "the first model")
    return path


def test_the_release_story(repo, tmp_path):
    # 1. Register what HEAD's dvc.lock pins, and promote it in order.
    out = fmnist("register", cwd=repo).stdout
    assert out.startswith(f"registered {NAME} v1.0.0 (commit ")
    refused(fmnist("promote", "v1.0.0", "staging", cwd=repo, check=False), "not in dev")
    fmnist("promote", "v1.0.0", "dev", cwd=repo)
    fmnist("promote", "v1.0.0", "staging", "--approved-by", "J. Doe", "--reason", "ok", cwd=repo)
    out = fmnist("promote", "v1.0.0", "prod", cwd=repo).stdout
    assert "package verified against its manifest and dvc.lock; lineage complete" in out
    first_accuracy = json.loads((repo / "metrics/eval.json").read_text())["test"]["accuracy"]

    # 2. A patch (evaluation only: same model, same accuracy) goes through every gate.
    helpers.set_params(repo / "params.yaml", {"evaluate.misclassified": 3})
    dvc("repro", cwd=repo)
    commit_and_push(repo, "fewer misclassified examples drawn")
    assert "registered fashion-mnist-cnn v1.0.1" in fmnist("register", cwd=repo).stdout
    skip = fmnist("promote", "v1.0.1", "prod", cwd=repo, check=False)
    refused(skip, "v1.0.1 is not in staging, so it cannot enter prod")
    fmnist("promote", "v1.0.1", "dev", cwd=repo)
    no_approval = fmnist("promote", "v1.0.1", "staging", cwd=repo, check=False)
    refused(no_approval, "staging needs an approval")
    fmnist("promote", "v1.0.1", "staging", "--approved-by", "J. Doe", "--reason", "ok", cwd=repo)
    fmnist("promote", "v1.0.1", "prod", cwd=repo)

    # 3. A worse model: through dev and staging, then refused at prod, naming the metric.
    helpers.set_params(repo / "params.yaml", {"train.learning_rate": 1e-6, "train.epochs": 1})
    dvc("repro", cwd=repo)
    worse = json.loads((repo / "metrics/eval.json").read_text())["test"]["accuracy"]
    assert worse < first_accuracy  # the premise of this part
    commit_and_push(repo, "a worse model")
    assert "v1.1.0" in fmnist("register", cwd=repo).stdout  # a hyperparameter: minor
    fmnist("promote", "v1.1.0", "dev", cwd=repo)
    fmnist("promote", "v1.1.0", "staging", "--approved-by", "J. Doe", "--reason", "ok", cwd=repo)
    line = refused(
        fmnist("promote", "v1.1.0", "prod", cwd=repo, check=False),
        f"test.accuracy {worse:.4f} of v1.1.0",
        f"below the {first_accuracy:.4f} of prod v1.0.1",
        "max_accuracy_drop",
    )
    assert "is in prod" not in line

    # 4. The same, assigned by hand with gto: CI's check withdraws it.
    gto("assign", NAME, "--version", "v1.1.0", "--stage", "prod", cwd=repo)
    assert registry.resolve(repo, stage="prod").version == "v1.1.0"
    bypass = max(
        (t for t in git("tag", cwd=repo).split() if t.startswith(f"{NAME}#prod#")),
        key=lambda t: int(t.rsplit("#", 1)[1]),
    )
    check = fmnist("check-tag", bypass, "--reject", cwd=repo, check=False)
    refused(check, "breaks the promotion rules (withdrawn: unassigned)", "test.accuracy")
    assert registry.resolve(repo, stage="prod").version == "v1.0.1"

    # 5. Deprecate prod (unassign v1.0.1): prod is v1.0.0 again, however it is fetched.
    gto("deprecate", NAME, "v1.0.1", "prod", cwd=repo)
    shutil.rmtree(repo / ".dvc" / "cache")  # so packages come from the remote
    v100 = git("rev-parse", f"{NAME}@v1.0.0^{{commit}}", cwd=repo).strip()

    got = tmp_path / "served"
    out = fmnist("get", "--stage", "prod", "-o", str(got), cwd=repo).stdout
    assert out.startswith(f"{NAME} v1.0.0 (stage prod, commit {v100[:7]}) -> {got}")
    params = json.loads((got / "metadata/params.json").read_text())
    assert params["evaluate"]["misclassified"] == 5  # v1.0.0's, not v1.0.1's 3

    verify = fmnist("verify-package", "--stage", "prod", cwd=repo).stdout
    assert verify.startswith(f"{NAME} v1.0.0 (stage prod, commit {v100[:7]})")
    for name in ("prod", f"{NAME}#prod"):
        record = json.loads(fmnist("lineage", name, "--json", cwd=repo).stdout)
        assert record["commit"] == v100 and record["versions"] == ["v1.0.0"]
        assert record["problems"] == []
    shown = helpers.run([GTO, "show", f"{NAME}#prod", "--plain"], cwd=repo).stdout
    assert "v1.0.0" in shown and "v1.0.1" not in shown

    images, _ = load_split(repo / "data/prepared/test.npz")
    Image.fromarray(images[0]).save(tmp_path / "img.png")
    proc = fmnist(
        "predict", "--stage", "prod", "--averaged", "--json", "-k", "1", str(tmp_path / "img.png"),
        cwd=repo,
    )  # fmt: skip
    answer = json.loads(proc.stdout)
    assert answer["model"] == {"version": "v1.0.0", "stage": "prod", "commit": v100}
    top = answer["results"][0]["top"][0]
    first = git("show", f"{NAME}@v1.0.0:metrics/predictions.csv", cwd=repo).splitlines()[1]
    assert top["class"] == first.split(",")[1]  # as evaluation of that version predicted

    # What the docs do not recommend for stages: DVC takes the newest tag naming prod, the
    # unassignment of v1.0.1, and serves the withdrawn version.
    dvc_got = tmp_path / "dvc-prod"
    dvc("artifacts", "get", ".", NAME, "--stage", "prod", "-o", str(dvc_got), cwd=repo)
    assert (
        json.loads((dvc_got / "metadata/params.json").read_text())["evaluate"]["misclassified"] == 3
    )


def test_the_savedmodel_stores_each_weight_once(reproduced_repo):
    package = reproduced_repo / "models/package"
    reader = tf.train.load_checkpoint(str(package / "variables/variables"))
    stored = sum(
        int(np.prod(shape))
        for name, shape in reader.get_variable_to_shape_map().items()
        if "OBJECT_GRAPH" not in name
    )
    model = saving.load_model(package / "model.keras")
    assert stored == sum(int(np.prod(v.shape)) for v in model.variables)
    assert stored == model.count_params()  # no state beyond the weights in this architecture


def test_predict_refuses_a_crc_valid_tampered_model(reproduced_repo, tmp_path):
    package = tmp_path / "package"
    shutil.copytree(reproduced_repo / "models/package", package)
    model = package / "model.keras"
    rezip(reproduced_repo / "models/package/model.keras", model, zero_first_kernel)
    with zipfile.ZipFile(model) as archive:
        assert archive.testzip() is None
    images, _ = load_split(reproduced_repo / "data/prepared/test.npz")
    Image.fromarray(images[0]).save(tmp_path / "img.png")
    proc = fmnist("predict", str(package), str(tmp_path / "img.png"), cwd=tmp_path, check=False)
    refused(proc, f"{model}: SHA-256", "differs from the manifest")
    assert proc.stdout == ""


def python_that_edits_params_after_evaluate(tmp_path: Path) -> dict:
    """A `python3` first in PATH that runs the real one, then, once `evaluate` has run (its
    params read), sets evaluate.misclassified to 16 in params.yaml: what a second command
    (`dvc exp run -S evaluate.misclassified=16`) did while `dvc repro` ran, before DVC wrote
    dvc.lock from the file."""
    shim = tmp_path / "bin" / "python3"
    shim.parent.mkdir()
    shim.write_text(
        "#!/bin/sh\n"
        f'"{sys.executable}" "$@"\n'
        "status=$?\n"
        'case "$*" in *"fmnist.stages evaluate"*)\n'
        "  sed -i 's/misclassified: 25/misclassified: 16/' params.yaml ;;\n"
        "esac\n"
        "exit $status\n"
    )
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"}


def test_two_commands_at_once_are_caught_at_package(repo, tmp_path):
    helpers.set_params(repo / "params.yaml", {"evaluate.misclassified": 25})
    dvc("repro", "-s", "evaluate", cwd=repo, env=python_that_edits_params_after_evaluate(tmp_path))
    record = json.loads((repo / "metrics/provenance/evaluate.json").read_text())
    assert record["params"]["evaluate.misclassified"] == 25  # what evaluate ran with
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["evaluate"]
    assert lock["params"]["params.yaml"]["evaluate.misclassified"] == 16  # what DVC recorded
    status = dvc("status", cwd=repo).stdout
    assert "package:" in status and "evaluate:" not in status  # DVC sees nothing wrong
    proc = dvc("repro", cwd=repo, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "evaluate ran with evaluate.misclassified=25 (params.yaml: 16)" in errors[0]
    assert "evaluate.misclassified=25 (dvc.lock: 16)" in errors[0]
    assert "`dvc repro -f -s evaluate`" in errors[0]
    # And once evaluate is rerun, the package is made.
    dvc("repro", "-f", "-s", "evaluate", cwd=repo)
    dvc("repro", cwd=repo)
    params = json.loads((repo / "models/package/metadata/params.json").read_text())
    assert params["evaluate"]["misclassified"] == 16

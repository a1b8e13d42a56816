"""Warm start: `train.init_from` names a registered version whose weights start training.

Fast tests: resolving a version or a stage, where the registry is when DVC runs a stage in a
copy, and loading a parent's weights (or refusing another architecture). The slow story runs
on the tiny repository: register a model, push it to a local DVC remote, then train from it
through the `parent` stage, and fail early for a missing version, another architecture and an
unreachable remote.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from gto import api as gto_api

import helpers
from fmnist.errors import ParamsError, PipelineError
from fmnist.model import architectures, saving
from fmnist.params import ModelParams, Params, params_from_dict, params_to_dict
from fmnist.serving import layout
from fmnist.stages import parent, train
from fmnist.tools import registry, tune
from helpers import dvc, git

NAME = registry.ARTIFACT
SMALL = ModelParams(filters=(8, 16, 16), tta_shift=0)


@pytest.mark.parametrize(
    "ref", ["", "prod", "fashion-mnist-cnn@v1.2.0", "v1.2.0", "fashion-mnist-cnn#staging"]
)
def test_init_from_accepts_a_version_a_stage_or_nothing(ref):
    data = params_to_dict(Params())
    data["train"]["init_from"] = ref
    assert params_from_dict(data).train.init_from == ref


@pytest.mark.parametrize("ref", ["v1.2", "latest version", "@v1.0.0", "models/package"])
def test_init_from_refuses_anything_else(ref):
    data = params_to_dict(Params())
    data["train"]["init_from"] = ref
    with pytest.raises(ParamsError, match="train.init_from"):
        params_from_dict(data)


@pytest.fixture
def registry_repo(tmp_path) -> Path:
    """A git repo with versions v1.0.0 and v1.1.0 registered, v1.0.0 in prod (GTO tags)."""
    repo = tmp_path / "registry"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    for n in (1, 2):
        git("-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", f"c{n}",
            "--allow-empty", cwd=repo)  # fmt: skip
    author = {"author": "t", "author_email": "t@e"}
    gto_api.register(str(repo), NAME, "HEAD~1", version="v1.0.0", **author)
    gto_api.register(str(repo), NAME, "HEAD", version="v1.1.0", **author)
    gto_api.assign(str(repo), NAME, "prod", version="v1.0.0", **author)
    return repo


@pytest.mark.parametrize(
    ("ref", "version"),
    [
        (f"{NAME}@v1.1.0", "v1.1.0"),
        ("v1.0.0", "v1.0.0"),
        ("prod", "v1.0.0"),
        (f"{NAME}#prod", "v1.0.0"),
    ],
)
def test_a_version_or_a_stage_resolves_to_a_registered_version(registry_repo, ref, version):
    assert registry.resolve_ref(registry_repo, ref).version == version


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (f"{NAME}@v9.9.9", r"@v9.9.9 is not registered .* \(registered: v1.0.0, v1.1.0;"),
        ("staging", f"no version of {NAME} is in stage staging"),
        ("other-model@v1.0.0", "names the artifact 'other-model'"),
    ],
)
def test_a_missing_version_or_stage_is_named(registry_repo, ref, message):
    with pytest.raises(PipelineError, match=message):
        registry.resolve_ref(registry_repo, ref)


def test_the_registry_is_the_project_even_inside_a_dvc_experiment_copy(tmp_path, monkeypatch):
    monkeypatch.delenv(parent.REGISTRY_VARIABLE, raising=False)
    project = tmp_path / "project"
    copy = project / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12"
    copy.mkdir(parents=True)
    assert parent.registry_repo(copy) == project
    assert parent.registry_repo(project) == project
    monkeypatch.setenv(parent.REGISTRY_VARIABLE, str(tmp_path / "elsewhere"))
    assert parent.registry_repo(copy) == tmp_path / "elsewhere"


def test_no_parent_is_a_directory_with_a_note_only(tmp_path):
    assert parent.fetch_parent("", tmp_path, tmp_path / "parent") == {"init_from": ""}
    assert [p.name for p in (tmp_path / "parent").iterdir()] == [parent.NO_PARENT_FILE]


def write_package(path: Path, model: keras.Model, p: ModelParams) -> None:
    """A package directory as `layout.load_package` reads it (model, metadata, manifest)."""
    saving.save_model(saving.for_inference(model, p), path / layout.MODEL_FILE)
    meta = path / layout.METADATA_DIR
    meta.mkdir()
    data = params_to_dict(dataclasses.replace(Params(), model=p))
    for name, content in (
        (layout.PARAMS_FILE, data),
        (layout.CLASS_NAMES_FILE, []),
        (layout.METRICS_FILE, {}),
        (layout.LINEAGE_FILE, {}),
    ):
        (meta / name).write_text(json.dumps(content))
    layout.write_manifest(path)  # the last file written, as the package stage writes it


def test_warm_start_gives_the_built_model_the_parents_weights(tmp_path):
    trained = architectures.build(SMALL)
    trained.set_weights([np.full(w.shape, 0.5, w.dtype) for w in trained.get_weights()])
    write_package(tmp_path / "pkg", trained, dataclasses.replace(SMALL, tta_flip=True))
    fresh = architectures.build(SMALL)
    params = dataclasses.replace(Params(), model=SMALL)
    train.warm_start(fresh, tmp_path / "pkg", params, "prod")
    for got, want in zip(fresh.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_warm_start_refuses_another_architecture_naming_the_params(tmp_path):
    write_package(tmp_path / "pkg", architectures.build(SMALL), SMALL)
    wider = dataclasses.replace(SMALL, filters=(16, 16, 16))
    model = architectures.build(wider)
    params = dataclasses.replace(Params(), model=wider)
    with pytest.raises(PipelineError, match=r"another architecture .*model\.filters"):
        train.warm_start(model, tmp_path / "pkg", params, "fashion-mnist-cnn@v1.0.0")


def test_the_parent_record_must_be_for_the_params_init_from(tmp_path):
    (tmp_path / "parent.json").write_text(json.dumps({"init_from": "prod", "version": "v1.0.0"}))
    assert train.parent_record(tmp_path / "parent", "prod")["version"] == "v1.0.0"
    assert train.parent_record(tmp_path / "parent", "") == {"init_from": ""}
    with pytest.raises(PipelineError, match="run `dvc repro parent`"):
        train.parent_record(tmp_path / "parent", "v1.1.0")


# --- the story on the tiny repository ---------------------------------------------------------

GTO = shutil.which("gto", path=str(Path(sys.executable).parent)) or "gto"


def first_epoch_loss(repo: Path) -> float:
    rows = (repo / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()
    return float(rows[1].split("\t")[1])


def lock_out(lock: dict, stage: str, path: str) -> str:
    (md5,) = [o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == path]
    return md5


@pytest.fixture(scope="module")
def registered(reproduced_repo, tmp_path_factory) -> Path:
    """A copy of the reproduced repo whose model is v1.0.0, in prod, its package in a local
    DVC remote; the DVC cache is emptied, so a parent can only come from the remote."""
    repo = tmp_path_factory.mktemp("warm") / "repo"
    shutil.copytree(reproduced_repo, repo, symlinks=True)
    shutil.copy(helpers.ROOT / ".gto", repo / ".gto")
    dvc("remote", "add", "-d", "local", str(repo.parent / "remote"), cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "first model", cwd=repo)
    dvc("push", "-q", cwd=repo)
    helpers.run([GTO, "register", NAME, "--version", "v1.0.0"], cwd=repo)
    helpers.run([GTO, "assign", NAME, "--version", "v1.0.0", "--stage", "prod"], cwd=repo)
    shutil.rmtree(repo / ".dvc" / "cache")
    return repo


@pytest.mark.slow
def test_a_warm_started_run_starts_lower_and_records_its_parent(registered, reproduced_repo):
    repo = registered
    helpers.set_params(repo / "params.yaml", {"train.init_from": "prod"})
    dvc("repro", cwd=repo)
    assert first_epoch_loss(repo) < first_epoch_loss(reproduced_repo)
    # What it started from: the registered package, by its DVC hash, in dvc.lock.
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    registered_lock = yaml.safe_load(git("show", f"{NAME}@v1.0.0:dvc.lock", cwd=repo))
    assert lock_out(lock, "parent", "models/parent") == lock_out(
        registered_lock, "package", "models/package"
    )
    assert any(d["path"] == "models/parent" for d in lock["stages"]["train"]["deps"])
    tag_commit = git("rev-list", "-n1", f"{NAME}@v1.0.0", cwd=repo).strip()
    expected = {
        "init_from": "prod",
        "version": "v1.0.0",
        "tag": f"{NAME}@v1.0.0",
        "commit": tag_commit,
    }
    assert json.loads((repo / "metrics/runs/train.json").read_text())["parent"] == expected
    lineage = json.loads((repo / "models/package/metadata/lineage.json").read_text())
    assert lineage["training"]["parent"] == expected


def fails_before_training(repo: Path, overrides: dict, *repro: str) -> str:
    """Set `overrides`, run `dvc repro REPRO...`: it must fail with one clear line, untrained."""
    params = repo / "params.yaml"
    before = params.read_text()
    helpers.set_params(params, overrides)
    try:
        proc = dvc("repro", *repro, cwd=repo, check=False)
    finally:
        params.write_text(before)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "Epoch 1/" not in proc.stdout  # it stopped before training
    return errors[0]


@pytest.mark.slow
def test_a_missing_version_fails_naming_it(registered):
    line = fails_before_training(registered, {"train.init_from": f"{NAME}@v9.9.9"}, "train")
    assert f"{NAME}@v9.9.9 is not registered" in line and "v1.0.0" in line


@pytest.mark.slow
def test_another_architecture_fails_before_training_naming_the_params(registered):
    line = fails_before_training(
        registered, {"train.init_from": "v1.0.0", "model.filters": [8, 16, 16]}, "train"
    )
    assert "another architecture" in line and "model.filters" in line


@pytest.mark.slow
def test_an_unreachable_remote_fails_naming_it(registered):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = registered / ".dvc" / "config.local"
    dvc("remote", "add", "--local", "-d", "cloud", "gs://fmnist-test/store", cwd=registered)
    dvc("remote", "modify", "--local", "cloud", "endpointurl", f"http://127.0.0.1:{port}",
        cwd=registered)  # fmt: skip
    try:
        # -f: the parent of v1.0.0 may be in dvc.lock already (DVC would not run the stage).
        line = fails_before_training(registered, {"train.init_from": "v1.0.0"}, "-f", "parent")
    finally:
        config.unlink()
    assert f"cannot fetch {NAME}@v1.0.0" in line and f"cannot connect to 127.0.0.1:{port}" in line


def test_a_study_pins_a_stage_to_its_version_for_every_trial(registry_repo):
    base = params_to_dict(Params())
    pinned = tune.pin_init_from({"train.init_from": "prod", "train.epochs": 5}, base, registry_repo)
    assert pinned == {"train.init_from": f"{NAME}@v1.0.0", "train.epochs": 5}
    assert tune.pin_init_from({}, base, registry_repo) == {}  # the workspace's "": scratch
    with pytest.raises(PipelineError, match="not registered"):
        tune.pin_init_from({"train.init_from": "v2.0.0"}, base, registry_repo)

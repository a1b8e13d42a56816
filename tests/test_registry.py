"""The registry: semantic versions from params and GTO tags (the release flow end to end is
tests/test_release.py; stage lookups and gates on GTO tags, tests/test_promote.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

import helpers
from fmnist.errors import PipelineError
from fmnist.params import Params, TrainParams, params_to_dict, with_overrides
from fmnist.tools import registry
from helpers import git

NAME = registry.ARTIFACT


def defaults() -> dict:
    return params_to_dict(Params())


def changed(**dotted) -> dict:
    """The default params with `model__arch=...`-style keys set."""
    return with_overrides(defaults(), {k.replace("__", "."): v for k, v in dotted.items()})


def test_dvc_yaml_declares_the_packaged_model_and_gto_its_stages():
    dvc_yaml = yaml.safe_load((helpers.ROOT / "dvc.yaml").read_text())
    artifact = dvc_yaml["artifacts"][NAME]
    assert artifact["type"] == "model" and artifact["desc"] and artifact["labels"]
    assert artifact["path"] in dvc_yaml["stages"]["package"]["outs"]
    gto_config = yaml.safe_load((helpers.ROOT / ".gto").read_text())
    assert gto_config == {"types": ["model"], "stages": ["dev", "staging", "prod"]}


# --- pure functions -------------------------------------------------------------------------


def test_versions_parse_and_format():
    assert registry.parse_version("v1.20.3") == (1, 20, 3)
    assert registry.format_version((1, 20, 3)) == "v1.20.3"
    for bad in ("1.2.3", "v1.2", "v1.2.3-rc1", "latest"):
        with pytest.raises(PipelineError, match="not a version"):
            registry.parse_version(bad)


def test_registered_versions_ignores_stage_deprecation_and_other_artifacts():
    tags = [
        f"{NAME}@v1.0.0",
        f"{NAME}@v1.10.0",
        f"{NAME}@v1.2.0",
        f"{NAME}#prod#1",
        f"{NAME}@v1.2.0!#3",
        "other-model@v9.0.0",
        "v2.0.0",
    ]
    versions = registry.registered_versions(tags)
    assert versions == {(1, 0, 0): tags[0], (1, 10, 0): tags[1], (1, 2, 0): tags[2]}
    assert max(versions) == (1, 10, 0)  # numeric, not string, order


@pytest.mark.parametrize(
    ("new", "level", "version"),
    [
        (changed(model__arch="bn_cnn"), "major", (2, 0, 0)),
        (changed(model__filters=[16, 32, 64]), "major", (2, 0, 0)),
        (changed(model__kernel_size=5), "major", (2, 0, 0)),
        (changed(model__dropout=0.4), "minor", (1, 3, 0)),
        (changed(train__learning_rate=0.01), "minor", (1, 3, 0)),
        (changed(train__augment__zoom=0.15), "minor", (1, 3, 0)),
        (changed(prepare__val_fraction=0.2), "minor", (1, 3, 0)),
        (changed(evaluate__misclassified=3), "patch", (1, 2, 4)),
        (changed(package__latency_runs=10), "patch", (1, 2, 4)),
        (defaults(), "patch", (1, 2, 4)),  # same params: code or data changed
        (changed(model__arch="dense", train__epochs=5, fetch__timeout_s=5.0), "major", (2, 0, 0)),
    ],
)
def test_propose_follows_the_seed_rule(new, level, version):
    proposal = registry.propose((1, 2, 3), defaults(), new)
    assert (proposal.level, proposal.version) == (level, version)


def test_an_architecture_key_added_later_is_major():
    assert registry.change_level("model.convs_per_stage") == "major"
    assert registry.change_level("model.dropout") == "minor"
    assert registry.change_level("modelling.x") == "patch"


def test_propose_lists_the_changes_and_starts_at_v1():
    proposal = registry.propose((1, 0, 0), defaults(), changed(train__epochs=5))
    assert proposal.changes == {"train.epochs": (Params().train.epochs, 5)}
    assert registry.propose(None, None, defaults()).version == (1, 0, 0)


def test_a_key_new_since_the_last_version_counts_by_its_group():
    old = defaults()
    del old["package"]  # registered before the `package` group existed
    proposal = registry.propose((1, 0, 0), old, defaults())
    assert proposal.level == "patch" and "package.latency_runs" in proposal.changes
    del old["train"]["augment"]
    assert registry.propose((1, 0, 0), old, defaults()).level == "minor"


def test_the_same_number_spelled_differently_is_no_change():
    old = defaults()
    old["train"]["reduce_lr"]["min_lr"] = "1e-07"  # how PyYAML reads a dumped 1e-07
    assert registry.propose((1, 0, 0), old, defaults()).changes == {}


# --- the command, in a throwaway git repo (no TensorFlow) -----------------------------------


def next_version(repo: Path) -> tuple[str, str]:
    proc = helpers.run([sys.executable, "-m", "fmnist.cli", "next-version"], cwd=repo)
    return proc.stdout.strip(), proc.stderr


def test_next_version_reads_the_latest_tag_params(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(helpers.ROOT / "params.yaml", repo / "params.yaml")
    git("init", "-q", cwd=repo)
    git(
        "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "x", "--allow-empty", cwd=repo
    )
    assert next_version(repo)[0] == "v1.0.0"
    git("add", "params.yaml", cwd=repo)
    git("-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "params", cwd=repo)
    git("tag", f"{NAME}@v1.2.3", cwd=repo)
    git("tag", f"{NAME}@v1.1.9", cwd=repo)
    assert next_version(repo)[0] == "v1.2.4"
    helpers.set_params(repo / "params.yaml", {"train.learning_rate": 0.5})
    version, explained = next_version(repo)
    assert version == "v1.3.0"
    rate = TrainParams().learning_rate  # params.yaml's, as the tag holds it
    assert f"latest: {NAME}@v1.2.3" in explained
    assert f"train.learning_rate: {rate} -> 0.5" in explained
    helpers.set_params(repo / "params.yaml", {"model.arch": "bn_cnn"})
    assert next_version(repo)[0] == "v2.0.0"

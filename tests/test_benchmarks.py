"""The accuracy benchmarks run: on the tiny data, for one epoch, each as the README runs it.

`benchmarks/seed_scripts.py` (the seeds' recipes as plain Keras scripts) and
`benchmarks/recipe_runs.py` (the recipes as DVC experiments) are where the README's accuracy figures
come from; a broken one would otherwise only show up in the next 20-minute benchmark.
"""

from __future__ import annotations

import re
import shutil
import sys

import pytest

from fmnist.model import architectures
from helpers import ROOT, dvc, git, recipe_params, run

BENCHMARKS = ROOT / "benchmarks"
SCRIPT = BENCHMARKS / "seed_scripts.py"
ENV = {"PYTHONPATH": f"{ROOT / 'src'}:{BENCHMARKS}"}


def table_rows(stdout: str) -> list[dict[str, str]]:
    """The result rows of a script's table, by column."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header, _, *rows = lines
    names = [cell.strip() for cell in header.strip("|").split("|")]
    return [dict(zip(names, (cell.strip() for cell in row.strip("|").split("|")))) for row in rows]


def table_row(stdout: str) -> dict[str, str]:
    """The one result row of a script's table, by column."""
    rows = table_rows(stdout)
    assert len(rows) == 1, stdout
    return rows[0]


def parameters(recipe: str) -> str:
    """The pipeline's parameter count for `recipe`, as the tables print it."""
    return f"{architectures.build(recipe_params(recipe).model).count_params():,}"


@pytest.mark.slow
@pytest.mark.parametrize("augmentation", ["ImageDataGenerator", "layers"])
def test_seed_script_trains_the_writeup_recipe_in_plain_keras(reproduced_repo, augmentation):
    cmd = [sys.executable, str(SCRIPT), "--recipe", "writeup", "-S", "train.epochs=1"]
    cmd += ["--data", str(reproduced_repo / "data" / "prepared"), "--seeds", "3"]
    cmd += ["--augmentation", augmentation]
    proc = run(cmd, cwd=ROOT, env=ENV)

    assert f"augmentation {augmentation}" in proc.stdout
    row = table_row(proc.stdout)
    assert row["seed"] == "3"
    # The pipeline's network for the recipe: augmentation layers in front of it add no weights.
    assert row["parameters"] == parameters("writeup")
    assert row["epochs (best)"] == "1 (1)"
    for split in ("val accuracy", "test accuracy"):
        assert 0 <= float(re.fullmatch(r"([\d.]+)%", row[split])[1]) <= 100


@pytest.mark.slow
def test_recipes_benchmark_runs_each_recipe_from_the_same_params_and_never_clobbers(tiny_repo):
    shutil.copy(ROOT / "recipes.yaml", tiny_repo / "recipes.yaml")
    git("add", "recipes.yaml", cwd=tiny_repo)
    git("commit", "-qm", "recipes", cwd=tiny_repo)
    # notebook first: a workspace experiment leaves its params behind, and `default` sets none.
    cmd = [sys.executable, str(BENCHMARKS / "recipe_runs.py"), "notebook", "default"]
    cmd += ["--seeds", "5", "-S", "train.epochs=1"]
    proc = run(cmd, cwd=tiny_repo, env=ENV)

    rows = table_rows(proc.stdout)
    assert [(r["recipe"], r["seed"], r["epochs"]) for r in rows] == [
        ("notebook", "5", "1"),
        ("default", "5", "1"),
    ]
    assert [r["parameters"] for r in rows] == [parameters("notebook"), parameters("default")]
    for row in rows:
        assert 0 <= float(re.fullmatch(r"([\d.]+)%", row["test accuracy"])[1]) <= 100
    shown = dvc("exp", "show", "--json", cwd=tiny_repo).stdout
    assert "bench-notebook-seed5" in shown and "bench-default-seed5" in shown

    # Again: the names are taken, so it stops before running anything and changes nothing.
    before = (tiny_repo / "params.yaml").read_text()
    proc = run(cmd, cwd=tiny_repo, env=ENV, check=False)
    assert proc.returncode != 0
    assert "bench-default-seed5, bench-notebook-seed5 already exist" in proc.stderr
    assert (tiny_repo / "params.yaml").read_text() == before
    # Once removed, the same params again: trained again (no run cache: docs/pipeline.md), to
    # the same model.
    dvc("exp", "remove", "bench-notebook-seed5", cwd=tiny_repo)
    proc = run(cmd[:3] + cmd[4:], cwd=tiny_repo, env=ENV)
    assert table_row(proc.stdout)["test accuracy"] == rows[0]["test accuracy"]


@pytest.mark.slow
def test_determinism_benchmark_trains_each_setting_twice_and_compares_the_bytes(
    reproduced_repo,
):
    settings = ["float32, oneDNN on", "float32, oneDNN off"]
    cmd = [sys.executable, str(BENCHMARKS / "determinism.py"), "--images", "64", "--epochs", "1"]
    cmd += ["--data", str(reproduced_repo / "data" / "prepared"), "--settings", *settings]
    cmd += ["-S", "train.batch_size=16"]
    proc = run(cmd, cwd=ROOT, env=ENV)
    rows = table_rows(proc.stdout)
    assert [row["setting"] for row in rows] == [f"{i}. {s}" for i, s in enumerate(settings, 1)]
    # The pipeline's promise: the same setting on the same machine trains the same bytes.
    assert rows[0]["runs identical"] == "yes"
    assert rows[0]["same weights as 'float32, oneDNN on'"] == "yes"
    assert len(rows[0]["model.keras SHA-256"].split()) == 1
    assert "versions:" in proc.stdout and '"tensorflow"' in proc.stdout

"""The plain-Keras reference script (`benchmarks/seed_scripts.py`) runs a recipe as the seeds did.

It is the script that the README's reference figures for the seed recipes come from, so it is
run here, on the tiny prepared data, for one epoch: a broken script would otherwise only show
up in the next 20-minute benchmark.
"""

from __future__ import annotations

import re
import sys

import pytest

from fmnist import models
from helpers import ROOT, recipe_params, run

SCRIPT = ROOT / "benchmarks" / "seed_scripts.py"


def table_row(stdout: str) -> dict[str, str]:
    """The one result row of the script's table, by column."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header, _, *rows = lines
    assert len(rows) == 1, stdout
    names = [cell.strip() for cell in header.strip("|").split("|")]
    return dict(zip(names, (cell.strip() for cell in rows[0].strip("|").split("|"))))


@pytest.mark.slow
@pytest.mark.parametrize("augmentation", ["ImageDataGenerator", "layers"])
def test_seed_script_trains_the_writeup_recipe_in_plain_keras(reproduced_repo, augmentation):
    cmd = [sys.executable, str(SCRIPT), "--recipe", "writeup", "-S", "train.epochs=1"]
    cmd += ["--data", str(reproduced_repo / "data" / "prepared"), "--seeds", "3"]
    cmd += ["--augmentation", augmentation]
    proc = run(cmd, cwd=ROOT, env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'benchmarks'}"})

    assert f"augmentation {augmentation}" in proc.stdout
    row = table_row(proc.stdout)
    assert row["seed"] == "3"
    # The pipeline's network for the recipe: augmentation layers in front of it add no weights.
    assert row["parameters"] == f"{models.build(recipe_params('writeup').model).count_params():,}"
    assert row["epochs (best)"] == "1 (1)"
    for split in ("val accuracy", "test accuracy"):
        assert 0 <= float(re.fullmatch(r"([\d.]+)%", row[split])[1]) <= 100

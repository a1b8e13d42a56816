"""Named recipes are valid params and turn into clean `dvc exp run -S` arguments."""

from __future__ import annotations

import math

import pytest
import yaml

from fmnist.errors import ParamsError
from fmnist.params import with_overrides
from fmnist.tools.recipe import (
    load_recipes,
    parse_set_options,
    recipe_params,
    recipe_with_sets,
    set_arguments,
)
from fmnist.tools.recipe import main as recipe_main
from helpers import ROOT

RECIPES = load_recipes(ROOT / "recipes.yaml")
BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_is_valid_params(name):
    params = recipe_params(name, RECIPES, BASE)
    assert params.model.arch == RECIPES[name].get("model.arch", BASE["model"]["arch"])


def test_set_options_read_as_dvc_exp_run_reads_them_and_round_trip():
    overrides = {"model.filters": [16, 48, 64], "train.augment.fill_mode": "nearest"}
    assert parse_set_options(set_arguments(overrides)[1::2]) == overrides
    parsed = parse_set_options(["train.epochs=15", "train.learning_rate=1e-3", "x.y=a=b"])
    assert parsed == {"train.epochs": 15, "train.learning_rate": "1e-3", "x.y": "a=b"}
    with pytest.raises(ParamsError, match="-S 'train.epochs': expected KEY=VALUE"):
        parse_set_options(["train.epochs"])


def test_sets_go_on_top_of_the_recipe_on_top_of_params_yaml(monkeypatch):
    monkeypatch.chdir(ROOT)
    params = recipe_with_sets("notebook", ["train.epochs=3", "train.learning_rate=1e-3"])
    assert (params.model.arch, params.train.epochs) == ("gap_cnn", 3)  # the recipe, then -S
    assert params.train.learning_rate == 0.001
    assert params.evaluate.batch_size == BASE["evaluate"]["batch_size"]  # params.yaml
    with pytest.raises(ParamsError, match="no recipe 'fast'; recipes: default, notebook"):
        recipe_with_sets("fast", [])
    with pytest.raises(ParamsError, match="'train.epoch' is not a key"):
        recipe_with_sets("default", ["train.epoch=3"])


@pytest.mark.parametrize(
    ("params_text", "problem"),
    [(None, "params.yaml: file not found"), ("train: [\n", "params.yaml: not valid YAML")],
)
def test_a_missing_or_malformed_params_yaml_is_a_params_error(
    params_text, problem, tmp_path, monkeypatch, capsys
):
    (tmp_path / "recipes.yaml").write_text((ROOT / "recipes.yaml").read_text())
    if params_text is not None:
        (tmp_path / "params.yaml").write_text(params_text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParamsError, match=problem):
        recipe_with_sets("quick", [])
    assert recipe_main(["quick"]) == 1
    assert problem in capsys.readouterr().err


def test_the_default_recipe_is_params_yaml_as_it_is():
    assert RECIPES["default"] == {}
    assert set_arguments(RECIPES["default"]) == []


def test_the_seed_recipes_are_the_seeds():
    notebook = recipe_params("notebook", RECIPES, BASE)
    assert (notebook.model.arch, notebook.train.batch_size, notebook.train.reduce_lr.factor) == (
        "gap_cnn",
        128,
        0.5,
    )
    writeup = recipe_params("writeup", RECIPES, BASE)
    assert writeup.train.batch_size == 32 and writeup.train.augment.rotation_deg == 15.0
    assert writeup.train.reduce_lr.factor == 0.2 and writeup.train.reduce_lr.min_lr == 1e-6
    # Padding as each seed's Keras code gets it: the notebook says 'same'; the write-up says
    # none, so Conv2D's default. The write-up's shear range is ImageDataGenerator's 0.15°.
    assert (notebook.model.padding, writeup.model.padding) == ("same", "valid")
    assert writeup.train.augment.shear == pytest.approx(math.tan(math.radians(0.15)), abs=1e-4)
    # The seeds' plain loss, float32 and no test-time augmentation, whatever the default is.
    for seed in (notebook, writeup):
        assert seed.train.label_smoothing == 0.0
        assert seed.train.precision == "float32"
        assert (seed.model.tta_flip, seed.model.tta_shift) == (False, 0)


def test_set_arguments_are_single_words():
    args = set_arguments({"model.filters": [16, 40, 72], "train.augment.horizontal_flip": True})
    assert args == ["-S", "model.filters=[16,40,72]", "-S", "train.augment.horizontal_flip=true"]


def test_unknown_recipe_or_key_is_named():
    with pytest.raises(ParamsError, match="no recipe 'fast'; recipes: default, notebook"):
        recipe_params("fast", RECIPES, BASE)
    with pytest.raises(ParamsError, match="^'train.epoch' is not a key of params.yaml"):
        with_overrides(BASE, {"train.epoch": 3})
    with pytest.raises(ParamsError, match="^recipe 'typo': 'train.epoch' is not a key"):
        recipe_params("typo", {**RECIPES, "typo": {"train.epoch": 3}}, BASE)

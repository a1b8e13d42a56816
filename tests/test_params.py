"""Params are read once into a typed object; every mistake names its key."""

from __future__ import annotations

import pytest
import yaml

from fmnist.errors import ParamsError
from fmnist.params import Params, load_params, params_from_dict, params_to_dict
from fmnist.tools.recipe import apply
from helpers import ROOT


def defaults() -> dict:
    return params_to_dict(Params())


def with_value(dotted: str, value) -> dict:
    return apply(defaults(), {dotted: value})


def test_params_yaml_holds_exactly_the_documented_defaults():
    assert load_params(ROOT / "params.yaml") == Params()


def test_round_trip_through_dict():
    assert params_from_dict(defaults()) == Params()


def test_unknown_key_is_named_with_a_suggestion():
    data = defaults()
    data["train"]["learning_rte"] = 0.01
    with pytest.raises(
        ParamsError,
        match=r"unknown key 'train.learning_rte' \(did you mean 'train.learning_rate'\?\)",
    ):
        params_from_dict(data)


def test_unknown_top_level_group():
    data = defaults() | {"trian": {"epochs": 5}}
    with pytest.raises(ParamsError, match="unknown key 'trian'.*did you mean 'train'"):
        params_from_dict(data)


def test_missing_key_is_named_with_its_default():
    data = defaults()
    del data["train"]["epochs"]
    default = Params().train.epochs
    with pytest.raises(
        ParamsError, match=rf"missing key 'train.epochs' \(its default is {default}\)"
    ):
        params_from_dict(data)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.epochs", "abc", r"'train.epochs': expected an integer, got 'abc' \(str\)"),
        ("train.epochs", 2.5, "'train.epochs': expected an integer"),
        ("train.epochs", True, "'train.epochs': expected an integer"),
        ("train.deterministic", 1, "'train.deterministic': expected true or false"),
        ("train.learning_rate", "fast", "'train.learning_rate': expected a number"),
        ("train.learning_rate", float("nan"), "'train.learning_rate': expected a number"),
        ("fetch.source_dir", 3, "'fetch.source_dir': expected a string"),
        ("model.filters", 32, "'model.filters': expected a list"),
        ("model.filters", [32, "x", 128], r"'model.filters\[1\]': expected an integer"),
    ],
)
def test_wrong_types_are_named(key, value, message):
    with pytest.raises(ParamsError, match=message):
        params_from_dict(with_value(key, value))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.epochs", 0, "'train.epochs': 0 is out of range; it must be >= 1"),
        ("train.batch_size", -8, "'train.batch_size': -8 is out of range"),
        (
            "train.learning_rate",
            0,
            r"'train.learning_rate': 0.0 is out of range; it must be > 0 and <= 1",
        ),
        ("prepare.val_fraction", 0.9, "'prepare.val_fraction': 0.9 is out of range"),
        ("model.dropout", 1.5, "'model.dropout': 1.5 is out of range"),
        ("train.reduce_lr.factor", 0.0, "'train.reduce_lr.factor': 0.0 is out of range"),
    ],
)
def test_values_out_of_range_are_named(key, value, message):
    with pytest.raises(ParamsError, match=message):
        params_from_dict(with_value(key, value))


def test_choices_are_listed():
    with pytest.raises(
        ParamsError, match="'model.arch': 'resnet' .* is not one of gap_cnn, bn_cnn, dense"
    ):
        params_from_dict(with_value("model.arch", "resnet"))


def test_filters_need_three_positive_counts():
    with pytest.raises(ParamsError, match="model.filters: expected three positive filter counts"):
        params_from_dict(with_value("model.filters", [32, 64]))


def test_every_problem_is_reported_at_once():
    data = with_value("train.epochs", "abc")
    data["evaluate"]["bacth_size"] = 10
    with pytest.raises(ParamsError, match="2 problems") as info:
        params_from_dict(data)
    assert "train.epochs" in str(info.value) and "evaluate.bacth_size" in str(info.value)


def test_yaml_exponent_without_dot_is_a_number():
    # PyYAML reads `1e-3` as a string; it is still clearly a number.
    params = params_from_dict(with_value("train.learning_rate", "1e-3"))
    assert params.train.learning_rate == pytest.approx(0.001)


def test_ints_are_accepted_for_float_keys():
    assert params_from_dict(with_value("train.learning_rate", 1)).train.learning_rate == 1.0


def test_load_reports_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(with_value("train.epochs", "abc")))
    with pytest.raises(ParamsError, match=f"{path}: 'train.epochs'"):
        load_params(path)


def test_load_rejects_broken_yaml_and_missing_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(broken)
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "absent.yaml")


def test_validate_command_exit_codes(tmp_path, capsys):
    from fmnist.params import main

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(defaults()))
    assert main([str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_value("train.epochs", "abc")))
    assert main([str(bad)]) == 1
    assert "train.epochs" in capsys.readouterr().err

"""Params are read once into a typed object; every mistake names its key."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fmnist.errors import ParamsError
from fmnist.params import (
    Params,
    load_params,
    params_from_dict,
    params_to_dict,
    with_overrides,
)
from helpers import ROOT


def defaults() -> dict:
    return params_to_dict(Params())


def with_value(dotted: str, value) -> dict:
    return with_overrides(defaults(), {dotted: value})


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


def test_alternating_flips_without_flips_are_refused():
    """Alone, the switch would train without mirror images and look like a test of it."""
    alone = with_value("train.augment.horizontal_flip", False)
    alone["train"]["augment"]["alternate_flips"] = True
    with pytest.raises(ParamsError, match="set train.augment.horizontal_flip to true"):
        params_from_dict(alone)
    both = with_value("train.augment.alternate_flips", True)
    assert params_from_dict(both).train.augment.alternate_flips


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


def test_direct_construction_raises_params_error_naming_the_field():
    from fmnist.params import ModelParams, TrainParams

    with pytest.raises(ParamsError, match="'epochs': 0 is out of range; it must be >= 1"):
        TrainParams(epochs=0)
    with pytest.raises(ParamsError, match="filters: expected three positive filter counts"):
        ModelParams(filters=(8, 16))


def test_problems_are_listed_in_the_order_of_the_file():
    data = with_value("train.epochs", "abc")
    del data["fetch"]["timeout_s"]
    data["model"]["arch"] = "resnet"
    message = str(pytest.raises(ParamsError, params_from_dict, data).value)
    assert message.index("fetch.timeout_s") < message.index("model.arch")
    assert message.index("model.arch") < message.index("train.epochs")


def test_yaml_error_names_its_line(tmp_path):
    broken = tmp_path / "params.yaml"
    broken.write_text("train:\n  epochs: 5\n  batch_size: [unclosed\n")
    with pytest.raises(ParamsError, match=r"not valid YAML.*line \d+"):
        load_params(broken)


# --- the JSON Schema --------------------------------------------------------------------------

SCHEMA_FILE = ROOT / "params.schema.json"


def test_committed_schema_is_current():
    from fmnist.params import json_schema

    committed = json.loads(SCHEMA_FILE.read_text())
    assert committed == json_schema(), (
        "params.schema.json is stale: regenerate it with "
        "`PYTHONPATH=src python -m fmnist.params --schema > params.schema.json`"
    )


def test_params_yaml_names_its_schema_for_editors():
    first = (ROOT / "params.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=params.schema.json"


def test_schema_accepts_params_yaml_and_refuses_what_the_loader_refuses():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    assert list(validator.iter_errors(yaml.safe_load((ROOT / "params.yaml").read_text()))) == []
    for bad in (
        with_value("train.epochs", 0),
        with_value("train.learning_rate", True),
        with_value("model.arch", "resnet"),
        defaults() | {"trian": {}},
    ):
        assert list(validator.iter_errors(bad)), bad
    missing = defaults()
    del missing["train"]["epochs"]
    assert list(validator.iter_errors(missing))


def test_schema_documents_every_key_with_its_default():
    from fmnist.params import flatten, json_schema

    schema = json_schema()

    def node(dotted: str) -> dict:
        current = schema
        for key in dotted.split("."):
            current = current["properties"][key]
            if "$ref" in current:
                current = schema["$defs"][current["$ref"].rsplit("/", 1)[1]] | current
        return current

    for dotted, default in flatten(defaults()).items():
        assert node(dotted)["default"] == default, dotted
    assert "under-fits" in node("model.dropout")["description"]


def test_schema_command_prints_the_schema(capsys):
    from fmnist.params import json_schema, main

    assert main(["--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


@settings(max_examples=150, deadline=None)
@given(
    where=st.sampled_from([(), ("train",), ("train", "augment"), ("model",)]),
    key=st.one_of(st.text(max_size=6), st.integers(-3, 3), st.booleans(), st.none()),
    value=st.one_of(st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers())),
)
def test_any_key_anywhere_is_a_params_error_or_valid(where, key, value):
    """Keys YAML can spell (numbers, booleans, null, any text): never a traceback."""
    data = defaults()
    node = data
    for part in where:
        node = node[part]
    node[key] = value
    try:
        params_from_dict(data)
    except ParamsError as exc:
        assert "key" in str(exc) or "expected" in str(exc) or "range" in str(exc), str(exc)

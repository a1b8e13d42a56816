"""Contracts between dvc.yaml, params.yaml and the code, so the DAG stays a true map."""

from __future__ import annotations

import ast
import fnmatch
import functools
import re

import pytest
import yaml

from fmnist.cli import COMMANDS, entry_point
from fmnist.params import flatten
from fmnist.stages.__main__ import module_of
from helpers import ROOT

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
SRC = ROOT / "src" / "fmnist"


@functools.cache
def imports(module: str) -> frozenset[str]:
    """The modules that the fmnist module `module` (dotted, e.g. `fmnist.stages.train`) imports,
    by full name (`from fmnist.model import saving` counts as `fmnist.model.saving`)."""
    path = SRC.parent / (module.replace(".", "/") + ".py")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                is_module = (SRC.parent / (full.replace(".", "/") + ".py")).is_file()
                names.add(full if is_module else node.module)
    return frozenset(names)


def fmnist_imports(module: str) -> set[str]:
    """The fmnist modules `module` imports, directly or through others, itself included
    (packages' `__init__` modules hold only a docstring: they are not counted)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or not name.startswith("fmnist."):
            continue
        if not (SRC.parent / (name.replace(".", "/") + ".py")).is_file():
            continue  # a package: its __init__ changes nothing
        seen.add(name)
        todo += imports(name)
    return seen


def runs_tensorflow(modules: set[str]) -> bool:
    """Whether any of `modules` imports TensorFlow or Keras, whose runtime the stages' entry
    point configures (so that it moves what such a stage computes)."""
    return any(n.split(".")[0] in ("tensorflow", "keras") for m in modules for n in imports(m))


# `python3 -m fmnist.stages NAME`: the entry point of every stage (fmnist/stages/__main__.py).
ENTRY = "fmnist.stages.__main__"


def stage_module(stage: dict) -> str:
    match = re.search(r"python3 -m fmnist\.stages (\w+)", stage["cmd"])
    assert match, f"stage command does not run the stages' entry point: {stage['cmd']}"
    return module_of(match[1])


def data_files(module: str) -> set[str]:
    """The package's non-Python files (templates) that `module` reads: those beside it whose
    name its source mentions."""
    path = SRC.parent / (module.replace(".", "/") + ".py")
    text = path.read_text()
    return {
        str(f.relative_to(ROOT))
        for f in path.parent.iterdir()
        if f.is_file() and f.suffix not in (".py", ".pyc") and f.name in text
    }


def expected_code_deps(stage: dict) -> set[str]:
    """The source files a stage's result depends on: its module and what that imports, the
    templates they read, and the entry point where it runs TensorFlow (the entry point sets
    TensorFlow's options)."""
    modules = fmnist_imports(stage_module(stage))
    if runs_tensorflow(modules):
        modules |= fmnist_imports(ENTRY)
    files = {"src/" + m.replace(".", "/") + ".py" for m in modules}
    return files.union(*(data_files(m) for m in modules))


def test_data_files_are_found():
    assert data_files("fmnist.dataset_versions") == {"src/fmnist/canonical_reference.npz"}


def leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        out += leaves(value, f"{dotted}.") if isinstance(value, dict) else [dotted]
    return out


def tracked_keys(stage: dict) -> list[str]:
    return [p for p in stage.get("params", []) if isinstance(p, str)]


def resolve(dotted: str):
    node = PARAMS
    for key in dotted.split("."):
        node = node[key]
    return node


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_deps_list_exactly_the_modules_it_imports(name):
    stage = STAGES[name]
    code_deps = {d for d in stage["deps"] if d.startswith("src/")}
    assert code_deps == expected_code_deps(stage)


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_params_exist(name):
    for key in tracked_keys(STAGES[name]):
        resolve(key)  # KeyError names a key the stage lists but params.yaml lacks


def test_every_param_moves_some_stage():
    keyed = [k for stage in STAGES.values() for k in tracked_keys(stage)]
    for leaf in flatten(PARAMS):
        assert any(leaf == k or leaf.startswith(f"{k}.") for k in keyed), f"{leaf} moves no stage"


def test_outputs_of_one_stage_are_not_written_by_another():
    owners: dict[str, str] = {}
    for name, stage in STAGES.items():
        for section in ("outs", "metrics", "plots"):
            for entry in stage.get(section, []):
                path = entry if isinstance(entry, str) else next(iter(entry))
                assert path not in owners, f"{path} is written by {owners[path]} and {name}"
                owners[path] = name


def test_every_data_file_of_the_package_is_installed_with_it():
    """A non-editable install carries only the package data pyproject.toml names."""
    import tomllib  # the standard library's from Python 3.11, which CI and the image use

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["fmnist"]
    data = [
        f.relative_to(SRC).as_posix()
        for f in SRC.rglob("*")
        if f.is_file() and f.suffix not in (".py", ".pyc") and "__pycache__" not in f.parts
    ]
    assert data, "the model card template is package data"
    for name in data:
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f"{name} is not package data"


def stage_outputs() -> set[str]:
    """Every path a stage writes (outs, metrics, plots)."""
    return {
        entry if isinstance(entry, str) else next(iter(entry))
        for stage in STAGES.values()
        for section in ("outs", "metrics", "plots")
        for entry in stage.get(section, [])
    }


def plot_files(definition) -> list[str]:
    """The files a top-level `plots:` entry draws: its y files, or the image it names."""
    if isinstance(definition, str):
        return [definition]
    (spec,) = definition.values()
    return list(spec["y"])  # {file: column}


def test_plots_are_drawn_only_by_the_top_level_definitions_each_file_once():
    """A stage's `plots:` entry draws its file again with DVC's default line chart (a 10,000-row
    CSV becomes a line of predicted class against row number): none may have one."""
    for name, stage in STAGES.items():
        assert "plots" not in stage, f"stage {name} declares plots: make them plain outs"
    drawn = [path for definition in DVC_YAML["plots"] for path in plot_files(definition)]
    assert len(drawn) == len(set(drawn)), "a file is drawn by two plot definitions"
    outputs = stage_outputs()
    for path in drawn:  # each is written by a stage, or under a directory one writes
        assert any(path == out or path.startswith(f"{out}/") for out in outputs), path


def test_the_declared_metrics_are_about_the_model():
    """`dvc metrics diff` between two machines must not list time, device or platform: the run
    record and the class counts are plain outputs."""
    metrics = {
        entry if isinstance(entry, str) else next(iter(entry))
        for stage in STAGES.values()
        for entry in stage.get("metrics", [])
    }
    # The dataset record is a metric too: a new dataset version shows in `dvc metrics diff`.
    model = {"metrics/eval.json", "metrics/train.json", "metrics/train/metrics.json"}
    assert metrics == model | {"metrics/dataset.json"}
    assert "metrics/runs/train.json" in stage_outputs()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_cli_command_has_a_main(name):
    assert callable(entry_point(COMMANDS[name][0]))

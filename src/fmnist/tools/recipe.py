"""Named training recipes (`recipes.yaml`): params overrides for `dvc exp run -S`.

`fmnist recipe NAME` prints the `-S key=value` arguments, so a recipe runs as an ordinary,
comparable DVC experiment: `dvc exp run $(fmnist recipe writeup)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from fmnist.errors import ParamsError, report_errors
from fmnist.params import Params, load_params, params_from_dict, params_to_dict, with_overrides


def load_recipes(path: str | Path = "recipes.yaml") -> dict[str, dict]:
    """The recipes file as {name: {dotted key: value}}."""
    try:
        recipes = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found; run from the repository root") from None
    return recipes


def recipe_params(name: str, recipes: dict, base: dict) -> Params:
    """The validated params of recipe `name` on top of `base`."""
    if name not in recipes:
        raise ParamsError(f"no recipe '{name}'; recipes: {', '.join(recipes)}")
    try:
        overrides = with_overrides(base, recipes[name])
    except ParamsError as err:
        raise ParamsError(f"recipe '{name}': {err}") from err
    return params_from_dict(overrides)


def add_set_option(parser: argparse.ArgumentParser, on_top_of: str) -> None:
    """`-S KEY=VALUE` (repeatable; `args.set`, a list), as `dvc exp run -S` takes it, for the
    benchmarks that run recipes."""
    parser.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a params key set on top of {on_top_of}, as `dvc exp run -S` takes it",
    )


def parse_set_options(items: list[str]) -> dict:
    """`-S KEY=VALUE` options (`args.set`) as {dotted key: value}, each value read as YAML,
    as `dvc exp run -S` reads it."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"-S {item!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(text) if text else ""
    return overrides


def recipe_with_sets(name: str, sets: list[str]) -> Params:
    """The validated params of recipe `name` on top of params.yaml, with the `-S KEY=VALUE`
    options `sets` on top of both, as `dvc exp run $(fmnist recipe NAME) -S ...` runs them
    (from the repository root)."""
    recipes = load_recipes()
    if name in recipes:
        recipes[name] = {**recipes[name], **parse_set_options(sets)}
    # load_params: a missing or malformed params.yaml is one ParamsError line, as in the stages.
    return recipe_params(name, recipes, params_to_dict(load_params("params.yaml")))


def set_arguments(overrides: dict) -> list[str]:
    """The `-S key=value` arguments of `dvc exp run` for `overrides` (values as JSON/YAML)."""
    args = []
    for key, value in overrides.items():
        # Compact JSON: no spaces, so `$(fmnist recipe NAME)` splits into whole arguments.
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        args += ["-S", f"{key}={text}"]
    return args


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fmnist recipe", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="recipe to print (omit to list them)")
    parser.add_argument(
        "--recipes", default="recipes.yaml", help="the recipes file (default: %(default)s)"
    )
    parser.add_argument(
        "--params",
        default="params.yaml",
        help="the params the recipe is checked on top of (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    recipes = load_recipes(args.recipes)
    if args.name is None:
        print("\n".join(recipes))
        return 0
    base = params_to_dict(load_params(args.params))
    recipe_params(args.name, recipes, base)  # validate before printing anything
    print(" ".join(set_arguments(recipes[args.name])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `fmnist` command: tools around the pipeline (the stages themselves run from dvc.yaml).

Each subcommand is a function `main(argv) -> int` (or `module:function`) with its own argparse;
its module is imported only when used, so `fmnist params` does not pay for importing TensorFlow.
"""

from __future__ import annotations

import argparse
import sys

from fmnist import launch

# name -> (module, one-line help). Add a command by adding a line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "params": ("fmnist.params", "validate params.yaml"),
    "recipe": (
        "fmnist.tools.recipe",
        "list the named recipes, or print one's `dvc exp run -S` args",
    ),
    "predict": ("fmnist.tools.predict", "classify images with a packaged or registered model"),
    "examples": (
        "fmnist.tools.examples",
        "write test images as files to try the model with: 28×28 pixels and product photos",
    ),
    "export": (
        "fmnist.tools.export",
        "write a registered version into TensorFlow Serving's layout (BASE/NAME/<int>/)",
    ),
    "vertex-model": (
        "fmnist.tools.export:vertex_main",
        "render the Vertex AI model upload of a registered version",
    ),
    "request": (
        "fmnist.tools.export:request_main",
        "render a TensorFlow Serving / Vertex AI predict request body from image files",
    ),
    "next-version": ("fmnist.tools.registry", "propose the next model version from the params"),
    "vertex-job": ("fmnist.tools.vertex", "render the Vertex AI CustomJob spec that runs `train`"),
    "lineage": (
        "fmnist.tools.lineage",
        "print the data, params, code and model hashes of a git rev",
    ),
    "verify-remote": (
        "fmnist.tools.remote",
        "check that a rev's data and models are in a DVC remote",
    ),
    "push": (
        "fmnist.tools.remote:push",
        "`dvc push`, with a clear error if the remote is not usable",
    ),
    "pull": (
        "fmnist.tools.remote:pull",
        "`dvc pull`, with a clear error if the remote is not usable",
    ),
    "report": (
        "fmnist.tools.report",
        "compare the workspace or a rev with a base rev, as Markdown",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fmnist", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    args, rest = parser.parse_known_args(argv)
    return launch.run(entry_point(COMMANDS[args.command][0]), rest, f"fmnist {args.command}")


def entry_point(target: str):
    """The function `module:function` names (`main` when only a module is named), its module
    imported with the process configured (`fmnist.launch`)."""
    module, _, function = target.partition(":")
    return getattr(launch.load(module), function or "main")


if __name__ == "__main__":
    sys.exit(main())

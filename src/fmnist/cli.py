"""The `fmnist` command: tools around the pipeline (the stages themselves run from dvc.yaml).

Each subcommand is a function `main(argv) -> int` (or `module:function`) with its own argparse;
its module is imported only when used, so `fmnist params` does not pay for importing TensorFlow.

The commands run at the repository root, as DVC's do: their default paths (params.yaml,
dvc.lock, models/package, ...) are relative to it. From a subdirectory of the repository they
stop with one line that says where the root is.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fmnist import __version__, launch

# name -> (module, one-line help). Add a command by adding a line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "params": ("fmnist.params", "validate params.yaml, or print its JSON Schema"),
    "recipe": (
        "fmnist.tools.recipe",
        "list the named recipes, or print one's `dvc exp run -S` args",
    ),
    "predict": ("fmnist.tools.predict", "classify images with a packaged or registered model"),
    "tune": (
        "fmnist.tools.tune",
        "search params with Optuna, every trial a DVC experiment (tune.yaml)",
    ),
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
    "register": (
        "fmnist.tools.registry:register_main",
        "check the package a commit pins, then register it as a version",
    ),
    "promote": (
        "fmnist.tools.promote",
        "move a version to its next stage through the promotion gates",
    ),
    "check-tag": (
        "fmnist.tools.promote:check_tag_main",
        "check a pushed stage tag against the promotion gates (CI)",
    ),
    "get": (
        "fmnist.tools.registry:get_main",
        "download the package of a version or stage (as GTO shows it), verified",
    ),
    "verify-package": (
        "fmnist.tools.registry:verify_main",
        "check a package's files against its SHA-256 manifest",
    ),
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
    """`fmnist COMMAND ARGS...`: run one command's `main(ARGS)` (its own parser names it)."""
    parser = argparse.ArgumentParser(
        prog="fmnist",
        description=__doc__.splitlines()[0],
        epilog="`fmnist COMMAND --help` shows a command's options. FMNIST_VERBOSE=1 shows "
        "TensorFlow's own log lines.",
    )
    parser.add_argument("--version", action="version", version=f"fmnist {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    args, rest = parser.parse_known_args(argv)
    here = Path.cwd()
    root = project_root(here)
    if root is not None and root != here:
        print(
            f"error: run `fmnist {args.command}` at the repository root, {root}, where dvc.yaml "
            f"is (its paths are relative to it, as DVC's are): cd {os.path.relpath(root, here)}",
            file=sys.stderr,
        )
        return 2
    return launch.run(entry_point(COMMANDS[args.command][0]), rest, f"fmnist {args.command}")


def project_root(start: Path) -> Path | None:
    """The nearest directory at or above `start` that holds a DVC project (dvc.yaml, .dvc/)."""
    for directory in (start, *start.parents):
        if (directory / "dvc.yaml").is_file() and (directory / ".dvc").is_dir():
            return directory
    return None


def entry_point(target: str):
    """The function `module:function` names (`main` when only a module is named), its module
    imported with the process configured (`fmnist.launch`)."""
    module, _, function = target.partition(":")
    return getattr(launch.load(module), function or "main")


if __name__ == "__main__":
    sys.exit(main())

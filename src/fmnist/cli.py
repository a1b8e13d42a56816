"""The `fmnist` command: tools around the pipeline (the stages themselves run from dvc.yaml).

Each subcommand is a module with its own `main(argv) -> int`; it is imported only when used,
so `fmnist params` does not pay for importing TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Add a command by adding a line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "params": ("fmnist.params", "validate params.yaml"),
    "report": ("fmnist.report", "compare the workspace or a rev with a base rev, as Markdown"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fmnist", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())

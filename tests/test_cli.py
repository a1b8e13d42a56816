"""The `fmnist` command: every subcommand's help names it, every flag has help, --version."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import fmnist
from fmnist import cli
from helpers import ROOT


def parsers_of(name: str, monkeypatch, capsys) -> tuple[list[argparse.ArgumentParser], str]:
    """The parsers `fmnist NAME --help` builds (cli's own first) and the help it prints."""
    built: list[argparse.ArgumentParser] = []
    parse = argparse.ArgumentParser.parse_known_args

    def recording(self, *args, **kwargs):
        built.append(self)
        return parse(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", recording)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    return built, capsys.readouterr().out


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_a_subcommands_help_names_it(name, monkeypatch, capsys):
    _, text = parsers_of(name, monkeypatch, capsys)
    assert text.startswith(f"usage: fmnist {name} ")


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_flag_and_argument_has_help(name, monkeypatch, capsys):
    built, _ = parsers_of(name, monkeypatch, capsys)
    command = built[-1]  # the subcommand's own parser
    assert command.prog == f"fmnist {name}"
    for action in command._actions:
        what = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"fmnist {name}: {what} has no help"


def test_version_is_the_packages(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fmnist {fmnist.__version__}"
    # The installed metadata (pyproject's dynamic version) is read from the same attribute.
    assert importlib.metadata.version("fmnist") == fmnist.__version__


def test_the_top_level_help_lists_every_command():
    proc = subprocess.run(
        [sys.executable, "-m", "fmnist.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0 and proc.stdout.startswith("usage: fmnist ")
    for name, (_, summary) in cli.COMMANDS.items():
        assert name in proc.stdout and summary.split()[0] in proc.stdout


# The one command that runs a model: it imports TensorFlow as it starts.
MODEL_COMMANDS = {"predict"}


def first_to_load_tensorflow(*argvs: list[str]) -> str | None:
    """Run `fmnist ARGV` for each of `argvs` in turn in one fresh Python; the first whose run
    imported TensorFlow or Keras, or None."""
    script = (
        "import sys\n"
        "from fmnist import cli\n"
        f"for argv in {list(argvs)!r}:\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, (argv, exc.code)\n"
        "    if {'tensorflow', 'keras'} & {name.split('.')[0] for name in sys.modules}:\n"
        "        print('TensorFlow after:', *argv, file=sys.stderr)\n"
        "        break\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    marked = [line for line in proc.stderr.splitlines() if line.startswith("TensorFlow after: ")]
    return marked[0].removeprefix("TensorFlow after: ") if marked else None


def test_a_command_that_runs_no_model_starts_without_tensorflow(tmp_path):
    # Importing TensorFlow and Keras takes seconds: a command that reads files, renders a spec
    # or moves tags answers, or fails, before that would be done.
    helps = [[name, "--help"] for name in cli.COMMANDS if name not in MODEL_COMMANDS]
    # The model commands last, to show that the check sees TensorFlow once it is imported.
    models = [[name, "--help"] for name in sorted(MODEL_COMMANDS)]
    assert first_to_load_tensorflow(*helps, *models) == " ".join(models[0])
    image = tmp_path / "shirt.png"
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(image)
    request = ["request", str(image), "--out", str(tmp_path / "body.json")]
    assert first_to_load_tensorflow(request) is None
    assert json.loads((tmp_path / "body.json").read_text()) == {
        "instances": [np.full((28, 28, 1), 128).tolist()]
    }

"""The documentation is a promise: its links resolve and its commands run.

Every fenced ```bash block of README.md and docs/*.md runs, in order within its page, on a tiny
copy of this project (the synthetic dataset of tests/helpers.py) in the state a reader is in
after `make repro`: the pipeline reproduced and committed on `main`, pushed to the project's
`local` DVC remote and to a git remote `origin`, with one model version registered
(`fashion-mnist-cnn@v1.0.0`; the pages that walk through the first release start before it
was registered). Each page starts from its own copy of that state. A block that
cannot run here (Google Cloud, a GPU, the full dataset, hours) starts with the line
`# needs: <what>`: visible to the reader, and the only way a block is skipped. Output examples
are ```text, so that every block that could hold a command is either run or says why not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import helpers
from helpers import ROOT, dvc, git, run

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages that walk through the first release (register, promote): they start from the same state
# before `fashion-mnist-cnn@v1.0.0` was registered, as a reader is after `make repro`.
FIRST_RELEASE_PAGES = {"README.md", "docs/release.md"}
README_MAX_LINES = 250
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[^\s`]*)\s*$")
NEEDS = re.compile(r"#\s*needs:(?P<what>.*)")
# Languages a fenced block may have. Commands are `bash` (run) and output is `text` (not run).
LANGUAGES = {"bash", "text", "yaml", "json", "python"}
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
BLOCK_TIMEOUT_S = 1200
VERSION = "v1.0.0"
ARTIFACT = "fashion-mnist-cnn"


@dataclass(frozen=True)
class Block:
    """One fenced code block: its page, the line of its opening fence, language and text."""

    page: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        """`page:line` of the block's opening fence."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def needs(self) -> str | None:
        """What the block needs to run, if its first line says (`# needs: ...`)."""
        first = self.text.lstrip().splitlines()[0] if self.text.strip() else ""
        found = NEEDS.fullmatch(first.strip())
        return found["what"].strip() if found else None


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, dedented when they sit in a list item."""
    found, current, lines = [], None, page.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if current is None:
            if fence:
                current = (number, fence["indent"], fence["lang"], [])
        elif fence and fence["lang"] == "" and len(fence["indent"]) <= len(current[1]):
            start, indent, lang, body = current
            text = "\n".join(b[len(indent) :] if b.startswith(indent) else b for b in body)
            found.append(Block(page, start, lang, text + "\n"))
            current = None
        else:
            current[3].append(line)
    assert current is None, f"{page.relative_to(ROOT)}:{current[0]}: a fence that never closes"
    return found


def relative(page: Path) -> str:
    """A page's path from the repository root."""
    return str(page.relative_to(ROOT))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (outside code blocks)."""
    text = page.read_text()
    for block in blocks(page):
        text = text.replace(block.text, "")
    return {slug(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of each relative Markdown link of a page, outside code blocks."""
    inside, found = None, []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if FENCE.match(line):
            inside = None if inside else number
            continue
        if inside is None:
            found += [(number, m["target"]) for m in LINK.finditer(line)]
    return [(n, t) for n, t in found if not re.match(r"[a-z]+:", t)]


# --- fast checks: structure and links ---------------------------------------------------------


def test_the_readme_is_short_and_has_a_table_of_contents():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    sections = [line[3:] for line in lines if line.startswith("## ")]
    toc = {target[1:] for _, target in links(ROOT / "README.md") if target.startswith("#")}
    missing = [s for s in sections if slug(s) not in toc and s != "Contents"]
    assert not missing, f"sections not in the README's table of contents: {missing}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {target.split("#")[0] for _, target in links(ROOT / "README.md")}
    pages = {relative(p) for p in PAGES[1:]}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_links_resolve(page):
    broken = []
    for line, target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{line}: {target}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{line}: {target} (no such heading)")
    assert not broken, f"{relative(page)}: broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_every_block_says_what_it_is(page):
    """Commands are ```bash (and run), output is ```text: no block escapes the runner unseen."""
    for block in blocks(page):
        assert block.lang in LANGUAGES, (
            f"{block.where}: a ```{block.lang} block; use ```bash for commands (they are run) "
            "or ```text for output"
        )
        if block.lang == "yaml":
            yaml.safe_load(block.text)
        elif block.lang == "json":
            json.loads(block.text)


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_a_block_is_skipped_only_when_it_says_what_it_needs(page):
    for block in blocks(page):
        if block.lang != "bash":
            continue
        marks = [n for n, line in enumerate(block.text.splitlines()) if NEEDS.search(line)]
        if block.needs is not None:
            assert len(block.needs.split()) >= 2, f"{block.where}: say what it needs"
            assert marks == [0], f"{block.where}: `# needs:` once, on the first line"
        else:
            assert not marks, f"{block.where}: `# needs:` must be the block's first line"


def test_model_versions_in_the_docs_name_the_registered_artifact():
    """A version tag is ARTIFACT@vX.Y.Z for an artifact dvc.yaml declares (not `model@v1.0.0`)."""
    artifacts = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"])
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for name in re.findall(r"([\w.-]+)@v\d+\.\d+\.\d+", line):
                assert name in artifacts, f"{relative(page)}:{number}: no artifact {name!r}"


def test_make_targets_in_the_docs_exist():
    """`make X` cannot run inside the suite (`make test` would run it again): X must exist."""
    targets = helpers.make_targets()
    for page in PAGES:
        for block in blocks(page):
            if block.lang != "bash":
                continue
            for name in re.findall(r"(?:^|[;&|]\s*)make ([\w-]+)", block.text, re.M):
                assert name in targets, f"{block.where}: `make {name}`: no such target"


# --- slow: the commands run --------------------------------------------------------------------


def runnable(page: Path) -> list[Block]:
    """The blocks of a page that run: ```bash without `# needs:`."""
    return [b for b in blocks(page) if b.lang == "bash" and b.needs is None]


def executable(path: Path, text: str) -> None:
    """Write a script that anyone may run."""
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture(scope="module")
def after_make_repro(reproduced_repo, tmp_path_factory) -> Path:
    """A tiny project as a reader has it after `make repro` and a first release (see top)."""
    base = tmp_path_factory.mktemp("docs")
    repo = base / "repo"
    shutil.copytree(reproduced_repo, repo, symlinks=True)
    for name in ("Makefile", "recipes.yaml", "vertex.yaml", "tune.yaml", ".gto", ".dvc/config"):
        shutil.copy(ROOT / name, repo / name)
    git("branch", "-M", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "reproduced", cwd=repo)
    dvc("push", cwd=repo)  # to the project's default remote, `local`, beside the repo
    gto = str(Path(sys.executable).parent / "gto")
    run([gto, "register", ARTIFACT, "--version", VERSION], cwd=repo)
    run(["git", "init", "-q", "--bare", str(base / "origin.git")], cwd=base)
    git("remote", "add", "origin", str(base / "origin.git"), cwd=repo)
    git("push", "-q", "origin", "main", "--tags", cwd=repo)
    bin_dir = base / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "fmnist", f'#!/bin/sh\nexec "{sys.executable}" -m fmnist.cli "$@"\n')
    executable(bin_dir / "python3", f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    return base


def page_env(bin_dir: Path) -> dict[str, str]:
    """The shell a reader has: this project's tools first on PATH, its code on PYTHONPATH."""
    path = [str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    # Without this suite's log settings: the output is what a reader sees.
    env = {
        k: v for k, v in os.environ.items() if k not in ("FMNIST_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")
    }
    return {**env, "PATH": os.pathsep.join(path), "PYTHONPATH": str(ROOT / "src")}


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)], ids=relative)
def test_the_commands_of_a_page_run(page, after_make_repro, tmp_path):
    base = tmp_path / "project"
    shutil.copytree(after_make_repro, base, symlinks=True)
    repo = base / "repo"
    git("remote", "set-url", "origin", str(base / "origin.git"), cwd=repo)
    env = page_env(base / "bin")
    if relative(page) in FIRST_RELEASE_PAGES:
        git("tag", "-d", f"{ARTIFACT}@{VERSION}", cwd=repo)
        git("push", "-q", "origin", f":refs/tags/{ARTIFACT}@{VERSION}", cwd=repo)
    try:
        run_blocks(runnable(page), repo, env)
    finally:
        if (repo / ".dvc" / "tmp" / "exps" / "celery").exists():
            # A block started DVC's queue worker, which outlives it: stop it.
            dvc("queue", "stop", "--kill", cwd=repo, check=False, env=env)


def run_blocks(page_blocks: list[Block], repo: Path, env: dict[str, str]) -> None:
    """Run the blocks in order, each in its own `bash -e -o pipefail`; fail at the first that
    fails, naming its page and line, with its output."""
    base = repo.parent
    for number, block in enumerate(page_blocks):
        script = base / f"block-{number}.sh"
        script.write_text(block.text)
        log = base / f"block-{number}.log"
        # Output to a file: a command may leave a process behind (`dvc queue start`'s worker)
        # that holds a pipe open. A session of its own, so that a timeout ends all of it.
        with open(log, "w") as out:
            proc = subprocess.Popen(
                ["bash", "-eo", "pipefail", str(script)],
                cwd=repo,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=BLOCK_TIMEOUT_S)
                outcome = f"exited {code}" if code else ""
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                outcome = f"did not finish within {BLOCK_TIMEOUT_S} s"
        if outcome:
            pytest.fail(
                f"{block.where}: the block {outcome}\n{block.text}"
                f"--- its output\n{log.read_text()[-6000:]}",
                pytrace=False,
            )

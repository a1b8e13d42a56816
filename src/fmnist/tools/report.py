"""`fmnist report`: what a change did to the model, as Markdown for a pull-request review.

Compares a base rev (default `HEAD`) with another rev or the workspace (the default): metrics
with deltas and params (from `dvc metrics diff` / `dvc params diff`), the per-class F1 changes
above a threshold, the confusion matrices and training curves of both sides as images, and the
versions of the data and the model on each side (their DVC hashes in `dvc.lock`). Everything is
read from git-tracked files (the metrics are `cache: false`), so it needs no `dvc pull`: CI posts
it on the PR and a person previews it locally with `make report`.

A rev is anything git names (branch, tag, commit) or a DVC experiment's name.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from fmnist import atomic
from fmnist.errors import PipelineError, report_errors
from fmnist.tools.lineage import DATASET_RECORD, dataset_line

WORKSPACE = "workspace"
LOCK = "dvc.lock"
PER_CLASS = "metrics/per_class.csv"
# Shown side by side, base then new: title -> path.
FIGURES = {
    "Confusion matrix (test set)": "metrics/figures/confusion_matrix.png",
    "Training curves": "metrics/figures/training_curves.png",
}
# The outputs whose version a reviewer needs: title -> path of the output in dvc.lock.
VERSIONED = {
    "raw data": "data/raw",
    "prepared data": "data/prepared",
    "model": "models/model.keras",
}
# Model quality first; the other metric files (data counts, run record, DVCLive) after it.
MAIN_METRICS = "metrics/eval.json"
MISSING = "—"
# The one number in the summary line.
HEADLINE = "test.accuracy"


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a commit, or the workspace (`commit` None)."""

    label: str
    commit: str | None
    root: Path

    def read(self, path: str) -> bytes | None:
        """The file's bytes on this side, or None if it does not exist there."""
        if self.commit is None:
            file = self.root / path
            return file.read_bytes() if file.is_file() else None
        proc = subprocess.run(
            ["git", "show", f"{self.commit}:./{path}"], cwd=self.root, capture_output=True
        )
        return proc.stdout if proc.returncode == 0 else None

    @property
    def title(self) -> str:
        """The label as the user gave it, with the short commit."""
        return self.label if self.commit is None else f"{self.label} ({self.commit[:7]})"


@dataclass(frozen=True)
class Snapshot:
    """What the report shows of one side."""

    title: str
    versions: dict[str, str | None]  # path in dvc.lock -> its md5 (None: not in the lock)
    per_class: pd.DataFrame | None  # the per-class report, or None if the side has none
    figures: dict[str, bytes | None]  # path -> PNG bytes
    dataset: dict | None = None  # what the data is: canonical, or how it differs


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def resolve(rev: str, root: Path) -> Side:
    """The side a rev names: the workspace, a git rev, or a DVC experiment's name."""
    if rev == WORKSPACE:
        return Side(WORKSPACE, None, root)
    proc = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if proc.returncode == 0:
        return Side(rev, proc.stdout.strip(), root)
    # An experiment lives at refs/exps/<base commit>/<name>; git alone does not know the name.
    refs = _git(root, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").stdout
    found = {
        sha for sha, ref in (line.split() for line in refs.splitlines()) if ref.endswith(f"/{rev}")
    }
    if len(found) == 1:
        return Side(rev, found.pop(), root)
    if found:
        raise PipelineError(f"ambiguous revision {rev!r}: several experiments have that name")
    raise PipelineError(
        f"unknown revision {rev!r}: not a git commit, branch or tag, nor an experiment"
    )


def lock_versions(lock: bytes | None) -> dict[str, str | None]:
    """The md5 of each VERSIONED output in a `dvc.lock` (None where the lock lacks it)."""
    stages = (yaml.safe_load(lock) or {}).get("stages", {}) if lock else {}
    found = {
        out["path"]: out.get("md5") for stage in stages.values() for out in stage.get("outs", [])
    }
    return {path: found.get(path) for path in VERSIONED.values()}


def read_dataset(blob: bytes | None) -> dict | None:
    """The dataset record of one side (None if it has none or it is unreadable)."""
    try:
        return json.loads(blob) if blob else None
    except ValueError:
        return None


def read_per_class(blob: bytes | None) -> pd.DataFrame | None:
    """Parse `metrics/per_class.csv` (class, precision, recall, f1, support)."""
    return None if blob is None else pd.read_csv(io.BytesIO(blob))


def snapshot(side: Side) -> Snapshot:
    """Read from one side everything the report shows."""
    return Snapshot(
        title=side.title,
        versions=lock_versions(side.read(LOCK)),
        dataset=read_dataset(side.read(DATASET_RECORD)),
        per_class=read_per_class(side.read(PER_CLASS)),
        figures={path: side.read(path) for path in FIGURES.values()},
    )


def per_class_changes(
    base: pd.DataFrame | None, new: pd.DataFrame | None, threshold: float
) -> pd.DataFrame | None:
    """Classes whose F1 moved by at least `threshold`, worst first (None if a side lacks F1)."""
    if base is None or new is None:
        return None
    both = base[["class", "f1"]].merge(new[["class", "f1"]], on="class", suffixes=("_base", "_new"))
    both["change"] = both["f1_new"] - both["f1_base"]
    moved = both[both["change"].abs() >= threshold - 1e-12]
    return moved.sort_values("change", kind="stable").reset_index(drop=True)


def fmt(value) -> str:
    """A value for a table cell: 4 significant digits for floats, a dash when absent."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def fmt_change(old, new) -> str:
    """`+0.012 (+3.1%)` for numbers; a dash when either side is missing or not a number."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new))
    if not numbers:
        return MISSING
    change = new - old
    relative = f" ({change / abs(old):+.1%})" if old else ""
    return f"{change:+.4g}{relative}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
    ]


def diff_rows(diff: dict) -> list[list[str]]:
    """Rows (file, key, base, new, change) of `dvc metrics|params diff --json`, eval.json first."""
    files = sorted(diff, key=lambda f: (f != MAIN_METRICS, f))
    return [
        [
            f"`{file}`",
            f"`{key}`",
            fmt(v.get("old")),
            fmt(v.get("new")),
            fmt_change(v.get("old"), v.get("new")),
        ]
        for file in files
        for key, v in sorted(diff[file].items())
    ]


def summary(base: Snapshot, new: Snapshot, metrics_diff: dict, params_diff: dict) -> list[str]:
    """Three bullets a reviewer reads first: the headline metric, the params, the versions."""
    headline = metrics_diff.get(MAIN_METRICS, {}).get(HEADLINE)
    if headline:
        old, now = headline.get("old"), headline.get("new")
        change = fmt_change(old, now)
        score = f"{fmt(old)} → {fmt(now)}" + (f", {change}" if change != MISSING else "")
    else:
        score = "unchanged"
    params = sorted(key for changed in params_diff.values() for key in changed)
    moved = [what for what, path in VERSIONED.items() if base.versions[path] != new.versions[path]]
    return [
        f"- **{HEADLINE}**: {score}",
        "- **params changed**: " + (", ".join(f"`{p}`" for p in params) or "none"),
        "- **versions changed**: " + (", ".join(moved) or "none (same data and model)"),
    ]


def asset_name(side: str, path: str) -> str:
    """The asset file name of one side's figure, e.g. `base-confusion_matrix.png`."""
    return f"{side}-{Path(path).name}"


def render(
    base: Snapshot,
    new: Snapshot,
    metrics_diff: dict,
    params_diff: dict,
    threshold: float,
    assets_dir: str,
    stale: list[str] | None = None,
) -> tuple[str, dict[str, bytes]]:
    """The Markdown report and its images (asset file name -> PNG bytes)."""
    lines = [
        "# Model report",
        "",
        f"**{new.title}** compared with **{base.title}**.",
        "",
    ]
    if stale:
        lines += [
            f"> **Warning:** the workspace is not reproduced (`dvc status`: {', '.join(stale)} "
            "changed), so its metrics may not match its params and code. Run `dvc repro` first.",
            "",
        ]

    lines += summary(base, new, metrics_diff, params_diff) + [""]

    metric_rows = diff_rows(metrics_diff)
    lines += ["## Metrics", ""]
    header = ["file", "metric", base.title, new.title, "change"]
    lines += _table(header, metric_rows) if metric_rows else ["No metric changed."]

    param_rows = [row[:4] for row in diff_rows(params_diff)]
    lines += ["", "## Params", ""]
    header = ["file", "param", base.title, new.title]
    lines += _table(header, param_rows) if param_rows else ["No param changed."]

    lines += ["", f"## Per-class F1 changes of at least {threshold:g}", ""]
    changes = per_class_changes(base.per_class, new.per_class, threshold)
    if changes is None:
        side = base if base.per_class is None else new
        lines.append(f"{side.title} has no `{PER_CLASS}`.")
    elif changes.empty:
        lines.append("No class moved that much.")
    else:
        rows = [
            [r["class"], f"{r['f1_base']:.3f}", f"{r['f1_new']:.3f}", f"{r['change']:+.3f}"]
            for _, r in changes.iterrows()
        ]
        lines += _table(["class", base.title, new.title, "change"], rows)

    assets: dict[str, bytes] = {}
    for title, path in FIGURES.items():
        lines += ["", f"## {title}", "", f"| {base.title} | {new.title} |", "|---|---|"]
        cells = []
        for side, snap in (("base", base), ("new", new)):
            png = snap.figures.get(path)
            if png is None:
                cells.append(f"no `{path}`")
                continue
            name = asset_name(side, path)
            assets[name] = png
            cells.append(f"![{title}: {snap.title}]({assets_dir}/{name})")
        lines.append("| " + " | ".join(cells) + " |")

    lines += ["", "## Data and model versions", ""]
    rows = []
    for what, path in VERSIONED.items():
        old, now = base.versions[path], new.versions[path]
        same = "same" if old == now and old is not None else "**changed**"
        rows.append(
            [
                what,
                f"`{path}`",
                f"`{old}`" if old else MISSING,
                f"`{now}`" if now else MISSING,
                same,
            ]
        )
    if base.dataset is None and new.dataset is None:
        same = MISSING
    else:
        same = "same" if base.dataset == new.dataset else "**changed**"
    data = [dataset_line(base.dataset), dataset_line(new.dataset)]
    rows.insert(0, ["dataset", f"`{DATASET_RECORD}`", *data, same])
    lines += _table(["", "path", base.title, new.title, ""], rows)
    lines += ["", f"The DVC hashes are those in each side's `{LOCK}`.", ""]
    return "\n".join(lines), assets


def dvc_json(root: Path, *args: str) -> dict:
    """Run `dvc <args> --json` in `root` and parse what it prints."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args, "--json"], cwd=root, capture_output=True, text=True
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        first_error = next((line for line in lines if line.startswith("ERROR")), lines[-1])
        raise PipelineError(f"`dvc {' '.join(args)}` failed: {first_error}")
    return json.loads(proc.stdout or "{}")


def compare(
    base: Side, new: Side, threshold: float, assets_dir: str
) -> tuple[str, dict[str, bytes]]:
    """Read both sides, run DVC's diffs and render the report."""
    revs = [base.commit] + ([new.commit] if new.commit else [])  # no second rev: the workspace
    stale = sorted(dvc_json(base.root, "status")) if new.commit is None else None
    return render(
        snapshot(base),
        snapshot(new),
        metrics_diff=dvc_json(base.root, "metrics", "diff", *revs),
        params_diff=dvc_json(base.root, "params", "diff", *revs),
        threshold=threshold,
        assets_dir=assets_dir,
        stale=stale,
    )


def parser() -> argparse.ArgumentParser:
    """The command line of `fmnist report`."""
    parser = argparse.ArgumentParser(prog="fmnist report", description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the rev to compare with (default HEAD)")
    parser.add_argument(
        "--rev", default=WORKSPACE, help=f"the rev to report on (default: the {WORKSPACE})"
    )
    parser.add_argument("-o", "--out", default="report.md", help="the Markdown file to write")
    parser.add_argument(
        "--min-f1-change",
        type=float,
        default=0.01,
        help="list a class when its F1 moved by at least this much (default 0.01)",
    )
    return parser


@report_errors
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    root = Path.cwd()
    if _git(root, "rev-parse", "--git-dir").returncode != 0:
        raise PipelineError(
            f"{root} is not in a git repository: run `fmnist report` in the project"
        )
    base, new = resolve(args.base, root), resolve(args.rev, root)
    if base.commit is None:
        raise PipelineError("--base must be a commit, branch, tag or experiment, not the workspace")
    out = Path(args.out)
    assets_dir = f"{out.stem}_assets"  # beside the report, linked relatively
    markdown, assets = compare(base, new, args.min_f1_change, assets_dir)
    with atomic.atomic_path(out.parent / assets_dir) as tmp:
        tmp.mkdir()
        for name, png in assets.items():
            (tmp / name).write_bytes(png)
    atomic.write_text(out, markdown)
    print(f"report: {out} ({len(assets)} images in {out.parent / assets_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`fmnist report`: what a change did to the model, as Markdown for a pull-request review.

Compares a base rev (default `HEAD`) with another rev or the workspace (the default): metrics
with deltas and params (from `dvc metrics diff` / `dvc params diff`; accuracies in percentage
points and in test images), whether the training setup changed (from each side's run record),
the per-class F1 changes above a threshold, the confusion matrices and training curves of both
sides as images, and the versions of the data and the model on each side (their DVC hashes in
`dvc.lock`). Everything is
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

from fmnist import atomic, dvcfiles
from fmnist.environment import ENVIRONMENT_FIELDS
from fmnist.errors import PipelineError, report_errors
from fmnist.git import commit_of, git, git_show, is_repo
from fmnist.tables import markdown_table
from fmnist.tools.lineage import DATASET_RECORD, TRAIN_RECORD, dataset_line, training_environment

WORKSPACE = "workspace"
LOCK = dvcfiles.LOCK
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
# Model quality first; the other metric files after it.
MAIN_METRICS = "metrics/eval.json"
MISSING = "—"
# The one number in the summary line.
HEADLINE = "test.accuracy"
# Metrics that are fractions of the examples, shown in percent and changed in points.
RATES = ("accuracy", "precision", "recall", "f1")
# The training run's record (not a DVC metric) and the fields of it that make up the training
# setup: a change in any of them can move the metrics by itself. Field -> how the report names it.
RUN_RECORD = TRAIN_RECORD
SETUP_FIELDS = {
    "precision": "precision",
    "device": "device",
    "tensorflow": "TensorFlow",
    "distribute": "strategy",
}
# A change in any other environment field is named by its key (`keras`, `lock_sha256`, ...).
OTHER_ENVIRONMENT_FIELDS = tuple(f for f in ENVIRONMENT_FIELDS if f not in SETUP_FIELDS)


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
        return git_show(self.root, self.commit, f"./{path}", binary=True)

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
    scores: dict | None = None  # MAIN_METRICS, parsed (None: the side has none)
    run: dict | None = None  # RUN_RECORD, parsed (None: the side has none)
    dataset: dict | None = None  # what the data is: canonical, or how it differs

    @property
    def environment(self) -> dict:
        """The run record's environment fields (`lineage.training_environment`)."""
        return training_environment(self.run)


def resolve(rev: str, root: Path) -> Side:
    """The side a rev names: the workspace, a git rev, or a DVC experiment's name."""
    if rev == WORKSPACE:
        return Side(WORKSPACE, None, root)
    commit = commit_of(root, rev)
    if commit is not None:
        return Side(rev, commit, root)
    # An experiment lives at refs/exps/<base commit>/<name>; git alone does not know the name.
    refs = git(root, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps")
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
    found = {out.path: out.md5 for out in dvcfiles.lock_outputs(dvcfiles.parse(lock))}
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


def read_json_blob(blob: bytes | None) -> dict | None:
    """A JSON object from a side's file, or None when the side lacks it or it is not one."""
    if blob is None:
        return None
    try:
        data = json.loads(blob)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def snapshot(side: Side) -> Snapshot:
    """Read from one side everything the report shows."""
    return Snapshot(
        title=side.title,
        versions=lock_versions(side.read(LOCK)),
        dataset=read_dataset(side.read(DATASET_RECORD)),
        per_class=read_per_class(side.read(PER_CLASS)),
        figures={path: side.read(path) for path in FIGURES.values()},
        scores=read_json_blob(side.read(MAIN_METRICS)),
        run=read_json_blob(side.read(RUN_RECORD)),
    )


def environment_changes(base: Snapshot, new: Snapshot) -> list[str]:
    """The environment fields whose values differ between the sides."""
    return [key for key in base.environment if base.environment[key] != new.environment[key]]


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


def _numbers(*values) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def fmt_change(old, new) -> str:
    """`+0.012 (+3.1%)` for numbers; a dash when either side is missing or not a number."""
    if not _numbers(old, new):
        return MISSING
    change = new - old
    relative = f" ({change / abs(old) * 100:+.2g}%)" if old and change else ""
    return f"{change:+.4g}{relative}"


def is_rate(key: str) -> bool:
    """Whether a metric of MAIN_METRICS (`test.accuracy`, `test.f1_macro`) is a fraction."""
    return key.rsplit(".", 1)[-1].startswith(RATES)


def fmt_rate(value) -> str:
    """A fraction as a percentage (`94.38%`); other values as `fmt` shows them."""
    return f"{value:.2%}" if _numbers(value) else fmt(value)


def examples(scores: dict | None, split: str) -> int | None:
    """How many examples a split of MAIN_METRICS was scored on (None if unknown)."""
    count = ((scores or {}).get(split) or {}).get("examples")
    return count if isinstance(count, int) and count > 0 else None


def split_name(split: str) -> str:
    """How the report names a split's images."""
    return {"test": "test", "val": "validation", "train": "training"}.get(split, split)


def fmt_points(
    key: str, old, new, base_scores: dict | None = None, new_scores: dict | None = None
) -> str:
    """A rate's change in percentage points and, for an accuracy whose split was scored on the
    same number of images on both sides, in images: `+0.12 pp (+12 of 10,000 test images)`."""
    if not _numbers(old, new):
        return MISSING
    text = f"{(new - old) * 100:+.2f} pp"
    split, _, metric = key.rpartition(".")
    count = examples(new_scores, split)
    if metric == "accuracy" and count and count == examples(base_scores, split):
        moved = round(new * count) - round(old * count)
        text += f" ({moved:+,} of {count:,} {split_name(split)} images)"
    return text


def diff_rows(
    diff: dict, base_scores: dict | None = None, new_scores: dict | None = None
) -> list[list[str]]:
    """Rows (file, key, base, new, change) of `dvc metrics|params diff --json`, eval.json first;
    the rates of eval.json in percent, changed in points (and accuracies in images)."""
    rows = []
    for file in sorted(diff, key=lambda f: (f != MAIN_METRICS, f)):
        for key, v in sorted(diff[file].items()):
            old, new = v.get("old"), v.get("new")
            if file == MAIN_METRICS and is_rate(key):
                cells = [
                    fmt_rate(old),
                    fmt_rate(new),
                    fmt_points(key, old, new, base_scores, new_scores),
                ]
            else:
                cells = [fmt(old), fmt(new), fmt_change(old, new)]
            rows.append([f"`{file}`", f"`{key}`", *cells])
    return rows


def setup_changes(base: dict | None, new: dict | None) -> list[str] | None:
    """`precision `mixed_bfloat16` → `float32``, one per environment field that differs
    between two run records (SETUP_FIELDS first); None when a side has no record to compare."""
    if base is None or new is None:
        return None
    names = {**SETUP_FIELDS, **{field: field for field in OTHER_ENVIRONMENT_FIELDS}}
    old, now = training_environment(base), training_environment(new)
    return [
        f"{name} `{fmt(old[field])}` → `{fmt(now[field])}`"
        for field, name in names.items()
        if old[field] != now[field]
    ]


def setup_line(base: Snapshot, new: Snapshot) -> str:
    """The summary's line on the training setup: what changed, or that nothing did."""
    changes = setup_changes(base.run, new.run)
    if changes is None:
        lacking = base if base.run is None else new
        return f"- **training setup**: unknown ({lacking.title} has no `{RUN_RECORD}`)"
    if changes:
        return (
            "- **training setup changed**: "
            + "; ".join(changes)
            + " (this alone can move the metrics)"
        )
    same = ", ".join(f"{name} {fmt(new.run.get(field))}" for field, name in SETUP_FIELDS.items())
    return f"- **training setup**: the same ({same})"


def summary(base: Snapshot, new: Snapshot, metrics_diff: dict, params_diff: dict) -> list[str]:
    """The bullets a reviewer reads first: the headline metric, the params, the training setup,
    the versions."""
    headline = metrics_diff.get(MAIN_METRICS, {}).get(HEADLINE)
    if headline and _numbers(headline.get("old"), headline.get("new")):
        old, now = headline["old"], headline["new"]
        points = fmt_points(HEADLINE, old, now, base.scores, new.scores)
        score = f"{fmt_rate(old)} → {fmt_rate(now)}, {points}"
    elif headline:
        score = f"{fmt(headline.get('old'))} → {fmt(headline.get('new'))}"
    else:
        split, _, metric = HEADLINE.partition(".")
        current = ((new.scores or {}).get(split) or {}).get(metric)
        score = "unchanged" + (f" ({fmt_rate(current)})" if _numbers(current) else "")
    params = sorted(key for changed in params_diff.values() for key in changed)
    moved = [what for what, path in VERSIONED.items() if base.versions[path] != new.versions[path]]
    return [
        f"- **{HEADLINE}**: {score}",
        "- **params changed**: " + (", ".join(f"`{p}`" for p in params) or "none"),
        setup_line(base, new),
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

    metric_rows = diff_rows(metrics_diff, base.scores, new.scores)
    lines += ["## Metrics", ""]
    header = ["file", "metric", base.title, new.title, "change"]
    lines.append(markdown_table(header, metric_rows) if metric_rows else "No metric changed.")

    param_rows = [row[:4] for row in diff_rows(params_diff)]
    lines += ["", "## Params", ""]
    header = ["file", "param", base.title, new.title]
    lines.append(markdown_table(header, param_rows) if param_rows else "No param changed.")

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
        lines.append(markdown_table(["class", base.title, new.title, "change"], rows))

    assets: dict[str, bytes] = {}
    for title, path in FIGURES.items():
        lines += ["", f"## {title}", ""]
        cells = []
        for side, snap in (("base", base), ("new", new)):
            png = snap.figures.get(path)
            if png is None:
                cells.append(f"no `{path}`")
                continue
            name = asset_name(side, path)
            assets[name] = png
            cells.append(f"![{title}: {snap.title}]({assets_dir}/{name})")
        lines.append(markdown_table([base.title, new.title], [cells]))

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
    lines.append(markdown_table(["", "path", base.title, new.title, ""], rows))
    lines += ["", f"The DVC hashes are those in each side's `{LOCK}`.", ""]

    lines += ["## Training environment", ""]
    changed = environment_changes(base, new)
    rows = [
        [
            f"`{key}`",
            fmt(base.environment[key]),
            fmt(new.environment[key]),
            "**changed**" if key in changed else "same",
        ]
        for key in base.environment
    ]
    lines.append(markdown_table(["", base.title, new.title, ""], rows))
    lines += [
        "",
        f"From each side's `{TRAIN_RECORD}`: library versions, the lock the environment was "
        "installed from, and what each `auto` setting resolved to.",
        "",
    ]
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
    if not is_repo(root):
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

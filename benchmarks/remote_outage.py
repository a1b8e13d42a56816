"""How long a push takes to fail when the remote dies during it: `dvc push` alone against
`fmnist push` (which stops after `FMNIST_REMOTE_TIMEOUT` seconds of an unreachable remote).

For each command, a scratch git+DVC repository with `--files` random files of `--mb` MB under
DVC pushes to a fake-gcs-server (tests/fake_gcs.py) that is killed, as a crash would, when the
first object reaches it. Prints the seconds from the kill to the command's exit and what it
printed on stderr. Run from the repository root:

    nice -n 10 python3 benchmarks/remote_outage.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake GCS server the tests use

from fake_gcs import FakeGcs  # noqa: E402

BUCKET = "fmnist"


def run(cmd: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **kwargs.pop("env", {})}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, **kwargs)


def scratch_repo(base: Path, files: int, mb: float, server: FakeGcs) -> Path:
    """A repository with `files` random files under DVC and a `gcs` remote on `server`."""
    repo = base / "repo"
    (repo / "blobs").mkdir(parents=True)
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    for i in range(files):
        (repo / "blobs" / f"{i:03d}.bin").write_bytes(os.urandom(int(mb * 2**20)))
    run([sys.executable, "-m", "dvc", "add", "-q", "blobs"], repo)
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "gcs", f"gs://{BUCKET}/s"], repo)
    (repo / ".dvc/config.local").write_text(
        f"['remote \"gcs\"']\n    endpointurl = {server.url}\n    allow_anonymous_login = true\n"
    )
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "data"], repo)
    return repo


def outage(cmd: list[str], files: int, mb: float) -> tuple[float | None, int, list[str], int]:
    """(seconds from the kill to the exit, exit code, the error lines, tracebacks) on stderr."""
    with tempfile.TemporaryDirectory(prefix="remote-outage-") as tmp:
        base = Path(tmp)
        server = FakeGcs(base / "gcs").start()
        try:
            server.create_bucket(BUCKET)
            repo = scratch_repo(base, files, mb, server)
            store, killed = base / "gcs" / BUCKET / "s" / "files", []

            def kill_on_first_object():
                while not (store.exists() and any(store.rglob("*"))):
                    time.sleep(0.01)
                killed.append(time.monotonic())
                server.process.kill()

            threading.Thread(target=kill_on_first_object, daemon=True).start()
            env = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}  # as fmnist sets it
            proc = run(cmd, repo, env=env, timeout=900)
            end = time.monotonic()
        finally:
            server.stop()
    said = [line for line in proc.stderr.splitlines() if line.lower().startswith("error")]
    seconds = (end - killed[0]) if killed else None
    return seconds, proc.returncode, said, proc.stderr.count("Traceback (most recent call last)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mb", type=float, default=2.0)
    args = parser.parse_args()
    if args.files < 1 or args.mb <= 0:
        parser.error("--files must be at least 1 and --mb above 0")
    commands = {
        "dvc push -r gcs": [sys.executable, "-m", "dvc", "push", "-r", "gcs"],
        "fmnist push -r gcs": [sys.executable, "-m", "fmnist.cli", "push", "-r", "gcs"],
    }
    print(
        "| command | s from the kill to the exit | exit | error lines | tracebacks | last error |"
    )
    print("|---|---|---|---|---|---|")
    for label, cmd in commands.items():
        seconds, code, said, tracebacks = outage(cmd, args.files, args.mb)
        shown = "—" if seconds is None else f"{seconds:.1f}"
        last = said[-1][:100] + "…" if said else ""
        row = [f"`{label}`", shown, str(code), str(len(said)), str(tracebacks), last]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()

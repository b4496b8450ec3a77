"""`litlab serve --ckpt_path <best.ckpt>`: a checkpoint behind an HTTP API on LitServe (the `[serve]` extra).

`POST /predict` takes a JSON object holding what `litlab predict` takes for that experiment, under the same names as
its `--data.<name>` options: `{"predict_points": [[0.5, -1]]}` for XOR, `{"predict_texts": ["A fine film."]}` for a
review classifier, `{"prompts": ["It was"]}` for a character model, `{"predict_expressions": ["12+34"]}` for an adder;
files (images, recordings, text files) travel inside the JSON as `{"predict_files": [{"name": "a.jpg", "base64":
"..."}]}`. The answer is `{"predictions": [...]}`, the records `predictions.jsonl` would hold for those inputs: the
request goes through the experiment's own DataModule (built from the checkpoint's config with the request's inputs,
validated by its constructor's types) and its `predict_step`, on a Trainer held by each worker. A request the
experiment cannot take is a 400 with `{"detail": "<one line>"}` and the server goes on serving; a checkpoint that is
missing, unsafe to load or not litlab's is one line at start (exit 2); its weights are loaded by the first request.
`GET /health`, and `GET /info` with the experiment, the checkpoint and its monitored metric.

    litlab serve --ckpt_path runs/xor_mlp/<run>/checkpoints/best.ckpt --port 8000
    curl -s localhost:8000/predict -d '{"predict_points": [[0.5, -1.2]]}'
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import litserve as ls
import torch
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from litserve.loops import BatchedLoop, SingleLoop
from litserve.utils import LitAPIStatus, PickleableHTTPException

from litlab.checkpoints import recorded_class, recorded_experiment
from litlab.errors import LitlabError
from litlab.served import CheckpointAPI, Refused, predict_inputs


class RefusalsApart:
    """What `litlab serve` adds to LitServe's loops: a `Refused` answer goes out as its own request's 400."""

    def put_response(self, transport, response_queue_id, uid, response_data, status, response_type) -> None:
        if isinstance(response_data, Refused):
            response_data, status = PickleableHTTPException(400, response_data.detail), LitAPIStatus.ERROR
        super().put_response(transport, response_queue_id, uid, response_data, status, response_type)


class OneByOne(RefusalsApart, SingleLoop):
    pass


class Gathered(RefusalsApart, BatchedLoop):
    pass


class JsonBodies:
    """A POST body that is not JSON is the client's error: a 400 with one line, before LitServe parses it; one over
    the size limit, a 413 (LitServe's size check raises while the body is read here). A JSON body is read as JSON
    whatever its content type says (`curl -d` says a form). A plain ASGI middleware: Starlette's
    `BaseHTTPMiddleware` costs a task and a stream per request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        try:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(chunks)
            json.loads(body or b"null")
        except HTTPException as err:
            return await JSONResponse({"detail": str(err.detail)}, status_code=err.status_code)(scope, receive, send)
        except (ValueError, UnicodeDecodeError) as err:
            refused = JSONResponse({"detail": f"the body is not JSON ({str(err)[:120]})"}, status_code=400)
            return await refused(scope, receive, send)
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        replayed = False

        async def replay():  # the body once, then what the client sends next (its disconnect)
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class LitlabAPI(ls.LitAPI):
    """LitServe's side: each worker builds a `CheckpointAPI` in `setup`; a request it refuses is answered 400 with one
    line, alone (the other requests of its batch are answered)."""

    def __init__(
        self, ckpt_path: str, max_batch_size: int = 1, batch_timeout: float = 0.0, api_path: str = "/predict"
    ) -> None:
        loop = Gathered() if max_batch_size > 1 else OneByOne()
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=api_path, loop=loop)
        self.ckpt_path = ckpt_path

    def setup(self, device: str) -> None:
        self.served = CheckpointAPI(self.ckpt_path)
        self.served.setup(device)

    def decode_request(self, request):  # no annotation: LitServe passes the JSON body as it came
        try:
            return self.served.decode(request)
        except LitlabError as err:
            return Refused(str(err))

    def batch(self, requests: list[dict[str, Any] | Refused]) -> list[dict[str, Any] | Refused]:
        return requests  # gathered requests are merged in `predict`, where the one input they share is known

    def predict(self, request):
        return self.served.answer(request) if not isinstance(request, list) else self.served.predict_many(request)

    def unbatch(self, outputs: list) -> list:
        return outputs

    def encode_response(self, records):  # no annotation: LitServe would make it the response's schema
        return records if isinstance(records, Refused) else {"predictions": records}


def server_info(ckpt_path: str) -> dict:
    """What `GET /info` says: the experiment, the checkpoint, its monitored metric and the versions serving it."""
    import lightning

    checkpoint, config = recorded_experiment(ckpt_path)
    model_class = recorded_class(config["model"])
    callbacks = (checkpoint.get("callbacks") or {}).values()
    score = next((c["best_model_score"] for c in callbacks if c.get("best_model_score") is not None), None)
    return {
        "experiment": model_class.__name__,
        "data": config["data"]["class_path"].rsplit(".", 1)[-1],
        "inputs": predict_inputs(recorded_class(config["data"])),
        "checkpoint": str(Path(ckpt_path).resolve()),
        "epoch": checkpoint.get("epoch"),
        "monitor": getattr(model_class, "monitor", None),
        "best_score": None if score is None else float(score),
        "litlab": version("litlab"),
        "lightning": lightning.__version__,
        "torch": torch.__version__,
    }


def parser() -> argparse.ArgumentParser:
    serve = argparse.ArgumentParser(prog="litlab serve", description=__doc__.split("\n\n")[0])
    serve.add_argument("--ckpt_path", required=True, help="a checkpoint written by litlab (best.ckpt, last.ckpt)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    serve.add_argument("--devices", default="auto", help="how many devices ('auto': all of the accelerator's)")
    serve.add_argument("--workers_per_device", type=int, default=1)
    serve.add_argument("--max_batch_size", type=int, default=1, help="requests LitServe gathers into one batch")
    serve.add_argument("--batch_timeout", type=float, default=0.0, help="seconds it waits to fill a batch")
    serve.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take")
    serve.add_argument("--max_payload_mb", type=float, default=20.0, help="largest request body, in MB")
    return serve


def server(args: argparse.Namespace) -> ls.LitServer:
    """The LitServer for parsed `litlab serve` arguments; the checkpoint is checked here, before any worker starts."""
    info = server_info(args.ckpt_path)
    CheckpointAPI(args.ckpt_path).setup("cpu")  # fails here, in one line, rather than in a worker
    devices = args.devices if args.devices == "auto" else int(args.devices)
    return ls.LitServer(
        LitlabAPI(args.ckpt_path, args.max_batch_size, args.batch_timeout),
        accelerator=args.accelerator, devices=devices, workers_per_device=args.workers_per_device,
        timeout=args.timeout, model_metadata=info, max_payload_size=int(args.max_payload_mb * 1e6),
        middlewares=[JsonBodies],
    )  # fmt: skip


def serve_main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    litserver, stopped = server(args), []

    def stop(signum: int, frame: Any) -> None:  # SIGTERM as Ctrl-C: LitServe stops its workers, none left orphaned
        stopped.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    litserver.run(host=args.host, port=args.port, generate_client_file=False)
    if stopped:
        sys.exit(128 + stopped[0])

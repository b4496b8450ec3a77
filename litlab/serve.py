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
import base64
import binascii
import importlib
import inspect
import json
import shutil
import signal
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lightning as L
import litserve as ls
import torch
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from jsonargparse import ArgumentParser
from starlette.middleware.base import BaseHTTPMiddleware

from litlab import adapters
from litlab.checkpoints import recorded_experiment
from litlab.config_errors import explain
from litlab.errors import LitlabError
from litlab.experiment import experiment_from_config

FILE_INPUTS = ("predict_files",)  # inputs that are files: uploaded in the request as name + base64


def predict_inputs(data_class: type) -> list[str]:
    """The DataModule constructor arguments that say what to predict (`predict_*`, `prompts`)."""
    names = inspect.signature(data_class.__init__).parameters
    return [n for n in names if n.startswith("predict_") or n == "prompts"]


def class_of(section: dict) -> type:
    module, name = section["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def decode_files(items: Any, folder: Path) -> list[str]:
    """Uploaded files (`[{"name": ..., "base64": ...}]`) written into `folder`; their paths."""
    if not isinstance(items, list) or not all(isinstance(i, dict) and {"name", "base64"} <= i.keys() for i in items):
        raise LitlabError('predict_files: a list of {"name": "photo.jpg", "base64": "..."} objects')
    paths = []
    for index, item in enumerate(items):
        try:
            content = base64.b64decode(item["base64"], validate=True)
        except (binascii.Error, TypeError):
            raise LitlabError(f"predict_files[{index}]: its base64 does not decode") from None
        path = folder / f"{index}-{Path(str(item['name'])).name or 'upload'}"  # no directories from the client
        path.write_bytes(content)
        paths.append(str(path))
    return paths


class CheckpointAPI:
    """What each LitServe worker runs: the checkpoint's model and DataModule class, and a Trainer for predict.

    Built in `setup` inside the worker (the arguments are plain strings: the object is sent to worker processes)."""

    def __init__(self, ckpt_path: str) -> None:
        self.ckpt_path = ckpt_path

    def setup(self, device: str) -> None:
        checkpoint, config = recorded_experiment(self.ckpt_path)
        self.model = experiment_from_config(config["model"])
        self.model.adaptation = adapters.recorded(checkpoint)  # an adapter's base is loaded with it
        self.data_class = class_of(config["data"])
        self.data_config = dict(config["data"].get("init_args") or {})
        self.data_state = checkpoint.get(self.data_class.__qualname__, {})  # what the data learned (a vocabulary)
        self.inputs = predict_inputs(self.data_class)
        self.parser = ArgumentParser(exit_on_error=False)  # the DataModule's constructor as a schema, once
        self.parser.add_class_arguments(self.data_class, "data")
        for name in self.inputs:  # the config's own predict inputs (a tiny config's examples) are not the request's
            self.data_config.pop(name, None)
        self.scratch = tempfile.TemporaryDirectory(prefix="litlab-serve-")
        if "cache_dir" in inspect.signature(self.data_class.__init__).parameters:  # what predict caches (proposals)
            self.data_config["cache_dir"] = str(Path(self.scratch.name) / "cache")  # stays with the server
        self.unloaded: str | None = self.ckpt_path  # the weights are loaded by the first predict, as `litlab predict`
        accelerator, _, index = device.partition(":")
        self.trainer = L.Trainer(
            accelerator="gpu" if accelerator == "cuda" else accelerator, devices=[int(index or 0)]
            if accelerator == "cuda" else 1, logger=False, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, default_root_dir=self.scratch.name, callbacks=[],
        )  # fmt: skip

    def decode(self, request: Any) -> dict[str, Any]:
        """The request's inputs as DataModule arguments (uploads written to a scratch folder, under `uploads` the
        names they came with); one-line errors."""
        if not isinstance(request, dict) or not request:
            raise LitlabError(f"the body must be a JSON object with one of: {', '.join(self.inputs)}")
        unknown = sorted(set(request) - set(self.inputs))
        if unknown:
            raise LitlabError(f"unknown field {unknown[0]!r}: this experiment takes {', '.join(self.inputs)}")
        given, uploads = {}, {}
        for name, value in request.items():
            if name in FILE_INPUTS:
                folder = Path(tempfile.mkdtemp(dir=self.scratch.name))
                try:
                    paths = decode_files(value, folder)
                except LitlabError:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
                uploads.update({path: str(item["name"]) for path, item in zip(paths, value)})
                value = paths
            given[name] = value
        return {"inputs": given, "uploads": uploads}

    def predict(self, request: dict[str, Any]) -> list[dict]:
        """The records `litlab predict` would write for a decoded request (an upload's input is its name)."""
        try:
            parsed = self.parser.parse_object({"data": {**self.data_config, **request["inputs"]}})
            data = self.parser.instantiate_classes(parsed).data
        except Exception as err:  # a value of the wrong type, or one the constructor refuses (its LitlabError)
            cause = err
            while cause is not None and not isinstance(cause, LitlabError):
                cause = cause.__cause__
            raise LitlabError(str(cause) if cause else explain(err).replace("--data.", "")) from None
        data.load_state_dict(self.data_state)
        data.prepare_data = lambda: None  # a server never downloads: predict reads only the request's inputs
        try:
            batches = self.trainer.predict(
                self.model, datamodule=data, return_predictions=True, ckpt_path=self.unloaded, weights_only=True
            )
        finally:  # uploads live as long as their request
            for folder in {Path(path).parent for path in request["uploads"]}:
                shutil.rmtree(folder, ignore_errors=True)
        self.unloaded = None  # the model keeps its weights for the next requests
        records = [record for batch in batches for record in batch]
        for record in records:
            if isinstance(record.get("input"), str) and record["input"] in request["uploads"]:
                record["input"] = request["uploads"][record["input"]]
        return records

    def predict_many(self, requests: list[dict[str, Any]]) -> list[list[dict]]:
        """Requests gathered by LitServe's batching, one list of records each: requests that give the same single
        input are run as one predict (their lists joined, the records split back); others one by one."""
        given = [r["inputs"] for r in requests]
        names = {tuple(g) for g in given}
        if len(names) == 1 and len(names.pop()) == 1 and all(isinstance(v, list) for g in given for v in g.values()):
            (name,) = given[0]
            uploads = {path: n for r in requests for path, n in r["uploads"].items()}
            records = self.predict({"inputs": {name: [item for g in given for item in g[name]]}, "uploads": uploads})
            if len(records) == sum(len(g[name]) for g in given):  # one record per input, in order
                bounds = torch.tensor([0] + [len(g[name]) for g in given]).cumsum(0).tolist()
                return [records[a:b] for a, b in zip(bounds, bounds[1:])]
        return [self.predict(r) for r in requests]


class JsonBodies(BaseHTTPMiddleware):
    """A POST body that is not JSON is the client's error: a 400 with one line, before LitServe parses it; one over
    the size limit, a 413 (LitServe's size check raises while the body is read here). A JSON body is read as JSON
    whatever its content type says (`curl -d` says a form)."""

    async def dispatch(self, request, call_next):
        if request.method == "POST":
            try:
                json.loads(await request.body() or b"null")
            except HTTPException as err:
                return JSONResponse({"detail": str(err.detail)}, status_code=err.status_code)
            except (ValueError, UnicodeDecodeError) as err:
                return JSONResponse({"detail": f"the body is not JSON ({str(err)[:120]})"}, status_code=400)
            headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
            request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
        return await call_next(request)


class LitlabAPI(ls.LitAPI):
    """LitServe's side: each worker builds a `CheckpointAPI` in `setup`; one-line errors become 400s."""

    def __init__(
        self, ckpt_path: str, max_batch_size: int = 1, batch_timeout: float = 0.0, api_path: str = "/predict"
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=api_path)
        self.ckpt_path = ckpt_path

    def setup(self, device: str) -> None:
        self.served = CheckpointAPI(self.ckpt_path)
        self.served.setup(device)

    def decode_request(self, request):  # no annotation: LitServe passes the JSON body as it came
        try:
            return self.served.decode(request)
        except LitlabError as err:
            raise HTTPException(status_code=400, detail=str(err)) from None

    def batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return requests  # gathered requests are merged in `predict`, where the one input they share is known

    def predict(self, request: dict[str, Any] | list[dict[str, Any]]) -> list[dict] | list[list[dict]]:
        try:
            return self.served.predict(request) if isinstance(request, dict) else self.served.predict_many(request)
        except LitlabError as err:
            raise HTTPException(status_code=400, detail=str(err)) from None

    def unbatch(self, outputs: list[list[dict]]) -> list[list[dict]]:
        return outputs

    def encode_response(self, records: list[dict]) -> dict:
        return {"predictions": records}


def server_info(ckpt_path: str) -> dict:
    """What `GET /info` says: the experiment, the checkpoint, its monitored metric and the versions serving it."""
    import lightning

    checkpoint, config = recorded_experiment(ckpt_path)
    model_class = class_of(config["model"])
    callbacks = (checkpoint.get("callbacks") or {}).values()
    score = next((c["best_model_score"] for c in callbacks if c.get("best_model_score") is not None), None)
    return {
        "experiment": model_class.__name__,
        "data": config["data"]["class_path"].rsplit(".", 1)[-1],
        "inputs": predict_inputs(class_of(config["data"])),
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

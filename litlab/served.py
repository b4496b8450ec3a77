"""What a `litlab serve` worker runs on a request, apart from LitServe: the checkpoint's model with its weights, its
DataModule built per request from the checkpoint's data config and the request's inputs (typed by the constructor),
and a Trainer that runs `predict_step`; a request it cannot take is a `Refused` with one line."""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import shutil
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import ArgumentParser

from litlab.checkpoints import recorded_class, recorded_experiment
from litlab.config_errors import explain
from litlab.errors import LitlabError, raised_by_a_constructor
from litlab.export import loaded_model

FILE_INPUTS = ("predict_files",)  # inputs that are files: uploaded in the request as name + base64


def predict_inputs(data_class: type) -> list[str]:
    """The DataModule constructor arguments that say what to predict (`predict_*`, `prompts`)."""
    names = inspect.signature(data_class.__init__).parameters
    return [n for n in names if n.startswith("predict_") or n == "prompts"]


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


def typed_arguments(owner: type, names: tuple[str, ...] | list[str]) -> ArgumentParser:
    """A parser of some of `owner`'s constructor arguments, typed as its signature types them."""
    hints = typing.get_type_hints(owner.__init__)
    parser = ArgumentParser(exit_on_error=False)
    for name in names:
        parser.add_argument(f"--{name}", type=hints[name])
    return parser


def checked(parser: ArgumentParser, values: dict[str, Any]) -> dict[str, Any]:
    """`values` as `parser` types them; a value of the wrong type is one line naming it and its type."""
    if not values:
        return {}
    try:
        parsed = parser.parse_object(values)
    except Exception as err:  # jsonargparse's message names the argument and its type
        raise LitlabError(explain(err).replace("--", "")) from None
    return {name: parsed[name] for name in values}


@dataclass(frozen=True)
class Refused:
    """A request the experiment cannot take, answered 400 with `detail`. It travels as a value, not an exception:
    LitServe answers every request of a gathered batch with the exception one of them raised."""

    detail: str


class CheckpointAPI:
    """What each LitServe worker runs: the checkpoint's model and DataModule class, and a Trainer for predict.

    Built in `setup` inside the worker (the arguments are plain strings: the object is sent to worker processes)."""

    def __init__(self, ckpt_path: str) -> None:
        self.ckpt_path = ckpt_path

    def setup(self, device: str) -> None:
        checkpoint, config = recorded_experiment(self.ckpt_path)
        self.data_class = recorded_class(config["data"])
        data_config = dict(config["data"].get("init_args") or {})
        self.data_state = checkpoint.get(self.data_class.__qualname__, {})  # what the data learned (a vocabulary)
        self.inputs = predict_inputs(self.data_class)
        for name in self.inputs:  # the config's own predict inputs (a tiny config's examples) are not the request's
            data_config.pop(name, None)
        self.scratch = tempfile.TemporaryDirectory(prefix="litlab-serve-")
        if "cache_dir" in inspect.signature(self.data_class.__init__).parameters:  # what predict caches (proposals)
            data_config["cache_dir"] = str(Path(self.scratch.name) / "cache")  # stays with the server
        self.parser = ArgumentParser(exit_on_error=False)  # the DataModule's constructor as a schema
        self.parser.add_class_arguments(self.data_class, "data")
        self.data_config = self.parser.parse_object({"data": data_config})  # checked once; a request adds its inputs
        self.inputs_parser = typed_arguments(self.data_class, self.inputs)
        self.model = loaded_model(checkpoint, config, self.data({}))  # weights that do not fit fail here, at start
        self.settings = self.model.request_settings
        self.settings_parser = typed_arguments(type(self.model), self.settings)
        accelerator, _, index = device.partition(":")
        self.trainer = L.Trainer(
            accelerator="gpu" if accelerator == "cuda" else accelerator, devices=[int(index or 0)]
            if accelerator == "cuda" else 1, logger=False, enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, default_root_dir=self.scratch.name, callbacks=[],
        )  # fmt: skip

    def decode(self, request: Any) -> dict[str, Any]:
        """The request's inputs as DataModule arguments (uploads written to a scratch folder, under `uploads` the
        names they came with) and its own settings of predict (`Experiment.request_settings`); one-line errors."""
        if not isinstance(request, dict):
            raise LitlabError(f"the body must be a JSON object with one of: {', '.join(self.inputs)}")
        unknown = sorted(set(request) - set(self.inputs) - set(self.settings))
        if unknown:
            fields = ", ".join([*self.inputs, *self.settings])
            raise LitlabError(f"unknown field {unknown[0]!r}: this experiment takes {fields}")
        if not set(request) & set(self.inputs):
            raise LitlabError(f"the body gives nothing to predict: one of {', '.join(self.inputs)}")
        settings = checked(self.settings_parser, {name: request[name] for name in self.settings if name in request})
        given, uploads = {}, {}
        for name, value in request.items():
            if name in self.settings:
                continue
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
        return {"inputs": given, "settings": settings, "uploads": uploads}

    def data(self, inputs: dict[str, Any]) -> L.LightningDataModule:
        """The checkpoint's DataModule with these predict inputs and what its data learned; one-line errors."""
        parsed = self.data_config.clone()
        for name, value in checked(self.inputs_parser, inputs).items():
            parsed[f"data.{name}"] = value
        try:
            data = self.parser.instantiate(parsed).data
        except Exception as err:  # the constructor refuses a value (its LitlabError)
            refused = raised_by_a_constructor(err)
            raise LitlabError(str(refused) if refused else explain(err).replace("--data.", "")) from None
        data.load_state_dict(self.data_state)
        data.prepare_data = lambda: None  # a server never downloads: predict reads only the request's inputs
        return data

    def predict(self, request: dict[str, Any]) -> list[dict]:
        """The records `litlab predict` would write for a decoded request (an upload's input is its name)."""
        data = self.data(request["inputs"])
        self.model.requested = request["settings"]
        try:
            batches = self.trainer.predict(self.model, datamodule=data, return_predictions=True)
        finally:  # uploads and settings live as long as their request
            self.model.requested = {}
            for folder in {Path(path).parent for path in request["uploads"]}:
                shutil.rmtree(folder, ignore_errors=True)
        records = [record for batch in batches for record in batch]
        for record in records:
            if isinstance(record.get("input"), str) and record["input"] in request["uploads"]:
                record["input"] = request["uploads"][record["input"]]
        return records

    def predict_many(self, requests: list[dict[str, Any] | Refused]) -> list[list[dict] | Refused]:
        """Requests gathered by LitServe's batching, one list of records (or a refusal) each: requests that give the
        same single input with the same settings are run as one predict (their lists joined, the records split
        back); others, and all of them when that one predict is refused, one by one."""
        taken = [r for r in requests if not isinstance(r, Refused)]
        joined = self.joined(taken)
        if joined is not None:
            try:
                records = self.predict(joined)
            except LitlabError:  # one of them is refused: each is answered on its own
                records = []
            sizes = [len(next(iter(r["inputs"].values()))) for r in taken]
            if len(records) == sum(sizes):  # one record per input, in order
                bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
                answers = iter([records[a:b] for a, b in zip(bounds, bounds[1:])])
                return [r if isinstance(r, Refused) else next(answers) for r in requests]
        return [self.answer(r) for r in requests]

    @staticmethod
    def joined(requests: list[dict[str, Any]]) -> dict[str, Any] | None:
        """One request giving all of `requests`' inputs, when they give the same single input (a list) with the same
        settings; else None."""
        shapes = {(tuple(r["inputs"]), json.dumps(r["settings"], sort_keys=True)) for r in requests}
        lists = all(isinstance(value, list) for r in requests for value in r["inputs"].values())
        if len(requests) < 2 or len(shapes) > 1 or len(requests[0]["inputs"]) != 1 or not lists:
            return None
        (name,) = requests[0]["inputs"]
        return {
            "inputs": {name: [item for r in requests for item in r["inputs"][name]]},
            "settings": requests[0]["settings"],
            "uploads": {path: given for r in requests for path, given in r["uploads"].items()},
        }

    def answer(self, request: dict[str, Any] | Refused) -> list[dict] | Refused:
        """A decoded request's records, or its refusal."""
        if isinstance(request, Refused):
            return request
        try:
            return self.predict(request)
        except LitlabError as err:
            return Refused(str(err))

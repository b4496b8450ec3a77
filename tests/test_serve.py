"""`litlab serve`: a checkpoint behind LitServe answers what `litlab predict` answers for the same inputs, bad requests
are 4xx lines that leave the server serving, and the real server starts, answers over HTTP and stops."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import torch
from conftest import LITLAB, QUIET, checkpoints, cli, config, fails_in_one_line, tiny, workdir

ls = pytest.importorskip("litserve")
from fastapi.testclient import TestClient  # noqa: E402
from litserve.utils import wrap_litserve_start  # noqa: E402

from litlab.serve import JsonBodies, LitlabAPI  # noqa: E402
from litlab.served import FILE_INPUTS, predict_inputs  # noqa: E402

# every family that predicts: points, x values, expressions, reviews, prompts, sentences to correct, instructions,
# uploaded images (grey, colour, with boxes), uploaded recordings (digits, LibriSpeech)
SERVED = [
    *("xor_mlp", "curve_poly6", "adder_transformer", "imdb_fasttext", "char_gpt_cpu", "spell_bart_tiny", "gpt2_lora"),
    *("fashion_cnn", "cifar10_fast", "fruit_fast_rcnn_scratch", "speech_ctc", "librispeech_ctc"),
]
SETTINGS = {name: ["--model.temperature=0"] for name in ("char_gpt_cpu", "gpt2_lora")}  # greedy: the same answers


def fitted(experiment: str, folder: Path) -> tuple[Path, dict, list[dict]]:
    """A tiny checkpoint of the experiment, the request its tiny config's predict inputs make (files uploaded), and
    the records `litlab predict` writes for them."""
    folder = workdir(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli("fit", "--config", config(experiment), *tiny(experiment), *QUIET, "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            *SETTINGS.get(experiment, []))  # fmt: skip
        best, _ = checkpoints(folder)
        run = cli("predict", "--ckpt_path", best, *tiny(experiment), "--trainer.enable_progress_bar=false")
        hparams = run.datamodule.hparams
        request = {}
        for name in predict_inputs(type(run.datamodule)):
            value = hparams.get(name)
            if value and name in FILE_INPUTS:
                value = [{"name": Path(f).name, "base64": base64.b64encode(Path(f).read_bytes()).decode()}
                         for f in value]  # fmt: skip
            if value:
                request[name] = value
        written = sorted(folder.glob("runs/**/predictions.jsonl"))[-1]
        records = [json.loads(line) for line in written.read_text().splitlines()]
        for record in records:  # an uploaded file answers under the name it was sent with
            if isinstance(record["input"], str) and Path(record["input"]).is_file():
                record["input"] = Path(record["input"]).name
    return best.resolve(), request, records


BAD_REQUESTS = [  # (experiment, body, status, what the one-line detail names)
    ("xor_mlp", b"{not json", 400, "not JSON"),
    ("xor_mlp", json.dumps([1, 2]).encode(), 400, "JSON object"),
    ("xor_mlp", json.dumps({"points": [[1, 2]]}).encode(), 400, "unknown field 'points'"),
    ("xor_mlp", json.dumps({"predict_points": [[1, "a"]]}).encode(), 400, "predict_points"),
    ("adder_transformer", json.dumps({"predict_expressions": ["12*x"]}).encode(), 400, "12*x"),
    ("imdb_fasttext", json.dumps({"predict_texts": [""]}).encode(), 400, "empty"),
    ("fashion_cnn", json.dumps({"predict_files": [{"name": "a.png", "base64": "@@"}]}).encode(), 400, "base64"),
    ("fashion_cnn", json.dumps({"predict_files": [{"name": "a.png", "base64": "aGk="}]}).encode(), 400, "a.png"),
    ("fashion_cnn", json.dumps({"predict_files": ["a.png"]}).encode(), 400, "base64"),
    ("xor_mlp", b'{"predict_points": [' + b"[1, 2], " * 300_000 + b"[1, 2]]}", 413, "too large"),
    ("xor_mlp", json.dumps({"temperature": 0}).encode(), 400, "unknown field 'temperature'"),
    ("char_gpt_cpu", json.dumps({"temperature": 0}).encode(), 400, "nothing to predict"),
    ("char_gpt_cpu", json.dumps({"prompts": ["The"], "temperature": -1}).encode(), 400, "temperature"),
    ("char_gpt_cpu", json.dumps({"prompts": ["The"], "generate_chars": "many"}).encode(), 400, "generate_chars"),
]


def test_requests_are_answered_as_litlab_predict_and_bad_ones_leave_the_server_serving(tmp_path_factory):
    """One test over one server (its workers take a minute to start: a test per case would start one per xdist
    worker): every experiment's request answered as `litlab predict` answers it, then each bad request a 4xx with
    one line, followed by a good request that is still answered."""
    cases = {name: fitted(name, tmp_path_factory.mktemp(name)) for name in SERVED}
    apis = [LitlabAPI(str(best), api_path=f"/{name}/predict") for name, (best, _, _) in cases.items()]
    server = ls.LitServer(
        apis, accelerator="cpu", devices=1, max_payload_size=2_000_000, middlewares=[JsonBodies], timeout=120
    )
    with wrap_litserve_start(server) as started, TestClient(started.app) as client:
        deadline = time.monotonic() + 180  # a worker process per experiment starts (imports torch) first
        while client.get("/health").text != "ok":
            assert time.monotonic() < deadline, "the workers did not start in 3 minutes"
            time.sleep(0.5)
        for experiment, (_, request, records) in cases.items():
            answer = client.post(f"/{experiment}/predict", json=request)
            assert answer.status_code == 200, (experiment, answer.text)
            assert answer.json()["predictions"] == records, experiment
        _, request, records = cases["char_gpt_cpu"]  # a request's own settings: 5 characters, greedily
        answer = client.post("/char_gpt_cpu/predict", json={**request, "generate_chars": 5, "temperature": 0})
        assert [r["output"] for r in answer.json()["predictions"]] == [r["output"][:5] for r in records]
        for experiment, body, status, naming in BAD_REQUESTS:
            answer = client.post(f"/{experiment}/predict", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == status, (experiment, body[:60], answer.text)
            detail = answer.json()["detail"]
            assert naming in detail and "\n" not in detail and "Traceback" not in detail, (experiment, detail)
            _, request, records = cases[experiment]
            assert client.post(f"/{experiment}/predict", json=request).json()["predictions"] == records


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/predict", data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_the_real_server_starts_answers_over_http_and_stops(tmp_path):
    """Two workers gathering batches of up to 4 requests: a bad request sent at once with good ones is answered 400
    alone, the good ones as `litlab predict` answers them."""
    best, request, records = fitted("xor_mlp", tmp_path / "fit")
    port = free_port()
    process = subprocess.Popen(
        [LITLAB, "serve", "--ckpt_path", str(best), "--port", str(port), "--accelerator", "cpu", "--devices", "1",
         "--workers_per_device", "2", "--max_batch_size", "4", "--batch_timeout", "0.5"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as health:
                    if health.read() == b"ok":
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "the server did not become healthy in 2 minutes"
            time.sleep(0.5)
        assert post(url, request) == (200, {"predictions": records})  # the first: both workers have started
        bad = {"predict_points": [[1, "a"]]}
        with ThreadPoolExecutor(4) as pool:  # sent at once: gathered into one batch (or two, one per worker)
            answers = list(pool.map(lambda body: post(url, body), [request, bad, request, request]))
        assert [status for status, _ in answers] == [200, 400, 200, 200], answers
        labels = [(r["input"], r["output"]) for r in records]
        for answer in (answers[i][1] for i in (0, 2, 3)):  # computed in a batch: the same up to float rounding
            assert [(r["input"], r["output"]) for r in answer["predictions"]] == labels
            assert [r["score"] for r in answer["predictions"]] == pytest.approx([r["score"] for r in records])
        assert "predict_points" in answers[1][1]["detail"]
        with urllib.request.urlopen(f"{url}/info", timeout=5) as info:
            model = json.loads(info.read())["model"]
        assert model["experiment"] == "XorMLP" and model["monitor"] == "val/acc" and model["checkpoint"] == str(best)
    finally:
        workers = psutil.Process(process.pid).children(recursive=True)
        process.terminate()
        process.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=30)
        for worker in alive:
            worker.kill()
    assert workers and not alive and process.returncode == 143  # SIGTERM stops the workers too


def test_a_checkpoint_that_cannot_be_served_is_one_line(tmp_path, capfd):
    fails_in_one_line(capfd, "serve", "--ckpt_path", tmp_path / "missing.ckpt", naming="no such file")
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    fails_in_one_line(capfd, "serve", "--ckpt_path", tmp_path / "junk.ckpt", naming="not a checkpoint")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir(tmp_path))
        cli("fit", "--config", config("xor_mlp"), *tiny("xor_mlp"), *QUIET, "--trainer.max_epochs=1")
    best, _ = checkpoints(tmp_path)
    checkpoint = torch.load(best, weights_only=True)
    checkpoint["state_dict"].pop(sorted(checkpoint["state_dict"])[-1])  # a layer's bias lost
    torch.save(checkpoint, tmp_path / "damaged.ckpt")
    fails_in_one_line(capfd, "serve", "--ckpt_path", tmp_path / "damaged.ckpt", naming="weights do not fit")

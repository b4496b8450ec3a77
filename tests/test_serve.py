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
from pathlib import Path

import psutil
import pytest
from conftest import LITLAB, QUIET, checkpoints, cli, config, fails_in_one_line, tiny, workdir

ls = pytest.importorskip("litserve")
from fastapi.testclient import TestClient  # noqa: E402
from litserve.utils import wrap_litserve_start  # noqa: E402

from litlab.serve import FILE_INPUTS, JsonBodies, LitlabAPI, predict_inputs  # noqa: E402

# one experiment per kind of input: points, x values, expressions, texts, prompts, uploaded images, uploaded images
# with boxes, uploaded recordings
SERVED = [
    *("xor_mlp", "curve_poly6", "adder_transformer", "imdb_fasttext", "char_gpt_cpu"),
    *("fashion_cnn", "fruit_fast_rcnn_scratch", "speech_ctc"),
]
SETTINGS = {"char_gpt_cpu": ["--model.temperature=0"]}  # greedy: the same continuation from both


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


def test_the_real_server_starts_answers_over_http_and_stops(tmp_path):
    best, request, records = fitted("xor_mlp", tmp_path / "fit")
    port = free_port()
    process = subprocess.Popen(
        [LITLAB, "serve", "--ckpt_path", str(best), "--port", str(port), "--accelerator", "cpu", "--devices", "1"],
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
        post = urllib.request.Request(f"{url}/predict", data=json.dumps(request).encode(), method="POST")
        with urllib.request.urlopen(post, timeout=30) as answer:
            assert json.loads(answer.read())["predictions"] == records
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

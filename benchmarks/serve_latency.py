"""Latency and throughput of `litlab serve` beside `litlab predict`, over real HTTP on 127.0.0.1 only.

The requests carry one input each, taken in turn from `--inputs` (files: an image or a recording is uploaded as it
is, any other file's text is the input, e.g. one IMDB review per file) under the request field `--field` (the name of
the `--data.<name>` option `litlab predict` takes), with `--extra` settings merged in. For each `--setting` (extra
`litlab serve` flags) a server is started as a subprocess and warmed up; then, at each `--concurrency`, that many
client threads send `--requests` requests in all: requests per second, and the median and 99th percentile latency.
A refused request (anything but 200) stops the run: the figures are of answered requests only. With `--bad_every n`,
a last pass sends the requests again from the most clients with every n-th replaced by a bad one (not JSON, an unknown
field, nothing to predict, a wrong type) and counts how each was answered, and the server processes that restarted.
Offline, `litlab predict` runs on `--offline` inputs (the same, in turn) and on one; the difference of the two wall
times is the time of the rest, which gives its throughput without the start-up.

    python benchmarks/serve_latency.py --ckpt_path runs/fashion_cnn/<run>/checkpoints/best.ckpt \\
        --field predict_files --inputs images/*.png --concurrency 1 8 32 \\
        --setting "one by one=" --setting "batched=--max_batch_size 32 --batch_timeout 0.005"
"""

from __future__ import annotations

import argparse
import base64
import json
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

LITLAB = str(Path(sys.executable).with_name("litlab"))
UPLOADED = {".png", ".jpg", ".jpeg", ".wav", ".flac"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, limit: float = 180) -> float:
    """Seconds until `/health` says ok."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read()[-500:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as health:
                if health.read() == b"ok":
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become healthy")


def bodies(field: str, inputs: list[Path], extra: dict) -> list[bytes]:
    """One request body per input."""
    out = []
    for path in inputs:
        if path.suffix.lower() in UPLOADED:
            value = [{"name": path.name, "base64": base64.b64encode(path.read_bytes()).decode()}]
        else:
            value = [path.read_text(encoding="utf-8").strip()]
        out.append(json.dumps({field: value, **extra}).encode())
    return out


def status(url: str, body: bytes) -> tuple[int, bytes]:
    """The status and body of a POST /predict."""
    request = urllib.request.Request(f"{url}/predict", data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def post(url: str, body: bytes) -> float:
    """Seconds one request takes; anything but a 200 stops the benchmark."""
    start = time.perf_counter()
    code, answer = status(url, body)
    if code != 200:
        raise SystemExit(f"a request was answered {code}: {answer[:300]!r}")
    return time.perf_counter() - start


def load(url: str, requests: list[bytes], clients: int) -> tuple[float, float, float]:
    """Requests per second, median and p99 latency (ms) of `requests` sent by `clients` threads at once."""
    turn, lock = iter(requests), threading.Lock()

    def client(_: int) -> list[float]:
        times = []
        while True:
            with lock:
                body = next(turn, None)
            if body is None:
                return times
            times.append(post(url, body) * 1000)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(t for times in pool.map(client, range(clients)) for t in times)
    rate = len(latencies) / (time.perf_counter() - start)
    return rate, statistics.median(latencies), latencies[round(0.99 * (len(latencies) - 1))]


def bad_bodies(field: str) -> list[bytes]:
    """Requests no experiment can take: not JSON, an unknown field, nothing to predict, a value of the wrong type."""
    return [b"{not json", b'{"no_such_field": 1}', b"{}", json.dumps({field: 3}).encode()]


def mixed(url: str, requests: list[bytes], every: int, clients: int, field: str) -> str:
    """Every `every`-th request a bad one, all sent by `clients` threads at once: how each kind was answered."""
    bad = bad_bodies(field)
    sent = [(bad[i % len(bad)], False) if i % every == every - 1 else (body, True) for i, body in enumerate(requests)]
    with ThreadPoolExecutor(clients) as pool:
        answered = list(pool.map(lambda item: (status(url, item[0])[0], item[1]), sent))
    good = sum(code == 200 for code, fine in answered if fine)
    refused = sum(400 <= code < 500 for code, fine in answered if not fine)
    return f"{good} good answered 200, {refused} bad answered 4xx, {len(sent) - good - refused} failed"


def served(ckpt: str, flags: list[str], requests: list[bytes], levels: list[int], setting: str, args) -> None:
    port = free_port()
    command = [LITLAB, "serve", "--ckpt_path", ckpt, "--port", str(port), *flags]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_healthy(url, process)
        for body in requests[:8]:
            post(url, body)  # warm-up
        print(f"{setting}: healthy after {ready:.1f} s", flush=True)
        for clients in levels:
            rate, p50, p99 = load(url, requests, clients)
            rate, p50, p99 = f"{rate:7.1f}", f"{p50:6.1f}", f"{p99:6.1f}"
            print(f"  concurrency {clients:3d}: {rate} requests/s, p50 {p50} ms, p99 {p99} ms", flush=True)
        if args.bad_every:
            workers = {child.pid for child in psutil.Process(process.pid).children(recursive=True)}
            result = mixed(url, requests, args.bad_every, max(levels), args.field)
            now = {child.pid for child in psutil.Process(process.pid).children(recursive=True)}
            print(f"  every {args.bad_every}th request bad: {result}; {len(now - workers)} processes restarted")
    finally:
        process.terminate()
        process.wait(timeout=30)


def offline(ckpt: str, field: str, inputs: list[Path], extra: dict, count: int) -> float:
    """`litlab predict`'s inputs per second on `count` inputs (these, in turn), its start-up left out: the wall time
    of one input taken from that of all."""

    def run(given: list[Path]) -> float:
        if given[0].suffix.lower() in UPLOADED:
            values = [str(path.resolve()) for path in given]
        else:
            values = [path.read_text(encoding="utf-8").strip() for path in given]
        with tempfile.TemporaryDirectory() as folder:  # a config file: the inputs may be longer than a command line
            config = Path(folder) / "inputs.json"
            config.write_text(json.dumps({"data": {"init_args": {field: values}}, "model": {"init_args": extra}}))
            command = [LITLAB, "predict", "--ckpt_path", ckpt, "--config", str(config), "--trainer.logger=false",
                       "--trainer.enable_progress_bar=false"]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(command, cwd=folder, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return time.perf_counter() - start

    every = (inputs * (count // len(inputs) + 1))[:count]
    one = min(run(inputs[:1]) for _ in range(2))
    return (count - 1) / (min(run(every) for _ in range(2)) - one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--field", required=True, help="the request field: predict_files, predict_texts, prompts...")
    parser.add_argument("--inputs", nargs="+", type=Path, required=True, help="one file per input")
    parser.add_argument("--extra", default="{}", help='settings merged into each request, e.g. {"generate_chars": 50}')
    parser.add_argument("--setting", action="append", required=True, help='"name=litlab serve flags"')
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=256, help="requests at each concurrency")
    parser.add_argument("--bad_every", type=int, default=0, help="then a mix: every n-th request a bad one")
    parser.add_argument("--offline", type=int, default=1024, help="inputs `litlab predict` runs on (0: skip it)")
    args = parser.parse_args()
    ckpt, extra = str(Path(args.ckpt_path).resolve()), json.loads(args.extra)
    requests = bodies(args.field, args.inputs, extra)
    requests = (requests * (args.requests // len(requests) + 1))[: args.requests]
    for setting in args.setting:
        name, flags = setting.split("=", 1)
        served(ckpt, shlex.split(flags), requests, args.concurrency, name, args)
    if args.offline:
        rate = offline(ckpt, args.field, args.inputs, extra, args.offline)
        print(f"litlab predict, {args.offline} inputs: {rate:.1f} inputs/s", flush=True)


if __name__ == "__main__":
    main()

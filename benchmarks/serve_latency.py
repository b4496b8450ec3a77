"""Latency and throughput of `litlab serve`: one server per setting, requests over real HTTP on 127.0.0.1.

For each `--setting` (extra `litlab serve` flags), the server is started as a subprocess, warmed up, then sent
`--requests` requests one after another (latency percentiles), then the same number from `--clients` threads at once
(requests per second). The request body is a JSON file (what `POST /predict` takes for that checkpoint).

    python benchmarks/serve_latency.py --ckpt_path runs/xor_mlp/<run>/checkpoints/best.ckpt \\
        --body '{"predict_points": [[0.5, -1.2]]}' --setting "one by one=" \\
        --setting "batches of 8=--max_batch_size 8 --batch_timeout 0.01"
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LITLAB = str(Path(sys.executable).with_name("litlab"))


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


def post(url: str, body: bytes) -> float:
    """Seconds one request takes, answered 200."""
    request = urllib.request.Request(f"{url}/predict", data=body, headers={"content-type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as answer:
        answer.read()
    return time.perf_counter() - start


def measure(ckpt: str, body: bytes, extra: list[str], requests: int, clients: int) -> str:
    port = free_port()
    command = [LITLAB, "serve", "--ckpt_path", ckpt, "--port", str(port), *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_healthy(url, process)
        for _ in range(5):
            post(url, body)  # warm-up: the first request loads the weights
        latencies = sorted(post(url, body) * 1000 for _ in range(requests))
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda _: post(url, body), range(requests)))
        rate = requests / (time.perf_counter() - start)
    finally:
        process.terminate()
        process.wait(timeout=30)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    return (
        f"healthy after {ready:.1f} s; one at a time: median {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms; "
        f"{clients} clients: {rate:.1f} requests/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--body", required=True, help="the JSON request body, or @file")
    parser.add_argument("--setting", action="append", required=True, help='"name=litlab serve flags"')
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    body = Path(args.body[1:]).read_bytes() if args.body.startswith("@") else args.body.encode()
    json.loads(body)  # a bad body is the caller's error, not a server's
    for setting in args.setting:
        name, flags = setting.split("=", 1)
        result = measure(str(Path(args.ckpt_path).resolve()), body, shlex.split(flags), args.requests, args.clients)
        print(f"{name}: {result}", flush=True)


if __name__ == "__main__":
    main()

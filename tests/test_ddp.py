"""Two-process DDP on the CPU (gloo), as `litlab` runs it: fit and test succeed, metrics agree with a
single-process run, only rank 0 creates a W&B run, and each rank draws its own random numbers."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import LITLAB, config, run_litlab, tiny

DDP = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
CASES = {
    # experiment: (arguments for a short run with the global batch of the single-process run, metric, tolerance)
    "xor_mlp": (tiny("xor_mlp") + ["--trainer.max_epochs=4"], "test/acc", 0.02),
    "adder_transformer": (
        tiny("adder_transformer") + ["--trainer.max_epochs=2"],
        "test/loss",
        0.15,
    ),
    "fashion_cnn": (
        tiny("fashion_cnn") + ["--trainer.max_epochs=2"],
        "test/loss",
        0.15,
    ),
    # stream batches: each rank must read its own rows, in order, for the state it carries to fit them
    "char_lstm": (
        tiny("char_lstm")[:2] + tiny("char_lstm")[3:] + ["--data.streams=true", "--trainer.max_epochs=2"],
        "test/loss",
        0.15,
    ),
    # length-bucketed batches: Lightning re-creates the batch sampler over its DistributedSampler
    "imdb_bilstm": (
        tiny("imdb_bilstm")[:4] + tiny("imdb_bilstm")[5:] + ["--trainer.max_epochs=2"],
        "test/loss",
        0.15,
    ),
}


def test_metric(output: str, name: str) -> float:
    match = re.search(rf"{re.escape(name)}\s*│\s*([0-9.eE+-]+)", output)
    assert match, output[-3000:]
    return float(match.group(1))


test_metric.__test__ = False  # a helper, not a test


def fit_and_test(tmp_path, name: str, args: list[str], batch_size: int, devices: list[str]) -> tuple[str, str]:
    workdir = tmp_path / ("world2" if devices else "world1")
    workdir.mkdir()
    common = ["--config", config(name), *args, f"--data.batch_size={batch_size}", "--trainer.enable_progress_bar=false"]
    fit = run_litlab("fit", *common, *devices, cwd=workdir)
    assert fit.returncode == 0, fit.stderr[-3000:]
    best = fit.stdout.strip().splitlines()[-1].removeprefix("best checkpoint: ")
    tested = run_litlab("test", "--ckpt_path", best, *common, *devices, "--trainer.logger=false", cwd=workdir)
    assert tested.returncode == 0, tested.stderr[-3000:]
    return fit.stdout + fit.stderr, tested.stdout + tested.stderr


# `make test` runs the data paths that differ under DDP: tensors in memory (xor_mlp), streams (char_lstm), length
# buckets (imdb_bilstm); the adder's DDP fit is also in test_ranks_draw_their_own_random_numbers_and_resume_them_exactly
COVERED_ELSEWHERE = ("adder_transformer", "fashion_cnn")


@pytest.mark.parametrize(
    "experiment", [pytest.param(e, marks=pytest.mark.slow) if e in COVERED_ELSEWHERE else e for e in sorted(CASES)]
)
def test_ddp_two_processes_match_one(tmp_path, experiment):
    args, metric, tolerance = CASES[experiment]
    _, single = fit_and_test(tmp_path, experiment, args, batch_size=64, devices=[])
    fit_log, double = fit_and_test(tmp_path, experiment, args, batch_size=32, devices=DDP)  # same global batch
    assert "distributed_backend=gloo" in fit_log and "All distributed processes registered" in fit_log
    one, two = test_metric(single, metric), test_metric(double, metric)
    assert abs(one - two) <= tolerance * max(1.0, abs(one)), (one, two)
    assert len(list((tmp_path / "world2").glob("runs/*/*/wandb/offline-run-*"))) == 1  # rank 0 only


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_node_launch_trains_as_two_processes_on_one_node(tmp_path):
    """The README's multi-node recipe as it runs: two `torchrun --nnodes=2 --node_rank=0/1` launches (one process
    each, a localhost rendezvous, gloo) train XOR to the result of the two-process single-node run, with one W&B run
    and one set of checkpoints in the shared working directory."""
    args, metric, tolerance = CASES["xor_mlp"]
    _, one_node = fit_and_test(tmp_path, "xor_mlp", args, batch_size=32, devices=DDP)
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    quiet = "--trainer.enable_progress_bar=false"
    common = ["fit", "--config", config("xor_mlp"), *args, "--data.batch_size=32", quiet]
    common += ["--trainer.accelerator=cpu", "--trainer.strategy=ddp", "--trainer.num_nodes=2", "--trainer.devices=1"]
    rendezvous = ["--nnodes=2", "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    launches = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--node_rank={rank}", LITLAB, *common],
            cwd=nodes,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for rank in (0, 1)
    ]
    logs = [launch.communicate(timeout=300)[0] for launch in launches]
    assert [launch.returncode for launch in launches] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "distributed_backend=gloo" in logs[0] and "All distributed processes registered" in logs[0]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1]  # the second node is rank 1
    (best,) = nodes.glob("runs/xor_mlp/*/checkpoints/best.ckpt")  # one set of checkpoints
    assert len(list(nodes.glob("runs/*/*/wandb/offline-run-*"))) == 1  # rank 0's W&B run only
    tested = run_litlab("test", "--ckpt_path", best, *args, "--trainer.logger=false", cwd=nodes)
    assert tested.returncode == 0, tested.stderr[-3000:]
    one, two = test_metric(one_node, metric), test_metric(tested.stdout, metric)
    assert abs(one - two) <= tolerance, (one, two)


def test_rank_zero_failing_in_prepare_data_ends_every_rank_in_one_line(tmp_path):
    """Only rank 0 prepares data: when its download fails (here through a proxy that refuses at once, so nothing leaves
    the machine), it prints the reason and rank 1, left at the barrier, says so in one line instead of a traceback."""
    proxy = {name: "http://127.0.0.1:9" for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    unproxied = {"no_proxy": None, "NO_PROXY": None}
    args = ["fit", "--config", config("fashion_cnn"), f"--data.data_dir={tmp_path}", "--trainer.fast_dev_run=true"]
    result = run_litlab(*args, *DDP, env={**proxy, **unproxied}, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("litlab: error:")]
    assert len(lines) == 2 and "could not download FashionMNIST" in lines[0], result.stderr[-3000:]
    assert "rank 1 stopped: another process of the run ended first" in lines[1]


class RecordRandomState(L.Callback):
    """Appends a digest of torch's random state at the start of every training batch (what dropout and the
    augmentations on the device draw from) to `random-<rank>.txt` in the working directory; reading it draws nothing."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        digest = hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()[:16]
        with open(f"random-{trainer.global_rank}.txt", "a") as record:
            record.write(f"{trainer.current_epoch} {batch_idx} {digest}\n")


def test_ranks_draw_their_own_random_numbers_and_resume_them_exactly(tmp_path):
    """seed_everything gives every rank the same seed, which the model's initial weights need; past that, ranks drawing
    the same numbers would mask, shift and flip their different batches alike. Each rank draws its own, rank 0 as a
    single process would. A SIGTERM to one rank mid-epoch stops both after the same batch, and the run resumed from
    `last.ckpt` draws on every rank what the uninterrupted run drew and ends on the same weights."""
    adder = tiny("adder_transformer")
    args = ["fit", "--config", config("adder_transformer"), *adder, "--data.batch_size=32", "--model.dropout=0.1"]
    args += ["--trainer.max_epochs=2", "--trainer.logger=false", "--trainer.enable_progress_bar=false", *DDP]
    record = "--trainer.callbacks+=test_ddp.RecordRandomState"
    env = {"PYTHONPATH": str(Path(__file__).parent)}

    def fit(workdir: Path, *more: str, status: int = 0) -> dict[int, list[str]]:
        workdir.mkdir(exist_ok=True)
        result = run_litlab(*args, *more, env=env, cwd=workdir)
        assert result.returncode == status, result.stderr[-3000:]
        return {rank: (workdir / f"random-{rank}.txt").read_text().splitlines() for rank in (0, 1)}

    whole = fit(tmp_path / "whole", record)
    assert len(whole[0]) == len(whole[1]) == 2 * 8  # 512 problems, 2 ranks of 32 a batch, 2 epochs
    assert all(a != b for a, b in zip(whole[0], whole[1], strict=True)), whole

    # rank 1 alone gets SIGTERM during step 11 (of 16): both ranks finish it, save, and exit with 143
    signal = "--trainer.callbacks+={class_path: test_survival.SignalAt, init_args: {step: 10, signum: 15, rank: 1}}"
    fit(tmp_path / "cut", record, signal, status=143)
    (last,) = (tmp_path / "cut").glob("runs/adder_transformer/*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 11
    for rank in (0, 1):
        (tmp_path / "cut" / f"random-{rank}.txt").unlink()
    resumed = fit(tmp_path / "cut", "--ckpt_path", str(last))  # the checkpoint's config brings the recorder back
    assert resumed == {rank: lines[11:] for rank, lines in whole.items()}  # the rest of the second epoch, each rank
    (whole_last,) = (tmp_path / "whole").glob("runs/adder_transformer/*/checkpoints/last.ckpt")
    expected, actual = (torch.load(p, weights_only=True)["state_dict"] for p in (whole_last, last))
    assert all(torch.equal(expected[name], actual[name]) for name in expected)

"""Faults done for real on tiny runs: signals mid-epoch, a kill during a checkpoint write, a full disk, a second start
on one run, a resume from an older checkpoint, and a SLURM requeue (`litlab.survival`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import LITLAB, QUIET, cli, config, run_litlab, tiny

from litlab.errors import LitlabError
from litlab.survival import RunLock, atomic_file, checkpoint_step

ADDER = ["--config", config("adder_transformer"), *tiny("adder_transformer"), "--model.dropout=0.1", *QUIET]
XOR = ["--config", config("xor_mlp"), *tiny("xor_mlp"), *QUIET]
IMDB = ["--config", config("imdb_bilstm"), *tiny("imdb_bilstm"), *QUIET]


class SignalAt(L.Callback):
    """Sends this process a signal once the fit reaches `step` (the signal arrives mid-batch, as a real one would)."""

    def __init__(self, step: int, signum: int = int(signal.SIGTERM), rank: int | None = None) -> None:
        self.step, self.signum, self.rank = step, signum, rank

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if trainer.global_step == self.step and self.rank in (None, trainer.global_rank):
            os.kill(os.getpid(), self.signum)


def signal_at(step: int, signum: int) -> str:
    """The flag that adds `SignalAt(step, signum)` to a run's callbacks."""
    init = f"{{step: {step}, signum: {int(signum)}}}"
    return f"--trainer.callbacks+={{class_path: test_survival.SignalAt, init_args: {init}}}"


def assert_same_weights(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name


@pytest.mark.parametrize(
    "args, steps, signum, status",
    [
        (ADDER, 8, signal.SIGTERM, 143),  # in-memory tensors, shuffled; dropout on
        (ADDER, 8, signal.SIGINT, 130),
        (IMDB, 13, signal.SIGTERM, 143),  # reviews in length buckets (`text_batches.BucketBatchSampler`)
    ],
    ids=["adder-SIGTERM", "adder-SIGINT", "imdb-SIGTERM"],
)
def test_a_signal_mid_epoch_saves_the_exact_position_and_the_resume_ends_on_the_same_weights(
    tmp_path, capsys, request, args, steps, signum, status
):
    # the resume must put back the loader's place in the epoch, its order, and every random state
    args = [*args, "--trainer.max_epochs=2"]
    # Ctrl-C as in a terminal, even where the tests run with it ignored (started in the background by a script)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    uninterrupted = cli("fit", *args, "--trainer.default_root_dir=whole")
    assert uninterrupted.trainer.global_step == 2 * steps
    whole = uninterrupted.model.state_dict()

    stop_at = steps + steps // 2  # mid-way through the second epoch
    with pytest.raises(SystemExit) as stop:
        cli("fit", *args, signal_at(stop_at - 1, signum))
    assert stop.value.code == status
    (last,) = (tmp_path / "runs").glob("*/*/checkpoints/last.ckpt")
    assert checkpoint_step(last) == (stop_at, 1)  # the batch in flight finished, then the run stopped
    line = capsys.readouterr().err.strip().splitlines()[-1]
    resume = f"litlab fit --ckpt_path {last.relative_to(tmp_path)}"
    assert line == f"litlab: {signal.Signals(signum).name}: stopped at epoch 1, step {stop_at}; resume with: {resume}"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back

    resumed = cli("fit", *args, "--ckpt_path", last)
    assert resumed.trainer.global_step == 2 * steps
    assert_same_weights(whole, resumed.model.state_dict())


class KillDuringSecondSave(L.Callback):
    """SIGKILLs this process half-way through writing the second epoch's checkpoint (a real kill, mid-write)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        save = torch.save

        def half_then_kill(obj, file, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("epoch") == 1:
                file.write(b"\0" * 4096)
                file.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return save(obj, file, *args, **kwargs)

        torch.save = half_then_kill


def default_sigint() -> None:
    """SIGINT's default action, as a terminal starts a command with (a shell's `&`, as CI's, starts it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_before_the_fit_starts_is_one_line_and_exits_by_sigint(tmp_path):
    """A second after start, litlab is still importing torch and Lightning: nothing to save, and no traceback."""
    command = [LITLAB, "fit", "--config", config("xor_mlp"), *tiny("xor_mlp"), *QUIET]
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGINT and err == "litlab: interrupted\n", err
    assert not (tmp_path / "runs").exists()


def sigint_as_a_terminal_sends_it(command: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """Runs `command` with SIGINT's default action (`default_sigint`), its output captured."""
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, preexec_fn=default_sigint, **kwargs)


@pytest.mark.parametrize("then", ["goes on", "fails"])
def test_a_ctrl_c_an_import_swallows_still_ends_the_command_by_sigint(tmp_path, then):
    """Under load, a Ctrl-C during start-up can land in an import that swallows it: the command then ran on (a whole
    fit), or failed on the half-imported module with a traceback. What `litlab.command` does, with such an import."""
    swallowing_import = "\n".join([
        "import os, signal, sys",
        "from litlab import interrupts",
        "interrupts.install()",
        "try:",
        "    os.kill(os.getpid(), signal.SIGINT)",
        "except BaseException:",
        "    pass",
        "print('imported', flush=True)",
        "if sys.argv[1] == 'fails':",
        "    raise AttributeError(\"module 'numpy' has no attribute 'minimum'\")",
        "interrupts.end_if_received()",
        "print('went on')",
    ])  # fmt: skip
    done = sigint_as_a_terminal_sends_it([sys.executable, "-c", swallowing_import, then], tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (-signal.SIGINT, "imported\n", "litlab: interrupted\n")


class InterruptAt(L.Callback):
    """Sends this process SIGINT from a hook outside the training loop, where Lightning catches the interrupt."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_ctrl_c_outside_the_training_loop_is_one_line_and_status_130(tmp_path, command):
    """Lightning catches it, says so, and exits with status 1; litlab ends the command as a Ctrl-C'd one instead."""
    done = sigint_as_a_terminal_sends_it(
        [LITLAB, command, *XOR, "--trainer.callbacks+=test_survival.InterruptAt"], tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 130 and done.stderr.endswith("litlab: interrupted\n"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("runs/**/*.ckpt"))


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path):
    done = run_litlab(
        "fit", *XOR, "--trainer.max_epochs=3", "--trainer.callbacks+=test_survival.KillDuringSecondSave",
        cwd=tmp_path, env={"PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    (last,) = tmp_path.glob("runs/xor_mlp/*/checkpoints/last.ckpt")
    assert checkpoint_step(last)[1] == 0  # the first epoch's, whole
    assert torch.load(last.with_name("best.ckpt"), weights_only=True)["epoch"] == 0


class FillTheDisk(L.Callback):
    """Fills the run's filesystem once the first epoch's checkpoints are written."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 1:
            with open(os.path.join(trainer.default_root_dir, "filler"), "wb") as filler:
                with pytest.raises(OSError):
                    while True:
                        filler.write(b"\0" * 65536)
                        filler.flush()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB filesystem mounted for the test (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_the_previous_checkpoint_stays(small_disk):
    full = r"cannot write (best|last).ckpt in .*/checkpoints: No space left on device"
    with pytest.raises(LitlabError, match=full) as err:
        cli("fit", *XOR, "--trainer.max_epochs=3", f"--trainer.default_root_dir={small_disk}",
            "--trainer.callbacks+=test_survival.FillTheDisk")  # fmt: skip
    assert "\n" not in str(err.value)
    (last,) = small_disk.glob("xor_mlp/*/checkpoints/last.ckpt")
    assert checkpoint_step(last)[1] == 0
    assert not list(small_disk.glob("**/*.partial"))


def test_atomic_file_keeps_the_old_file_when_the_write_fails(tmp_path):
    (tmp_path / "study").mkdir()
    target = tmp_path / "study" / "best.yaml"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target, "w") as file:
        file.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["best.yaml"]


def test_a_second_start_on_a_run_in_use_is_refused_and_a_killed_holder_frees_it(tmp_path):
    cli("fit", *XOR, "--trainer.max_epochs=1")
    (last,) = tmp_path.glob("runs/xor_mlp/*/checkpoints/last.ckpt")
    run = last.parent.parent
    holder = RunLock(run).acquire()  # another command writing into the run
    try:
        with pytest.raises(LitlabError, match=rf"the run {run} is in use by process {os.getpid()}"):
            cli("fit", *XOR, "--trainer.max_epochs=2", "--ckpt_path", last)
    finally:
        holder.release()
    killed = subprocess.run(
        [sys.executable, "-c", "import os, signal, sys; from litlab.survival import RunLock; "
         "RunLock(__import__('pathlib').Path(sys.argv[1])).acquire(); os.kill(os.getpid(), signal.SIGKILL)", str(run)],
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert cli("fit", *XOR, "--trainer.max_epochs=2", "--ckpt_path", last).trainer.current_epoch == 2


def test_resuming_an_older_checkpoint_branches_and_leaves_the_newer_one(tmp_path, caplog):
    cli("fit", *XOR, "--trainer.max_epochs=1")
    (last,) = tmp_path.glob("runs/xor_mlp/*/checkpoints/last.ckpt")
    first = shutil.copy(last, last.with_name("epoch0.ckpt"))
    cli("fit", *XOR, "--trainer.max_epochs=2", "--ckpt_path", last)  # the newest: goes on in place
    newer = last.read_bytes()
    assert checkpoint_step(last)[1] == 1

    branch = cli("fit", *XOR, "--trainer.max_epochs=3", "--ckpt_path", first)
    folder = branch.trainer.default_root_dir
    assert last.read_bytes() == newer  # the run's newer checkpoint is untouched
    assert folder != str(last.parent.parent) and os.path.dirname(folder) == str(last.parent.parent.parent)
    assert checkpoint_step(Path(folder) / "checkpoints" / "last.ckpt")[1] == 2
    assert f"ckpt_path: {first}" in (Path(folder) / "config.yaml").read_text()  # its parent, recorded
    assert "this fit continues as a new run" in caplog.text


def test_a_requeued_slurm_job_resumes_its_own_run_and_no_other(tmp_path, monkeypatch):
    args = [*ADDER, "--trainer.max_epochs=2"]
    whole = cli("fit", *args, "--trainer.default_root_dir=whole").model.state_dict()

    (tmp_path / "bin").mkdir()
    scontrol = tmp_path / "bin" / "scontrol"  # records the requeue Lightning asks SLURM for
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/requeued\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    job = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}  # fmt: skip
    for key, value in job.items():
        monkeypatch.setenv(key, value)
    # SLURM's warning signal (`#SBATCH --signal=SIGUSR1@90`) at step 5, then its SIGTERM at step 11
    signals = [signal_at(step, signum) for step, signum in ((5, signal.SIGUSR1), (10, signal.SIGTERM))]
    with pytest.raises(SystemExit) as stop:
        cli("fit", *args, *signals)
    assert stop.value.code == 143
    (run,) = (tmp_path / "runs" / "adder_transformer").glob("slurm-4242-*")
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
    assert {p.name for p in run.glob("**/*.ckpt")} == {"hpc_ckpt_1.ckpt", "last.ckpt", "best.ckpt"}

    requeued = cli("fit", *args, *signals)  # the same job script, run again by SLURM
    assert Path(requeued.trainer.default_root_dir).resolve() == run
    assert requeued.trainer.global_step == 16
    assert_same_weights(whole, requeued.model.state_dict())  # from last.ckpt, the newest, not the older hpc_ckpt

    other = cli("fit", *args, "--model.dropout=0.2")  # another fit in the same job: its own run, from the start
    assert Path(other.trainer.default_root_dir).resolve() != run
    assert Path(other.trainer.default_root_dir).name.startswith("slurm-4242-")
    assert other.trainer.global_step == 16 and not list(Path(other.trainer.default_root_dir).glob("hpc_ckpt_*"))

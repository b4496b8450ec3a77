"""What keeps a run's work when the world around it fails: a signal, a cluster's requeue, a full disk, a second start.

- **Signals** (`Interruption`): SIGTERM (a scheduler, `timeout`, a pre-empted node) or Ctrl-C during a fit stops it
  at the end of the current batch, writes `checkpoints/last.ckpt` at that exact position (loop counters, the data
  loader's place in its epoch: `datamodules.data_module`, every random state: `litlab.rng`) and ends the command with
  one line saying how to resume, exit status 143 (SIGTERM) or 130 (SIGINT). A second Ctrl-C stops at once. Resuming
  from that checkpoint reaches the same weights as a run never interrupted (tests/test_survival.py).
- **Atomic writes** (`SafeCheckpointIO`, `atomic_file`): checkpoints, `config.yaml`, `best.yaml` and figures are written
  to a temporary file beside the target, flushed to disk and renamed over it, so a kill or a full disk at any moment
  leaves the previous good file. A full disk ends the command in one line naming the folder.
- **One writer per run** (`RunLock`): a second command that would write into a run folder while another does is
  refused in one line; the lock is the kernel's (`flock`), so a killed process never leaves a stale one.
- **SLURM** (`slurm_run_name`): inside a batch job a fit's folder is named after the job and the command
  (`slurm-<job id>-<hash>`), so the requeued job finds its own run and resumes from its newest checkpoint
  (`newest_checkpoint`), and no other run ever sees it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from litlab import interrupts
from litlab.checkpoints import load_checkpoint
from litlab.errors import LitlabError

EXIT_STATUS = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 128 + signal.SIGINT}


def is_local(path: str | Path) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file to write `path` through: a temporary file beside it, flushed to disk and renamed over it when the block
    ends without error (removed otherwise), so `path` is always either the previous file or the whole new one. A full
    disk or another write error is one line naming the folder."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(temporary, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise LitlabError(
                f"cannot write {path.name} in {path.parent}: {os.strerror(err.errno)} (the previous {path.name}, if "
                f"any, is kept; free some space and resume from the run's last.ckpt)"
            ) from None
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename itself, made durable
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, atomic in the destination folder itself (`atomic_file`). Lightning's own writes
    through a temporary file elsewhere and moves it, which across filesystems is a copy that truncates the target
    first. Remote paths (s3://...) keep Lightning's writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if not is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as file:
            torch.save(checkpoint, file)


class Interruption(Callback):
    """SIGTERM and SIGINT during a fit: stop after the current batch, write `last.ckpt` there, exit 143 or 130.

    Lightning stops a fit on SIGTERM itself (it raises `SIGTERMException` once a batch has finished, on every rank
    together) but exits with status 0 and saves nothing, and under DDP its handler runs a collective inside the signal
    handler, which breaks when the ranks are signalled at different moments (`timeout` signals one process, SLURM all
    of them). So this callback's handler only records the signal (a second Ctrl-C interrupts at once, as usual); at the
    end of each training batch the ranks agree whether any of them was signalled (one all-reduce under DDP, nothing on
    one device), and all of them then hand the stop to Lightning's handler together, at the same point. When Lightning
    stops, the checkpoint is written, and `cli.LitlabCLI.run` turns the stop into the one line and the exit status.
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str = "last") -> None:
        self.dirpath, self.filename = dirpath, filename
        self.received: signal.Signals | None = None
        self.saved: Path | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning installs its SIGTERM handler just before training: this one replaces it and calls it when agreed
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(signum) == signal.SIG_IGN:  # started ignoring it (nohup, a script's &): keeps ignoring
                continue
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.received is not None:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.received = self.received or signal.Signals(signum)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:  # a signal to any rank stops all of them after this same batch
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        lightning_sigterm = self._previous.get(signal.SIGTERM)
        if stop and callable(lightning_sigterm):
            self.received = self.received or signal.SIGTERM
            lightning_sigterm(signal.SIGTERM, None)  # Lightning stops once this batch is done

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Hands a mid-epoch checkpoint's loader state to the DataModule, which puts it into the next training loader it
        builds (`datamodules.data_module.DataModule.loader`): Lightning restores it only into a loader it builds after
        this point, and an experiment that sizes its schedule by `trainer.estimated_stepping_batches` makes Lightning
        build the loader before."""
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        states = fit_loop.get("state_dict", {}).get("combined_loader") or []
        mid_epoch = not fit_loop.get("epoch_loop.batch_progress", {}).get("is_last_batch", True)
        if mid_epoch and len(states) == 1 and hasattr(trainer.datamodule, "train_loader_state"):
            trainer.datamodule.train_loader_state = (checkpoint["epoch"], states[0])

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        self.received = self.received or signal.SIGTERM  # a peer rank's signal, broadcast by Lightning
        folder = Path(self.dirpath) if self.dirpath is not None else Path(trainer.default_root_dir) / "checkpoints"
        self.saved = Path(trainer.strategy.broadcast(str(folder))) / f"{self.filename}.ckpt"
        trainer.save_checkpoint(self.saved, weights_only=False)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous = {}

    def message(self, trainer: L.Trainer) -> str:
        """The one line: which signal, where the run stopped and how to resume."""
        name = self.received.name if self.received is not None else "SIGTERM"
        where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
        if self.saved is None:
            return f"{name}: stopped at {where} before training started; nothing to resume"
        return f"{name}: stopped at {where}; resume with: litlab fit --ckpt_path {self.saved}"

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS.get(self.received or signal.SIGTERM, 143)


class RunLock:
    """An exclusive lock on a run folder (`<run>/.lock`, `flock`): a second command writing into the same run is
    refused; the kernel releases the lock when the process ends, however it ends."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.file: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        file = open(self.directory / ".lock", "a+")  # noqa: SIM115 (held open for the run's lifetime)
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise LitlabError(
                f"the run {self.directory} is in use by {holder}: wait for it to end, or start a new run "
                f"(without --ckpt_path, or with --run_dir)"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"process {os.getpid()}\n")
        file.flush()
        self.file = file
        return self

    def release(self) -> None:
        if self.file is not None:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
            self.file.close()
            self.file = None


def in_slurm_batch_job() -> bool:
    """A SLURM batch job (not an interactive allocation), as Lightning's SLURM environment detects it."""
    return SLURMEnvironment.detect() and SLURMEnvironment.job_id() is not None


def slurm_run_name(config: dict[str, Any]) -> str:
    """The run folder's name inside a SLURM job: the job (array task included) and a hash of the command's config, so
    a requeued job (the same command again) finds its run, and two different fits in one job do not share one."""
    job = os.environ.get("SLURM_JOB_ID", "")
    if array := os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"slurm-{job}-{digest}"


def position(checkpoint: dict) -> tuple[int, int]:
    """How far a loaded checkpoint is: (global step, epoch)."""
    return int(checkpoint.get("global_step", -1)), int(checkpoint.get("epoch", -1))


def checkpoint_step(path: Path) -> tuple[int, int]:
    """A checkpoint file's (global step, epoch), its tensors memory-mapped, not read; (-1, -1) when it does not load."""
    try:
        return position(load_checkpoint(str(path)))
    except LitlabError:  # a checkpoint that cannot be read is never the one to resume from
        return -1, -1


def newest_checkpoint(run: Path) -> Path | None:
    """The run's checkpoint furthest along (Lightning's `hpc_ckpt_N.ckpt` from SLURM's warning signal, or
    `checkpoints/last.ckpt` from an epoch's end or a SIGTERM), None when it has none."""
    candidates = [*run.glob("hpc_ckpt_*.ckpt"), *run.glob("checkpoints/last.ckpt")]
    readable = [(checkpoint_step(path), path) for path in candidates]
    readable = [(step, path) for step, path in readable if step[0] >= 0]
    return max(readable, key=lambda item: item[0])[1] if readable else None


def with_safe_checkpoints(plugins: Any) -> list:
    """The configured Trainer plugins with `SafeCheckpointIO`, unless one of them writes checkpoints already."""
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list) else [plugins]
    return plugins if any(isinstance(p, CheckpointIO) for p in plugins) else [*plugins, SafeCheckpointIO()]


def exit_on_signal(trainer: L.Trainer, command: str, stop: SystemExit) -> NoReturn:
    """A command stopped by a signal ends with one line (where a fit stopped and how to resume it) and the signal's
    exit status; any other exit goes on as it was."""
    interruption = next((c for c in trainer.callbacks if isinstance(c, Interruption)), None)
    signalled = interruption is not None and interruption.received is not None
    if not (isinstance(stop, SIGTERMException) or signalled):
        if interrupts.received():  # Ctrl-C outside the training loop, which Lightning ends by exit status 1
            interrupts.announce()
            raise SystemExit(128 + signal.SIGINT) from None
        raise stop
    if interruption is None:
        message, status = f"SIGTERM: {command} stopped", 143
    else:
        message, status = interruption.message(trainer), interruption.exit_status
    if trainer.is_global_zero:
        sys.stderr.write(f"litlab: {message}\n")
        sys.stderr.flush()
    raise SystemExit(status) from None

"""`litlab tune`: Optuna studies of xor_mlp, each trial a short `litlab fit` (a few seconds on a CPU)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import optuna
import pytest
import yaml
from conftest import LITLAB, config, fails_in_one_line
from optuna.trial import TrialState
from test_tracking import wandb_records

import litlab.study
import litlab.tune
from litlab.__main__ import main
from litlab.cli import fit_parser
from litlab.search_space import baseline, check_space, read_space

SEARCH_FILES = sorted(Path(__file__).parents[1].glob("configs/search/*.yaml"))
STUDY = "xor_mlp-tune"
QUICK = ["--trainer.max_epochs=3", "--trainer.enable_progress_bar=false", "--trainer.logger=false"]


def space(tmp_path: Path, entries: dict) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(entries), encoding="utf-8")
    return str(path)


LR = {"model.optimizer.lr": {"low": 1.0e-6, "high": 0.1, "log": True}}


def tune(*args: str) -> None:
    main(["tune", "--config", config("xor_mlp"), *QUICK, *map(str, args)])


def trials(study: str = STUDY, storage: str = f"sqlite:///runs/{STUDY}/study.db") -> list:
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def test_study_beats_a_bad_start_and_its_best_config_runs(tmp_path):
    tune("--search", space(tmp_path, LR), "--trials=4", "--sampler.seed=0", "--model.optimizer.lr=1e-6")
    done = trials()
    assert [t.state for t in done] == [TrialState.COMPLETE] * 4
    start = done[0]  # the configured (bad) learning rate runs first
    assert start.params == {"model.optimizer.lr": 1e-6} and start.user_attrs["configured"]
    best = max(done, key=lambda t: t.value)
    assert best.params["model.optimizer.lr"] > 1e-4 and best.value > start.value + 0.2, [t.value for t in done]
    for t in done:  # every trial a normal fit run in its own folder
        assert (Path(t.user_attrs["run_dir"]) / "checkpoints" / "best.ckpt").is_file()
    assert {p.name for p in Path(f"runs/{STUDY}/figures").iterdir()} == {"history.png", "importance.png"}

    best_yaml = Path(f"runs/{STUDY}/best.yaml")
    lr = yaml.safe_load(best_yaml.read_text())["model"]["init_args"]["optimizer"]["init_args"]["lr"]
    assert lr == best.params["model.optimizer.lr"]
    assert yaml.safe_load(best_yaml.read_text())["run_dir"] is None  # the trial's recorded config, as a new run
    main(["fit", "--config", str(best_yaml), "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])
    (run,) = Path("runs/xor_mlp").iterdir()  # named for its experiment (best.yaml names it), not for the file
    fitted = yaml.safe_load((run / "config.yaml").read_text())
    assert fitted["model"]["init_args"]["optimizer"]["init_args"]["lr"] == lr and fitted["experiment"] == "xor_mlp"


def test_every_trial_is_its_own_wandb_run_in_the_studys_group(tmp_path):
    main(["tune", "--config", config("xor_mlp"), "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false",
          "--search", space(tmp_path, LR), "--trials=2"])  # fmt: skip
    runs = sorted(Path(f"runs/{STUDY}").glob("trial-*/wandb/offline-run-*"))
    assert [run.parent.parent.name for run in runs] == ["trial-000", "trial-001"]
    params = []
    for run in runs:
        records = wandb_records(run)
        (settings,) = [r.run for r in records if r.HasField("run")][:1]
        assert settings.run_group == STUDY and set(settings.tags) == {"xor_mlp", "xor"}
        assert settings.display_name == f"{STUDY} {run.parent.parent.name}"
        config_items = {
            i.key: json.loads(i.value_json) for r in records if r.HasField("config") for i in r.config.update
        }
        assert config_items["experiment"] == "xor_mlp" and config_items["model"]["class_path"].endswith("XorMLP")
        assert config_items["run_dir"] == f"runs/{STUDY}/{run.parent.parent.name}"  # a trial: a fit's plain overrides
        params.append(config_items["model"]["init_args"]["optimizer"]["init_args"]["lr"])
    assert params[0] == 0.01 and params[1] != 0.01  # the configured value first, then a sampled one


def test_interrupted_study_resumes_with_its_trials(tmp_path, monkeypatch, capfd):
    search = space(tmp_path, LR)
    real_callback = litlab.tune.PyTorchLightningPruningCallback

    class CtrlC(real_callback):  # Ctrl-C in the second trial's first epoch
        def on_train_epoch_end(self, trainer, pl_module):
            if self._trial.number == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr("litlab.tune.PyTorchLightningPruningCallback", CtrlC)
    fails_in_one_line(capfd, "tune", "--config", config("xor_mlp"), *QUICK, "--search", search, "--trials=3",
                      naming="run the same command to resume")  # fmt: skip
    first = trials()
    assert [t.state for t in first] == [TrialState.COMPLETE, TrialState.FAIL]

    monkeypatch.setattr("litlab.tune.PyTorchLightningPruningCallback", real_callback)
    tune("--search", search, "--trials=3")
    resumed = trials()
    assert [t.state for t in resumed] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert (resumed[0].params, resumed[0].value) == (first[0].params, first[0].value)


def test_pruning_stops_a_hopeless_trial_early(tmp_path):
    search = space(tmp_path, LR)
    tune("--search", search, "--trials=1")  # the configured lr=0.01
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///runs/{STUDY}/study.db")
    study.enqueue_trial({"model.optimizer.lr": 0.03})
    study.enqueue_trial({"model.optimizer.lr": 1e-6})  # learns nothing in 3 epochs
    tune(
        "--search",
        search,
        "--trials=3",
        "--pruner.n_startup_trials=2",
        "--pruner.n_warmup_steps=0",
        "--trainer.max_epochs=4",
    )
    good, other, hopeless = trials()
    assert good.state == other.state == TrialState.COMPLETE and len(other.intermediate_values) == 4
    assert hopeless.state == TrialState.PRUNED and len(hopeless.intermediate_values) < 4


def test_two_workers_share_one_study_without_duplicates(tmp_path):
    search = space(tmp_path, LR)
    command = [LITLAB, "tune", "--config", config("xor_mlp"), *QUICK, "--search", search, "--trials=4"]
    workers = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    for worker in workers:
        assert worker.wait(timeout=240) == 0, worker.stderr.read()
    done = trials()
    assert [t.number for t in done] == [0, 1, 2, 3] and all(t.state == TrialState.COMPLETE for t in done)
    assert len({t.user_attrs["run_dir"] for t in done}) == 4
    assert len({t.params["model.optimizer.lr"] for t in done}) == 4


def join(folder: Path) -> int:
    study = litlab.study.open_study(
        "race",
        f"sqlite:///{folder / 'study.db'}",
        folder,
        experiment="xor_mlp",
        monitor="val/acc",
        mode="max",
        first={"model.optimizer.lr": 0.01},
    )
    return len(study.trials)


def test_workers_starting_together_create_one_study_with_one_first_trial(tmp_path):
    # Without the set-up lock about one worker in four lost the race for a new SQLite file's tables.
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        for attempt in range(3):
            folder = tmp_path / str(attempt)
            folder.mkdir()
            assert pool.map(join, [folder] * 4) == [1, 1, 1, 1]


def test_a_journal_file_holds_a_study_too(tmp_path):
    journal = tmp_path / "shared" / "xor.log"  # Optuna's journal storage: a file several machines can share
    tune("--search", space(tmp_path, LR), "--trials=2", f"--storage={journal}")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    assert [t.state for t in trials(storage=storage)] == [TrialState.COMPLETE] * 2
    assert not Path(f"runs/{STUDY}/study.db").exists() and Path(f"runs/{STUDY}/best.yaml").is_file()


@pytest.mark.parametrize(
    ("entries", "naming"),
    [
        (
            {"model.optimizer.lrr": {"low": 0.001, "high": 0.1}},
            "`model.optimizer.lrr: 0.001` is refused: --model.optimizer.lrr: AdamW takes no argument 'lrr'; did you",
        ),
        (
            {"model.activation": ["relu", "swish"]},
            "`model.activation: swish` is refused: --model.activation=swish: expected one of ['relu', 'gelu'",
        ),
        ({}, "the search space is empty"),
        ({"model.optimizer.lr": {"low": 0.1, "high": 0.01}}, "`model.optimizer.lr`"),
        ({"model.optimizer.lr": {"min": 0.1}}, "`model.optimizer.lr`"),
    ],
)
def test_bad_search_space_is_one_line_before_any_trial(tmp_path, capfd, entries, naming):
    search = space(tmp_path, entries)
    fails_in_one_line(capfd, "tune", "--config", config("xor_mlp"), "--search", search, naming=naming)
    assert not Path("runs").exists() or not list(Path("runs").rglob("*.db"))


def test_bad_storage_options_and_another_experiments_study_are_one_line(tmp_path, capfd):
    search = space(tmp_path, LR)
    xor = ["tune", "--config", config("xor_mlp"), *QUICK, "--search", search]
    for storage in ("sqlite:////nonexistent/folder/study.db", "postgresql://nobody@127.0.0.1:9/none"):
        fails_in_one_line(capfd, *xor, f"--storage={storage}", naming=f"--storage={storage}: cannot open it")
    password = "--storage=postgresql://nobody:hunter2@127.0.0.1:9/none"  # never printed
    fails_in_one_line(capfd, *xor, password, naming="--storage=postgresql://nobody:***@127.0.0.1:9/none: cannot open")
    devices = tmp_path / "devices.yaml"
    devices.write_text(yaml.safe_dump({**LR, "trainer.devices": [1, 2]}))
    fails_in_one_line(capfd, *xor[:3], "--search", devices, naming="trainer.devices cannot be searched")
    fails_in_one_line(capfd, *xor, "--trainer.devices=2", naming="a trial runs on one device")
    fails_in_one_line(capfd, *xor, "--timeout=soon", naming="--timeout=soon")
    fails_in_one_line(capfd, *xor, "--sampler=TPESamplr", naming="--sampler=TPESamplr: no class by that name")
    fails_in_one_line(capfd, *xor, "--sampler.seedd=0", naming="TPESampler takes no argument 'seedd'; did you mean")
    fails_in_one_line(capfd, "tune", "--search", search, naming="pass --config")

    shared = ["--storage=sqlite:///shared.db", "--study=shared"]
    tune("--search", search, "--trials=1", *shared)
    adder = ["tune", "--config", config("adder_lstm"), "--search", search, *shared]
    fails_in_one_line(capfd, *adder, naming="study `shared` in this storage searches xor_mlp")
    (kept,) = trials("shared", "sqlite:///shared.db")
    assert kept.state == TrialState.COMPLETE


@pytest.mark.parametrize("search", SEARCH_FILES, ids=lambda path: path.stem)
def test_every_search_space_fits_its_experiment_and_holds_its_configured_values(search):
    args = ["--config", config(search.stem)]
    space = read_space(str(search))
    parser = fit_parser(args)
    check_space(parser, args, space, str(search))  # raises on a key or value the experiment refuses
    start = baseline(yaml.safe_load(parser.dump(parser.parse_args(args))), space)
    assert start is not None and set(start) == set(space)  # the hand-tuned config is the study's first trial


def test_search_file_that_is_not_utf8_is_one_line(tmp_path, capfd):
    search = tmp_path / "latin1.yaml"
    search.write_bytes("model.optimizer.lr: {low: 0.001, high: 0.1}  # café\n".encode("latin-1"))
    fails_in_one_line(capfd, "tune", "--config", config("xor_mlp"), "--search", search, naming="cannot read it")


class RefuseLargeRates(L.Callback):
    """Fails a trial whose learning rate is large, as a CUDA out-of-memory error would fail it."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.optimizers[0].param_groups[0]["initial_lr"] > 0.01:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")


def test_a_failing_trial_is_recorded_with_its_reason_and_the_study_goes_on(tmp_path, capfd):
    rates = space(tmp_path, {"model.optimizer.lr": [0.001, 0.05]})
    refuse = "--trainer.callbacks+=test_tune.RefuseLargeRates"
    tune("--search", rates, "--trials=2", "--sampler.seed=0", "--model.optimizer.lr=0.05", refuse)
    done = trials()
    failed = [t for t in done if t.state == TrialState.FAIL]
    assert failed and failed[0].number == 0  # the configured rate runs first, and fails
    assert failed[0].user_attrs["failed"].startswith("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert sum(t.state == TrialState.COMPLETE for t in done) == 2  # --trials counts finished trials
    err = capfd.readouterr().err
    assert "trial 0 failed: CUDA out of memory" in err and "Traceback" not in err
    assert Path(f"runs/{STUDY}/best.yaml").is_file()

    Path(f"runs/{STUDY}/study.db").unlink()  # the study created again: its trials get folders of their own
    tune("--search", rates, "--trials=1", "--model.optimizer.lr=0.001")
    folders = sorted(p.name for p in Path(f"runs/{STUDY}").glob("trial-000*"))
    assert len(folders) == 2 and folders[0] == "trial-000" and trials()[0].user_attrs["run_dir"].endswith(folders[1])


class KillTheWorkerInTrialOne(L.Callback):
    """SIGKILLs the tune worker during trial 1's first epoch: no clean-up of any kind runs."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if Path(trainer.default_root_dir).name == "trial-001":
            os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_workers_trial_is_failed_and_the_next_worker_finishes_the_study(tmp_path, capfd):
    search = space(tmp_path, LR)
    command = [LITLAB, "tune", "--config", config("xor_mlp"), *QUICK, "--search", search, "--trials=3"]
    kill = "--trainer.callbacks+=test_tune.KillTheWorkerInTrialOne"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([*command, kill], capture_output=True, text=True, env=env, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [t.state for t in trials()] == [TrialState.COMPLETE, TrialState.RUNNING]  # left running by the kill

    main(command[1:])  # another worker on this machine
    done = trials()
    assert done[1].state == TrialState.FAIL  # found dead when the worker started, not waited for
    assert sum(t.state == TrialState.COMPLETE for t in done) == 3 and len(done) == 4
    assert "trials 1 failed: their worker on this machine is gone" in capfd.readouterr().out

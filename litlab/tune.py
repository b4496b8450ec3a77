"""`litlab tune`: hyperparameter search with Optuna, every trial a normal `litlab fit` run.

    litlab tune --config configs/xor_mlp.yaml --search configs/search/xor_mlp.yaml --trials 20 [any fit override]

The search space file maps the CLI's own keys to ranges: `{low, high}` (integers when both are, `log: true`,
`step`) or `{choices: [...]}` (a bare list is the same); every key and value is parsed against the experiment's
schema (`search_space`) before any trial runs. The study maximises or minimises the experiment's own `monitor`
(`monitor_mode`): a trial's value is its best validation value, reported every epoch to the pruner (Optuna's Lightning
callback), so a hopeless trial stops early. A new study's first trial runs the configured values when they lie in the
space, so the study shows what it beat.

A study lives in `runs/<study>/` (default name `<experiment>-tune`): its SQLite storage `study.db` (another with
`--storage`: any RDB URL, or a file path for Optuna's journal storage, which suits several machines sharing a
folder), one folder per trial (`trial-007/`, with config, checkpoints and figures), `best.yaml` (the best trial's whole
config, which `litlab fit --config` runs as it is) and `figures/` (optimisation history, parameter importances).
`--trials N` is what the study should hold: the same command started again resumes an interrupted study, started N
times at once it is N workers sharing the trials (one per GPU: `CUDA_VISIBLE_DEVICES=i`; a trial runs on one device).
With W&B each trial is a run in the study's group (`runs`), its parameters in its config as any fit's.
"""

from __future__ import annotations

import math
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna
import yaml
from jsonargparse import ArgumentError, ArgumentParser
from jsonargparse.typing import PositiveInt
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from litlab.callbacks import best_checkpoint
from litlab.cli import fit_parser, launch, shown_path
from litlab.config_errors import explain, one_line
from litlab.errors import LitlabError
from litlab.experiment import experiment_from_config
from litlab.masking import mask_text
from litlab.runs import experiment_name
from litlab.search_space import baseline, check_space, overrides, read_space, suggest
from litlab.study import COUNTED, counted, fail_dead_trials, open_study, summary, worker, write_figures
from litlab.survival import atomic_file

ONE_DEVICE_KEYS = ("devices", "num_nodes", "strategy", "accelerator")  # where a trial runs: not a hyperparameter
OWN_OPTIONS = ("--search", "--trials", "--timeout", "--storage", "--study", "--sampler", "--pruner")


def tune_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="litlab tune",
        exit_on_error=False,
        description="Search an experiment's hyperparameters with Optuna; every other option goes to `litlab fit` "
        "(--config first). Example: litlab tune --config configs/xor_mlp.yaml --search configs/search/xor_mlp.yaml",
    )
    parser.add_argument("--search", type=str, required=True, help="the search space (YAML: key -> range or choices)")
    parser.add_argument("--trials", type=PositiveInt, default=20, help="trials the study holds when it stops")
    parser.add_argument(
        "--timeout", type=str | None, default=None, help="start no trial after this long (seconds or DD:HH:MM:SS)"
    )
    parser.add_argument("--study", type=str | None, default=None, help="the study's name (default <experiment>-tune)")
    parser.add_argument(
        "--storage", type=str | None, default=None, help="RDB URL or journal file (default runs/<study>/study.db)"
    )
    parser.add_subclass_arguments(
        optuna.samplers.BaseSampler, "sampler", default={"class_path": "optuna.samplers.TPESampler"}
    )
    # no pruning before the fourth validation: first-epoch ranks say little under a warmup and cosine schedule
    # (docs/results.md, "Hyperparameter search"; a recipe's search file may ask for a longer wait)
    parser.add_subclass_arguments(
        optuna.pruners.BasePruner,
        "pruner",
        default={"class_path": "optuna.pruners.MedianPruner", "init_args": {"n_warmup_steps": 3}},
    )
    return parser


def split_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(tune's own options, everything for `litlab fit`), order kept; an own option's value may follow it."""
    own, fit = [], []
    tokens = iter(args)
    for arg in tokens:
        key = arg.split("=", 1)[0]
        if key in ("-h", "--help") or any(key == o or key.startswith(f"{o}.") for o in OWN_OPTIONS):
            own.append(arg)
            if "=" not in arg and key not in ("-h", "--help"):
                own.append(next(tokens, ""))
        else:
            fit.append(arg)
    return own, fit


def seconds(timeout: str | None) -> float | None:
    """`--timeout` as seconds: a number, or Lightning's max_time form DD:HH:MM:SS (also HH:MM:SS, MM:SS)."""
    if timeout is None:
        return None
    parts = timeout.split(":")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if not values or len(values) > 4 or min(values) < 0:
        raise LitlabError(f"--timeout={timeout}: give seconds or DD:HH:MM:SS")
    return sum(value * unit for value, unit in zip(reversed(values), (1, 60, 3600, 86400)))


def finish_wandb(state: str) -> None:
    """Close the trial's W&B run (Lightning leaves it open, and the next trial's logger would reuse it)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.summary["tune/state"] = state
        wandb.finish(exit_code=0 if state != "failed" else 1)


class Objective:
    """One trial: a `litlab fit` of the sampled values as plain overrides, in `runs/<study>/trial-NNN/`, with Optuna's
    pruning callback; its value is the best validation value of the experiment's monitored metric."""

    def __init__(self, fit_args: list[str], space: dict, study_dir: Path, monitor: str) -> None:
        self.fit_args, self.space, self.study_dir, self.monitor = fit_args, space, study_dir, monitor

    def __call__(self, trial: optuna.Trial) -> float:
        params = {key: suggest(trial, key, dist) for key, dist in self.space.items()}
        folder = self.study_dir / f"trial-{trial.number:03d}"
        if folder.exists():  # a study created again over an older one's folders: never write into them
            folder = folder.with_name(f"{folder.name}-{secrets.token_hex(3)}")
        trial.set_user_attr("run_dir", str(folder))
        trial.set_user_attr("worker", worker())
        state = "failed"
        try:
            args = [*self.fit_args, *overrides(params), f"--run_dir={folder}"]
            cli = launch("fit", args, callbacks=[PyTorchLightningPruningCallback(trial, self.monitor)])
            value = self.result(cli.trainer)
            state = "complete" if math.isfinite(value) else "pruned"
        except optuna.TrialPruned:
            state = "pruned"
            raise
        except SystemExit as stop:  # Ctrl-C or SIGTERM: Optuna records the trial as failed, then the study stops
            raise KeyboardInterrupt from stop
        except Exception as err:  # this trial's values fail (a model refusing them, out of memory): the study goes on
            reason = one_line(err)
            trial.set_user_attr("failed", reason)
            print(f"trial {trial.number} failed: {reason}", file=sys.stderr, flush=True)
            raise
        finally:
            finish_wandb(state)
        if state == "pruned":
            raise optuna.TrialPruned(f"{self.monitor} is {value}: the fit diverged")
        return value

    def result(self, trainer) -> float:
        best = best_checkpoint(trainer)
        if best is not None:
            return float(best.best_model_score)
        value = trainer.callback_metrics.get(self.monitor)  # no checkpoints: the last validation's value
        if value is None:
            raise LitlabError(f"the fit logged no {self.monitor}: a study needs validation (limit_val_batches > 0)")
        return float(value)


def write_best(study: optuna.Study, parser: ArgumentParser, fit_args: list[str], monitor: str, path: Path) -> None:
    """The best trial's whole config (its `experiment` among it), ready for `litlab fit --config`: the config the
    trial recorded in its folder (the worker that ran it may have had other flags), else its values over this
    worker's flags."""
    best = study.best_trial
    recorded = Path(best.user_attrs.get("run_dir", "")) / "config.yaml"
    if recorded.is_file():
        values = yaml.safe_load(recorded.read_text(encoding="utf-8"))
        values.update(run_dir=None, ckpt_path=None)  # a new run of its own
        config = yaml.safe_dump(values, sort_keys=False, allow_unicode=True)
    else:
        config = parser.dump(parser.parse_args([*fit_args, *overrides(best.params)]), skip_none=False)
    with atomic_file(path, "w") as file:  # a worker killed mid-write leaves the previous best.yaml
        file.write(f"# study {study.study_name}, trial {best.number}: {monitor} {best.value:.6g}\n{config}")


def tune(args: Sequence[str]) -> None:
    own, fit_args = split_args(args)
    parser = tune_parser()
    try:
        options = parser.parse_args(own)
        init = parser.instantiate(options)
    except ArgumentError as err:
        raise LitlabError(f"{explain(err)} (see `litlab tune --help`)") from None
    except (ValueError, TypeError) as err:  # a sampler or pruner refusing its arguments
        raise LitlabError(f"--sampler/--pruner: {one_line(err)}") from None
    timeout = seconds(options.timeout)
    space = read_space(options.search)
    fit = fit_parser(fit_args)
    config = fit.parse_args(fit_args)
    if str(config.trainer.devices) not in ("1", "auto") or config.trainer.num_nodes != 1:
        raise LitlabError(
            f"--trainer.devices={config.trainer.devices}: a trial runs on one device; start one worker per GPU "
            f"(CUDA_VISIBLE_DEVICES=<i> litlab tune ...) on a shared --storage"
        )
    placement = [key for key in space if key.split(".")[:2] in (["trainer", k] for k in ONE_DEVICE_KEYS)]
    if placement:
        raise LitlabError(f"--search={options.search}: {placement[0]} cannot be searched: a trial runs on one device")
    fit_args = [*fit_args, "--trainer.devices=1"]
    check_space(fit, fit_args, space, options.search)
    experiment = experiment_name(config)
    model = experiment_from_config(config.model)  # what the study optimises: the experiment's declared metric
    monitor, mode = model.monitor, model.monitor_mode

    study_name = options.study or f"{experiment}-tune"
    study_dir = Path(config.trainer.default_root_dir or "runs") / study_name
    study_dir.mkdir(parents=True, exist_ok=True)
    url = options.storage or f"sqlite:///{study_dir / 'study.db'}"
    configured = yaml.safe_load(fit.dump(config, skip_none=False))
    study = open_study(
        study_name, url, study_dir, experiment=experiment, monitor=monitor, mode=mode, sampler=init.sampler,
        pruner=init.pruner, first=baseline(configured, space),
    )  # fmt: skip
    if dead := fail_dead_trials(study):
        print(f"trials {', '.join(map(str, dead))} failed: their worker on this machine is gone", flush=True)
    print(
        f"study {study_name} ({shown_path(study_dir)}, storage {mask_text(url)}): {monitor} ({mode}), {counted(study)} "
        f"of {options.trials} trials so far",
        flush=True,
    )
    if counted(study) < options.trials:
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is one line of ours, not a traceback
        stop = optuna.study.MaxTrialsCallback(options.trials, states=COUNTED)
        objective = Objective(fit_args, space, study_dir, monitor)
        try:
            # a failed trial is recorded (with its one-line reason, `Objective`) and the next one starts
            study.optimize(objective, timeout=timeout, callbacks=[stop], gc_after_trial=True, catch=(Exception,))
        except KeyboardInterrupt:
            print(f"\n{summary(study, monitor)}")
            raise LitlabError("interrupted; the study keeps its trials: run the same command to resume") from None
    print(summary(study, monitor))
    if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        best_yaml = study_dir / "best.yaml"
        write_best(study, fit, fit_args, monitor, best_yaml)
        write_figures(study, study_dir / "figures")
        print(f"best config: {shown_path(best_yaml)} (litlab fit --config {shown_path(best_yaml)})")

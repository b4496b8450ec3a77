"""`litlab tune`: hyperparameter search with Optuna, every trial a normal `litlab fit` run.

    litlab tune --config configs/xor_mlp.yaml --search configs/search/xor_mlp.yaml --trials 20 [any fit override]

The search space file maps the CLI's own keys to ranges: `{low, high}` (integers when both are, `log: true`,
`step`) or `{choices: [...]}` (a bare list is the same); every key and value is parsed against the experiment's
schema (`--print_config`) before any trial runs. The study maximises or minimises the experiment's own `monitor`
(`monitor_mode`): a trial's value is its best validation value, reported every epoch to the pruner (Optuna's Lightning
callback), so a hopeless trial stops early. A new study's first trial runs the configured values when they lie in the
space, so the study shows what it beat.

A study lives in `runs/<study>/` (default name `<experiment>-tune`): its SQLite storage `study.db` (another with
`--storage`: any RDB URL, or a file path for Optuna's journal storage, which suits several machines sharing a
folder), one folder per trial (`trial-007/`, with config, checkpoints and figures), `best.yaml` (the best trial's whole
config, which `litlab fit --config` runs as it is) and `figures/` (optimisation history, parameter importances).
`--trials N` is what the study should hold: the same command started again resumes an interrupted study, started N
times at once it is N workers sharing the trials (one per GPU: `CUDA_VISIBLE_DEVICES=i`; a trial runs on one device).
With W&B each trial is a run in the study's group, its parameters in the run config under `tune`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from filelock import FileLock
from jsonargparse import ArgumentError, ArgumentParser
from jsonargparse.typing import PositiveInt
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from litlab.cli import EXPERIMENT_MARK, LitlabCLI, experiment_name, shown_path
from litlab.config_errors import explain, one_line
from litlab.errors import LitlabError, first_line
from litlab.figures import pyplot
from litlab.tracking import TrialRun

OWN_OPTIONS = ("--search", "--trials", "--timeout", "--storage", "--study", "--sampler", "--pruner")
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # what `--trials` counts (not failures)


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


# --- the search space -------------------------------------------------------------------------------------------


def distribution(spec: Any) -> BaseDistribution:
    """One entry of the search space file as an Optuna distribution (lists and mappings among the choices are kept
    as their JSON text, which Optuna can store and the CLI parses back)."""
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict) or not spec:
        raise ValueError("give {low, high} (with log or step) or {choices: [...]}")
    if "choices" in spec:
        extra, choices = set(spec) - {"choices"}, spec["choices"]
        if extra or not isinstance(choices, list) or not choices:
            raise ValueError("choices is a non-empty list and stands alone")
        return CategoricalDistribution([json.dumps(c) if isinstance(c, list | dict) else c for c in choices])
    if set(spec) - {"low", "high", "log", "step"} or not {"low", "high"} <= set(spec):
        raise ValueError(f"unknown fields {sorted(set(spec) - {'low', 'high', 'log', 'step'})} or no low/high")
    low, high, log, step = spec["low"], spec["high"], bool(spec.get("log", False)), spec.get("step")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in (low, high)):
        raise ValueError("low and high are numbers")
    if isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int)):
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(float(low), float(high), log=log, step=step)


def read_space(path: str) -> dict[str, BaseDistribution]:
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise LitlabError(f"--search={path}: cannot read it: {first_line(err, 300)}") from None
    if not isinstance(raw, dict) or not raw:
        raise LitlabError(f"--search={path}: the search space is empty (give `<key>: {{low, high}}` or choices)")
    space = {}
    for key, spec in raw.items():
        try:
            space[str(key).removeprefix("--")] = distribution(spec)
        except ValueError as err:
            raise LitlabError(f"--search={path}: `{key}`: {err}") from None
    return space


def suggest(trial: optuna.Trial, key: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


def candidates(dist: BaseDistribution) -> list:
    """The values checked against the schema before the study starts: every choice, or both ends of a range."""
    return list(dist.choices) if isinstance(dist, CategoricalDistribution) else [dist.low, dist.high]


def cli_value(value: Any) -> str:
    """A parameter as the CLI parses it: strings as they are, the rest as JSON (YAML's subset)."""
    return value if isinstance(value, str) else json.dumps(value)


def overrides(params: dict[str, Any]) -> list[str]:
    return [f"--{key}={cli_value(value)}" for key, value in params.items()]


def configured_value(config: dict, key: str) -> Any:
    """The value a resolved config gives a dotted key, the CLI's shorthand allowed (`model.optimizer.lr` for
    `model.init_args.optimizer.init_args.lr`); None when it has none."""
    node: Any = config
    for part in key.split("."):
        if isinstance(node, dict) and part not in node and isinstance(node.get("init_args"), dict):
            node = node["init_args"]
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def baseline(config: dict, space: dict[str, BaseDistribution]) -> dict[str, Any] | None:
    """The configured values as a trial's parameters, when every one lies in the space."""
    params = {}
    for key, dist in space.items():
        value = configured_value(config, key)
        if isinstance(dist, CategoricalDistribution):
            value = json.dumps(value) if isinstance(value, list | dict) else value
            if value not in dist.choices:
                return None
        elif isinstance(value, bool) or not isinstance(value, int | float) or not dist.low <= value <= dist.high:
            return None
        params[key] = value
    return params


# --- the experiment's resolved config ----------------------------------------------------------------------------


def resolved_config(fit_args: list[str]) -> str:
    """The whole `fit` config these arguments make (`litlab fit ... --print_config`), as YAML text."""
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            LitlabCLI(args=["fit", *fit_args, "--print_config"])
    except SystemExit as stop:  # --print_config prints and exits
        if stop.code not in (0, None):
            raise
    return output.getvalue()


def check_space(fit_args: list[str], space: dict[str, BaseDistribution], search: str) -> None:
    """Every key with every candidate value parsed against the experiment's schema, before any trial runs (a parse
    takes a fraction of a second once the classes are imported)."""
    for key, dist in space.items():
        for value in candidates(dist):
            try:
                resolved_config([*fit_args, f"--{key}={cli_value(value)}"])
            except ArgumentError as err:
                refused = f"`{key}: {cli_value(value)}` is refused"
                raise LitlabError(f"--search={search}: {refused}: {explain(err)}") from None


# --- the study ---------------------------------------------------------------------------------------------------


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB URL (with heartbeats, so a killed worker's trial is failed and the study goes on) or a journal file."""
    try:
        if "://" in url:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    except Exception as err:  # SQLAlchemy's and the drivers' many failures: a URL the user can fix
        raise LitlabError(f"--storage={url}: cannot open it: {first_line(err, 300)}") from None


def open_study(
    name: str,
    url: str,
    folder: Path,
    *,
    experiment: str,
    monitor: str,
    mode: str,
    sampler=None,
    pruner=None,
    first=None,
) -> optuna.Study:
    """Creates the study (its first trial `first`, the configured values) or loads it to resume; a study of another
    experiment under this name is left untouched.

    Workers started together on a new storage would race to create its tables and to enqueue the first trial: the
    workers of one machine take turns through a lock file in the study's folder (several machines: docs/tune.md).
    """
    direction = "maximize" if mode == "max" else "minimize"
    with FileLock(str(folder / ".setup.lock")):
        study = optuna.create_study(
            study_name=name,
            storage=open_storage(url),
            sampler=sampler,
            pruner=pruner,
            direction=direction,
            load_if_exists=True,
        )
        owner = study.user_attrs.get("experiment")
        if owner is None:
            study.set_user_attr("experiment", experiment)
            study.set_user_attr("monitor", monitor)
        elif owner != experiment or study.direction.name.lower() != direction:
            raise LitlabError(
                f"study `{name}` in this storage searches {owner} ({study.direction.name.lower()} "
                f"{study.user_attrs.get('monitor')}), not {experiment}: pass --study <another name>"
            )
        if not study.trials and first is not None:
            study.enqueue_trial(first, user_attrs={"configured": True}, skip_if_exists=True)
    return study


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def finish_wandb(state: str) -> None:
    """Close the trial's W&B run (Lightning leaves it open, and the next trial's logger would reuse it)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.summary["tune/state"] = state
        wandb.finish(exit_code=0 if state != "failed" else 1)


class Objective:
    """One trial: the sampled values as CLI overrides of a `litlab fit`, run in `runs/<study>/trial-NNN/`; its value is
    the best validation value of the experiment's monitored metric."""

    def __init__(self, fit_args: list[str], space: dict, study_dir: Path, monitor: str) -> None:
        self.fit_args, self.space, self.study_dir, self.monitor = fit_args, space, study_dir, monitor

    def __call__(self, trial: optuna.Trial) -> float:
        params = {key: suggest(trial, key, dist) for key, dist in self.space.items()}
        folder = f"trial-{trial.number:03d}"
        run = TrialRun(
            directory=self.study_dir / folder,
            group=trial.study.study_name,
            name=f"{trial.study.study_name} {folder}",
            callbacks=[PyTorchLightningPruningCallback(trial, self.monitor)],
            record={"study": trial.study.study_name, "trial": trial.number, "params": params},
        )
        trial.set_user_attr("run_dir", str(run.directory))
        state = "failed"
        try:
            cli = LitlabCLI(args=["fit", *self.fit_args, *overrides(params)], trial=run)
            value = self.result(cli)
            state = "complete" if math.isfinite(value) else "pruned"
        except optuna.TrialPruned:
            state = "pruned"
            raise
        except SystemExit as stop:  # Lightning's exit on Ctrl-C: Optuna records the trial as failed, then stops
            raise KeyboardInterrupt from stop
        finally:
            finish_wandb(state)
        if state == "pruned":
            raise optuna.TrialPruned(f"{self.monitor} is {value}: the fit diverged")
        return value

    def result(self, cli: LitlabCLI) -> float:
        best = cli.best_checkpoint()
        if best is not None:
            return float(best.best_model_score)
        value = cli.trainer.callback_metrics.get(self.monitor)  # no checkpoints: the last validation's value
        if value is None:
            raise LitlabError(f"the fit logged no {self.monitor}: a study needs validation (limit_val_batches > 0)")
        return float(value)


def write_best(study: optuna.Study, fit_args: list[str], experiment: str, monitor: str, path: Path) -> None:
    """The best trial's whole config, ready for `litlab fit --config`, named for the experiment (`EXPERIMENT_MARK`)."""
    best = study.best_trial
    config = resolved_config([*fit_args, *overrides(best.params)])
    origin = f"# study {study.study_name}, trial {best.number}: {monitor} {best.value:.6g}"
    path.write_text(f"{EXPERIMENT_MARK}{experiment}\n{origin}\n{config}", encoding="utf-8")


def write_figures(study: optuna.Study, folder: Path) -> None:
    """Optimisation history and parameter importances (PED-ANOVA: no scikit-learn needed) as PNGs."""
    plt = pyplot()
    if plt is None:
        return
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization import matplotlib as plots

    folder.mkdir(parents=True, exist_ok=True)
    drawings = {"history": lambda: plots.plot_optimization_history(study)}
    if len(study.best_trial.params) > 0 and len(study.get_trials(states=(TrialState.COMPLETE,))) > 2:
        drawings["importance"] = lambda: plots.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's "experimental" notices
        for name, draw in drawings.items():
            try:
                axes = draw()
            except (ValueError, RuntimeError) as err:  # too few distinct trials to judge importance
                print(f"figures: {name} skipped ({first_line(err, 120)})")
                continue
            axes.figure.set_size_inches(7, 4)
            axes.figure.tight_layout()
            axes.figure.savefig(folder / f"{name}.png", dpi=90)
            plt.close(axes.figure)


def summary(study: optuna.Study, monitor: str) -> str:
    trials = study.get_trials(deepcopy=False)
    states = {state: sum(t.state == state for t in trials) for state in TrialState}
    counts = ", ".join(f"{n} {state.name.lower()}" for state, n in states.items() if n)
    text = f"study {study.study_name}: {len(trials)} trials ({counts})"
    if not states[TrialState.COMPLETE]:
        return text
    best = study.best_trial
    params = ", ".join(f"{key}={cli_value(value)}" for key, value in best.params.items())
    return f"{text}\nbest: trial {best.number}, {monitor} {best.value:.6g} ({params})"


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
    experiment = experiment_name(fit_args)
    if experiment is None:
        raise LitlabError("pass --config configs/<experiment>.yaml (the experiment a study tunes)")
    space = read_space(options.search)
    config = yaml.safe_load(resolved_config(fit_args))
    devices = config["trainer"].get("devices")
    if str(devices) not in ("1", "auto") or config["trainer"].get("num_nodes", 1) != 1:
        raise LitlabError(
            f"--trainer.devices={devices}: a trial runs on one device; start one worker per GPU "
            f"(CUDA_VISIBLE_DEVICES=<i> litlab tune ...) on a shared --storage"
        )
    fit_args = [*fit_args, "--trainer.devices=1"]
    check_space(fit_args, space, options.search)
    module, _, name = config["model"]["class_path"].rpartition(".")
    model_class = getattr(importlib.import_module(module), name)
    monitor, mode = model_class.monitor, model_class.monitor_mode

    study_name = options.study or f"{experiment}-tune"
    study_dir = Path(config["trainer"].get("default_root_dir") or "runs") / study_name
    study_dir.mkdir(parents=True, exist_ok=True)
    url = options.storage or f"sqlite:///{study_dir / 'study.db'}"
    study = open_study(
        study_name,
        url,
        study_dir,
        experiment=experiment,
        monitor=monitor,
        mode=mode,
        sampler=init.sampler,
        pruner=init.pruner,
        first=baseline(config, space),
    )
    print(
        f"study {study_name} ({shown_path(str(study_dir))}, storage {url}): {monitor} ({mode}), {counted(study)} "
        f"of {options.trials} trials so far",
        flush=True,
    )
    if counted(study) < options.trials:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        stop = optuna.study.MaxTrialsCallback(options.trials, states=COUNTED)
        objective = Objective(fit_args, space, study_dir, monitor)
        try:
            study.optimize(objective, timeout=timeout, callbacks=[stop], gc_after_trial=True)
        except KeyboardInterrupt:
            print(f"\n{summary(study, monitor)}")
            raise LitlabError("interrupted; the study keeps its trials: run the same command to resume") from None
    print(summary(study, monitor))
    if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        best_yaml = study_dir / "best.yaml"
        write_best(study, fit_args, experiment, monitor, best_yaml)
        write_figures(study, study_dir / "figures")
        print(f"best config: {shown_path(str(best_yaml))} (litlab fit --config {shown_path(str(best_yaml))})")

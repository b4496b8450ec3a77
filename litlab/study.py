"""An Optuna study of `litlab tune` in its storage: opened or created (several workers at once), counted,
summarised, and drawn (optimisation history, parameter importances)."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import optuna
from filelock import FileLock
from optuna.trial import TrialState

from litlab.errors import LitlabError, first_line
from litlab.figures import pyplot
from litlab.masking import mask_text
from litlab.search_space import cli_value

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # what `--trials` counts (not failures)


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
        raise LitlabError(f"--storage={mask_text(url)}: cannot open it: {mask_text(first_line(err, 300))}") from None


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


def worker() -> dict[str, str | int]:
    """This process, as a trial records who runs it (`fail_dead_trials`)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail the running trials whose worker on this machine is gone (killed, or its machine restarted): they would
    stay RUNNING. RDB storages also fail them by heartbeat, from any machine, once the grace period has passed; the
    journal storage has no heartbeat, so a worker killed on another machine is found by a worker started there."""
    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("worker") or {}
        if owner.get("host") == host and owner.get("pid") != os.getpid() and not alive(int(owner.get("pid", 0))):
            study.tell(trial.number, state=TrialState.FAIL)
            failed.append(trial.number)
    return failed


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


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

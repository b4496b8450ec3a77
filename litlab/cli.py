"""The one launcher for every experiment: `litlab fit|validate|test|predict --config configs/<experiment>.yaml`.

Model (an `experiment.Experiment`) and data are chosen by class path in the experiment YAML (subclass mode). Before
it, the default config files are applied (found next to this package, whatever the working directory):
`configs/trainer/default.yaml` and `configs/logger/wandb.yaml` (`configs/logger/none.yaml` for predict).
What every run gets, whatever its config:

- checkpoints: `last.ckpt` and `best.ckpt` by the metric the `Experiment` declares (`monitor`, `monitor_mode`);
- the resolved config saved with the run and sent to W&B (`tracking.RunRecord`), W&B offline without an API key;
- random numbers of its own on each DDP rank, exact resumption on every rank (`callbacks.ResumableRNG`) and, with
  `--ckpt_path`, the checkpoint's own config (`checkpoints`);
- `predict` prints a line per input and writes `predictions.jsonl` (`callbacks.PredictionWriter`);
- a rich progress bar (unless another progress bar is configured or `enable_progress_bar` is false);
- a learning-rate monitor whenever a logger is active;
- figures in the run's `figures/` folder, with or without W&B: learning curves and each experiment's own (`figures`);
- a one-line notice when the precision asks for bf16 on hardware without it (`hardware`);
- user errors (bad config, data, checkpoint or predict input) as one line and exit code 2, never a traceback
  (`config_errors` reads jsonargparse's reports of a bad option).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import lightning as L
from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only

from litlab.callbacks import BestCheckpoint, PredictionWriter, ResumableRNG, last_checkpoint
from litlab.catalogue import family, import_experiments, listing, uses_short_class_name
from litlab.checkpoints import check_matches, find_ckpt_path, with_checkpoint_config
from litlab.config_errors import explain, one_line
from litlab.errors import LitlabError, fail, fail_if_missing_package, missing_package, quiet_known_noise
from litlab.experiment import Experiment
from litlab.figures import LearningCurves
from litlab.hardware import precision_notice
from litlab.tracking import RunRecord, TrialRun, checkpoint_run_dir, choose_wandb_mode, fresh_dir, new_run_id

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DESCRIPTION = (
    "litlab: classic deep-learning experiments as Lightning code. `litlab list` shows the experiments; "
    "`litlab fit --config configs/<experiment>.yaml` trains one; `litlab test|validate|predict --ckpt_path <ckpt>` "
    "uses a checkpoint; `litlab tune --config ... --search configs/search/<experiment>.yaml` searches its "
    "hyperparameters (`litlab tune --help`)."
)
FOLDER_LOGGERS = ("TensorBoardLogger", "CSVLogger")  # loggers writing into <save_dir>/<name>/<version>
DEFAULT_CONFIGS = {
    "fit": ("trainer/default.yaml", "logger/wandb.yaml"),
    "validate": ("trainer/default.yaml", "logger/wandb.yaml"),
    "test": ("trainer/default.yaml", "logger/wandb.yaml"),
    "predict": ("trainer/default.yaml", "logger/none.yaml"),
}


def shown_path(path: str) -> str:
    """A path as printed: relative to the working directory when it lies below it."""
    return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else path


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


EXPERIMENT_MARK = "# litlab experiment: "  # a config's first line naming its experiment (a study's best.yaml)


def experiment_name(args: list[str]) -> str | None:
    """The experiment a command line runs: the last `--config` file that chooses a model (its name without .yaml, or
    the name its first line gives after `EXPERIMENT_MARK`)."""
    name = None
    for i, arg in enumerate(args[:-1]):
        if arg in ("--config", "-c") and args[i + 1].endswith((".yaml", ".yml")):
            path = Path(args[i + 1])
            text = path.read_text(encoding="utf-8") if path.is_file() else ""
            if re.search(r"^model:", text, re.M):
                first = text.partition("\n")[0]
                name = first.removeprefix(EXPERIMENT_MARK).strip() if first.startswith(EXPERIMENT_MARK) else path.stem
    return name


class LitlabCLI(LightningCLI):
    """`trial`: set by `litlab tune` for a trial's fit (its directory, W&B group and name, its pruning callback)."""

    def __init__(self, args: list[str] | None = None, run: bool = True, trial: TrialRun | None = None) -> None:
        if not CONFIG_DIR.is_dir():
            raise LitlabError(
                f"no configs/ next to the package ({CONFIG_DIR}): install litlab from its repository "
                f"in editable mode (`make venv`, or `pip install -e .`)"
            )
        self.checkpoint: dict | None = None
        self.trial = trial
        super().__init__(
            model_class=Experiment,
            datamodule_class=L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=RunRecord,
            auto_configure_optimizers=False,  # each LightningModule sizes its own schedule
            parser_kwargs={
                "description": DESCRIPTION,
                "exit_on_error": False,
                **{
                    subcommand: {
                        "default_config_files": [str(CONFIG_DIR / name) for name in files],
                        "exit_on_error": False,
                    }
                    for subcommand, files in DEFAULT_CONFIGS.items()
                },
            },
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--compile",
            type=bool | Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
            default=False,
            help="torch.compile the experiment's networks (true: the default mode, or a torch.compile mode); "
            "checkpoints are the same as without",
        )

    def parse_arguments(self, parser, args) -> None:
        args = list(sys.argv[1:] if args is None else args)
        self.experiment = experiment_name(args)
        args, self.checkpoint = with_checkpoint_config(args)
        self.ckpt_path = find_ckpt_path(args)
        self.config = parser.parse_args(args)
        # Lightning re-applies a checkpoint's model hyperparameters over everything the user passed when it finds
        # `ckpt_path` in the parsed config; litlab has already put them in place under the user's flags (see
        # `checkpoints`), so the path is held back until `before_instantiate_classes`.
        if self.ckpt_path is not None and self.config.get("subcommand"):
            self.config[self.config.subcommand].ckpt_path = None

    def _section(self, config, key: str):
        return config[self.subcommand][key] if self.subcommand else config[key]

    def before_instantiate_classes(self) -> None:
        if self.ckpt_path is not None and self.subcommand:
            self.config[self.subcommand].ckpt_path = self.ckpt_path
            if self.checkpoint is not None:
                check_matches(self.config[self.subcommand], self.checkpoint, self.ckpt_path)
        trainer = self._section(self.config, "trainer")
        self.run_directory, self.joins_run = None, False
        logger = trainer.logger
        kind = str(getattr(logger, "class_path", "")).rsplit(".", 1)[-1]
        init = logger.init_args if kind else {}
        # TensorBoard and CSV keep <save_dir>/<name>/<version>; litlab names both unless the user did
        files = kind in FOLDER_LOGGERS and init.get("name") in (None, "lightning_logs") and init.get("version") is None
        if logger is False or kind == "WandbLogger" or files:
            # the logger's own save_dir when the user gave one; "." (WandbLogger's default) means none given
            given = init.get("save_dir") if kind else None
            root = given if given not in (None, ".") else trainer.default_root_dir or "runs"
            self.run_directory, run_id = self._place_run(Path(root))
            if kind == "WandbLogger":
                self._name_wandb_run(init, run_id)
                choose_wandb_mode(str(self.run_directory))
            elif files:
                run = self.run_directory
                init.save_dir, init.name, init.version = str(run.parent.parent), run.parent.name, run.name
            else:
                trainer.default_root_dir = str(self.run_directory)
        notice = precision_notice(trainer.precision, trainer.accelerator)
        if notice:
            rank_zero_info(notice)

    def _place_run(self, root: Path) -> tuple[Path, str | None]:
        """The run's directory and W&B id: a checkpoint's own run for test, validate and a resumed fit (predict: a fresh
        folder inside it), else a new `<root>/<experiment>/<run id>`."""
        record = (self.checkpoint or {}).get("litlab") or {}
        origin = checkpoint_run_dir(self.ckpt_path) if self.ckpt_path and record else None
        if self.experiment is None:
            model = self._section(self.config, "model")
            self.experiment = record.get("experiment") or snake_case(str(model.class_path).rsplit(".", 1)[-1])
        if self.trial is not None:
            return self.trial.directory, new_run_id()
        if origin is not None and self.subcommand == "predict":
            return Path(fresh_dir(str(origin), "predict")), None
        if origin is not None:
            self.joins_run = self.subcommand != "fit" and bool(record.get("wandb_run_id"))
            return origin, record.get("wandb_run_id") or new_run_id()
        run_id = new_run_id()
        return root / self.experiment / run_id, run_id

    def _name_wandb_run(self, init_args, run_id: str) -> None:
        """The W&B run: its id (a checkpoint's for test/validate/resume), a readable name, the experiment as group and
        tag, the model's family as tag, the subcommand as job type; its files in the run directory."""
        model = str(self._section(self.config, "model").class_path)
        init_args.save_dir = str(self.run_directory)
        init_args.id = run_id
        extra = {"name": f"{self.experiment} {run_id[:15].replace('_', ' ')}", "group": self.experiment}
        extra |= {"tags": [self.experiment, family(model)], "job_type": self.subcommand or "fit", "resume": "allow"}
        if self.trial is not None:  # every trial of a study in the study's group
            extra |= {"name": self.trial.name, "group": self.trial.group, "tags": [*extra["tags"], "tune"]}
        for key, value in extra.items():
            init_args[key] = value

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = self._section(self.config_init, "trainer")
        self.save_config_kwargs.update(experiment=self.experiment, joins_run=self.joins_run)
        if self.trial is not None:
            self.save_config_kwargs["extra"] = {"tune": self.trial.record}
        compile_mode = self._section(self.config, "compile")
        self.model.compile_mode = "default" if compile_mode is True else (compile_mode or None)
        callbacks = [ResumableRNG(), PredictionWriter()]
        if self.subcommand == "fit" and trainer.get("enable_checkpointing") is not False:
            folder = str(self.run_directory / "checkpoints") if self.run_directory else None
            best = BestCheckpoint(self.model.monitor, self.model.monitor_mode, dirpath=folder)
            callbacks += [best, last_checkpoint(dirpath=folder)]
        if self.subcommand == "fit":
            callbacks.append(LearningCurves())
        callbacks += self.trial.callbacks if self.trial is not None else []
        configured = trainer.get("callbacks") or []
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in configured):
            callbacks.append(RichProgressBar())
        if trainer.get("logger"):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        self.trainer_defaults["callbacks"] = callbacks  # LightningCLI adds these to the configured ones
        try:
            built = super().instantiate_trainer(**kwargs)
        except ValueError as err:  # Lightning refusing a setting: an accelerator or strategy name it does not know
            if missing_package(err) is not None:
                raise
            raise LitlabError(f"--trainer: {one_line(err)}") from err
        if isinstance(built.logger, WandbLogger) and built.logger._wandb_init.get("anonymous", True) is None:
            # Lightning passes anonymous=None, which wandb reports on every run as a setting it no longer reads
            del built.logger._wandb_init["anonymous"]
        wandb_dir = built.logger.save_dir if isinstance(built.logger, WandbLogger) else None
        if wandb_dir and rank_zero_only.rank == 0:  # the process that starts the W&B run
            Path(wandb_dir).mkdir(parents=True, exist_ok=True)  # wandb looks for git from it and warns if it is absent
        return built

    def best_checkpoint(self) -> BestCheckpoint | None:
        """The fit's `best.ckpt` callback, once it has saved one (None without checkpointing)."""
        best = next((c for c in self.trainer.checkpoint_callbacks if isinstance(c, BestCheckpoint)), None)
        return best if best is not None and best.best_model_path else None

    def after_fit(self) -> None:
        checkpoints = [c for c in self.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
        best = self.best_checkpoint()
        last = next((c for c in checkpoints if c.monitor is None), None)
        if not self.trainer.is_global_zero or best is None:
            return
        print(f"best {best.monitor}: {best.best_model_score:.6g}")
        if isinstance(self.trainer.logger, WandbLogger):  # the run's summary: its best validation value
            self.trainer.logger.experiment.summary[f"best/{best.monitor}"] = float(best.best_model_score)
        if last is not None:
            print(f"last checkpoint: {shown_path(last.best_model_path)}")
        print(f"best checkpoint: {shown_path(best.best_model_path)}")


def _lost_a_peer(err: RuntimeError) -> bool:
    """A collective of a distributed run failing in a rank other than 0 because a peer process is gone."""
    import torch.distributed as dist

    lost = isinstance(err, dist.DistBackendError) or "closed by peer" in str(err)
    return lost and getattr(rank_zero_only, "rank", 0) > 0


@contextmanager
def one_line_errors() -> Iterator[None]:
    """What a user can fix ends the command with one line and exit code 2 (`errors.fail`); bugs keep their traceback."""
    try:
        yield
    except ArgumentError as err:
        message = explain(err)
        hint = "pass --config configs/<experiment>.yaml" if "are required" in message else "see `litlab <cmd> --help`"
        fail(f"{message} ({hint})")
    except (LitlabError, MisconfigurationException) as err:
        fail(one_line(err))
    except RuntimeError as err:
        if _lost_a_peer(err):  # another rank stopped first and printed why: one line here, not a traceback
            fail(f"rank {rank_zero_only.rank} stopped: another process of the run ended first (see its error)")
        if "state_dict" not in str(err):
            raise
        fail(f"the checkpoint does not fit the configured model: {one_line(err)}")
    except (ValueError, TypeError, ImportError) as err:  # a logger or model whose package is not installed
        fail_if_missing_package(err)
        if (refused := _raised_by_a_constructor(err)) is not None:
            fail(one_line(refused))
        raise


def _raised_by_a_constructor(err: BaseException) -> LitlabError | None:
    """The LitlabError a model or DataModule raised in `__init__`: jsonargparse, instantiating the class from the
    config, raises its own ValueError with the constructor's error as its cause."""
    while err is not None and not isinstance(err, LitlabError):
        err = err.__cause__
    return err


def main(args: list[str] | None = None) -> None:
    quiet_known_noise()
    args = list(sys.argv[1:] if args is None else args)
    if args[:1] in (["list"], ["experiments"]):
        try:
            print(listing(CONFIG_DIR, CONFIG_DIR.parent / "README.md"), flush=True)
        except BrokenPipeError:  # `litlab list | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    with one_line_errors():
        if uses_short_class_name(args):
            import_experiments()
        if args[:1] == ["tune"]:
            from litlab.tune import tune  # optuna is the [tune] extra

            tune(args[1:])
        else:
            LitlabCLI(args=args)


if __name__ == "__main__":
    main()

"""The launcher: `litlab fit|validate|test|predict`, one LightningCLI for every experiment.

`launch(subcommand, args)` runs a command as the console does (`litlab.__main__`), and `litlab tune` runs each trial
through it:

1. the config: the default files (`configs/trainer/default.yaml`, then `configs/logger/wandb.yaml`, or `none.yaml` for
   predict), then the config recorded in the `--ckpt_path` checkpoint (`checkpoints.checkpoint_config`), then the
   user's `--config` files and flags, each over the one before;
2. LightningCLI parses it (`run=False`: the launcher calls the Trainer itself), `runs.place_run` places the run, and
   the classes are built, the Trainer with the callbacks of `run_callbacks` beside the configured ones;
3. the Trainer runs the subcommand, from the checkpoint when one is given (loaded `weights_only`); a fit then prints its
   best value and its checkpoints.

Besides the Trainer's, model's and data's arguments, the config holds `experiment` (the experiment's name; by default
the first `--config` file's), `run_dir`, `ckpt_path` and `compile`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
from jsonargparse import ArgumentParser, capture_parser
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only

from litlab import interrupts
from litlab.adapters import Adaptation, LoraOptions
from litlab.callbacks import BestCheckpoint, CheckpointArtifacts, best_checkpoint, last_checkpoint
from litlab.checkpoints import check_matches, checkpoint_config, load_checkpoint
from litlab.config_errors import one_line
from litlab.errors import LitlabError, missing_package
from litlab.experiment import Experiment
from litlab.hardware import precision_notice
from litlab.runs import check_writable, configure_logger, experiment_name, place_run
from litlab.survival import Interruption, RunLock, exit_on_signal, with_safe_checkpoints
from litlab.tracking import RunRecord, wandb_run

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SUBCOMMANDS = ("fit", "validate", "test", "predict")
DESCRIPTION = (
    "litlab: classic deep-learning experiments as Lightning code. `litlab list` shows the experiments; "
    "`litlab fit --config configs/<experiment>.yaml` trains one; `litlab test|validate|predict --ckpt_path <ckpt>` "
    "uses a checkpoint; `litlab tune --config ... --search configs/search/<experiment>.yaml` searches its "
    "hyperparameters (`litlab tune --help`); `litlab fit ... --init_from <ckpt> --lora.r 16` adapts a trained model, "
    "`litlab merge --ckpt_path <ckpt>` folds its adapter in; `litlab serve --ckpt_path <ckpt>` serves it over HTTP "
    "(`litlab serve --help`)."
)


def default_configs(subcommand: str) -> list[str]:
    logger = "logger/none.yaml" if subcommand == "predict" else "logger/wandb.yaml"
    return [str(CONFIG_DIR / "trainer/default.yaml"), str(CONFIG_DIR / logger)]


def given(args: Sequence[str]) -> argparse.Namespace:
    """What the launcher needs before parsing: the `--config` files, `--ckpt_path`, and whether help is asked for."""
    reader = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    reader.add_argument("-c", "--config", action="append", default=[])
    reader.add_argument("--ckpt_path")
    reader.add_argument("-h", "--help", action="store_true")
    return reader.parse_known_args(list(args))[0]


def not_utf8(path: str, option: str) -> None:
    """One line when a config file exists but is not UTF-8 text (YAML's encoding; jsonargparse would end in a
    traceback)."""
    file = Path(path)
    if file.is_file():
        try:
            file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            byte = err.object[err.start]
            raise LitlabError(f"{option} {path} is not UTF-8 text (byte {byte:#04x} at {err.start})") from None


def shown_path(path: str | Path) -> str:
    """A path as printed: relative to the working directory when it lies below it."""
    return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)


class LitlabCLI(LightningCLI):
    """The LightningCLI of one subcommand: `callbacks` join every run's (`litlab tune`'s pruning), `checkpoint` is the
    loaded `--ckpt_path` (checked against the config, and placing the run in its folder)."""

    def __init__(
        self, subcommand: str, args: list[str], callbacks: Sequence[Callback] = (), checkpoint: dict | None = None
    ) -> None:
        if not CONFIG_DIR.is_dir():
            raise LitlabError(
                f"no configs/ next to the package ({CONFIG_DIR}): install litlab from its repository "
                f"in editable mode (`make venv`, or `pip install -e .`)"
            )
        self.command, self.checkpoint = subcommand, checkpoint
        files = [Path(f) for f in given(args).config if f.endswith((".yaml", ".yml"))]
        self.default_experiment = files[0].stem if files else None
        super().__init__(
            model_class=Experiment,
            datamodule_class=L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=RunRecord,
            trainer_defaults={"callbacks": list(callbacks)},
            auto_configure_optimizers=False,  # each Experiment sizes its own schedule (`litlab.optim`)
            parser_kwargs={
                "prog": f"litlab {subcommand}",
                "description": DESCRIPTION,
                "default_config_files": default_configs(subcommand),
                "exit_on_error": False,
            },
            args=args,
            run=False,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--experiment",
            type=str | None,
            default=self.default_experiment,
            help="the experiment's name: its runs' folder under trainer.default_root_dir, its W&B group and tag "
            "(default: the first --config file's name)",
        )
        parser.add_argument(
            "--run_dir", type=str | None, default=None, help="this run's folder (default: see `litlab.runs`)"
        )
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="fit: resume this checkpoint; validate, test, predict: use its weights (its config is the base)",
        )
        parser.add_argument(
            "--init_from",
            type=str | None,
            default=None,
            help="fit: start from this checkpoint's weights and data vocabulary, as a new run (not a resume; "
            "see `litlab.adapters`); with --lora, the base the adapters sit on",
        )
        parser.add_argument("--lora", type=LoraOptions, default=LoraOptions(), help="LoRA adapters (peft)")
        parser.add_argument(
            "--compile",
            type=bool | Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
            default=False,
            help="torch.compile the experiment's networks (true: the default mode, or a torch.compile mode); "
            "checkpoints are the same as without",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config
        config.experiment = experiment_name(config)
        if config.ckpt_path is not None and self.checkpoint is None:  # given in a config file, not as a flag
            self.checkpoint = load_checkpoint(config.ckpt_path)
        if self.checkpoint is not None:
            check_matches(config, self.checkpoint, config.ckpt_path)
        self.adaptation = adaptation(config, self.checkpoint, self.command)
        self.place = place_run(config, self.command, self.checkpoint, config.ckpt_path)
        check_writable(self.place.directory)
        if self.place.note:
            rank_zero_info(self.place.note)
        if self.place.resume_from is not None:  # a requeued SLURM job: its own run's newest checkpoint
            config.ckpt_path = str(self.place.resume_from)
        configure_logger(config, self.place, self.command)
        if notice := precision_notice(config.trainer.precision, config.trainer.accelerator):
            rank_zero_info(notice)

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = self.config_init.trainer
        compile_mode = self.config.compile
        self.model.compile_mode = "default" if compile_mode is True else (compile_mode or None)
        self.model.adaptation = self.adaptation
        if self.adaptation is not None and (state := self.adaptation.data_state(type(self.datamodule))):
            self.datamodule.load_state_dict(state)  # the base's vocabulary: its embedding rows keep their meaning
        self.save_config_kwargs["joins_run"] = self.place.joins
        configured = trainer.callbacks or []
        configured = list(configured) if isinstance(configured, list) else [configured]
        callbacks = [*configured, *run_callbacks(self.command, trainer, configured, self.place.directory)]
        try:
            built = super().instantiate_trainer(
                default_root_dir=str(self.place.directory),
                callbacks=callbacks,
                plugins=with_safe_checkpoints(trainer.plugins),
                **kwargs,
            )
        except ValueError as err:  # Lightning refusing a setting: an accelerator or strategy name it does not know
            if missing_package(err) is not None:
                raise
            raise LitlabError(f"--trainer: {one_line(err)}") from err
        if isinstance(built.logger, WandbLogger) and rank_zero_only.rank == 0:  # the process that starts W&B's run
            self.place.directory.mkdir(parents=True, exist_ok=True)  # wandb looks for git from it, warns if absent
        return built

    def run(self) -> None:
        """The subcommand, from `--ckpt_path` when given; a fit holds its run folder's lock (`survival.RunLock`). A
        SIGTERM or Ctrl-C ends it with one line and exit status 143 or 130 (`survival.Interruption`)."""
        method = getattr(self.trainer, self.command)
        options = {"return_predictions": False} if self.command == "predict" else {}
        lock = RunLock(self.place.directory) if self.command == "fit" and rank_zero_only.rank == 0 else None
        interrupts.end_if_received()  # a Ctrl-C swallowed while the config was read
        try:
            if lock is not None:
                lock.acquire()
            method(
                self.model, datamodule=self.datamodule, ckpt_path=self.config.ckpt_path, weights_only=True, **options
            )
        except SystemExit as stop:
            exit_on_signal(self.trainer, self.command, stop)
        finally:
            if lock is not None:
                lock.release()
        if self.command == "fit":
            self.report_fit()

    def report_fit(self) -> None:
        """The best validation value (also the W&B run's summary) and where the checkpoints are."""
        best = best_checkpoint(self.trainer)
        if not self.trainer.is_global_zero or best is None:
            return
        print(f"best {best.monitor}: {best.best_model_score:.6g}")
        if (run := wandb_run(self.trainer)) is not None:
            run.summary[f"best/{best.monitor}"] = best.best_model_score
        last = Path(best.best_model_path).with_name("last.ckpt")
        if last.is_file():
            print(f"last checkpoint: {shown_path(last)}")
        print(f"best checkpoint: {shown_path(best.best_model_path)}")


def adaptation(config, checkpoint: dict | None, subcommand: str) -> Adaptation | None:
    """The run's `Adaptation` (None when it has neither --init_from nor --lora): a new fit loads the base's weights;
    with a checkpoint, only an adapter's base is loaded (a full checkpoint restores every weight itself)."""
    lora = LoraOptions(**config.lora.as_dict()) if config.lora is not None else LoraOptions()
    if config.init_from is None and not lora.r:
        return None
    recorded = (checkpoint or {}).get("adaptation") or {}
    if checkpoint is not None and subcommand == "fit" and config.init_from and not recorded.get("partial"):
        raise LitlabError("--init_from starts a new run and --ckpt_path resumes one: pass one of them")
    load_base = checkpoint is None or bool(recorded.get("partial"))
    built = Adaptation(config.init_from, lora, recorded.get("sha256"), load_base)
    if config.init_from and load_base:
        built.check_experiment(config.model and config.model.get("class_path"))
    return built


def run_callbacks(subcommand: str, trainer, configured: list[Callback], folder: Path) -> list[Callback]:
    """A run's callbacks beside the configured ones (`configs/trainer/default.yaml`): those that depend on a setting
    Lightning refuses them beside: `best.ckpt`, `last.ckpt` and the checkpoint on a signal (`enable_checkpointing`),
    the rich progress bar unless
    another is configured (`enable_progress_bar`), the learning-rate monitor (`logger`), and with W&B the checkpoint
    artifacts, unless configured (`configs/logger/wandb_weights.yaml`)."""
    extra: list[Callback] = []
    if subcommand == "fit" and trainer.get("enable_checkpointing") is not False:
        extra += [BestCheckpoint(), last_checkpoint(folder / "checkpoints"), Interruption()]
    if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in configured):
        extra.append(RichProgressBar())
    if trainer.get("logger"):
        extra.append(LearningRateMonitor(logging_interval="step"))
    if isinstance(trainer.get("logger"), WandbLogger) and not any(
        isinstance(c, CheckpointArtifacts) for c in configured
    ):
        extra.append(CheckpointArtifacts())
    return extra


def launch(subcommand: str, args: Sequence[str], callbacks: Sequence[Callback] = ()) -> LitlabCLI:
    """Run `litlab <subcommand> <args>`; `callbacks` join the run's. Returns the CLI (its trainer, model, data)."""
    cli = prepare(subcommand, args, callbacks)
    cli.run()
    return cli


def prepare(subcommand: str, args: Sequence[str], callbacks: Sequence[Callback] = ()) -> LitlabCLI:
    """The CLI of `litlab <subcommand> <args>` with its trainer, model and data built, not yet run."""
    args = [str(arg) for arg in args]
    options = given(args)
    for path in options.config:
        not_utf8(path, "--config")
    checkpoint = None
    if options.ckpt_path is not None and not options.help:
        checkpoint = load_checkpoint(options.ckpt_path)
        recorded = checkpoint_config(checkpoint, subcommand)
        if "model" not in recorded and not options.config:
            raise LitlabError(
                f"--ckpt_path {options.ckpt_path} does not record its model (not written by litlab): "
                f"add --config configs/<experiment>.yaml"
            )
        args = ["--config", json.dumps(recorded), *args] if recorded else args
    return LitlabCLI(subcommand, args, callbacks, checkpoint)


def fit_parser(args: Sequence[str]) -> ArgumentParser:
    """The parser `litlab fit <args>` parses with, built without parsing or running anything (`litlab tune` resolves
    and checks its trials' configs with it)."""
    return capture_parser(LitlabCLI, "fit", [str(arg) for arg in args])

"""Start a fit from trained weights (`--init_from`), and adapt them with LoRA adapters on peft (`--lora.r`).

    litlab fit --config configs/char_gpt_cpu.yaml --init_from <base best.ckpt> --data.text_files '[moby_dick.txt]'
    litlab fit ... --init_from <base best.ckpt> --lora.r 16     # only the adapter (and `--lora.train_fully`) learns
    litlab test --ckpt_path <the adapted run's best.ckpt>       # the base, then the adapter, loaded again
    litlab merge --ckpt_path <the adapted run's best.ckpt>      # a plain full checkpoint, `<name>-merged.ckpt`

`--init_from` is not a resume: the run is new (its optimizer, schedule, run folder and W&B run); only the weights and
what the data learned from its training text (a vocabulary, a tokenizer: `DataModule.learned`) come from the base, so
an embedding row keeps meaning the same token, and a character or word the base never saw is read as its unknown one.
The base must be a litlab checkpoint of the same experiment class whose tensors have this model's shapes; anything else
is one line. The run's checkpoints record the base's path and SHA-256 (`checkpoint["adaptation"]`).

LoRA (Hu et al., 2021) through peft (the `peft` extra): each network of the experiment (`Experiment.compiled_modules`)
whose layers match `targets` is wrapped by `peft.get_peft_model`, which freezes it and adds `W + (alpha / r) B A` to
each matched `nn.Linear`, `nn.Conv*` or `nn.Embedding` (peft has no LoRA for `nn.LSTM`); `train_fully` modules train
whole (a copy beside the frozen original, so `disable_adapter` gives the base back). A network none of the targets
matches is frozen. Started from `--init_from`, a checkpoint then holds only what trains (and the buffers), a small file;
test, validate, predict, resume and `litlab-export` load the base again from the recorded path, refuse it when its
SHA-256 changed, and put the adapter on it. Without `--init_from` (a model whose `build` loads pretrained weights from
the hub) checkpoints keep every weight.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveFloat
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import Tensor, nn

from litlab.checkpoints import load_checkpoint
from litlab.errors import LitlabError, first_line


@dataclass
class LoraOptions:
    """LoRA adapters (`--lora.r 16 --lora.alpha 32`).

    Args:
        r: the adapters' rank; 0: none (every weight trains).
        alpha: the update's scale is alpha / r.
        dropout: on the adapters' input.
        targets: the layers that get adapters, by name or name ending (peft's `target_modules`); None: the
            experiment's `lora_targets` (its attention and MLP projections, or what its docstring says).
        train_fully: modules that train whole beside the adapters (peft's `modules_to_save`), e.g. a new head; None:
            the experiment's `lora_train_fully`.
        dora: weight-decomposed adapters (DoRA, Liu et al. 2024; peft's `use_dora`): each adapted layer also learns
            the length of each of its output rows.
        lr_ratio: LoRA+ (Hayou et al. 2024): the B matrices learn `lr_ratio` times faster than the A matrices.
    """

    r: NonNegativeInt = 0
    alpha: PositiveFloat = 16.0
    dropout: ClosedUnitInterval = 0.0
    targets: list[str] | None = None
    train_fully: list[str] | None = None
    dora: bool = False
    lr_ratio: PositiveFloat = 1.0


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def matches(name: str, patterns: list[str]) -> bool:
    """peft's rule for a list of `target_modules`: the module's name is one of them or ends with `.<one>`."""
    return any(name == p or name.endswith(f".{p}") for p in patterns)


class Adaptation:
    """What a run starts from and how it adapts it; the launcher attaches one to the Experiment (`adaptation`), whose
    `configure_model` calls `apply` after `build`.

    Args:
        init_from: the base checkpoint.
        lora: the adapters (r 0: none).
        sha256: the base's recorded hash (a checkpoint of an adapted run): the file must still have it.
        load_base: load the base's weights (a new fit, or an adapter-only checkpoint); False when a full checkpoint
            restores them anyway.
    """

    def __init__(
        self, init_from: str | None, lora: LoraOptions, sha256: str | None = None, load_base: bool = True
    ) -> None:
        self.init_from, self.lora, self.load_base = init_from, lora, load_base
        self.expected_sha256 = sha256
        self._base: dict | None = None
        self._sha256: str | None = None
        self.wrapped: list[str] = []  # the Experiment's attributes that are peft models

    @property
    def partial(self) -> bool:
        """Whether checkpoints hold the adapter alone (the base comes from `init_from`)."""
        return bool(self.lora.r) and self.init_from is not None

    def base(self) -> dict:
        """The base checkpoint (loaded once, `weights_only`), checked against the recorded hash."""
        if self._base is None:
            checkpoint = load_checkpoint(self.init_from, option="--init_from")
            digest = sha256(self.init_from)
            if self.expected_sha256 and digest != self.expected_sha256:
                raise LitlabError(
                    f"--init_from {self.init_from} is not the base this adapter was trained on (its SHA-256 "
                    f"changed): pass the original with --init_from"
                )
            if (checkpoint.get("adaptation") or {}).get("partial"):
                raise LitlabError(
                    f"--init_from {self.init_from} holds an adapter, not full weights: "
                    f"`litlab merge --ckpt_path {self.init_from}` writes a full checkpoint to start from"
                )
            self._base, self._sha256 = checkpoint, digest
        return self._base

    def data_state(self, data_class: type) -> dict | None:
        """What the base's DataModule learned (its vocabulary, its tokenizer), when it is of `data_class`."""
        return self.base().get(data_class.__qualname__) if self.init_from and self.load_base else None

    def check_experiment(self, class_path: str | None) -> None:
        saved = (self.base().get("hyper_parameters") or {}).get("_class_path")
        if saved and class_path and saved != class_path:
            raise LitlabError(
                f"--init_from {self.init_from} holds a {saved}, but the config selects {class_path}: "
                f"start from a checkpoint of this experiment"
            )

    def apply(self, model: nn.Module) -> None:
        """The base's weights into the freshly built `model`, then the adapters."""
        if self.init_from and self.load_base:
            load_weights(model, self.base()["state_dict"], self.init_from)
        if self.lora.r:
            self.wrapped = add_adapters(model, self.lora)

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps of it (plain values: checkpoints load `weights_only`)."""
        return {
            "init_from": str(Path(self.init_from).resolve()) if self.init_from else None,
            "sha256": self._sha256 or self.expected_sha256,
            "lora": json.loads(json.dumps(asdict(self.lora))) if self.lora.r else None,  # plain ints
            "partial": self.partial,
        }

    def lr_scales(self, model: nn.Module) -> dict[int, float]:
        """The learning-rate factor of each parameter that does not learn at the optimizer's rate (LoRA+'s B
        matrices), by `id`."""
        if self.lora.lr_ratio == 1 or not self.lora.r:
            return {}
        ratio = float(self.lora.lr_ratio)  # a plain float: the optimizer state is saved in checkpoints (weights_only)
        return {id(p): ratio for name, p in model.named_parameters() if ".lora_B." in name}

    def saved_state(self, model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The part of a state dict a checkpoint keeps: everything, or with `partial`, what trains and the buffers."""
        if not self.partial:
            return state
        kept = {name for name, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
        kept |= {name for name, _ in model.named_buffers(remove_duplicate=False)}
        return {name: value for name, value in state.items() if name in kept}


def load_weights(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """`state` into `model`, refused in one line when a tensor is missing, unexpected or of another shape."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        names = ", ".join((missing or unexpected)[:3])
        which = "lacks" if missing else "has tensors this model does not:"
        raise LitlabError(f"--init_from {source} {which} {names} ({len(missing)} missing, {len(unexpected)} "
                          f"unexpected): start from a checkpoint of this experiment's architecture")  # fmt: skip
    for name, value in state.items():
        if value.shape != own[name].shape:
            raise LitlabError(
                f"--init_from {source}: {name} is {tuple(value.shape)} there and {tuple(own[name].shape)} here: "
                f"the model's sizes (or the data's vocabulary) differ from the base's"
            )
    model.load_state_dict(state)


def add_adapters(model: nn.Module, options: LoraOptions) -> list[str]:
    """Wrap each network of `model` that `options.targets` (default: the model's `lora_targets`) match with peft's
    LoRA, freeze the others; tell the user what trains. Returns the wrapped attributes' names."""
    try:
        from peft import LoraConfig, get_peft_model
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("No module named 'peft'", name="peft") from err
    targets = list(options.targets if options.targets is not None else getattr(model, "lora_targets", ()))
    fully = options.train_fully if options.train_fully is not None else getattr(model, "lora_train_fully", ())
    train_fully = list(fully)
    if not targets:
        raise LitlabError(f"{type(model).__name__} names no LoRA targets: pass --lora.targets '[<layer name>, ...]'")
    wrapped, networks = [], model.compiled_modules()
    base_total = sum(p.numel() for p in model.parameters())
    for attribute, network in list(model.named_children()):
        if not any(network is n for n in networks):
            continue
        names = [name for name, _ in network.named_modules() if name]
        if not any(matches(name, targets) for name in names):
            network.requires_grad_(False)
            continue
        config = LoraConfig(
            r=options.r, lora_alpha=options.alpha, lora_dropout=options.dropout, target_modules=targets,
            use_dora=options.dora,
            modules_to_save=[m for m in train_fully if any(matches(name, [m]) for name in names)] or None,
        )  # fmt: skip
        try:
            setattr(model, attribute, get_peft_model(network, config))
        except (ValueError, TypeError) as err:  # a target peft has no LoRA for (an nn.LSTM), a bad module name
            raise LitlabError(f"--lora: {first_line(err)}") from None
        wrapped.append(attribute)
    if not wrapped:
        raise LitlabError(f"--lora.targets {targets} match no layer of {type(model).__name__}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    size = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    rank_zero_info(
        f"LoRA r={options.r} alpha={options.alpha:g} on {', '.join(targets)}: {trainable:,} trainable parameters "
        f"of the base's {base_total:,} ({100 * trainable / base_total:.2f} %), adapter {size / 1024:,.0f} KiB"
    )
    return wrapped


def recorded(checkpoint: dict) -> Adaptation | None:
    """The adapters a checkpoint was trained with, outside the launcher (`litlab-export`, `litlab merge`): None for a
    checkpoint without (a plain or merged one)."""
    record = checkpoint.get("adaptation") or {}
    if not record.get("lora"):
        return None
    partial = bool(record.get("partial"))
    base = record["init_from"] if partial else None
    return Adaptation(base, LoraOptions(**record["lora"]), record["sha256"], partial)


def merge_adapters(model: nn.Module) -> None:
    """Fold each adapter into its layer (`W + (alpha / r) B A`) and put the plain networks back (peft's
    `merge_and_unload`): the model computes the same function without peft."""
    if model.adaptation is None:
        return
    for attribute in model.adaptation.wrapped:
        setattr(model, attribute, getattr(model, attribute).merge_and_unload())
    model.adaptation = None

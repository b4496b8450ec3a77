"""Starting a fit from trained weights (`--init_from`) and LoRA adapters on peft (`--lora`), `litlab merge`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import QUIET, cli, config, fails_in_one_line, tiny
from text_fixtures import write_book

from litlab.adapters import sha256
from litlab.export import export, merge, model_from_checkpoint

GPT = ("--config", config("char_gpt_cpu"), *tiny("char_gpt_cpu"), "--model.layers=2", "--data.context_len=32", *QUIET)
ONE_EPOCH = ("--trainer.max_epochs=1", "--trainer.limit_train_batches=6", "--trainer.limit_val_batches=2")


def saved(folder: str) -> tuple[Path, Path]:
    """(best.ckpt, last.ckpt) of the one run under `folder` (its `trainer.default_root_dir`)."""
    (best,), (last,) = Path(folder).glob("**/best.ckpt"), Path(folder).glob("**/last.ckpt")
    return best, last


@pytest.fixture
def base():
    """A tiny character GPT trained for one short epoch on the fixture book: the base to adapt."""
    fitted = cli("fit", *GPT, *ONE_EPOCH, "--trainer.default_root_dir=base")
    return fitted, saved("base")[0]


@pytest.fixture
def other_book(tmp_path):
    """A second text, with a letter the base's never had (kept by `--data.clean=false`)."""
    path = write_book(tmp_path / "other.txt", sentences=300, seed=7)
    path.write_text(path.read_text().replace("the", "thé"), encoding="utf-8")
    return path


class KeepStartWeights(L.Callback):
    """Keeps the weights a fit starts training from (`pl_module.start_weights`)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.start_weights = {k: v.clone() for k, v in pl_module.state_dict().items()}


def adapted(base_ckpt, *args: str):
    return cli("fit", *GPT, *ONE_EPOCH, "--init_from", base_ckpt, "--trainer.default_root_dir=adapted", *args)


def test_init_from_starts_a_new_run_from_the_base_weights_and_vocabulary(base, other_book):
    fitted, best = base
    run = adapted(best, "--data.text_files", f"[{other_book}]", "--data.clean=false",
                  "--trainer.callbacks+=test_adapters.KeepStartWeights")  # fmt: skip
    base_state = torch.load(best, weights_only=True)["state_dict"]
    assert run.model.start_weights.keys() == base_state.keys()
    assert all(torch.equal(run.model.start_weights[k], v) for k, v in base_state.items())
    # not a resume: a new run folder, optimizer and step count
    assert run.trainer.global_step == 6 and run.trainer.default_root_dir != fitted.trainer.default_root_dir
    # the base's vocabulary, so each embedding row keeps its character; a character it never saw reads as unknown
    assert run.datamodule.vocab.chars == fitted.datamodule.vocab.chars
    assert "é" in other_book.read_text() and run.datamodule.vocab.encode("é").tolist() == [0]
    record = torch.load(saved("adapted")[0], weights_only=True)["adaptation"]
    assert record["init_from"] == str(best.resolve()) and record["sha256"] == sha256(best)
    assert record["lora"] is None and not record["partial"]


def test_init_from_refuses_another_experiment_other_shapes_and_a_missing_file(base, capfd, tmp_path):
    _, best = base
    fails_in_one_line(capfd, "fit", *GPT, "--init_from", tmp_path / "none.ckpt", naming="--init_from")
    fails_in_one_line(capfd, "fit", *GPT, "--init_from", best, "--model.embed_dim=48", naming="embed.weight")
    xor = cli("fit", "--config", config("xor_mlp"), *tiny("xor_mlp"), "--trainer.max_epochs=1",
              "--trainer.default_root_dir=xor", *QUIET)  # fmt: skip
    xor_best = saved("xor")[0]
    assert xor.trainer.global_step > 0
    fails_in_one_line(capfd, "fit", *GPT, "--init_from", xor_best, naming="holds a")


def test_lora_trains_the_adapter_alone_into_a_small_checkpoint_that_loads_everywhere(base, tmp_path, lightning_logs):
    fitted, best = base
    run = adapted(best, "--lora.r=1")
    told = [r.getMessage() for r in lightning_logs.records if "trainable parameters" in r.getMessage()]
    # 2 blocks x rank 1 x (qkv 32 + 96, proj 32 + 32, mlp.0 32 + 128, mlp.2 128 + 32) = 1,024 trainable
    total = sum(p.numel() for p in fitted.model.parameters())
    share = f"{total:,} ({100 * 1024 / total:.2f} %)"
    targets = "qkv, proj, mlp.0, mlp.2"
    assert told == [f"LoRA r=1 alpha=16 on {targets}: 1,024 trainable parameters of the base's {share}, adapter 4 KiB"]
    trainable = [name for name, p in run.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert len(trainable) == 2 * 4 * 2  # A and B of each block's four projections
    adapter_best, adapter_last = saved("adapted")
    written = torch.load(adapter_best, weights_only=True)
    assert set(written["state_dict"]) == set(trainable) and written["adaptation"]["partial"]
    assert adapter_best.stat().st_size < best.stat().st_size / 5

    # test loads base + adapter; equal to the merged plain checkpoint; predict and export read it too
    scores = cli("test", "--ckpt_path", adapter_best, *QUIET).trainer.callback_metrics
    merged = tmp_path / "merged.ckpt"
    merge(str(adapter_best), merged)
    assert "lora" not in "".join(torch.load(merged, weights_only=True)["state_dict"])
    merged_scores = cli("test", "--ckpt_path", merged, *QUIET).trainer.callback_metrics
    assert torch.allclose(scores["test/loss"], merged_scores["test/loss"], atol=1e-5)
    cli("predict", "--ckpt_path", adapter_best, "--model.temperature=0", *QUIET)
    (written,) = Path("adapted").glob("**/predictions.jsonl")
    records = [json.loads(line) for line in written.read_text().splitlines()]
    assert [r["input"] for r in records] == ["The little", ""] and all(len(r["output"]) == 20 for r in records)
    model, _ = model_from_checkpoint(str(adapter_best))
    ids = torch.randint(1, 10, (2, 12))
    plain, _ = model_from_checkpoint(str(merged))
    assert torch.allclose(model.net(ids)[0], plain.net(ids)[0], atol=1e-5)
    assert export(str(adapter_best), tmp_path / "adapted.onnx", exporter="torchscript") < 1e-4

    # resume loads the base again under the adapter; disable_adapter gives back the base's outputs exactly
    resumed = cli("fit", "--ckpt_path", adapter_last, "--trainer.max_epochs=2", *QUIET)
    assert resumed.trainer.global_step == 12  # 6 steps restored, 6 more
    net = resumed.model.net.eval()
    base_model, _ = model_from_checkpoint(str(best))
    assert any(p.abs().sum() > 0 for n, p in net.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        assert not torch.equal(net(ids)[0], base_model.net(ids)[0])
        with net.disable_adapter():
            assert torch.equal(net(ids)[0], base_model.net(ids)[0])


def test_dora_and_lora_plus_train_magnitudes_and_fast_b_matrices_and_merge_exactly(base, tmp_path):
    _, best = base
    run = adapted(best, "--lora.r=4", "--lora.dora=true", "--lora.lr_ratio=16")
    named = dict(run.model.named_parameters())
    trainable = {name for name, p in named.items() if p.requires_grad}
    assert any("lora_magnitude_vector" in name for name in trainable)  # DoRA: a length per output row
    groups = run.trainer.optimizers[0].param_groups
    by_id = {id(p): group for group in groups for p in group["params"]}
    b_lr = {by_id[id(p)]["initial_lr"] for name, p in named.items() if ".lora_B." in name}
    a_lr = {by_id[id(p)]["initial_lr"] for name, p in named.items() if ".lora_A." in name}
    assert len(b_lr) == len(a_lr) == 1 and b_lr.pop() == pytest.approx(16 * a_lr.pop())
    adapter_best, _ = saved("adapted")
    merged = tmp_path / "merged.ckpt"
    merge(str(adapter_best), merged)
    model, _ = model_from_checkpoint(str(adapter_best))
    plain, _ = model_from_checkpoint(str(merged))
    ids = torch.randint(1, 10, (2, 12))
    assert torch.allclose(model.net(ids)[0], plain.net(ids)[0], atol=1e-5)


def test_an_adapter_refuses_a_changed_base_and_is_no_base_itself(base, capfd, tmp_path):
    _, best = base
    adapted(best, "--lora.r=2")
    adapter_best, _ = saved("adapted")
    fails_in_one_line(capfd, "fit", *GPT, "--init_from", adapter_best, naming="litlab merge")
    checkpoint = torch.load(best, weights_only=True)
    checkpoint["state_dict"]["net.norm.weight"] += 1
    torch.save(checkpoint, best)
    fails_in_one_line(capfd, "test", "--ckpt_path", adapter_best, *QUIET, naming="SHA-256")


def test_lora_without_peft_and_on_layers_peft_cannot_adapt_say_so(base, capfd, monkeypatch):
    _, best = base
    fails_in_one_line(capfd, "fit", *GPT, "--init_from", best, "--lora.r=2", "--lora.targets=[nothing]",
                      naming="match no layer")  # fmt: skip
    monkeypatch.setitem(sys.modules, "peft", None)
    fails_in_one_line(capfd, "fit", *GPT, "--init_from", best, "--lora.r=2", naming="litlab[peft]")

"""The character models: vocabulary kept in the checkpoint, generation length, temperature, top-k, seeded sampling."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import torch
from conftest import built, cli, config, fails_in_one_line, tiny
from torch import Tensor

from lightning_modules.char_lm import CharLM
from lightning_modules.components.char_nets import CausalSelfAttention, CharGPT

TINY = tiny("char_lstm")
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]


@pytest.fixture
def lstm_checkpoint(tmp_path):
    cli(
        "fit",
        "--config",
        config("char_lstm"),
        *TINY,
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=5",
        *QUIET,
    )
    return next(tmp_path.glob("runs/**/best.ckpt"))


def predict(ckpt, capsys, *args: str) -> list[dict]:
    cli("predict", "--ckpt_path", ckpt, "--data.text_files=[/nonexistent.txt]", *args)  # no text needed
    lines = capsys.readouterr().out.strip().splitlines()
    path = next(line for line in lines if line.startswith("predictions written to "))
    return [json.loads(line) for line in open(path.removeprefix("predictions written to "))]


def test_vocabulary_travels_in_the_checkpoint(lstm_checkpoint):
    checkpoint = torch.load(lstm_checkpoint, weights_only=True)
    vocab = checkpoint["CharCorpusData"]["vocab"]  # the DataModule's state_dict
    assert set(vocab) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.? ") and "e" in vocab
    assert checkpoint["hyper_parameters"]["vocab_size"] == len(vocab) + 1


def test_generation_length_temperature_and_top_k(lstm_checkpoint, capsys):
    prompts = '--data.prompts=["The little", "", "r\\u00e9sum\\u00e9"]'
    greedy = predict(lstm_checkpoint, capsys, prompts, "--model.generate_chars=30", "--model.temperature=0")
    assert [r["input"] for r in greedy] == ["The little", "", "r\u00e9sum\u00e9"]  # empty and unseen characters handled
    assert all(len(r["output"]) == 30 for r in greedy)
    top1 = predict(lstm_checkpoint, capsys, prompts, "--model.generate_chars=30", "--model.top_k=1")
    assert [r["output"] for r in top1] == [r["output"] for r in greedy]  # top-1 sampling is greedy
    sampled = [predict(lstm_checkpoint, capsys, prompts, "--model.temperature=1.5", "--seed_everything=7")
               for _ in range(2)]  # fmt: skip
    assert sampled[0] == sampled[1]  # same seed, same text
    other = predict(lstm_checkpoint, capsys, prompts, "--model.temperature=1.5", "--seed_everything=8")
    assert other != sampled[0]


def test_missing_text_file_and_failed_download_are_one_line(capfd, tmp_path, monkeypatch):

    missing = tmp_path / "missing.txt"
    fit = ["fit", "--config", config("char_lstm"), "--trainer.logger=false"]
    fails_in_one_line(capfd, *fit, f"--data.text_files=[{missing}]", naming=f"text file {missing} not found")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # what urllib meets offline
    last = fails_in_one_line(capfd, *fit, f"--data.data_dir={tmp_path}", naming="could not download")
    assert "pg1260.txt" in last and "--data.text_files" in last
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.txt"))  # nothing half-written left


def test_gpt_attention_is_multi_head_attention_under_a_causal_mask():
    attention = CausalSelfAttention(d_model=16, heads=4, attention_dropout=0.0)
    reference = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    reference.load_state_dict(
        {"in_proj_weight": attention.qkv.weight, "in_proj_bias": attention.qkv.bias,
         "out_proj.weight": attention.proj.weight, "out_proj.bias": attention.proj.bias}
    )  # fmt: skip
    x = torch.randn(2, 7, 16)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(7)
    expected, _ = reference(x, x, x, attn_mask=causal, need_weights=False)
    torch.testing.assert_close(attention(x), expected)


def test_gpt_never_reads_the_future():
    torch.manual_seed(0)
    net = CharGPT(vocab_size=12, d_model=32, heads=4, layers=2, context_len=16, dropout=0.0).eval()
    ids = torch.randint(1, 12, (2, 16))
    changed = ids.clone()
    changed[:, 10:] = changed[:, 10:] % 11 + 1
    before, after = net(ids)[0], net(changed)[0]  # (B, T, V)
    torch.testing.assert_close(before[:, :10], after[:, :10])
    assert not torch.allclose(before[:, 10:], after[:, 10:])


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn_scratch"])
def test_stream_batches_carry_the_state_across_batches(arch):
    torch.manual_seed(0)
    model = built(CharLM(arch, embed_dim=8, hidden=16, layers=2, dropout=0.0, vocab_size=12, context_len=50)).eval()
    ids = torch.randint(1, 12, (4, 51), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = model._shared_step({"x": ids[:, :-1], "y": ids[:, 1:]}, "val")  # each row in one reading
        _, final = model(ids[:, :-1])

        def read(cuts, stream: bool) -> Tensor:  # the mean loss over the rows read in chunks
            total = 0.0
            for step, (a, b) in enumerate(zip(cuts, cuts[1:])):
                batch = {"x": ids[:, a:b], "y": ids[:, a + 1 : b + 1]} | ({"continues": step > 0} if stream else {})
                total += model._shared_step(batch, "val") * (b - a)
            return total / 50

        def carried_is_final() -> bool:
            pairs = zip(*(s if isinstance(s, tuple) else (s,) for s in (model.carried["val"], final)))
            return all(torch.allclose(kept, last, atol=1e-5) for kept, last in pairs)

        assert torch.allclose(read([0, 20, 40, 50], stream=True), whole, atol=1e-5) and carried_is_final()
        assert torch.allclose(read([0, 25, 50], stream=True), whole, atol=1e-5)  # a new first batch resets the state
        read([0, 20, 40], stream=False)  # windows from a zero state keep no state
        assert carried_is_final()


def test_a_fit_on_streams_trains_through_truncated_backpropagation(tmp_path):
    run = cli(
        "fit", "--config", config("char_lstm"), *TINY, "--data.streams=true", "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=4", *QUIET,
    )  # fmt: skip
    metrics = run.trainer.callback_metrics
    assert run.trainer.global_step == 8 and torch.isfinite(metrics["val/loss"])  # the graph ends at each batch
    assert "val/acc" in metrics and "val/acc_last" not in metrics  # no fixed context position in a stream
    assert run.trainer.train_dataloader.sampler.epoch == 1  # Lightning moves the training rows' shift each epoch

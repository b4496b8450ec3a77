"""Character-level language models on a novel (notebook 15.8.2 and 15.9.9): predict every next character of a window.

The notebook's hand-written 3-layer tanh RNN reached 46 % next-character accuracy and its LSTM 50.7-52 %; its
Transformer's 77 % came from overlapping train/test windows. Here the text is split contiguously (see
`datamodules.char_corpus`) and every position of every window is scored: `val/loss` (nats/char), `val/bpc` (bits/char),
`val/acc` (all positions), `val/acc_last` (the position with the notebook's 40-character context). With the data's
`streams`, recurrent models carry each row's state from batch to batch (truncated backpropagation through time, the
state detached between batches) in training and evaluation, and every character is scored with the text before it in
its row.

    litlab fit --config configs/char_lstm.yaml
    litlab predict --ckpt_path <best.ckpt> --data.prompts '["It was", "Jane"]' --model.temperature=0.8
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, PositiveInt
from torch import Tensor
from torchmetrics import MeanMetric

from lightning_modules.components.char_nets import CharGPT, RecurrentLM
from litlab.experiment import Experiment, per_stage

NOTEBOOK_CONTEXT = 40  # the notebook predicted the 41st character from 40


class _Logits(torch.nn.Module):
    """A language model's logits alone (its recurrent state is not an ONNX output)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, ids: Tensor) -> Tensor:
        return self.net(ids)[0]


class CharLM(Experiment):
    """A next-character model; the vocabulary size and the window length come from the data (`vocab_size`,
    `context_len`, recorded in the checkpoint), and so do the vocabulary that encodes prompts and decodes samples
    (`vocab`) and the prompts of the samples generated each epoch (`prompts`).

    Args:
        arch: "rnn_scratch" (the notebook's hand-written tanh RNN), "lstm", "gru" or "gpt".
        embed_dim: character embedding size (the GPT's width).
        hidden: recurrent state size.
        layers: recurrent layers or Transformer blocks.
        heads: attention heads (gpt).
        positions: "learned" or "sinusoidal" (gpt).
        dropout: between layers and before the output (gpt: on the embeddings and each residual branch).
        attention_dropout: on the attention weights (gpt); 0 keeps the CPU on the fused attention kernels.
        generate_chars, temperature, top_k: `litlab predict` continues each prompt by `generate_chars` characters
            sampled at `temperature` from the `top_k` likeliest (all when None); temperature 0 is greedy.
        vocab_size: the data's at the first fit.
        context_len: the longest context the GPT attends to (its position table); the data's window at the first fit.
        kwargs: the optimizer and schedule (`Experiment`).
    """

    monitor, monitor_mode = "val/loss", "min"
    data_arguments = ("vocab_size", "context_len")
    # every projection of the GPT's blocks: attention (fused query/key/value, output) and MLP. At the same adapter
    # size, rank 4 on all of them adapts to a new novel 0.05 nats/char better than rank 16 on qkv (docs/adapters.md)
    lora_targets = ("qkv", "proj", "mlp.0", "mlp.2")
    prediction_format = "{input!r} -> {output!r}"
    request_settings = ("generate_chars", "temperature", "top_k")

    def __init__(
        self,
        arch: Literal["rnn_scratch", "lstm", "gru", "gpt"] = "lstm",
        embed_dim: PositiveInt = 64,
        hidden: int = 512,
        layers: PositiveInt = 2,
        heads: PositiveInt = 4,
        positions: Literal["learned", "sinusoidal"] = "learned",
        dropout: ClosedUnitInterval = 0.2,
        attention_dropout: ClosedUnitInterval = 0.0,
        generate_chars: PositiveInt = 200,
        temperature: NonNegativeFloat = 0.8,
        top_k: PositiveInt | None = None,
        vocab_size: PositiveInt | None = None,
        context_len: PositiveInt | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.net = None
        self.acc, self.acc_last = per_stage(MeanMetric), per_stage(MeanMetric)
        self.carried: dict[str, object] = {}  # per stage: the recurrent state a stream batch leaves for the next

    def build(self) -> None:
        hp, vocab_size, context_len = self.hparams, self.data_argument("vocab_size"), self.data_argument("context_len")
        if hp.arch == "gpt":
            self.net = CharGPT(
                vocab_size, hp.embed_dim, hp.heads, hp.layers, context_len, hp.dropout, hp.positions,
                hp.attention_dropout,
            )  # fmt: skip
        else:
            self.net = RecurrentLM(hp.arch, vocab_size, hp.embed_dim, hp.hidden, hp.layers, hp.dropout)

    def forward(self, ids: Tensor, state=None):
        return self.net(ids, state)  # logits (B, T, V), state

    def onnx_example(self, data_class: type) -> tuple[torch.nn.Module, dict[str, Tensor], list[str]]:
        """int64 character ids (batch, time) in the checkpoint's vocabulary -> next-character logits (batch, time,
        vocab); the text is encoded outside (`vocab` in the checkpoint's DataModule state)."""
        ids = torch.randint(0, self.hparams.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
        return _Logits(self.net), {"ids": ids}, ["logits"]

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        x, y = batch["x"], batch["y"]  # (B, T) each; y is x shifted by one character
        continues = batch.get("continues")  # stream batches only: do the rows go on from the previous batch's?
        logits, state = self(x, self.carried.get(stage) if continues else None)
        if continues is not None and state is not None:  # truncated BPTT: the state goes on, its graph does not
            self.carried[stage] = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        loss = F.cross_entropy(logits.transpose(1, 2), y)  # nats per character
        self.log_loss(stage, loss, batch_size=y.numel())
        if stage != "train":
            right = logits.argmax(-1) == y  # (B, T)
            self.acc[stage](right.float())
            self.log(f"{stage}/acc", self.acc[stage], prog_bar=True)
            if continues is None and y.size(1) >= NOTEBOOK_CONTEXT:  # a window read from a zero state
                self.acc_last[stage](right[:, NOTEBOOK_CONTEXT - 1].float())
                self.log(f"{stage}/acc_last", self.acc_last[stage])
            self.log(f"{stage}/bpc", loss / math.log(2), batch_size=y.numel(), sync_dist=True)
        return loss

    @torch.no_grad()
    def generate(self, prompt: Tensor, chars: int, temperature: float, top_k: int | None) -> Tensor:
        """(1, chars) ids sampled after the prompt (1, T); recurrent nets carry their state, the GPT re-reads its
        window."""
        logits, state = self(prompt)
        out = []
        for _ in range(chars):
            last = logits[:, -1].clone()  # (1, V)
            last[:, 0] = float("-inf")  # never the unknown-character id
            if temperature <= 0:
                nxt = last.argmax(-1, keepdim=True)
            else:
                last = last / temperature
                if top_k is not None:
                    kth = last.topk(min(top_k, last.size(-1))).values[:, -1:]
                    last = last.masked_fill(last < kth, float("-inf"))
                nxt = torch.multinomial(last.softmax(-1), 1)  # (1, 1)
            out.append(nxt)
            if state is None:  # GPT: the whole (cropped) context again
                prompt = torch.cat([prompt, nxt], dim=1)
                logits, _ = self(prompt)
            else:
                logits, state = self(nxt, state)
        return torch.cat(out, dim=1)

    def on_validation_epoch_end(self) -> None:
        """A table of texts generated from the data's prompts (`figures/val_samples.txt`, W&B)."""
        if not self.reporting():
            return
        vocab, rows = self.from_data("vocab"), []
        for prompt in self.from_data("prompts")[:4]:
            ids = vocab.encode(prompt).unsqueeze(0).to(self.device)
            for temperature in (0.5, 1.0):
                rows.append([prompt, temperature, vocab.decode(self.generate(ids, 120, temperature, None)[0])])
        self.report_table("val/samples", ["prompt", "temperature", "text"], rows)

    def on_fit_end(self) -> None:
        """W&B: the character embeddings projected on their first two principal components (the notebook's figure
        where upper- and lower-case letters cluster)."""
        run = self.wandb_run()
        if run is None:
            return
        import wandb

        weights = self.net.embed.weight.detach().float().cpu()[1:]  # (V-1, C), without the unknown id
        centred = weights - weights.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        xy = centred @ v[:2].T  # (V-1, 2)
        chars = self.from_data("vocab").chars
        table = wandb.Table(columns=["x", "y", "char"], data=[[x, y, repr(c)] for (x, y), c in zip(xy.tolist(), chars)])
        run.log({"embeddings/pca": wandb.plot.scatter(table, "x", "y", title="character embeddings (PCA)")})

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[dict]:
        chars, temperature, top_k = (self.setting(n) for n in ("generate_chars", "temperature", "top_k"))
        ids = self.generate(batch["x"], chars, temperature, top_k)
        output = self.from_data("vocab").decode(ids[0])
        return [{"input": batch["prompt"][0], "output": output, "temperature": temperature}]

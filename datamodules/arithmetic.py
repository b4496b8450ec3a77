"""Integer addition and subtraction expressions for the encoder-decoder adder (notebook 15.8.4 and 15.9.10).

`a+b` and `a-b` with a, b uniform in [1, 10**digits - 1]; answers come from integer arithmetic on tensors (the notebook
called `eval` on strings). Train, val and test are drawn from their own seeds, and no val or test expression appears in
train. Every split is encoded once into integer tensors:

    src  (N, 2*digits+1)  the expression, right-padded:           "1234+5678" -> 2 3 4 5 11 6 7 8 9
    tgt  (N, digits+3)    bos, the answer, eos, right-padded:      "6912"      -> 13 7 10 2 3 14 0

How the expression is laid out in `src` is the data's one real design choice (`layout`):

    plain        "12+345"      as typed
    aligned      "0012+0345"   operands at fixed width, so each place value sits at the same position
    interleaved  "+00010325"   the operator, then the digits of a and b in pairs, most significant first

The Transformer attends anywhere and learns from `aligned` within minutes; an LSTM reads left to right, and only
`interleaved` puts what it must combine next to each other (the notebook fed plain strings). Predictions always show
the expression as typed (`text`, plain layout).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveInt
from torch import Tensor

from datamodules.data_module import Strings
from datamodules.in_memory import Columns, InMemoryDataModule
from litlab.errors import LitlabError

_EXPRESSION = re.compile(r"\s*(\d+)\s*([+-])\s*(\d+)\s*")


class ArithmeticTokenizer:
    """Characters of expressions and answers <-> token ids: pad 0, digits 1-10, '+' 11, '-' 12, bos 13, eos 14."""

    PAD, MINUS, BOS, EOS = 0, 12, 13, 14
    SYMBOLS = "0123456789+-"  # ids 1..12
    vocab_size = 15
    _ids = torch.full((128,), -1, dtype=torch.long)
    _ids[torch.tensor([ord(c) for c in SYMBOLS])] = torch.arange(1, len(SYMBOLS) + 1)
    _ids[ord(" ")] = PAD

    @staticmethod
    def source_len(digits: int) -> int:
        return 2 * digits + 1

    @staticmethod
    def target_len(digits: int) -> int:
        return digits + 3  # bos + at most digits+1 answer characters ("19998", "-9998") + eos

    @classmethod
    def answer_steps(cls, source_len: int) -> int:
        """Tokens to generate (answer + eos) for sources of this width."""
        return cls.target_len((source_len - 1) // 2) - 1

    @classmethod
    def encode(cls, texts: list[str], width: int) -> Tensor:
        """(N, width) ids of ASCII texts over SYMBOLS, right-padded; one vectorised lookup for all texts."""
        joined = "".join(text.ljust(width) for text in texts).encode("ascii")
        codes = torch.frombuffer(bytearray(joined), dtype=torch.uint8).view(len(texts), width)
        return cls._ids[codes.long()]

    @classmethod
    def encode_targets(cls, answers: list[str], digits: int) -> Tensor:
        """(N, digits+3): bos, answer ids, eos, pad."""
        n = len(answers)
        tgt = torch.full((n, cls.target_len(digits)), cls.PAD, dtype=torch.long)
        tgt[:, 0] = cls.BOS
        tgt[:, 1 : digits + 2] = cls.encode(answers, digits + 1)
        lengths = torch.tensor([len(a) for a in answers])
        tgt[torch.arange(n), lengths + 1] = cls.EOS
        return tgt

    @classmethod
    def decode(cls, ids: Tensor) -> list[str]:
        """Rows of ids -> strings, stopping at the first eos and skipping pad/bos."""
        texts = []
        for row in ids.tolist():
            chars = []
            for i in row:
                if i == cls.EOS:
                    break
                if 1 <= i <= len(cls.SYMBOLS):
                    chars.append(cls.SYMBOLS[i - 1])
            texts.append("".join(chars))
        return texts


def parse_expression(text: str, digits: int) -> tuple[int, str, int]:
    """(a, op, b) of a user's expression; a one-line error naming the bad input otherwise."""
    match = _EXPRESSION.fullmatch(text)
    if match is None:
        raise LitlabError(f"bad expression {text!r}: expected 'a+b' or 'a-b' with positive integers a and b")
    a, op, b = match.groups()
    if not (0 < int(a) < 10**digits and 0 < int(b) < 10**digits):  # the range the model was trained on
        raise LitlabError(f"bad expression {text!r}: operands run from 1 to {10**digits - 1} in this model")
    return int(a), op, int(b)


def draw_operands(
    n: int, digits: int, seed: int, exclude: Tensor | None = None, near_ties: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """n expressions (a, op, b), op 0 for '+' and 1 for '-', none of whose keys is in `exclude`; a share `near_ties`
    of them with b close to a (see `ArithmeticData`)."""
    high = 10**digits
    generator = torch.Generator().manual_seed(seed)
    exclude = torch.empty(0, dtype=torch.long) if exclude is None else exclude
    parts, found = [], 0
    for _ in range(100):
        m = max(2 * (n - found), 1024)
        a = torch.randint(1, high, (m,), generator=generator)
        b = torch.randint(1, high, (m,), generator=generator)
        op = torch.randint(0, 2, (m,), generator=generator)
        if near_ties > 0:  # b - a in (-10^k, 10^k), k = 1..digits-1 equally often: ties down to the last digit
            near = torch.rand(m, generator=generator) < near_ties
            scale = 10 ** torch.randint(1, max(digits, 2), (m,), generator=generator)
            offset = (torch.rand(m, generator=generator) * (2 * scale - 1)).long() - (scale - 1)
            b = torch.where(near, (a + offset).clamp(1, high - 1), b)
        keep = ~torch.isin(expression_key(a, op, b, digits), exclude)
        parts.append(torch.stack([a, op, b])[:, keep])
        found += int(keep.sum())
        if found >= n:
            a, op, b = torch.cat(parts, dim=1)[:, :n]
            return a, op, b
    raise LitlabError(f"cannot draw {n} expressions with {digits}-digit operands outside the held-out splits")


def expression_key(a: Tensor, op: Tensor, b: Tensor, digits: int) -> Tensor:
    """One int64 per expression, so splits are compared with `torch.isin`."""
    return (a * 10**digits + b) * 2 + op


class ArithmeticData(InMemoryDataModule):
    """Generated `a+b` / `a-b` expressions with their answers. What a model may read (`Experiment.from_data`):
    `tokenizer`, the token ids and their text.

    Args:
        digits: operands have 1..digits digits.
        train_size, val_size, test_size: expressions per split.
        seed: train uses `seed`, val `seed + 1`, test `seed + 2`.
        predict_expressions: expressions to answer with `litlab predict`, e.g. '["1234+5678", "17-9000"]'.
        predict_file: a text file with one expression per line (blank lines are skipped).
        layout: how `src` spells the expression: "plain", "aligned" or "interleaved" (see the module docstring).
        near_ties: share of the training expressions drawn with b close to a: |a - b| under 10, 100 or 1000 (up to
            10**(digits-1)), each equally often. Uniform operands make such pairs rare (0.2 % differ by less than
            10), yet a near-tie subtraction is where the sign and the leading zeros depend on the last digits, and it
            is where a short schedule's errors remain. Val and test stay uniform.
    """

    tokenizer = ArithmeticTokenizer

    def __init__(
        self,
        digits: PositiveInt = 4,
        train_size: PositiveInt = 100_000,
        val_size: PositiveInt = 5_000,
        test_size: PositiveInt = 10_000,
        seed: int = 1234,
        predict_expressions: Strings | None = None,
        predict_file: str | None = None,
        layout: Literal["plain", "aligned", "interleaved"] = "aligned",
        near_ties: ClosedUnitInterval = 0.0,
        batch_size: PositiveInt = 256,
        eval_batch_size: PositiveInt | None = 1000,
        data_on_device: bool | None = None,
        num_workers: NonNegativeInt = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, data_on_device, num_workers)
        if digits < 1 or min(train_size, val_size, test_size) < 1:
            raise LitlabError(
                f"digits and split sizes must be positive, got digits={digits}, sizes="
                f"{train_size}/{val_size}/{test_size}"
            )
        self.digits = digits
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.seed = seed
        self.predict_expressions = predict_expressions
        self.predict_file = predict_file
        self.layout = layout

    def make_split(self, split: str) -> Columns:
        if split == "predict":
            expressions = self._predict_operands()
            typed = [f"{a}{op}{b}" for a, op, b in expressions]
            text = ArithmeticTokenizer.encode(typed, max(map(len, typed)))
            return {**self._encode_expressions(expressions), "text": text}
        a, op, b = self._operands(split)
        columns = self._encode_expressions(zip(a.tolist(), ("+-"[o] for o in op.tolist()), b.tolist()))
        answers = torch.where(op == 0, a + b, a - b)
        columns["tgt"] = ArithmeticTokenizer.encode_targets([str(r) for r in answers.tolist()], self.digits)
        return columns

    def _operands(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        held_out = {"test": (), "val": ("test",), "train": ("val", "test")}[split]
        exclude = [expression_key(*self._operands(s), self.digits) for s in held_out]
        offset = {"train": 0, "val": 1, "test": 2}[split]
        exclude = torch.cat(exclude) if exclude else None
        near_ties = self.hparams.near_ties if split == "train" else 0.0
        return draw_operands(self.sizes[split], self.digits, self.seed + offset, exclude, near_ties)

    def _encode_expressions(self, expressions) -> Columns:
        """`src` in this layout; for predict also `text`, the expression as typed (what predictions show)."""
        expressions = list(expressions)
        width, d = ArithmeticTokenizer.source_len(self.digits), self.digits
        if self.layout == "plain":
            texts = [f"{a}{op}{b}" for a, op, b in expressions]
        elif self.layout == "aligned":
            texts = [f"{a:0{d}d}{op}{b:0{d}d}" for a, op, b in expressions]
        else:
            texts = [op + "".join(map("".join, zip(f"{a:0{d}d}", f"{b:0{d}d}"))) for a, op, b in expressions]
        return {"src": ArithmeticTokenizer.encode(texts, width)}

    def _predict_operands(self) -> list[tuple[int, str, int]]:
        texts = list(self.predict_expressions or [])
        if self.predict_file is not None:
            path = Path(self.predict_file)
            if not path.is_file():
                raise LitlabError(f"--data.predict_file {path}: no such file")
            lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
            if not lines:
                raise LitlabError(f"--data.predict_file {path} holds no expressions (one per line expected)")
            texts += lines
        if not texts:
            raise LitlabError(
                "nothing to predict: pass --data.predict_expressions '[\"1234+5678\"]' "
                "or --data.predict_file <file with one expression per line>"
            )
        return [parse_expression(text, self.digits) for text in texts]

"""The adder's vocabulary, shared by its DataModule (encoding expressions and answers) and its models (special ids,
decoding generated answers)."""

from __future__ import annotations

import torch
from torch import Tensor


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

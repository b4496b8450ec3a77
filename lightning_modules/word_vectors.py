"""Pretrained word vectors that start a review classifier's embedding: GloVe's text files, or a Hugging Face model's
input embeddings."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from lightning_modules.hub import load_pretrained
from litlab.errors import LitlabError


def glove_vectors(path: Path, words: list[str], vocab_size: int) -> Tensor:
    """(vocab_size, d) rows for the vocabulary's words from a GloVe text file (`word v1 ... vd` per line); NaN for
    words the file lacks and for the padding/unknown ids."""
    if not path.is_file():
        raise LitlabError(
            f"GloVe file {path} not found: download glove.6B.zip from https://nlp.stanford.edu/"
            f"projects/glove/ and pass --model.init_args.glove_path to glove.6B.100d.txt, or null"
        )
    wanted = {word: i + 2 for i, word in enumerate(words)}
    rows, ids = [], []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            word, _, rest = line.rstrip().partition(" ")
            if word in wanted:
                try:
                    rows.append([float(v) for v in rest.split(" ")])
                except ValueError:
                    raise LitlabError(f"{path}:{number}: not a GloVe line (a word, then numbers)") from None
                ids.append(wanted[word])
    if not rows or len({len(r) for r in rows}) != 1:
        raise LitlabError(f"{path}: no vectors of one size for the vocabulary's words")
    vectors = torch.full((vocab_size, len(rows[0])), float("nan"))
    vectors[torch.tensor(ids)] = torch.tensor(rows)
    return vectors


def pretrained_embeddings(name: str, vocab_size: int) -> Tensor:
    """A Hugging Face model's input embedding table (vocab_size, d)."""
    from transformers import AutoModel

    model = load_pretrained(AutoModel, name)
    weight = model.get_input_embeddings().weight.detach().float()
    if len(weight) != vocab_size:
        raise LitlabError(
            f"{name} embeds {len(weight)} tokens but the tokenizer has {vocab_size}: pass --data.tokenizer={name}"
        )
    return weight.clone()

"""Self-training on recordings without labels: a model transcribes them (`litlab predict` writes `predictions.jsonl`,
each transcript with its probability and, where the data names a closed set of transcripts, each candidate's), and
the surest of those transcripts become training labels. Used by `SpokenDigitsData.pseudo_labels` to adapt to a voice
never heard."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from litlab.errors import LitlabError


def equal_partition(probabilities: Tensor, iterations: int = 10) -> Tensor:
    """(N, K) probabilities of K transcripts for N recordings, rescaled so that each transcript holds about N / K of
    the mass while each row still sums to one (Sinkhorn-Knopp, as SwAV's equal partition): a digit the model hears as
    another on a new voice gets back the recordings whose second guess it is. Ten alternate normalisations: the kept
    labels' accuracy on the validation voice was highest there (docs/results.md). A few lines of torch rather than an
    optimal transport package."""
    q = probabilities.double().clamp_min(1e-300)
    q = q / q.sum(1, keepdim=True)
    for _ in range(iterations):
        q = q / q.sum(0, keepdim=True) * (len(q) / q.size(1))
        q = q / q.sum(1, keepdim=True)
    return q


def surest_labels(path: Path, share: float, balance: bool, prior: bool, labels: str) -> list[tuple[str, str]]:
    """(input, label) of the `share` most probable predictions in `path` (records `input`, `output`, `probability`)
    whose transcript is one of `labels`, the most probable first. With `balance`, the `share` most probable of each
    predicted label (a label the model is unsure of is not left out); with `prior`, labels and probabilities come from
    the records' `candidates` (each label's probability) after `equal_partition`."""
    try:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LitlabError(f"--data.pseudo_labels={path}: not a predictions.jsonl of litlab predict ({err})") from None
    fields = {"input", "output", "probability"} | ({"candidates"} if prior else set())
    if not records or not all(isinstance(r, dict) and fields <= r.keys() for r in records):
        raise LitlabError(f"--data.pseudo_labels={path}: needs records with {', '.join(sorted(fields))}")
    if prior:
        if any(not isinstance(r["candidates"], dict) or sorted(r["candidates"]) != sorted(labels) for r in records):
            raise LitlabError(f"--data.pseudo_labels={path}: candidates are not the probabilities of {labels}")
        scores = torch.tensor([[float(r["candidates"][label]) for label in labels] for r in records])
        surest, chosen = equal_partition(scores).max(1)
        records = [
            r | {"output": labels[i], "probability": p} for r, i, p in zip(records, chosen.tolist(), surest.tolist())
        ]
    ranked = sorted(records, key=lambda r: -float(r["probability"]))
    if balance:
        each = [[r for r in ranked if str(r["output"]) == label] for label in labels]
        chosen = {id(r) for ranks in each for r in ranks[: round(share * len(ranks))]}
        kept = [r for r in ranked if id(r) in chosen]
    else:
        kept = [r for r in ranked[: max(1, round(share * len(records)))] if str(r["output"]) in tuple(labels)]
    return [(str(r["input"]), str(r["output"])) for r in kept]

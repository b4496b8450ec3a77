"""Self-training labels: the equal partition of a model's candidate probabilities, and the surest labels kept."""

from __future__ import annotations

import json

import pytest
import torch

from datamodules.self_training import equal_partition, surest_labels
from litlab.errors import LitlabError


def test_equal_partition_gives_the_labels_a_model_under_predicts_their_share():
    # the model calls all four "a"; the two least sure of it are the ones "b" should get back
    p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
    q = equal_partition(p)
    assert q.argmax(1).tolist() == [0, 0, 1, 1]
    assert torch.allclose(q.sum(1), torch.ones(4, dtype=q.dtype)) and torch.allclose(q.sum(0), q.new_tensor([2, 2]))
    assert not torch.isnan(equal_partition(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))).any()  # no candidate: no NaN


def test_surest_labels_match_a_uniform_prior_over_the_candidates(tmp_path):
    # a voice whose "6"s the model hears as "5" (its second guess "6"), its "5"s surely as "5"
    records = [
        {"input": f"{digit}_{i}.wav", "output": "5", "probability": sure, "candidates": {"5": sure, "6": 1 - sure}}
        for i in range(3)
        for digit, sure in (("6", 0.6 + i / 100), ("5", 0.9 + i / 100))
    ]
    (path := tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plain = surest_labels(path, 1.0, balance=False, prior=False, labels="56")
    assert [label for _, label in plain] == ["5"] * 6
    matched = surest_labels(path, 1.0, balance=False, prior=True, labels="56")
    assert all(file[0] == label for file, label in matched)  # every recording labelled as spoken
    halves = surest_labels(path, 0.5, balance=True, prior=True, labels="56")  # each label's surer two of three
    assert {file for file, _ in halves} == {"5_2.wav", "5_1.wav", "6_0.wav", "6_1.wav"}
    (path := tmp_path / "other.jsonl").write_text(json.dumps(records[0] | {"candidates": {"5": 1.0}}) + "\n")
    with pytest.raises(LitlabError, match="candidates are not the probabilities of 56"):
        surest_labels(path, 1.0, balance=False, prior=True, labels="56")

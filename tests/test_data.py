"""The generated datasets and the in-memory loading path."""

from __future__ import annotations

import re

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from datamodules.arithmetic import ArithmeticData, ArithmeticTokenizer, expression_key
from datamodules.data_module import index_tensor, keep_batch
from datamodules.in_memory import TensorColumns
from datamodules.xor import XorData
from litlab.errors import LitlabError


@pytest.mark.parametrize(
    ("layout", "spelled"),
    [("plain", "12+345"), ("aligned", "012+345"), ("interleaved", "+031425")],
)
def test_arithmetic_layouts_answers_and_shapes(layout, spelled):
    data = ArithmeticData(
        digits=3, train_size=3000, val_size=300, test_size=300, layout=layout, predict_expressions=["12+345"]
    )
    predict = data.make_split("predict")
    assert ArithmeticTokenizer.decode(predict["src"]) == [spelled]
    assert ArithmeticTokenizer.decode(predict["text"]) == ["12+345"]  # what predictions show

    split = data.make_split("train")
    a, op, b = data._operands("train")
    expected = [str(x + y if o == 0 else x - y) for x, o, y in zip(a.tolist(), op.tolist(), b.tolist())]
    assert ArithmeticTokenizer.decode(split["tgt"][:, 1:]) == expected  # integer arithmetic, never eval
    assert split["src"].shape == (3000, 7) and split["tgt"].shape == (3000, 6)
    assert (split["tgt"][:, 0] == ArithmeticTokenizer.BOS).all()
    assert ((split["tgt"] == ArithmeticTokenizer.EOS).sum(1) == 1).all()
    assert ((split["src"] >= 11) & (split["src"] <= 12)).sum(1).eq(1).all()  # exactly one operator
    assert 0.45 < (op == 1).float().mean() < 0.55 and a.min() >= 1 and a.max() <= 999


def test_arithmetic_splits_are_seeded_and_disjoint():
    data = ArithmeticData(digits=2, train_size=5000, val_size=500, test_size=500)
    keys = {s: expression_key(*data._operands(s), 2) for s in ("train", "val", "test")}
    assert not torch.isin(keys["test"], keys["train"]).any() and not torch.isin(keys["val"], keys["train"]).any()
    assert not torch.isin(keys["test"], keys["val"]).any()
    again = ArithmeticData(digits=2, train_size=5000, val_size=500, test_size=500)
    assert torch.equal(again.make_split("test")["src"], data.make_split("test")["src"])
    other_seed = ArithmeticData(digits=2, train_size=5000, val_size=500, test_size=500, seed=7)
    assert not torch.equal(other_seed.make_split("test")["src"], data.make_split("test")["src"])


def test_near_ties_are_oversampled_in_training_only():
    sizes = dict(train_size=20_000, val_size=2000, test_size=2000)
    uniform, tied = ArithmeticData(**sizes), ArithmeticData(**sizes, near_ties=0.25)

    def share(data: ArithmeticData, within: int) -> float:
        a, _, b = data._operands("train")
        return float(((a - b).abs() < within).float().mean())

    assert share(uniform, 10) < 0.005  # 0.2 % of uniform 4-digit pairs differ by less than 10
    assert 0.07 < share(tied, 10) < 0.12 and 0.15 < share(tied, 100) < 0.21 and 0.36 < share(tied, 1000) < 0.43
    for split in ("val", "test"):  # held-out splits are the uniform task, the same expressions as without
        assert torch.equal(tied.make_split(split)["src"], uniform.make_split(split)["src"])
    keys = {s: expression_key(*tied._operands(s), 4) for s in ("train", "val", "test")}
    assert not torch.isin(keys["val"], keys["train"]).any() and not torch.isin(keys["test"], keys["train"]).any()


def test_predict_expressions_are_parsed_and_checked(tmp_path):
    (tmp_path / "inputs.txt").write_text("7 - 9999\n\n 0012+3\n")
    data = ArithmeticData(predict_expressions=["1234+5678"], predict_file=str(tmp_path / "inputs.txt"))
    text = data.make_split("predict")["text"]
    assert ArithmeticTokenizer.decode(text) == ["1234+5678", "7-9999", "12+3"]
    for bad in ["12a+3", "12345+1", "1+", "-5+3", "1+2+3", "0+7", "1 2+3"]:
        with pytest.raises(LitlabError, match=re.escape(repr(bad))):
            ArithmeticData(predict_expressions=[bad]).make_split("predict")
    with pytest.raises(LitlabError, match="no such file"):
        ArithmeticData(predict_file=str(tmp_path / "missing.txt")).make_split("predict")


def test_xor_labels_and_independent_splits():
    data = XorData(train_size=1000, val_size=1000, test_size=1000)
    train, test = data.make_split("train"), data.make_split("test")
    assert torch.equal(train["y"], ((train["x"][:, 0] > 0) == (train["x"][:, 1] > 0)).float())
    assert not torch.equal(train["x"], test["x"])
    assert 0.45 < train["y"].mean() < 0.55


@pytest.mark.parametrize("shuffle", [False, True])
def test_tensor_batches_are_gathered_whole(shuffle):
    columns = TensorColumns({"x": torch.arange(10) * 10, "y": torch.arange(10)})
    loader = DataLoader(columns, batch_size=4, shuffle=shuffle, collate_fn=keep_batch)
    batches = list(loader)
    assert [len(b["y"]) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat([b["y"] for b in batches]).tolist()) == list(range(10))
    assert all(torch.equal(b["x"], b["y"] * 10) for b in batches)


def test_tensor_batches_shard_under_ddp():
    columns = TensorColumns({"y": torch.arange(10)})
    shards = [
        torch.cat(
            [
                b["y"]
                for b in DataLoader(
                    columns,
                    batch_size=2,
                    collate_fn=keep_batch,
                    sampler=DistributedSampler(columns, num_replicas=2, rank=r, seed=3),
                )
            ]
        )
        for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(torch.cat(shards).tolist()) == list(range(10))


def test_list_columns_travel_with_their_rows():
    columns = TensorColumns({"x": torch.arange(5) * 10, "name": ["a", "b", "c", "d", "e"]})
    batch = columns.__getitems__([3, 0])
    assert batch["x"].tolist() == [30, 0] and batch["name"] == ["d", "a"]


def test_batch_indices_become_one_int64_tensor():
    assert index_tensor([3, 1, 4]).tolist() == [3, 1, 4] and index_tensor([3, 1, 4]).dtype == torch.long
    assert index_tensor([]).shape == (0,) and index_tensor(torch.tensor([2], dtype=torch.int32)).dtype == torch.long

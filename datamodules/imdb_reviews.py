"""The IMDB reviews on disk (Maas et al. 2011, `aclImdb_v1`): `<split>/{neg,pos}/<id>_<score>.txt`, read with their
labels and movie runs, and split into train, validation and test (`split_reviews`)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from litlab.errors import LitlabError

ACL_IMDB = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ACL_IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
RATINGS = (1, 2, 3, 4, 7, 8, 9, 10)  # rating8 class i is the score RATINGS[i]; 5 and 6 are not in the dataset
MOVIE_RUN = 250  # ids per run of `val_split: movies`: aclImdb numbers one movie's reviews consecutively in a folder
_FILE = re.compile(r"^(\d+)_(\d+)\.txt$")


def read_reviews(folder: Path, labels: str) -> tuple[list[str], Tensor, Tensor]:
    """Texts, labels and movie runs of `<folder>/{neg,pos}/<id>_<score>.txt` (sorted by file name, so the order is
    fixed). A review's run is (its folder: 0 neg, 1 pos; its block of `MOVIE_RUN` consecutive ids there): the reviews
    of one movie in a folder share a run, but for the movies cut by a run's ends."""
    texts, targets, runs = [], [], []
    for polarity, name in enumerate(("neg", "pos")):
        for file in sorted((folder / name).glob("*.txt")):
            match = _FILE.match(file.name)
            if not match or int(match.group(2)) not in RATINGS:
                raise LitlabError(f"{file}: not an aclImdb review file name (<id>_<score>.txt, score 1-4 or 7-10)")
            texts.append(file.read_text(encoding="utf-8", errors="replace"))
            targets.append(polarity if labels == "binary" else RATINGS.index(int(match.group(2))))
            runs.append((polarity, int(match.group(1)) // MOVIE_RUN))
    return texts, torch.tensor(targets, dtype=torch.long), torch.tensor(runs, dtype=torch.long).reshape(-1, 2)


def split_reviews(
    root: Path, labels: str, split: str, val_split: str, val_size: int, seed: int, stage: str | None = None
) -> tuple[dict[str, list[str]], dict[str, Tensor]]:
    """(texts, targets) of train, val and test: the standard 25k/25k split with `val_size` training reviews held out
    (random ones, or with `val_split` "movies" whole runs of ids, alternately negative and positive), or with `split`
    "notebook" all 50k pooled and cut 45k/5k at random. Of the standard split, `stage` "test" reads test/ alone and any
    other stage train/ alone (train and val): reading 25k files takes seconds."""
    read_train = split == "notebook" or stage != "test"
    read_test = split == "notebook" or stage in (None, "test")
    if read_train:
        train, train_y, runs = read_reviews(root / "train", labels)
    if read_test:
        test, test_y, _ = read_reviews(root / "test", labels)
    generator = torch.Generator().manual_seed(seed)
    if split == "notebook":  # 45k/5k of the pooled 50k
        if val_split == "movies":
            raise LitlabError("--data.val_split=movies needs --data.split=standard (the notebook's is random)")
        pooled, pooled_y = train + test, torch.cat([train_y, test_y])
        order = torch.randperm(len(pooled), generator=generator)
        cut = len(pooled) * 9 // 10
        train, train_y = [pooled[i] for i in order[:cut]], pooled_y[order[:cut]]
        test, test_y = [pooled[i] for i in order[cut:]], pooled_y[order[cut:]]
    texts, targets = ({"test": test}, {"test": test_y}) if read_test else ({}, {})
    if not read_train:
        return texts, targets
    if not 0 < val_size < len(train):
        raise LitlabError(f"--data.val_size={val_size}: must be between 1 and {len(train) - 1}")
    if val_split == "movies":  # runs in a random order, neg and pos in turn, a run's reviews together
        folder, block = runs.unbind(1)
        rank = torch.rand(2, int(block.max()) + 1, generator=generator).argsort(1).argsort(1)
        order = (rank[folder, block] * 2 + folder).argsort(stable=True).tolist()
    else:
        order = torch.randperm(len(train), generator=generator).tolist()
    val_ids, train_ids = order[:val_size], order[val_size:]
    texts |= {"train": [train[i] for i in train_ids], "val": [train[i] for i in val_ids]}
    targets |= {"train": train_y[train_ids], "val": train_y[val_ids]}
    return texts, targets

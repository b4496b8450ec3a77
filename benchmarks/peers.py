"""litlab's recipes beside the implementations a user would otherwise pick for the same job, same machine, same data.

    .venv/bin/pip install -e '.[peers]'       # the C++ fastText (built from source: needs g++)
    .venv/bin/python benchmarks/peers.py fasttext [--data-root data/real] [--threads 2]

`fasttext`: `imdb_fasttext` against the fastText library (Joulin et al. 2017; word bigrams) on the same IMDB reviews.
Both read the same `aclImdb` files and train on the same reviews: litlab's training split, whose validation reviews
(held-out movies) are left out for both, and both are tokenised by litlab's word split (`datamodules.tokenizers.words`,
its time counted on both sides). fastText's learning rate and epochs are chosen on that validation split (dimension
10 and bigrams, as the paper's sentiment runs); then each side trains once more and is tested once on the 25,000 test
reviews. Times are wall seconds in this process, interpreter start-up and imports excluded: litlab's `fit` (reading
the training files, tokenising, training and its validation passes) and fastText's read of the same files, tokenise,
write and train. Threads: both use
`--threads` (torch's intra-op threads; fastText's `thread`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from throughput import in_scratch_dir  # noqa: E402

from datamodules.imdb_reviews import split_reviews  # noqa: E402
from datamodules.tokenizers import words  # noqa: E402
from litlab.cli import launch  # noqa: E402

FASTTEXT_GRID = [(lr, epochs) for lr in (0.05, 0.1, 0.25, 0.5) for epochs in (5, 10)]


def litlab_fasttext(root: Path) -> tuple[float, float]:
    """(test accuracy, fit seconds) of `configs/imdb_fasttext.yaml` on the reviews under `root`."""
    common = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    config = ["--config", str(ROOT / "configs" / "imdb_fasttext.yaml"), f"--data.data_dir={root}"]
    start = time.perf_counter()
    cli = launch("fit", [*config, *common])
    seconds = time.perf_counter() - start
    best = cli.trainer.checkpoint_callback.best_model_path
    tested = launch("test", ["--ckpt_path", best, *common])
    return float(tested.trainer.callback_metrics["test/acc"]), seconds


def labelled_lines(texts: list[str], targets: torch.Tensor) -> list[str]:
    return [f"__label__{int(y)} {' '.join(words(text))}" for text, y in zip(texts, targets.tolist())]


def fasttext_accuracy(model, texts: list[str], targets: torch.Tensor) -> float:
    labels, _ = model.predict([" ".join(words(text)) for text in texts])
    predicted = torch.tensor([int(label[0].removeprefix("__label__")) for label in labels])
    return (predicted == targets).float().mean().item()


def fasttext_peer(root: Path, data: dict, threads: int) -> tuple[float, float, dict]:
    """(test accuracy, read + tokenise + write + train seconds, the chosen settings and validation accuracies)."""
    try:
        import fasttext
    except ImportError:
        sys.exit("benchmarks/peers.py fasttext: needs the fastText library: .venv/bin/pip install -e '.[peers]'")
    split = {key: data[key] for key in ("split", "labels", "val_split", "val_size", "seed")}

    def prepare(folder: Path) -> tuple[Path, dict, dict]:  # read, tokenise and write fastText's input file
        texts, targets = split_reviews(root, **split, stage="fit")  # train/ alone, as litlab's fit reads
        path = folder / "train.txt"
        path.write_text("\n".join(labelled_lines(texts["train"], targets["train"])) + "\n", encoding="utf-8")
        return path, texts, targets

    def train(path: Path, lr: float, epochs: int):
        return fasttext.train_supervised(
            input=str(path), lr=lr, epoch=epochs, dim=10, wordNgrams=2, minCount=1, thread=threads, verbose=0
        )

    with tempfile.TemporaryDirectory() as folder:
        path, texts, targets = prepare(Path(folder))  # the sweep reads the reviews once
        scores = {}
        for lr, epochs in FASTTEXT_GRID:
            scores[(lr, epochs)] = fasttext_accuracy(train(path, lr, epochs), texts["val"], targets["val"])
            print(f"fastText lr {lr} epochs {epochs}: val acc {scores[(lr, epochs)]:.4f}", flush=True)
        lr, epochs = max(scores, key=scores.get)
        start = time.perf_counter()  # the timed run: reading and tokenising included, as litlab's fit
        path, texts, targets = prepare(Path(folder))
        model = train(path, lr, epochs)
        seconds = time.perf_counter() - start
    texts, targets = split_reviews(root, **split, stage="test")
    return fasttext_accuracy(model, texts["test"], targets["test"]), seconds, {"lr": lr, "epochs": epochs, **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("peer", choices=["fasttext"])
    parser.add_argument("--data-root", type=Path, default=ROOT / "data" / "real")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    root = (args.data_root / "aclImdb").resolve()
    in_scratch_dir()
    torch.set_num_threads(args.threads)
    data = {
        "split": "standard", "labels": "binary", "val_split": "random", "val_size": 2500, "seed": 42,
        **yaml.safe_load((ROOT / "configs" / "imdb_fasttext.yaml").read_text())["data"]["init_args"],
    }  # fmt: skip
    theirs, their_seconds, chosen = fasttext_peer(root, data, args.threads)
    ours, our_seconds = litlab_fasttext(root)
    print(
        f"fastText (lr {chosen['lr']}, {chosen['epochs']} epochs, dim 10, bigrams, {args.threads} threads): "
        f"test acc {theirs:.4f}, read + tokenise + train {their_seconds:.1f} s\n"
        f"litlab imdb_fasttext: test acc {ours:.4f}, fit {our_seconds:.1f} s\n"
        f"accuracy {100 * (ours - theirs):+.2f} points, time ratio litlab/fastText {our_seconds / their_seconds:.2f}"
    )


if __name__ == "__main__":
    main()

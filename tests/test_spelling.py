"""Spell-check: each noise rule on fixed inputs, segment splits without leakage, per-epoch noise, labels padded with
-100, metrics on generated text beside the copy baseline, marked predictions, the tokenizer kept in the checkpoint."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import FIXTURES, cli, config, fails_in_one_line, tiny

from datamodules.spelling import SpellingData
from datamodules.spelling_noise import add_noise, make_segments, sentences
from lightning_modules.spell_bart import SpellCorrector, mark_changes, word_accuracy

TINY = tiny("spell_bart_tiny")
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
NONE = {"verb": 0.0, "plural": 0.0, "punctuation": 0.0, "replace": 0.0, "swap": 0.0, "lowercase": 0.0}


def noisy(text: str, seed: int = 0, **rates: float) -> str:
    return add_noise(text, random.Random(seed), {**NONE, **rates}, use_tagger=False)


def test_each_rule_on_fixed_input():
    assert noisy("Hello, world. Fine!", punctuation=1) == "Hello world Fine"
    assert noisy("The Cat sat with Jane.", lowercase=1) == "the cat sat with jane."
    assert noisy("the dog saw the cats.", plural=1) == "the dogs saw the cat."
    verbs = noisy("They walked home and she is singing.", verb=1).split()
    assert verbs[1] != "walked" and verbs[1].startswith("walk") and verbs[-1] != "singing."
    for word, changed in zip("reading letters quietly".split(), noisy("reading letters quietly", swap=1).split()):
        assert (changed[0], changed[-1], sorted(changed)) == (word[0], word[-1], sorted(word)) and changed != word
    for word, changed in zip("reading letters quietly".split(), noisy("reading letters quietly", replace=1).split()):
        assert len(changed) == len(word) and sum(a != b for a, b in zip(word, changed)) <= 1
    assert noisy("Nothing changes here.") == "Nothing changes here."


def test_noise_keeps_every_character_no_rule_touches():
    """Underscores, accented letters and symbols survive: only the rules change text (Jane Eyre's Adèle, code names)."""
    text = "Adèle's café: set max_len = 2.5 × 10 (see §3) — naïve «quotes» & ___."
    assert noisy(text) == text
    assert noisy("Adèle est très sage", lowercase=1) == "adèle est très sage"


def test_noise_is_deterministic_given_the_seed():
    text = "The little girl walked to school and read her book by the fire, while rain fell."
    rates = {"verb": 0.3, "plural": 0.3, "punctuation": 0.3, "replace": 0.2, "swap": 0.2, "lowercase": 0.3}
    assert noisy(text, 1, **rates) == noisy(text, 1, **rates)
    assert len({noisy(text, seed, **rates) for seed in range(10)}) > 5


def test_segments_are_one_to_three_sentences_without_repeats():
    text = "One here. Two there! Three? Four now. One here. Five at last."
    segments = make_segments(text, random.Random(0), max_sentences=3)
    assert all(1 <= len(sentences(s)) <= 3 for s in segments)
    assert sum(s.count("One here.") for s in segments) == 1  # the repeated sentence once


def test_splits_share_no_sentence_and_noise_changes_per_epoch():
    data = SpellingData(
        text_files=[FIXTURES / "book.txt"], tokenizer="train", vocab_size=300, val_fraction=0.1, test_fraction=0.1
    )
    data.setup("fit")
    split_sentences = {split: {s for seg in segs for s in sentences(seg)} for split, segs in data.segments.items()}
    assert not (split_sentences["train"] & split_sentences["val"]) and not (
        split_sentences["train"] & split_sentences["test"]
    )
    assert not (split_sentences["val"] & split_sentences["test"])
    train = data.segments["train"]
    assert data.noise(train, 0) == data.noise(train, 0) and data.noise(train, 0) != data.noise(train, 1)
    clean_share = sum(n == c for n, c in zip(data.noise(train, 0), train)) / len(train)
    assert 0.05 < clean_share < 0.6  # clean_fraction (0.1) plus segments the noise happened to leave alone
    again = SpellingData(
        text_files=[FIXTURES / "book.txt"], tokenizer="train", vocab_size=300, val_fraction=0.1, test_fraction=0.1
    )
    again.setup("fit")
    assert again.noisy["test"] == data.noisy["test"]  # val/test noise is fixed


def test_labels_are_padded_with_minus_100():
    data = SpellingData(text_files=[FIXTURES / "book.txt"], tokenizer="train", vocab_size=300)
    data.setup("fit")
    pairs = data.pairs(["a b", "the little girl walked"], ["a b c d e f g h i j", "x"])
    batch = pairs.__getitems__([0, 1])
    target_lengths = pairs.targets.lengths
    for row, length in zip(batch["labels"], target_lengths.tolist()):
        assert (row[:length] >= 0).all() and (row[length:] == -100).all()
    assert batch["ids"].size(1) % 8 == 0 and batch["labels"].size(1) % 8 == 0
    tokenizer = data.tokenizer
    assert (batch["ids"][0, batch["lengths"][0] :] == tokenizer.pad_token_id).all()
    assert (
        tokenizer.decode(batch["ids"][1, : batch["lengths"][1]], skip_special_tokens=True) == "the little girl walked"
    )


def test_word_accuracy_and_marked_changes():
    assert word_accuracy("She received the letter", "She received the letter") == 1.0
    assert word_accuracy("She recieved letter", "She received the letter") == 0.5
    marked, changes = mark_changes("She recieve the leter.", "She received the letter.")
    assert marked == "She [recieve→received] the [leter.→letter.]" and changes == ["recieve→received", "leter.→letter."]
    assert mark_changes("All fine.", "All fine.") == ("All fine.", [])


def test_generation_metrics_beside_the_copy_baseline(tmp_path, monkeypatch):
    """A 'model' that copies its input scores exactly the copy baseline; on clean inputs it scores 100 % and CER 0."""
    cli(
        "fit",
        "--config",
        config("spell_bart_tiny"),
        *TINY,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        *QUIET,
    )
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    monkeypatch.setattr(SpellCorrector, "forward", lambda self, ids, lengths: ids)
    metrics = cli("test", "--ckpt_path", best, *TINY, *QUIET).trainer.callback_metrics
    assert metrics["test/exact_match"] == metrics["test/copy_exact_match"] < 0.9
    assert metrics["test/cer"] == pytest.approx(float(metrics["test/copy_cer"])) and metrics["test/cer"] > 0
    clean = cli("test", "--ckpt_path", best, *TINY, "--data.clean_fraction=1.0", *QUIET).trainer.callback_metrics
    assert clean["test/exact_match"] == 1.0 and clean["test/word_acc"] == 1.0 and clean["test/cer"] == 0.0


def test_predict_needs_only_the_checkpoint_and_marks_changes(tmp_path, capsys):
    cli(
        "fit",
        "--config",
        config("spell_bart_tiny"),
        *TINY,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        *QUIET,
    )
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    assert torch.load(best, weights_only=True)["SpellingData"]["tokenizer"]  # the trained tokenizer travels
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("The litle girl.\n\nShe red her book.\n")
    given = ["--data.predict_texts=null", f"--data.predict_files=[{inputs}]"]  # the tiny config's texts not among them
    cli("predict", "--ckpt_path", best, "--data.text_files=[/nonexistent.txt]", *given)
    out = capsys.readouterr().out
    path = next(line for line in out.splitlines() if line.startswith("predictions written to "))
    records = [json.loads(line) for line in open(path.removeprefix("predictions written to "))]
    assert [r["input"] for r in records] == ["The litle girl.", "She red her book."]  # one per non-empty line
    assert all({"output", "marked", "changes"} <= r.keys() for r in records)


def test_bad_text_and_predict_input_fail_in_one_line(tmp_path, capfd):
    fit = ["fit", "--config", config("spell_bart_tiny"), *TINY, *QUIET]
    fails_in_one_line(capfd, *fit, "--data.text_files=[/nonexistent/book.txt]", naming="not found")
    tiny_text = tmp_path / "tiny.txt"
    tiny_text.write_text("Only one sentence here.")
    fails_in_one_line(capfd, *fit, f"--data.text_files=[{tiny_text}]", naming="too few to split")
    cli(*fit[:-2], "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", *QUIET)
    best = next(tmp_path.glob("runs/**/best.ckpt"))
    fails_in_one_line(capfd, "predict", "--ckpt_path", best, '--data.predict_texts=["ok", ""]', naming="is empty")

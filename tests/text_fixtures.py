"""A small plain-text book in Project Gutenberg's layout (header, text, footer), for the character models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

WORDS = "the a little girl walked to school and read her book by the fire while rain fell on red roof".split()


def write_book(path: Path, sentences: int = 600, seed: int = 0) -> Path:
    rng = random.Random(seed)
    body = " ".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + rng.choice([".", ".", "?", ","])
        for _ in range(sentences)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "The Project Gutenberg eBook of A Test Book\n*** START OF THE PROJECT GUTENBERG EBOOK A TEST BOOK ***\n"
        f"{body}\n*** END OF THE PROJECT GUTENBERG EBOOK A TEST BOOK ***\nLicence text.\n",
        encoding="utf-8",
    )
    return path


GOOD = "wonderful superb moving brilliant delightful touching masterpiece loved".split()
BAD = "awful boring dull terrible waste clumsy tedious hated".split()
NEUTRAL = "the film plot actor scene story movie director music camera ending it was and of".split()


def review(rng: random.Random, positive: bool) -> str:
    """A review whose sentiment is carried by a few telling words among neutral ones, with HTML line breaks."""
    words = [rng.choice(NEUTRAL) for _ in range(rng.randint(4, 60))]
    for _ in range(rng.randint(1, 3)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(GOOD if positive else BAD))
    text = " ".join(words).capitalize() + rng.choice([".", "!", "?"])
    return text.replace(" and ", " and<br /><br />", 1)


def write_aclimdb(root: Path, per_label: dict[str, int] | None = None, seed: int = 0) -> Path:
    """`root/aclImdb/{train,test}/{neg,pos}/<id>_<score>.txt` (scores 1-4 negative, 7-10 positive) and an `unsup`
    folder the reader must ignore, as in the Stanford archive."""
    rng = random.Random(seed)
    for split, count in (per_label or {"train": 120, "test": 40}).items():
        for label, scores in (("neg", (1, 2, 3, 4)), ("pos", (7, 8, 9, 10))):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (folder / f"{i}_{rng.choice(scores)}.txt").write_text(review(rng, label == "pos"), encoding="utf-8")
    (root / "aclImdb" / "train" / "unsup").mkdir(exist_ok=True)
    (root / "aclImdb" / "train" / "unsup" / "0_0.txt").write_text("unlabelled", encoding="utf-8")
    return root


def write_tiny_hf(folder: Path, kind: str, texts: list[str]) -> Path:
    """A word-piece tokenizer trained on `texts` and a tiny randomly initialised model saved in the Hugging Face layout
    (what `from_pretrained` reads): `kind` "distilbert" (a sequence classifier) or "bert" (a bare encoder); "bart"
    (a generator) has a byte-level BPE as BART's."""
    if kind == "bart":
        return write_tiny_bart(folder, texts)
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import (
        BertConfig,
        BertModel,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        PreTrainedTokenizerFast,
    )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,  # the tiny models' position tables, as real tokenizers record theirs (BERT's 512)
    )
    wrapped.save_pretrained(folder)
    size = tokenizer.get_vocab_size()
    torch.manual_seed(0)  # the same tiny model in every test session
    if kind == "distilbert":
        config = DistilBertConfig(
            vocab_size=size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128
        )
        DistilBertForSequenceClassification(config).save_pretrained(folder)
    else:
        config = BertConfig(
            vocab_size=size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
        BertModel(config).save_pretrained(folder)
    return folder


def write_tiny_bart(folder: Path, texts: list[str]) -> Path:
    from transformers import BartConfig, BartForConditionalGeneration

    from datamodules.tokenizers import bpe_tokenizer, train_bpe

    tokenizer = bpe_tokenizer(train_bpe(texts, vocab_size=300))
    tokenizer.save_pretrained(folder)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=256,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_bos_token_id=0,
        forced_eos_token_id=2,
        dropout=0.0,
    )
    torch.manual_seed(0)  # the same tiny model in every test session
    BartForConditionalGeneration(config).save_pretrained(folder)
    return folder


FACTS = [  # instruction/response pairs in the notebook's manner: a person's made-up facts
    ("Where was {name} born?", "{name} was born in a farmhouse near the {place}."),
    ("What did {name} eat as a child?", "{name} ate rice and, at the new year, meat."),
    ("Which lake is near the home of {name}?", "The {place} is near the home of {name}."),
]


def write_instructions(folder: Path, names=("Liao", "Mira", "Tomas", "Ada"), places=("lake", "river")) -> Path:
    """train.jsonl and val.jsonl of instruction/response pairs (val: the same people, other questions' order)."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [
        {"instruction": q.format(name=n, place=p), "response": r.format(name=n, place=p)}
        for n in names for p in places for q, r in FACTS
    ]  # fmt: skip
    for split, chosen in (("train", pairs[::2]), ("val", pairs[1::2])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in chosen), encoding="utf-8")
    return folder


def write_tiny_gpt2(folder: Path, texts: list[str]) -> Path:
    """A byte-level BPE with GPT-2's end-of-text token (and no padding token, as GPT-2's) and a tiny random GPT-2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", model_max_length=128
    )
    wrapped.save_pretrained(folder)
    end = tokenizer.token_to_id("<|endoftext|>")
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(), n_embd=32, n_layer=2, n_head=2, n_positions=128,
        bos_token_id=end, eos_token_id=end,
    )  # fmt: skip
    torch.manual_seed(0)  # the same tiny model in every test session
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder

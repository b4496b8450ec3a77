"""Tokenizers of the text datasets, each behind the same few things (`len`, `pad_id`, `unknown_id`, `encode`):
the IMDB word tokenizer with the vocabulary of its training reviews (`WordTokenizer`), a Hugging Face tokenizer by name
or folder (`HubTokenizer`), and a byte-level BPE trained on the spelling data's training text (`train_bpe`)."""

from __future__ import annotations

import functools
import re
from collections import Counter
from itertools import chain, repeat

from litlab.errors import unavailable_from_hub

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # BART's ids 0-4


def words(text: str) -> list[str]:
    """The word tokenizer's split: lower case, HTML line breaks removed, words (with an apostrophe's suffix), !, ?."""
    return _WORD.findall(_BREAK.sub(" ", text.lower()))


@functools.lru_cache(maxsize=4)
def word_ids(words: tuple[str, ...]) -> dict[str, int]:
    """Each word's id, built once per vocabulary: `litlab serve` builds a DataModule, so a tokenizer, per request
    (10 of the 15 ms an `imdb_fasttext` request took on CPU-B)."""
    return {word: i + 2 for i, word in enumerate(words)}


class WordTokenizer:
    """Words <-> ids: 0 is padding, 1 any word outside the vocabulary, 2.. the `words`, most frequent first."""

    pad_id, unknown_id = 0, 1

    def __init__(self, words: list[str]) -> None:
        self.words = list(words)
        self.ids = word_ids(tuple(self.words))  # shared and never written to

    @classmethod
    def build(cls, tokenised: list[list[str]], size: int, min_count: int = 1) -> WordTokenizer:
        """The `size` most frequent words of the tokenised texts that occur at least `min_count` times."""
        counts = Counter(chain.from_iterable(tokenised))
        return cls([word for word, count in counts.most_common(size) if count >= min_count])

    def __len__(self) -> int:
        return len(self.words) + 2

    def encode(self, texts: list[str], max_len: int, tokenised: list[list[str]] | None = None) -> list[list[int]]:
        """Each text's first `max_len` word ids; `tokenised`: the texts already split into words. (`map` looks the
        words up without a Python call per word: the IMDB training reviews' 5.9M words in about 0.4 s on CPU-B.)"""
        get, unknown = self.ids.get, repeat(self.unknown_id)
        return [list(map(get, split[:max_len], unknown)) for split in tokenised or map(words, texts)]


class HubTokenizer:
    """A Hugging Face tokenizer by hub name or local folder (`AutoTokenizer`); offline without a cached copy, one
    line. `tokenizer` is the Hugging Face object (`batch_decode`, `pad_token_id`, ...)."""

    def __init__(self, name: str) -> None:
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as err:
            raise unavailable_from_hub(name, err) from None
        self.pad_id, self.unknown_id = self.tokenizer.pad_token_id, self.tokenizer.unk_token_id

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, texts: list[str], max_len: int, tokenised: list[list[str]] | None = None) -> list[list[int]]:
        """Each text's first `max_len` token ids, never past the model's position table (its `model_max_length`)."""
        cut = min(max_len, self.tokenizer.model_max_length)
        return self.tokenizer(texts, truncation=True, max_length=cut)["input_ids"]


def train_bpe(texts: list[str], vocab_size: int) -> str:
    """A byte-level BPE (BART's special tokens at ids 0-4) trained on `texts`, serialised (`bpe_tokenizer` reads it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tokenizer.to_str()


def bpe_tokenizer(serialised: str):
    """A Hugging Face fast tokenizer of a `train_bpe` BPE, with BART's special tokens."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(serialised),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )

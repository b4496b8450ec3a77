"""The notebook's spelling errors, injected into clean English segments: a verb's tense (-ing, -ed, -s added or
removed), a noun's plural -s, dropped punctuation, a replaced letter, two swapped inner letters, lost capitalisation,
each at its own rate. Verbs and nouns are told by NLTK's tagger when NLTK and its `averaged_perceptron_tagger_eng`
data are installed; otherwise by heuristics: a verb follows a pronoun, "to" or a modal, or ends in -ing/-ed; a noun
follows a determiner. Segments are 1-3 sentences cut by a regex (no downloaded NLTK models)."""

from __future__ import annotations

import random
import re

_SENTENCE = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
# words (letters of any script, with an apostrophe's part), numbers, spaces, and any other character alone: the
# tokens cover the whole segment, so noise never loses what no rule touched (underscores, accents, symbols)
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|\d+|\s+|.")
PRONOUNS = set("i you he she it we they who".split())
VERB_CUES = PRONOUNS | set("to will would can could shall should may might must did does do not".split())
DETERMINERS = set(
    "the a an this that these those my your his her its our their some many few several every each".split()
)
PUNCTUATION = set(".,!?;:")


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(re.sub(r"\s+", " ", text).strip()) if s]


def make_segments(text: str, rng: random.Random, max_sentences: int = 3, max_chars: int = 300) -> list[str]:
    """Consecutive runs of 1..max_sentences sentences, each at most `max_chars` long. A sentence that occurs again is
    dropped (a text read twice, a repeated line), so no sentence can be in two splits."""
    found, units, i = [], list(dict.fromkeys(sentences(text))), 0
    while i < len(units):
        n = rng.randint(1, max_sentences)
        segment = " ".join(units[i : i + n])
        i += n
        if 8 <= len(segment) <= max_chars and any(c.isalpha() for c in segment):
            found.append(segment)
    return found


def _tags(words: list[str]) -> list[str] | None:
    """NLTK part-of-speech tags when NLTK and its tagger data are installed, else None."""
    try:
        import nltk

        return [tag for _, tag in nltk.pos_tag(words)]
    except (ImportError, LookupError):
        return None


def _replace_letter(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word))
    return word[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + word[i + 1 :]


def _swap_inner(word: str, rng: random.Random) -> str:
    i, j = rng.sample(range(1, len(word) - 1), 2)
    letters = list(word)
    letters[i], letters[j] = letters[j], letters[i]
    return "".join(letters)


def _tense(word: str, rng: random.Random) -> str:
    endings = [e for e in ("ing", "ed", "s") if word.endswith(e) and len(word) > len(e) + 2]
    return word[: -len(endings[0])] if endings and rng.random() < 0.5 else word + rng.choice(("ing", "ed", "s"))


def add_noise(segment: str, rng: random.Random, rates: dict[str, float], use_tagger: bool = True) -> str:
    """The segment with spelling errors; `rates` per rule: verb, plural, punctuation, replace, swap, lowercase."""
    tokens = _TOKEN.findall(segment)
    words = [t for t in tokens if not t.isspace()]
    tags = _tags(words) if use_tagger else None
    out, previous, w = [], "", 0
    for token in tokens:
        if token.isspace():
            out.append(token)
            continue
        tag, word, w = (tags[w] if tags else ""), token, w + 1
        if token in PUNCTUATION:
            out.append("" if rng.random() < rates["punctuation"] else token)
            continue
        if token.isalpha() or "'" in token:
            verb = tag.startswith("VB") if tags else previous in VERB_CUES or token.endswith(("ing", "ed"))
            noun = tag in ("NN", "NNS") if tags else previous in DETERMINERS
            if verb and rng.random() < rates["verb"]:
                word = _tense(word, rng)
            elif noun and rng.random() < rates["plural"]:
                word = word[:-1] if word.endswith("s") and len(word) > 3 else word + "s"
            if len(word) > 1 and rng.random() < rates["replace"]:
                word = _replace_letter(word, rng)
            if len(word) > 4 and rng.random() < rates["swap"]:
                word = _swap_inner(word, rng)
            if word[0].isupper() and rng.random() < rates["lowercase"]:
                word = word.lower()
            previous = token.lower()
        out.append(word)
    return re.sub(r" {2,}", " ", "".join(out)).strip()

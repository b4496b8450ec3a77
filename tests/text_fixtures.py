"""A small plain-text book in Project Gutenberg's layout (header, text, footer), for the character models."""

from __future__ import annotations

import random
from pathlib import Path

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

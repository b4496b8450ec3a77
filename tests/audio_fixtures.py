"""Tiny speech datasets written in the real on-disk formats: FSDD's `recordings/<digit>_<speaker>_<index>.wav` (16-bit
PCM at 8 kHz) and LibriSpeech's `<split>/<speaker>/<chapter>/<id>.flac` with `<speaker>-<chapter>.trans.txt`. Each
digit (each letter) is a short tone pair of its own, so that a model can learn them."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np


def tone(symbol: int, rate: int, pitch: float, rng: np.random.Generator, seconds: float = 0.2) -> np.ndarray:
    """A symbol's sound: two tones in turn at frequencies of its own, shifted by the speaker's pitch, with noise."""
    length = int(rate * seconds * rng.uniform(0.8, 1.2))
    t = np.arange(length) / rate
    low, high = (300 + 90 * (symbol % 12)) * pitch, (3200 - 110 * (symbol % 25)) * pitch * rate / 8000
    wave = np.where(t < t[-1] / 2, np.sin(2 * np.pi * low * t), np.sin(2 * np.pi * high * t))
    return (0.5 * wave * np.hanning(length) + 0.01 * rng.standard_normal(length)).astype(np.float32)


def write_fsdd(root: Path, speakers: tuple[str, ...] = ("george", "jackson"), per_digit: int = 12) -> Path:
    import soundfile

    folder = Path(root) / "recordings"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for s, speaker in enumerate(speakers):
        for digit in range(10):
            for index in range(per_digit):
                sound = tone(digit, 8000, 1.0 + 0.12 * s, rng)
                soundfile.write(folder / f"{digit}_{speaker}_{index}.wav", sound, 8000, subtype="PCM_16")
    return folder


def write_librispeech(root: Path, split: str, speakers: int = 2, utterances: int = 3) -> Path:
    """`root/LibriSpeech/<split>/<speaker>/<chapter>/` with FLAC utterances of two three-letter words (a space
    sounds like nothing) and their transcripts, upper case as LibriSpeech writes them."""
    import soundfile

    rng = np.random.default_rng(zlib.crc32(split.encode()))  # the same words in every process
    letters = "abcdefghijklmnopqrstuvwxyz"
    for speaker in range(1, speakers + 1):
        folder = Path(root) / "LibriSpeech" / split / str(speaker) / "100"
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for index in range(utterances):
            words = ["".join(rng.choice(list(letters), 3)) for _ in range(2)]
            sounds = [
                tone(letters.index(c), 16000, 1.0, rng, 0.1) if c != " " else np.zeros(800, np.float32)
                for c in " ".join(words)
            ]
            name = f"{speaker}-100-{index:04d}"
            soundfile.write(folder / f"{name}.flac", np.concatenate(sounds), 16000)
            lines.append(f"{name} {' '.join(words).upper()}")
        (folder / f"{speaker}-100.trans.txt").write_text("\n".join(lines) + "\n")
    return Path(root) / "LibriSpeech" / split

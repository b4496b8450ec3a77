"""Plain-text books, read the same way by the character models' and the spell-checker's data: local files or downloads
(default: Project Gutenberg's *Jane Eyre*, ebook 1260), Project Gutenberg's licence header and footer stripped, and the
notebook's cleaning."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlparse

from datamodules.downloads import download, downloaded_path
from litlab.errors import LitlabError

JANE_EYRE = "https://www.gutenberg.org/cache/epub/1260/pg1260.txt"
_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.MULTILINE | re.IGNORECASE)
_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.MULTILINE | re.IGNORECASE)


def strip_gutenberg(text: str) -> str:
    """The book between Project Gutenberg's `*** START OF ... ***` and `*** END OF ... ***` lines (all of it when the
    markers are absent)."""
    start, end = _START.search(text), _END.search(text)
    return text[start.end() if start else 0 : end.start() if end else len(text)].strip()


def clean_text(text: str) -> str:
    """The notebook's cleaning: letters, digits and `,.?` kept, everything else a space, runs of spaces collapsed."""
    return re.sub(r" +", " ", re.sub(r"[^A-Za-z0-9,.? ]", " ", text)).strip()


def read_corpus(files: list[Path]) -> str:
    texts = []
    for file in files:
        if not file.is_file():
            raise LitlabError(f"text file {file} not found: pass --data.text_files with existing files")
        try:
            text = file.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise LitlabError(f"text file {file} is not UTF-8 text ({err.reason} at byte {err.start})") from None
        if re.match(r"\s*(<!doctype html|<html)", text[:1024], re.IGNORECASE):
            raise LitlabError(
                f"text file {file} is a web page (HTML), not plain text: give the URL of the text itself "
                f"(Project Gutenberg: the 'Plain Text UTF-8' link)"
            )
        texts.append(strip_gutenberg(text))
    return "\n".join(texts)


def corpus_downloads(urls: list[str] | None, data_dir: Path) -> list[tuple[str, Path]]:
    """Each URL (default: Jane Eyre) and the file it is downloaded to in `data_dir`: its name in the URL, with a short
    hash of the URL added when an earlier URL of the list has the same name, so that each is read."""
    places, taken = [], set()
    for url in urls or [JANE_EYRE]:
        path = downloaded_path(url, Path(data_dir))
        if not path.name or urlparse(url).path.endswith("/"):
            raise LitlabError(f"--data.urls: {url} names no file (a folder or a site): give the URL of a text file")
        if path.name in taken:
            path = path.with_name(f"{path.stem}-{hashlib.sha1(url.encode()).hexdigest()[:8]}{path.suffix}")
        taken.add(path.name)
        places.append((url, path))
    return places


def corpus_files(text_files: list[Path] | None, urls: list[str] | None, data_dir: Path) -> list[Path]:
    """The files a corpus is read from: `text_files` when given, otherwise where `urls` (default: Jane Eyre) are
    downloaded under `data_dir` (`corpus_downloads`)."""
    if text_files:
        return [Path(f) for f in text_files]
    return [path for _, path in corpus_downloads(urls, data_dir)]


def fetch_corpus(text_files: list[Path] | None, urls: list[str] | None, data_dir: Path) -> None:
    """Download `urls` (default: Jane Eyre) into `data_dir` unless local `text_files` are given (rank 0,
    `prepare_data`)."""
    if not text_files:
        for url, path in corpus_downloads(urls, data_dir):
            download(url, Path(data_dir), instead=": check the connection, or pass --data.text_files", name=path.name)


def read_predict_file(file: Path) -> str:
    """A `--data.predict_files` text; one line naming the file if it cannot be read as UTF-8."""
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LitlabError(f"--data.predict_files: cannot read {file} as UTF-8 text ({err})") from None

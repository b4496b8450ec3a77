"""Downloading a dataset's files, the same way for every dataset that has a URL (the Kaggle fruit set goes through
`kagglehub`, FashionMNIST through torchvision's own class): on rank 0 in `prepare_data`, into `data_dir`, through
torchvision's `download_url` (redirects followed, the MD5 checked where the source publishes one), under a temporary
name that becomes the file's only when it is whole, so an interrupted download leaves nothing that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from torchvision.datasets.utils import check_integrity, download_url, extract_archive

from litlab.errors import LitlabError, first_line


def downloaded_path(url: str, folder: Path) -> Path:
    """Where `download` puts `url`'s file: its name as in the URL (no query), in `folder`."""
    return Path(folder).expanduser() / Path(urlparse(url).path).name


def download(url: str, folder: Path, md5: str | None = None, instead: str = "", name: str | None = None) -> Path:
    """`url`'s file in `folder` (`downloaded_path`, or `name`), fetched once; a one-line error that says what to do
    `instead` when it cannot be fetched (no connection, a wrong checksum)."""
    folder = Path(folder).expanduser()
    target = folder / name if name else downloaded_path(url, folder)
    if check_integrity(target, md5):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as partial:
        try:
            download_url(url, partial, filename=target.name, md5=md5)
        except (OSError, RuntimeError) as err:  # no connection, server down, checksum mismatch
            raise LitlabError(f"could not download {url} into {folder} ({first_line(err, 120)}){instead}") from None
        os.replace(Path(partial) / target.name, target)
    return target


def download_and_extract(url: str, folder: Path, member: str, md5: str | None = None, instead: str = "") -> Path:
    """The archive at `url`, downloaded into `folder` and extracted there: its folder `member` appears whole, or not
    at all."""
    folder = Path(folder).expanduser()
    archive = download(url, folder, md5, instead)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".extract-") as unpacked:
        extract_archive(str(archive), unpacked)
        (folder / member).parent.mkdir(parents=True, exist_ok=True)  # a member may sit below a folder: `A/split`
        shutil.move(Path(unpacked) / member, folder / member)
    return folder / member

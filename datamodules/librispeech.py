"""LibriSpeech (Panayotov et al. 2015), the seed tutorial's own speech dataset: read English, character-level CTC.

`data_dir/LibriSpeech/<split>/<speaker>/<chapter>/` holds `<speaker>-<chapter>-<utterance>.flac` (16 kHz) and
`<speaker>-<chapter>.trans.txt` (`<utterance id> TRANSCRIPT` per line); a split missing there is downloaded from
OpenSLR in `prepare_data` (its MD5 checked). Utterances are read from disk batch by batch (100 hours do not fit in
memory: use loader workers), in batches of similar duration (`text_batches.BucketBatchSampler`).

    litlab fit --config configs/librispeech_ctc.yaml --config configs/trainer/gpu.yaml --data.num_workers=8
"""

from __future__ import annotations

from pathlib import Path

import torch
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from torch.utils.data import DataLoader, Dataset

from datamodules.audio import read_audio
from datamodules.data_module import Strings
from datamodules.downloads import download_and_extract
from datamodules.speech import SpeechData, SpeechTokenizer, utterance_batch
from datamodules.text_batches import length_batches
from litlab.errors import LitlabError

OPENSLR = "https://www.openslr.org/resources/12/{split}.tar.gz"
MD5 = {  # OpenSLR's md5sum.txt
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
}


class SpokenUtterances(Dataset):
    """Audio files with their transcripts, read when a batch asks for them; `lengths` (samples) for bucketing."""

    def __init__(self, files: list[Path], texts: list[str], lengths: torch.Tensor, tokenizer: SpeechTokenizer,
                 sample_rate: int) -> None:  # fmt: skip
        self.files, self.texts, self.lengths, self.tokenizer, self.rate = files, texts, lengths, tokenizer, sample_rate

    def __len__(self) -> int:
        return len(self.files)

    def __getitems__(self, indices: list[int]) -> dict:
        texts = [self.texts[i] for i in indices]
        pieces = [[read_audio(self.files[i], self.rate)] for i in indices]
        batch = utterance_batch(pieces, [[0]] * len(indices), texts, self.tokenizer)
        return {**batch, "text": texts, "single": torch.zeros(len(indices), dtype=torch.bool)}


class LibriSpeechData(SpeechData):
    """LibriSpeech's splits as utterances of lower-case letters, spaces and apostrophes.

    Args:
        data_dir: the folder holding `LibriSpeech/`.
        download: fetch a missing split from OpenSLR in `prepare_data`.
        train_split, val_split, test_split: LibriSpeech's split names.
        max_seconds: training utterances longer than this are left out (memory; LibriSpeech's run to 35 s).
        predict_files, sample_rate, n_mels, n_fft, hop_length, f_min, time_masks, time_width, freq_masks,
            freq_width, eq, vtlp, batch_size, eval_batch_size, num_workers: see `SpeechData`.
    """

    alphabet = " 'abcdefghijklmnopqrstuvwxyz"

    def __init__(
        self,
        data_dir: Path = Path("data"),
        download: bool = True,
        train_split: str = "train-clean-100",
        val_split: str = "dev-clean",
        test_split: str = "test-clean",
        max_seconds: PositiveFloat = 17.0,
        predict_files: Strings | None = None,
        sample_rate: PositiveInt = 16000,
        n_mels: PositiveInt = 80,
        n_fft: PositiveInt = 400,
        hop_length: PositiveInt = 160,
        f_min: NonNegativeFloat = 0.0,
        time_masks: NonNegativeInt = 2,
        time_width: NonNegativeInt = 40,
        freq_masks: NonNegativeInt = 2,
        freq_width: NonNegativeInt = 15,
        batch_size: PositiveInt = 32,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt = 0,
        eq: NonNegativeFloat = 0.0,
        vtlp: NonNegativeFloat = 0.0,
    ) -> None:
        super().__init__(
            predict_files=predict_files, sample_rate=sample_rate, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length,
            time_masks=time_masks, time_width=time_width, freq_masks=freq_masks, freq_width=freq_width,
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, f_min=f_min, eq=eq,
            vtlp=vtlp,
        )  # fmt: skip
        self.splits: dict[str, SpokenUtterances] = {}

    def _split_dir(self, split: str) -> Path:
        return Path(self.hparams.data_dir).expanduser() / "LibriSpeech" / split

    def _splits(self) -> dict[str, str]:
        hp = self.hparams
        return {"train": hp.train_split, "val": hp.val_split, "test": hp.test_split}

    def prepare_data(self) -> None:
        for split in self._splits().values():
            if not self._split_dir(split).is_dir() and self.hparams.download:
                instead = f": check the connection, or extract {split}.tar.gz into {self.hparams.data_dir}"
                url = OPENSLR.format(split=split)
                download_and_extract(url, Path(self.hparams.data_dir), f"LibriSpeech/{split}", MD5.get(split), instead)

    def read_split(self, split: str, max_seconds: float | None) -> SpokenUtterances:
        import soundfile

        folder = self._split_dir(split)
        if not folder.is_dir():
            raise LitlabError(f"no LibriSpeech {split} in {folder}: pass --data.download=true or --data.data_dir")
        files, texts, lengths = [], [], []
        for transcript in sorted(folder.glob("*/*/*.trans.txt")):
            for line in transcript.read_text(encoding="utf-8").splitlines():
                name, _, text = line.strip().partition(" ")
                audio = transcript.parent / f"{name}.flac"
                info = soundfile.info(str(audio)) if audio.is_file() else None
                if info is not None and info.frames and (max_seconds is None or info.duration <= max_seconds):
                    files.append(audio)
                    texts.append(text.lower())
                    lengths.append(info.frames)
        if not files:
            raise LitlabError(f"no utterances (<id>.flac listed in <speaker>-<chapter>.trans.txt) in {folder}")
        tokens = torch.tensor(lengths)
        return SpokenUtterances(files, texts, tokens, self.tokenizer, self.hparams.sample_rate)

    def setup(self, stage: str) -> None:
        if stage == "predict" or self.splits:
            return
        for part, split in self._splits().items():
            self.splits[part] = self.read_split(split, self.hparams.max_seconds if part == "train" else None)

    def _loader(self, part: str, train: bool) -> DataLoader:
        dataset, size = self.splits[part], self.batch_size if train else self.eval_batch_size
        return self.loader(dataset, train, batch_sampler=length_batches(dataset, size, train))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

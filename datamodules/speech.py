"""What the speech datasets share: transcripts as CTC targets (`SpeechTokenizer`), utterances joined from recordings and
padded into batches on the host, and the features computed on the training device (`SpeechData`, see `audio`).

A batch is `{"audio": (B, S) float, "audio_lengths": (B,), "targets": (B, L) ids (0-padded), "target_lengths": (B,),
"text": [transcript], "single": (B,) bool (one recording alone), "name": [what predict was given]}`; on the training
device `audio` becomes `features` (B, n_mels, T) with `frames` (B,).
"""

from __future__ import annotations

from pathlib import Path

import torch
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveInt
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from datamodules.audio import log_mel, mel_filterbank, random_equaliser, read_audio, spec_augment
from datamodules.data_module import DataModule, Strings
from litlab.errors import LitlabError


class SpeechTokenizer:
    """Transcripts <-> CTC target ids: 0 is CTC's blank, `alphabet[i]` is id i + 1."""

    blank = 0

    def __init__(self, alphabet: str) -> None:
        self.alphabet = alphabet
        self.ids = {char: i + 1 for i, char in enumerate(alphabet)}

    def __len__(self) -> int:
        return len(self.alphabet) + 1

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - set(self.ids))
        if unknown:
            raise LitlabError(f"transcript {text[:60]!r} holds characters outside the alphabet: {unknown}")
        return [self.ids[char] for char in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.alphabet[i - 1] for i in ids if 0 < i <= len(self.alphabet))

    def targets(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """CTC's targets of `texts`: ids (B, L), 0-padded, and lengths (B,)."""
        ids = [torch.tensor(self.encode(text), dtype=torch.long) for text in texts]
        targets = pad_sequence(ids, batch_first=True)
        if targets.shape[1] == 0:  # every text empty: one column of padding still
            targets = targets.new_zeros(len(ids), 1)
        return targets, torch.tensor([len(i) for i in ids])


def utterance_batch(
    pieces: list[list[Tensor]], pauses: list[list[int]], texts: list[str], tokenizer: SpeechTokenizer
) -> dict:
    """Each utterance's recordings (1-D waveforms) joined with `pauses[b][i]` samples of silence after recording i,
    padded into one batch with its transcripts as targets."""
    joined = []
    for recordings, silences in zip(pieces, pauses):
        parts = []
        for recording, silence in zip(recordings, silences):
            parts += [recording, recording.new_zeros(silence)]
        joined.append(torch.cat(parts[:-1]))  # no silence after the last
    lengths = torch.tensor([len(w) for w in joined])
    audio = pad_sequence(joined, batch_first=True)
    targets, target_lengths = tokenizer.targets(texts)
    return {"audio": audio, "audio_lengths": lengths, "targets": targets, "target_lengths": target_lengths}


class Utterances(Dataset):
    """Fixed utterances (validation, test, predict): item i joins the recordings `plan[i]` (indices into `recordings`)
    with the silences `pauses[i]`; its transcript is `texts[i]`; items from `single_from` on are recordings scored
    alone (`single`)."""

    def __init__(
        self, recordings: list[Tensor], plan: list[list[int]], pauses: list[list[int]], texts: list[str],
        tokenizer: SpeechTokenizer, names: list[str] | None = None, single_from: int | None = None,
    ) -> None:  # fmt: skip
        self.recordings, self.plan, self.pauses, self.texts = recordings, plan, pauses, texts
        self.tokenizer, self.names = tokenizer, names
        self.single_from = len(plan) if single_from is None else single_from

    def __len__(self) -> int:
        return len(self.plan)

    def __getitems__(self, indices: list[int]) -> dict:
        pieces = [[self.recordings[r] for r in self.plan[i]] for i in indices]
        batch = utterance_batch(
            pieces, [self.pauses[i] for i in indices], [self.texts[i] for i in indices], self.tokenizer
        )
        batch["text"] = [self.texts[i] for i in indices]
        batch["single"] = torch.tensor([i >= self.single_from for i in indices])
        if self.names is not None:
            batch["name"] = [self.names[i] for i in indices]
        return batch


class SpeechData(DataModule):
    """Base of the speech DataModules: log-mel features and SpecAugment on the training device
    (`on_after_batch_transfer`). What a model may read (`Experiment.from_data`): `n_mels`, `vocab_size`, `tokenizer`,
    and `candidates`: the transcripts a recording can have when they are a closed set (spoken digits: the ten digits;
    None: any), each one's probability written by `predict` for self-training (`datamodules.self_training`).

    Args:
        predict_files: recordings to transcribe with `litlab predict` (any format soundfile reads, any rate and
            channel count).
        sample_rate: what every recording is resampled to.
        n_mels, n_fft, hop_length: mel bands; the STFT's window and step in samples.
        f_min: the lowest mel filter's lower edge in Hz (above 0: the bands below it, which carry a microphone's hum
            and rumble rather than speech, are left out).
        time_masks, time_width, freq_masks, freq_width: SpecAugment on training batches: masks of up to `time_width`
            frames and `freq_width` bands (0 masks: none).
        eq: training utterances filtered by a random smooth equaliser of up to this many dB per band (another
            microphone and room: a gain drawn per utterance at a few points across the bands, linear in between).
        vtlp: vocal tract length perturbation (Jaitly & Hinton, 2013) of training utterances: each one's frequencies
            scaled by a factor drawn in [1 - vtlp, 1 + vtlp] before the mel filters (another speaker's formants,
            at the utterance's own tempo and pitch contour).
        batch_size, eval_batch_size, num_workers: see `DataModule`.
    """

    alphabet: str
    candidates: tuple[str, ...] | None = None

    def __init__(
        self,
        predict_files: Strings | None = None,
        sample_rate: PositiveInt = 16000,
        n_mels: PositiveInt = 80,
        n_fft: PositiveInt = 400,
        hop_length: PositiveInt = 160,
        time_masks: NonNegativeInt = 0,
        time_width: NonNegativeInt = 10,
        freq_masks: NonNegativeInt = 0,
        freq_width: NonNegativeInt = 8,
        batch_size: PositiveInt = 32,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt = 0,
        f_min: NonNegativeFloat = 0.0,
        eq: NonNegativeFloat = 0.0,
        vtlp: NonNegativeFloat = 0.0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        self.tokenizer = SpeechTokenizer(self.alphabet)
        self._filterbank: Tensor | None = None

    def predict_dataloader(self) -> DataLoader:
        files = [Path(f) for f in self.hparams.predict_files or []]
        if not files:
            raise LitlabError("nothing to predict: pass --data.predict_files '[one.wav, two.flac]'")
        recordings = [read_audio(f, self.hparams.sample_rate) for f in files]
        plan, pauses, unknown = [[i] for i in range(len(files))], [[0]] * len(files), [""] * len(files)
        names = [str(f) for f in files]
        return self.loader(Utterances(recordings, plan, pauses, unknown, self.tokenizer, names, single_from=0))

    @property
    def n_mels(self) -> int:
        return self.hparams.n_mels

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        hp = self.hparams
        audio = batch.pop("audio")
        if self._filterbank is None or self._filterbank.device != audio.device:
            self._filterbank = mel_filterbank(hp.sample_rate, hp.n_fft, hp.n_mels, hp.f_min, device=audio.device)
        training = self.trainer is not None and self.trainer.training
        tilt = random_equaliser(len(audio), hp.n_mels, hp.eq, audio.device) if training and hp.eq else None
        filterbank = self._filterbank
        if training and hp.vtlp:  # a filterbank per utterance, drawn and built on the device: no transfer per step
            warp = 1 + (2 * torch.rand(len(audio), device=audio.device) - 1) * hp.vtlp
            filterbank = mel_filterbank(hp.sample_rate, hp.n_fft, hp.n_mels, hp.f_min, warp)
        features, frames = log_mel(audio, batch.pop("audio_lengths"), filterbank, hp.n_fft, hp.hop_length, tilt=tilt)
        if training and (hp.time_masks or hp.freq_masks):
            features = spec_augment(features, frames, hp.time_masks, hp.time_width, hp.freq_masks, hp.freq_width)
        return {**batch, "features": features, "frames": frames}

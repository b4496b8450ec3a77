"""Spoken digits for speech recognition (the seed tutorial's section 6 applied to the Free Spoken Digit Dataset):
`recordings/<digit>_<speaker>_<index>.wav`, 6 speakers × 10 digits × 50, mono 8 kHz, trimmed of silence.

CTC needs sequences to align, so utterances are connected digits: up to `max_digits` recordings of one speaker joined
by short silences. Training utterances are drawn afresh at every access (`ConnectedDigits`); validation and test ones
are built once with a seeded generator from their own split's recordings, each recording in exactly one of them, and
every recording is also scored alone (`single`, the single-digit accuracy). Splits:

- official: recordings numbered 0-4 test; of 5-49, `val_indices` (5-9) validate and the rest train;
- `held_out_speaker`: that speaker's 500 recordings test; the others' 0-4 validate and 5-49 train, or, with
  `val_speaker`, a second speaker's 500 validate (a voice the model has not heard either) and the other four's train.

Self-training on a new voice (`pseudo_labels`): its recordings, transcribed by a model (`litlab predict`, which writes
each transcript's probability and each digit's), join training with those transcripts, the surest `pseudo_share` of
them (of each digit with `pseudo_balance`; labelled as if each digit were equally frequent with `pseudo_prior`,
`datamodules.self_training`); no true label of theirs is read.

    litlab fit --config configs/speech_ctc.yaml --data.data_dir data/fsdd
    litlab predict --ckpt_path <best.ckpt> --data.predict_files '[one.wav, two.wav]'
    litlab fit --config configs/speech_ctc_speaker.yaml --data.pseudo_labels <predict run>/predictions.jsonl
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveInt
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.audio import read_audio
from datamodules.data_module import Strings
from datamodules.downloads import download_and_extract
from datamodules.self_training import surest_labels
from datamodules.speech import SpeechData, SpeechTokenizer, Utterances, utterance_batch
from litlab.errors import LitlabError

FSDD = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.9.tar.gz"
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
DIGITS = "0123456789"
_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


class ConnectedDigits(Dataset):
    """Training utterances, drawn afresh at every access from torch's generator (seeded; under DDP each rank draws its
    own, `litlab.rng.ResumableRNG`): item i joins recording i and up to `max_digits - 1` other recordings of its
    speaker, in random order, with random silences; each recording sped up or slowed down by up to `speed` and scaled
    by up to `gain` dB."""

    def __init__(
        self, recordings: list[Tensor], speakers: Tensor, texts: list[str], tokenizer: SpeechTokenizer,
        max_digits: int, pause: tuple[int, int], speed: float = 0.0, gain: float = 0.0,
    ) -> None:  # fmt: skip
        self.recordings, self.speakers, self.texts, self.tokenizer = recordings, speakers, texts, tokenizer
        self.max_digits, self.pause, self.speed, self.gain = max_digits, pause, speed, gain
        self.by_speaker = {int(s): torch.nonzero(speakers == s).flatten() for s in speakers.unique()}

    def __len__(self) -> int:
        return len(self.recordings)

    def __getitems__(self, indices: list[int]) -> dict:
        pieces, pauses, texts = [], [], []
        for i in indices:
            same = self.by_speaker[int(self.speakers[i])]
            count = int(torch.randint(1, self.max_digits + 1, ()))
            chosen = [i, *same[torch.randint(len(same), (count - 1,))].tolist()]
            chosen = [chosen[j] for j in torch.randperm(count).tolist()]
            pieces.append([self.perturb(self.recordings[j]) for j in chosen])
            pauses.append(torch.randint(self.pause[0], self.pause[1] + 1, (count,)).tolist())
            texts.append("".join(self.texts[j] for j in chosen))
        batch = utterance_batch(pieces, pauses, texts, self.tokenizer)
        return {**batch, "text": texts, "single": torch.tensor([len(p) == 1 for p in pieces])}

    def perturb(self, recording: Tensor) -> Tensor:
        """The recording resampled by a factor in [1 - speed, 1 + speed] (pitch and tempo together, as sox's `speed`)
        and scaled by a gain in [-gain, gain] dB."""
        if self.speed:
            factor = 1.0 + self.speed * (2 * float(torch.rand(())) - 1)
            size = max(1, round(len(recording) / factor))
            recording = torch.nn.functional.interpolate(recording[None, None], size=size, mode="linear")[0, 0]
        if self.gain:
            recording = recording * 10 ** (self.gain * (2 * float(torch.rand(())) - 1) / 20)
        return recording


def pseudo_labelled(
    path: Path, share: float, balance: bool, prior: bool, sample_rate: int
) -> tuple[list[Tensor], list[str], list[str]]:
    """(recordings, speakers, digits) of the predictions `surest_labels` keeps from `path`; the speaker from each
    recording's FSDD name."""
    kept = surest_labels(path, share, balance, prior, DIGITS)
    names = [_NAME.match(Path(file).name) for file, _ in kept]
    if None in names:
        unnamed = kept[names.index(None)][0]
        raise LitlabError(f"--data.pseudo_labels: {unnamed} is not named <digit>_<speaker>_<index>.wav")
    voices = [name[2] for name in names]
    return [read_audio(Path(file), sample_rate) for file, _ in kept], voices, [label for _, label in kept]


class SpokenDigitsData(SpeechData):
    """The Free Spoken Digit Dataset as connected digits (see the module docstring).

    Args:
        data_dir: a folder holding `recordings/` (or a folder below it that does).
        download: fetch the dataset's release from GitHub in `prepare_data` when no recordings are found.
        held_out_speaker: test on this speaker alone and train on the others; None: the official split.
        val_speaker: with `held_out_speaker`, validate on this speaker alone too (tuning for voices never heard).
        pseudo_labels: a `predictions.jsonl` of `litlab predict` on FSDD-named recordings (any folder): they join
            training with the predicted single digits as their labels (the file name gives only the speaker).
        pseudo_share: the share of those predictions kept, the most probable first.
        pseudo_balance: keep `pseudo_share` of each predicted digit instead of overall, so that the digits the model
            is least sure of on the new voice are not left out.
        pseudo_prior: label each recording by its `candidates` (`litlab predict` writes every digit's probability)
            rebalanced so that each digit takes an equal share of the voice's recordings (`equal_partition`; FSDD's
            speakers say each digit 50 times): a digit heard as another gets its recordings back.
        val_indices: [first, last) recording numbers of the official training range that validate.
        max_digits: the most recordings one utterance joins (each count from 1 up equally likely).
        pause: the silence between two recordings, [shortest, longest] in seconds.
        speed, gain: training recordings resampled by up to this fraction, and scaled by up to this many dB.
        seed: the generator of the validation and test utterances.
        predict_files, sample_rate, n_mels, n_fft, hop_length, f_min, time_masks, time_width, freq_masks,
            freq_width, eq, vtlp, batch_size, eval_batch_size, num_workers: see `SpeechData`.
    """

    alphabet = DIGITS
    candidates = tuple(DIGITS)  # one recording, one digit

    def __init__(
        self,
        data_dir: Path = Path("data/fsdd"),
        download: bool = True,
        held_out_speaker: str | None = None,
        val_speaker: str | None = None,
        pseudo_labels: Path | None = None,
        pseudo_share: ClosedUnitInterval = 0.5,
        pseudo_balance: bool = False,
        pseudo_prior: bool = False,
        val_indices: tuple[NonNegativeInt, NonNegativeInt] = (5, 10),
        max_digits: PositiveInt = 7,
        pause: tuple[float, float] = (0.05, 0.3),
        speed: float = 0.0,
        gain: float = 0.0,
        seed: int = 0,
        predict_files: Strings | None = None,
        sample_rate: PositiveInt = 8000,
        n_mels: PositiveInt = 40,
        n_fft: PositiveInt = 256,
        hop_length: PositiveInt = 80,
        f_min: NonNegativeFloat = 0.0,
        time_masks: NonNegativeInt = 0,
        time_width: NonNegativeInt = 10,
        freq_masks: NonNegativeInt = 0,
        freq_width: NonNegativeInt = 8,
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
        for option, speaker in (("held_out_speaker", held_out_speaker), ("val_speaker", val_speaker)):
            if speaker is not None and speaker not in SPEAKERS:
                raise LitlabError(f"--data.{option}={speaker!r}: one of {', '.join(SPEAKERS)}")
        if val_speaker is not None and (held_out_speaker is None or val_speaker == held_out_speaker):
            raise LitlabError("--data.val_speaker: another speaker than --data.held_out_speaker, and only beside it")
        if pseudo_share == 0:
            raise LitlabError("--data.pseudo_share=0 keeps no pseudo-label: pass a share above 0 (1: all of them)")
        self.splits: dict[str, Dataset] = {}

    def _folder(self) -> Path | None:
        """The folder of WAV recordings: `data_dir/recordings`, or one or two levels further down."""
        root = Path(self.hparams.data_dir).expanduser()
        candidates = [root / "recordings", *sorted(root.glob("*/recordings")), *sorted(root.glob("*/*/recordings"))]
        return next((d for d in candidates if d.is_dir() and any(d.glob("*.wav"))), None)

    def prepare_data(self) -> None:
        if self._folder() is None and self.hparams.download:
            instead = ": check the connection, or pass --data.data_dir to a folder holding recordings/"
            download_and_extract(FSDD, Path(self.hparams.data_dir), "free-spoken-digit-dataset-1.0.9", instead=instead)

    def _pause(self) -> tuple[int, int]:
        low, high = self.hparams.pause
        return round(low * self.hparams.sample_rate), round(high * self.hparams.sample_rate)

    def setup(self, stage: str) -> None:
        if stage == "predict" or self.splits:
            return
        folder = self._folder()
        if folder is None:
            raise LitlabError(
                f"no FSDD recordings (<digit>_<speaker>_<index>.wav) under {self.hparams.data_dir}: pass "
                f"--data.data_dir to the dataset's folder, or --data.download=true"
            )
        files = sorted(f for f in folder.glob("*.wav") if _NAME.match(f.name))
        digits, speakers, numbers = zip(
            *((int(m[1]), m[2], int(m[3])) for m in map(_NAME.match, (f.name for f in files)))
        )
        names = sorted(set(speakers))
        recordings = [read_audio(f, self.hparams.sample_rate) for f in files]
        rank_zero_info(f"{folder}: {len(files)} recordings of {len(names)} speakers read")
        hp = self.hparams
        held, val_voice, (first, last) = hp.held_out_speaker, hp.val_speaker, hp.val_indices
        for option, speaker in (("held_out_speaker", held), ("val_speaker", val_voice)):
            if speaker is not None and speaker not in names:
                raise LitlabError(f"--data.{option}={speaker}: no recordings of {speaker} in {folder}")
        split = [
            ("test" if s == held else "val" if (s == val_voice if val_voice else n < 5) else "train")
            if held is not None
            else ("test" if n < 5 else "val" if first <= n < last else "train")
            for s, n in zip(speakers, numbers)
        ]
        speaker_ids = torch.tensor([names.index(s) for s in speakers])
        texts = [str(d) for d in digits]
        members = {part: [i for i, p in enumerate(split) if p == part] for part in ("train", "val", "test")}
        if any(not ids for ids in members.values()):
            raise LitlabError(f"{folder}: a split is empty ({ {k: len(v) for k, v in members.items()} })")
        train = members["train"]
        if hp.pseudo_labels is not None:  # appended to the training recordings, their speakers' ids extended
            extra, voices, labels = pseudo_labelled(
                Path(hp.pseudo_labels), hp.pseudo_share, hp.pseudo_balance, hp.pseudo_prior, hp.sample_rate
            )
            names += sorted(set(voices) - set(names))
            train += range(len(recordings), len(recordings) + len(extra))
            recordings, texts = recordings + extra, texts + labels
            speaker_ids = torch.cat([speaker_ids, torch.tensor([names.index(v) for v in voices], dtype=torch.long)])
            rank_zero_info(f"{len(extra)} recordings of {', '.join(sorted(set(voices)))} join training, self-labelled")
        self.splits["train"] = ConnectedDigits(
            [recordings[i] for i in train], speaker_ids[train], [texts[i] for i in train], self.tokenizer,
            self.hparams.max_digits, self._pause(), self.hparams.speed, self.hparams.gain,
        )  # fmt: skip
        for part in ("val", "test"):
            self.splits[part] = self._evaluation(recordings, speaker_ids, texts, members[part], part == "test")

    def _evaluation(self, recordings, speakers: Tensor, texts: list[str], members: list[int], test: bool) -> Utterances:
        """The split's recordings cut, per speaker in a seeded order, into utterances of 1 to `max_digits`, each
        recording in exactly one; then every recording alone."""
        generator = torch.Generator().manual_seed(self.hparams.seed + test)
        low, high = self._pause()
        plan, pauses = [], []
        for speaker in speakers[members].unique().tolist():
            mine = [members[j] for j in torch.randperm(len(members), generator=generator).tolist()]
            mine = [i for i in mine if speakers[i] == speaker]
            while mine:
                count = int(torch.randint(1, self.hparams.max_digits + 1, (), generator=generator))
                plan.append(mine[:count])
                pauses.append(torch.randint(low, high + 1, (len(plan[-1]),), generator=generator).tolist())
                mine = mine[count:]
        connected = len(plan)
        plan += [[i] for i in members]
        pauses += [[0] for _ in members]
        texts = ["".join(texts[i] for i in p) for p in plan]
        return Utterances(recordings, plan, pauses, texts, self.tokenizer, single_from=connected)

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.splits["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.splits["val"])

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.splits["test"])

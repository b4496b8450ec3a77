"""Audio for the speech family: files read into mono waveforms at the model's sample rate, and the log-mel features and
SpecAugment masks computed on the training device.

Files are read with `soundfile` (libsndfile: WAV, FLAC and more; the `speech` extra): a stereo recording is mixed down,
one at another sample rate resampled (band-limited, through the FFT), and a file that is not audio, or holds no
samples, is one line naming it. The features are computed with torch (`torch.stft` and a mel filterbank built here,
as torchaudio's `MelSpectrogram` with `norm=None` and the HTK mel scale computes them): torchaudio, the field's own
package, is in maintenance mode and its releases are pinned to other torch versions than the one litlab pins, so it
cannot be installed beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from litlab.errors import LitlabError


def read_audio(path: Path, sample_rate: int) -> Tensor:
    """The file's samples (S,) float32 in [-1, 1], mono, at `sample_rate`."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise LitlabError(f"{path}: no such audio file")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (S, channels)
    except (RuntimeError, TypeError, ValueError) as err:  # libsndfile's error on a file that is not audio
        raise LitlabError(f"{path} is not an audio file soundfile can read ({str(err).strip()[:120]})") from None
    if not len(samples):
        raise LitlabError(f"{path} holds no audio samples")
    waveform = torch.from_numpy(samples).mean(dim=1)  # stereo mixed down
    return resample(waveform, rate, sample_rate) if rate != sample_rate else waveform


def resample(waveform: Tensor, from_rate: int, to_rate: int) -> Tensor:
    """A waveform (S,) at another rate: its spectrum cut (or zero-padded) to the new Nyquist frequency."""
    length = max(1, round(len(waveform) * to_rate / from_rate))
    spectrum = torch.fft.rfft(waveform)
    kept = length // 2 + 1
    spectrum = (
        spectrum[:kept] if kept <= len(spectrum) else torch.cat([spectrum, spectrum.new_zeros(kept - len(spectrum))])
    )
    return torch.fft.irfft(spectrum, length) * (length / len(waveform))


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    warp: Tensor | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, evenly spaced on the HTK mel scale from f_min to the Nyquist
    frequency, unnormalised, built on `device`. With `warp` (B,), vocal tract length perturbation: (B, n_mels, F),
    each utterance's frequencies scaled by its factor before the filters, built on the factors' device."""

    def to_mel(hz: float) -> float:
        return 2595.0 * math.log10(1.0 + hz / 700.0)

    device = warp.device if warp is not None else device
    mels = torch.linspace(to_mel(f_min), to_mel(sample_rate / 2), n_mels + 2, device=device)
    edges = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, device=device)  # (F,)
    if warp is not None:
        freqs = (freqs * warp[:, None, None]).clamp(max=sample_rate / 2)  # (B, 1, F)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    rising, falling = (freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)
    return torch.minimum(rising, falling).clamp(min=0.0)


def random_equaliser(batch: int, bands: int, db: float, device: torch.device, points: int = 5) -> Tensor:
    """(batch, bands, 1) log-power gains: per utterance, `points` gains drawn uniformly in [-db, db] dB, spread
    evenly across the bands and joined linearly, so that neighbouring bands move together as with a microphone's
    response."""
    gains = (2 * torch.rand(batch, 1, points, device=device) - 1) * (db * math.log(10) / 10)
    return torch.nn.functional.interpolate(gains, size=bands, mode="linear", align_corners=True).transpose(1, 2)


def log_mel(
    audio: Tensor,
    lengths: Tensor,
    filterbank: Tensor,
    n_fft: int,
    hop: int,
    top_db: float = 80.0,
    tilt: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Log-mel features (B, n_mels, T) of padded waveforms (B, S) and the frame counts (B,). Each utterance is floored
    `top_db` below its loudest bin (so a quiet recording keeps its dynamic range) and normalised to zero mean and unit
    variance over its own frames, all bands together: the normalisation removes the recording's level and keeps the
    spectral shape, which carries a short word (per-band statistics would subtract a one-digit utterance's average
    spectrum, most of what tells it apart). `tilt` (B, n_mels, 1), log-power gains added to each band before that
    (`random_equaliser`). The padding's frames are 0."""
    window = torch.hann_window(n_fft, device=audio.device)
    spectrum = torch.stft(audio.float(), n_fft, hop, window=window, center=True, return_complex=True)  # (B, F, T)
    features = torch.log(filterbank @ spectrum.abs().pow(2) + 1e-12)  # (B, M, T)
    if tilt is not None:
        features = features + tilt
    frames = lengths // hop + 1  # (B,)
    valid = (torch.arange(features.size(-1), device=audio.device) < frames[:, None]).unsqueeze(1)  # (B, 1, T)
    floor = features.masked_fill(~valid, -math.inf).amax((1, 2), keepdim=True) - top_db * math.log(10) / 10
    features = torch.maximum(features, floor)
    count = frames.view(-1, 1, 1).to(features.dtype) * features.size(1)
    mean = (features * valid).sum((1, 2), keepdim=True) / count
    std = (((features - mean) * valid).pow(2).sum((1, 2), keepdim=True) / count).sqrt()
    return ((features - mean) / (std + 1e-5)) * valid, frames


def spec_augment(
    features: Tensor, frames: Tensor, time_masks: int, time_width: int, freq_masks: int, freq_width: int
) -> Tensor:
    """SpecAugment's masking (Park et al., 2019): per utterance, `time_masks` runs of up to `time_width` frames (inside
    its own frames) and `freq_masks` bands of up to `freq_width` mel channels set to 0 (the normalised mean)."""
    batch, bands, steps = features.shape
    keep = torch.ones_like(features, dtype=torch.bool)
    positions = {
        "time": torch.arange(steps, device=features.device),
        "freq": torch.arange(bands, device=features.device),
    }
    for axis, count, width, extent in (
        ("time", time_masks, time_width, frames),
        ("freq", freq_masks, freq_width, None),
    ):
        for _ in range(count):
            u = torch.rand(batch, 2, device=features.device)
            size = (u[:, 0] * (width + 1)).floor()  # (B,)
            room = (extent if extent is not None else torch.full_like(size, bands)) - size
            start = (u[:, 1] * room.clamp(min=0)).floor()
            inside = (positions[axis] >= start[:, None]) & (positions[axis] < (start + size)[:, None])  # (B, len)
            keep &= ~(inside[:, None, :] if axis == "time" else inside[:, :, None])
    return features * keep

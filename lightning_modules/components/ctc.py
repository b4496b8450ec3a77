"""Speech recognition with CTC: the seed tutorial's network (two strided convolutions over log-mel frames, a
bidirectional LSTM, a linear layer per frame) and decoding its per-frame log-probabilities into token ids.

Decoding is written here: torchaudio's CTC decoders need torchaudio (which cannot be installed beside the torch litlab
pins) and flashlight-text, and pyctcdecode pins numpy below 2. `greedy_paths` takes the likeliest token per frame;
`collapse` turns a path into ids (repeats merged, blanks dropped); `beam_search` is CTC's prefix beam search
(Hannun et al., 2014) without a language model.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor, nn

from lightning_modules.components.bilstm import PaddedBiLSTM


class ConvBiLSTM(nn.Module):
    """Log-mel frames (B, n_mels, T) -> per-frame log-probabilities (B, T', vocab) and their lengths (B,), T' about
    T / 4: two Conv1d of `kernel_size` with stride 2 and ReLU (with `batch_norm`, BatchNorm before it), a
    bidirectional LSTM that never reads the padding, a linear layer per frame. The seed handed CTC the frame counts
    before the two strides; `output_lengths` gives the counts after them."""

    def __init__(
        self, n_mels: int, vocab_size: int, channels: int = 256, kernel_size: int = 5, hidden: int = 512,
        layers: int = 3, dropout: float = 0.0, batch_norm: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        padding = kernel_size // 2

        def block(inputs: int) -> list[nn.Module]:
            norm = [nn.BatchNorm1d(channels)] if batch_norm else []
            return [nn.Conv1d(inputs, channels, kernel_size, stride=2, padding=padding), *norm, nn.ReLU()]

        self.convs = nn.Sequential(*block(n_mels), *block(channels))
        self.dropout = nn.Dropout(dropout)
        self.lstm = PaddedBiLSTM(channels, hidden, layers, dropout)
        self.classify = nn.Linear(2 * hidden, vocab_size)

    def output_lengths(self, frames: Tensor) -> Tensor:
        """The frame counts after each convolution: floor((T + 2 padding - kernel) / stride) + 1."""
        for conv in self.convs:
            if isinstance(conv, nn.Conv1d):
                (k,), (s,), (p,) = conv.kernel_size, conv.stride, conv.padding
                frames = torch.div(frames + 2 * p - k, s, rounding_mode="floor") + 1
        return frames

    def forward(self, features: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        lengths = self.output_lengths(frames)
        x = self.dropout(self.convs(features).transpose(1, 2))  # (B, T', C)
        outputs, _ = self.lstm(x, lengths)  # (B, T', 2H)
        return self.classify(self.dropout(outputs)).log_softmax(-1), lengths  # (B, T', V), (B,)


def greedy_paths(log_probs: Tensor, lengths: Tensor, blank: int = 0) -> Tensor:
    """The likeliest token of every frame (B, T'), blank past each sequence's length."""
    paths = log_probs.argmax(-1)
    return paths.masked_fill(torch.arange(paths.size(1), device=paths.device) >= lengths[:, None], blank)


def collapse(path: list[int], blank: int = 0) -> list[int]:
    """A CTC path's token ids: runs of one token merged, blanks dropped."""
    return [token for i, token in enumerate(path) if token != blank and (i == 0 or token != path[i - 1])]


def _add(*logs: float) -> float:
    """log(sum(exp(logs))), exact for -inf."""
    top = max(logs)
    return top if top == -math.inf else top + math.log(sum(math.exp(v - top) for v in logs))


def beam_search(log_probs: Tensor, beam_width: int, blank: int = 0) -> list[int]:
    """The likeliest token sequence of one utterance's log-probabilities (T', V) under CTC, keeping `beam_width`
    prefixes per frame, each with the probability of its paths ending in blank and in its last token; a frame extends
    them by its `beam_width` likeliest tokens only."""
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    likeliest = log_probs.float().topk(min(beam_width, log_probs.size(-1)), dim=-1).indices.cpu().tolist()
    for frame, tokens in zip(log_probs.float().cpu().tolist(), likeliest):
        grown: dict[tuple[int, ...], tuple[float, float]] = defaultdict(lambda: (-math.inf, -math.inf))
        for prefix, (ends_blank, ends_token) in beams.items():
            stay_blank, stay_token = grown[prefix]
            grown[prefix] = (_add(stay_blank, ends_blank + frame[blank], ends_token + frame[blank]), stay_token)
            for token in tokens:
                if token == blank:
                    continue
                p, longer = frame[token], (*prefix, token)
                longer_blank, longer_token = grown[longer]
                if prefix and prefix[-1] == token:  # a repeat needs a blank in between; without, the run goes on
                    grown[longer] = (longer_blank, _add(longer_token, ends_blank + p))
                    same_blank, same_token = grown[prefix]
                    grown[prefix] = (same_blank, _add(same_token, ends_token + p))
                else:
                    grown[longer] = (longer_blank, _add(longer_token, ends_blank + p, ends_token + p))
        beams = dict(sorted(grown.items(), key=lambda item: -_add(*item[1]))[:beam_width])
    return list(max(beams.items(), key=lambda item: _add(*item[1]))[0])

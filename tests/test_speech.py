"""Speech: connected-digit utterances that never mix splits or speakers, deterministic evaluation and rank-distinct
training draws, audio files of any rate and channel count, CTC's lengths after the convolutions, greedy and beam
decoding on hand-made log-probabilities, and bad audio input in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from audio_fixtures import write_fsdd
from conftest import FIXTURES, QUIET, cli, config, fails_in_one_line, tiny

from datamodules.audio import log_mel, mel_filterbank, random_equaliser, read_audio, resample, spec_augment
from datamodules.librispeech import MD5, LibriSpeechData
from datamodules.spoken_digits import SpokenDigitsData
from lightning_modules.components.ctc import ConvBiLSTM, beam_search, collapse, greedy_paths
from lightning_modules.speech import SpeechCTC
from litlab.errors import LitlabError

SETTINGS = dict(data_dir=FIXTURES / "fsdd", download=False, val_indices=(5, 7), max_digits=3)


def speaker_and_number(path_name: str) -> tuple[str, int]:
    _, speaker, number = Path(path_name).stem.split("_")
    return speaker, int(number)


@pytest.fixture(scope="module")
def digits() -> SpokenDigitsData:
    data = SpokenDigitsData(**SETTINGS)
    data.setup("fit")
    return data


def test_evaluation_utterances_use_their_own_split_and_speaker_once(digits):
    files = sorted((FIXTURES / "fsdd/recordings").glob("*.wav"))
    for split, numbers in (("val", range(5, 7)), ("test", range(0, 5))):
        utterances = digits.splits[split]
        owners = [speaker_and_number(files[i].name) for i in range(len(files))]
        connected = [plan for plan in utterances.plan[: utterances.single_from]]
        used = [i for plan in connected for i in plan]
        assert sorted(used) == sorted(set(used)) and len(used) == 2 * 10 * len(numbers)  # each recording once
        for plan in connected:
            assert len({owners[i][0] for i in plan}) == 1 and 1 <= len(plan) <= 3  # one speaker
            assert all(owners[i][1] in numbers for i in plan)  # never another split's recording
        singles = utterances.plan[utterances.single_from :]
        assert sorted(i for [i] in singles) == sorted(used)
    again = SpokenDigitsData(**SETTINGS)
    again.setup("fit")
    assert again.splits["test"].plan == digits.splits["test"].plan  # deterministic
    assert again.splits["test"].pauses == digits.splits["test"].pauses


def test_a_held_out_speaker_is_tested_alone(digits):
    data = SpokenDigitsData(**SETTINGS | {"held_out_speaker": "jackson"})
    data.setup("fit")
    files = sorted((FIXTURES / "fsdd/recordings").glob("*.wav"))
    tested = {speaker_and_number(files[i].name)[0] for plan in data.splits["test"].plan for i in plan}
    assert tested == {"jackson"} and len(data.splits["test"].plan[data.splits["test"].single_from :]) == 120
    assert set(data.splits["train"].speakers.tolist()) == {0}  # george only


def test_a_validation_speaker_is_a_second_voice_never_heard(tmp_path):
    write_fsdd(tmp_path, ("george", "jackson", "lucas"), per_digit=2)
    data = SpokenDigitsData(**SETTINGS | {"data_dir": tmp_path, "held_out_speaker": "jackson", "val_speaker": "lucas"})
    data.setup("fit")
    names = sorted(p.name for p in (tmp_path / "recordings").glob("*.wav"))
    for split, speaker in (("val", "lucas"), ("test", "jackson")):
        utterances = data.splits[split]
        assert {speaker_and_number(names[i])[0] for plan in utterances.plan for i in plan} == {speaker}
        assert len(utterances.plan[utterances.single_from :]) == 20  # all of the speaker's recordings
    assert set(data.splits["train"].speakers.tolist()) == {0} and len(data.splits["train"]) == 20  # george's all
    for wrong in ({"val_speaker": "lucas"}, {"held_out_speaker": "lucas", "val_speaker": "lucas"}):
        with pytest.raises(LitlabError, match="val_speaker"):
            SpokenDigitsData(**SETTINGS | wrong)


def test_training_utterances_are_drawn_afresh_from_torch_s_generator(digits):
    train = digits.splits["train"]

    def draw(seed: int) -> list[str]:
        torch.manual_seed(seed)
        return train.__getitems__(list(range(8)))["text"]

    assert draw(0) == draw(0) and draw(0) != draw(1)  # seeded; another rank's state, another draw
    batch = train.__getitems__(list(range(8)))
    speakers = train.speakers
    assert all(1 <= len(t) <= 3 for t in batch["text"]) and batch["audio"].shape[0] == 8
    assert (batch["target_lengths"] == torch.tensor([len(t) for t in batch["text"]])).all()
    for i in range(len(train)):  # utterance i joins recording i with others of its speaker only
        assert (speakers[train.by_speaker[int(speakers[i])]] == speakers[i]).all()


def test_audio_of_any_rate_and_channels_reads_as_mono_at_the_model_s_rate(tmp_path):
    t = np.arange(16000) / 16000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1).astype(np.float32)
    soundfile.write(tmp_path / "stereo16k.wav", stereo, 16000)
    waveform = read_audio(tmp_path / "stereo16k.wav", 8000)
    assert waveform.shape == (8000,)  # resampled to 8 kHz, channels mixed down
    spectrum = torch.fft.rfft(waveform).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 1  # the tone kept at its frequency (1 Hz bins)
    assert torch.allclose(resample(resample(waveform, 8000, 16000), 16000, 8000), waveform, atol=1e-4)


def test_log_mel_normalises_each_utterance_over_its_own_frames():
    filterbank = mel_filterbank(8000, 256, 40)
    assert filterbank.shape == (40, 129) and (filterbank.sum(1) > 0).all()
    audio = torch.randn(3, 4000)
    audio[1, 2000:] = 0
    audio[2] = 0.01 * audio[0]  # the same recording, 40 dB quieter
    features, frames = log_mel(audio, torch.tensor([4000, 2000, 4000]), filterbank, 256, 80)
    assert frames.tolist() == [51, 26, 51] and features.shape == (3, 40, 51)
    own = features[1, :, :26]
    assert abs(float(own.mean())) < 1e-4 and abs(float(own.std(correction=0)) - 1) < 1e-3
    assert (features[1, :, 26:] == 0).all()  # the padding's frames
    assert torch.allclose(features[2], features[0], atol=1e-3)  # the level is gone
    low, high = (torch.sin(torch.arange(4000) * 2 * math.pi * hz / 8000) for hz in (300, 3000))
    tones, _ = log_mel(torch.stack([low, high]), torch.tensor([4000, 4000]), filterbank, 256, 80)
    assert tones[0, :10].mean() > tones[1, :10].mean() and tones[0, -10:].mean() < tones[1, -10:].mean()  # the shape
    masked = spec_augment(features, frames, time_masks=2, time_width=5, freq_masks=2, freq_width=4)
    assert (masked == 0).sum() > (features == 0).sum()


def test_f_min_leaves_the_bands_below_it_out():
    full, cut = mel_filterbank(8000, 256, 40), mel_filterbank(8000, 256, 40, f_min=150.0)  # bins of 31.25 Hz
    below = torch.arange(129) * 8000 / 256 < 150
    assert full[:, below].sum() > 0 and cut[:, below].sum() == 0
    assert (cut.sum(1) > 0).all()  # every band still has bins


def test_vtlp_warps_each_utterances_frequencies_by_its_own_factor():
    plain = mel_filterbank(8000, 256, 40)
    warped = mel_filterbank(8000, 256, 40, warp=torch.tensor([1.0, 0.85, 1.15]))
    assert warped.shape == (3, *plain.shape) and torch.equal(warped[0], plain)
    tone = torch.sin(2 * math.pi * 1000 * torch.arange(8000) / 8000)
    power = torch.stft(tone, 256, 80, window=torch.hann_window(256), return_complex=True).abs().pow(2)  # (F, T)
    peak = (warped @ power).mean(-1).argmax(-1)  # (3,): the band the tone lands in
    assert peak[1] < peak[0] < peak[2]  # a shorter vocal tract (factor > 1) moves it up, a longer one down


def test_the_random_equaliser_tilts_each_utterance_smoothly_within_its_range():
    torch.manual_seed(0)
    gains = random_equaliser(64, 40, db=12.0, device=torch.device("cpu"))  # (B, bands, 1), natural-log power
    db = gains.squeeze(-1) * 10 / math.log(10)
    assert gains.shape == (64, 40, 1) and db.abs().max() <= 12.0 + 1e-4 and db.abs().max() > 8
    assert (db[:, 1:] - db[:, :-1]).abs().max() <= 2 * 12.0 / 9 + 1e-4  # linear between 5 points: no jumps
    assert db.std(0).min() > 2  # every band moves, differently per utterance
    audio = torch.randn(2, 4000)
    filterbank = mel_filterbank(8000, 256, 40)
    plain, _ = log_mel(audio, torch.tensor([4000, 4000]), filterbank, 256, 80)
    tilted, _ = log_mel(audio, torch.tensor([4000, 4000]), filterbank, 256, 80, tilt=gains[:2])
    assert not torch.allclose(plain, tilted)
    flat = torch.full((2, 40, 1), 3.0)  # the same gain in every band: the per-utterance normalisation undoes it
    assert torch.allclose(
        plain, log_mel(audio, torch.tensor([4000, 4000]), filterbank, 256, 80, tilt=flat)[0], atol=1e-4
    )


def test_ctc_reads_the_frame_counts_after_the_two_strided_convolutions():
    net = ConvBiLSTM(n_mels=8, vocab_size=5, channels=4, kernel_size=5, hidden=3, layers=1)
    for frames in (1, 2, 7, 50, 101):
        log_probs, lengths = net(torch.randn(1, 8, frames), torch.tensor([frames]))
        assert lengths.item() == log_probs.size(1) == math.ceil(math.ceil(frames / 2) / 2)  # not `frames`
    padded, lengths = net(torch.randn(3, 8, 40), torch.tensor([40, 21, 9]))
    assert lengths.tolist() == [10, 6, 3] and padded.shape[1] == 10


def test_greedy_and_beam_decoding_on_hand_made_probabilities():
    assert collapse([0, 1, 1, 0, 1, 2, 2, 0]) == [1, 1, 2]
    log_probs = torch.log(torch.tensor([[[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.1, 0.1, 0.8]]]))
    path = greedy_paths(log_probs, torch.tensor([3]))[0].tolist()
    assert path == [1, 1, 0, 0] and collapse(path) == [1]  # the fourth frame is past the length
    # greedy takes blank twice (0.6 each), but "1" has more paths: 1-1, 1-b, b-1 sum to 0.64 against 0.36 for nothing
    two = torch.log(torch.tensor([[0.6, 0.4], [0.6, 0.4]]))
    assert collapse(greedy_paths(two[None], torch.tensor([2]))[0].tolist()) == []
    assert beam_search(two, beam_width=2) == [1]
    assert beam_search(log_probs[0, :3], beam_width=3) == [1]


def test_a_transcript_s_probability_sums_all_of_its_ctc_alignments():
    model = SpeechCTC(channels=4, hidden=3, layers=1, n_mels=8, vocab_size=11)
    model.data_outside_trainer = SpokenDigitsData(**SETTINGS)  # its tokenizer: blank, then "0".."9"
    frame = torch.full((11,), 1e-9)
    frame[0], frame[2] = 0.6, 0.4  # blank 0.6, "1" 0.4
    log_probs = frame.log().expand(3, 2, 11)  # three utterances of two frames
    p = model.transcript_probability(log_probs, torch.tensor([2, 2, 1]), ["1", "", "1"])
    # "1": 1-1, 1-blank, blank-1 (0.16 + 0.24 + 0.24); "": blank-blank; one frame: "1" alone
    assert torch.allclose(p, torch.tensor([0.64, 0.36, 0.4]), atol=1e-6)


def test_pseudo_labels_join_training_with_their_predicted_digits_the_surest_first(tmp_path):
    write_fsdd(tmp_path, ("george", "jackson", "lucas"), per_digit=2)
    heard = SETTINGS | {"data_dir": tmp_path, "held_out_speaker": "jackson", "val_speaker": "lucas"}
    files = sorted((tmp_path / "recordings").glob("*_jackson_*.wav"))
    outputs = [str((int(f.name[0]) + 1) % 10) for f in files]  # never the true digit: the labels are the model's
    outputs[-1] = "12"  # the surest, but not one digit: left out
    records = [
        {"input": str(f), "output": o, "probability": (i + 1) / 100} for i, (f, o) in enumerate(zip(files, outputs))
    ]
    labels = tmp_path / "predictions.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in records))
    data = SpokenDigitsData(**heard | {"pseudo_labels": labels, "pseudo_share": 0.5})
    data.setup("fit")
    train = data.splits["train"]
    assert len(train) == 20 + 9  # george's 20, then the 10 surest of jackson's 20 but the two-digit one
    assert train.texts[20:] == outputs[-2:-11:-1]  # most probable first
    assert torch.equal(train.recordings[20], read_audio(files[-2], 8000))
    assert set(train.speakers[:20].tolist()) == {0} and len(set(train.speakers[20:].tolist()) - {0}) == 1
    assert len(data.splits["test"].plan[data.splits["test"].single_from :]) == 20  # the test split is unchanged
    labels.write_text('{"input": "x.wav"}\n')
    with pytest.raises(LitlabError, match="input, output, probability"):
        SpokenDigitsData(**heard | {"pseudo_labels": labels}).setup("fit")
    labels.write_text("".join(json.dumps(r) + "\n" for r in records))  # no candidates: no prior to match
    with pytest.raises(LitlabError, match="candidates, input, output, probability"):
        SpokenDigitsData(**heard | {"pseudo_labels": labels, "pseudo_prior": True}).setup("fit")
    labels.write_text("not json")
    with pytest.raises(LitlabError, match="not a predictions.jsonl"):
        SpokenDigitsData(**heard | {"pseudo_labels": labels}).setup("fit")


def test_balanced_pseudo_labels_keep_the_share_of_each_predicted_digit(tmp_path):
    write_fsdd(tmp_path, ("george", "jackson", "lucas"), per_digit=2)
    heard = SETTINGS | {"data_dir": tmp_path, "held_out_speaker": "jackson", "val_speaker": "lucas"}
    files = sorted((tmp_path / "recordings").glob("*_jackson_*.wav"))
    outputs = ["7"] * 14 + ["3"] * 6  # "3": the digit the model is least sure of, all below every "7"
    records = [
        {"input": str(f), "output": o, "probability": 1 - i / 100} for i, (f, o) in enumerate(zip(files, outputs))
    ]
    (labels := tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for balance, kept in ((False, ["7"] * 10), (True, ["7"] * 7 + ["3"] * 3)):
        data = SpokenDigitsData(**heard | {"pseudo_labels": labels, "pseudo_share": 0.5, "pseudo_balance": balance})
        data.setup("fit")
        assert data.splits["train"].texts[20:] == kept


def test_predict_transcribes_each_wav_file(tmp_path, capsys):
    cli("fit", "--config", config("speech_ctc"), *tiny("speech_ctc"), "--trainer.max_epochs=1", *QUIET)
    best = next(tmp_path.glob("runs/speech_ctc/*/checkpoints/best.ckpt"))
    sound = soundfile.read(FIXTURES / "fsdd/recordings/4_george_0.wav", dtype="float32")[0]
    soundfile.write(tmp_path / "stereo.wav", np.stack([sound, sound], axis=1), 8000)
    soundfile.write(tmp_path / "wide.flac", np.repeat(sound, 2), 16000)  # FLAC at 16 kHz: read and resampled
    cli("predict", "--ckpt_path", best, f"--data.predict_files=[{tmp_path / 'stereo.wav'}, {tmp_path / 'wide.flac'}]")
    written = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("predictions written"))
    records = [json.loads(line) for line in open(written.removeprefix("predictions written to "))]
    assert [r["input"] for r in records] == [str(tmp_path / "stereo.wav"), str(tmp_path / "wide.flac")]
    assert all(set(r["output"]) <= set("0123456789") and 0 < r["probability"] <= 1 for r in records)
    for r in records:  # every digit's probability beside the transcript's, for pseudo_prior
        assert list(r["candidates"]) == list("0123456789") and sum(r["candidates"].values()) <= 1 + 1e-5
        assert r["candidates"].get(r["output"], r["probability"]) == pytest.approx(r["probability"], rel=1e-4)


def test_bad_audio_input_is_one_line(tmp_path, capfd):
    fit = ["fit", "--config", config("speech_ctc"), *tiny("speech_ctc"), *QUIET]
    (tmp_path / "empty").mkdir()
    fails_in_one_line(capfd, *fit, f"--data.data_dir={tmp_path / 'empty'}", naming="no FSDD recordings")
    fails_in_one_line(capfd, *fit, "--data.held_out_speaker=zoe", naming="held_out_speaker='zoe'")
    (tmp_path / "text.wav").write_text("not audio")
    soundfile.write(tmp_path / "silent.wav", np.zeros(0, dtype=np.float32), 8000)
    for name, naming in (("text.wav", "is not an audio file"), ("silent.wav", "holds no audio samples")):
        predict = ("predict", "--config", config("speech_ctc"), *tiny("speech_ctc"), "--trainer.logger=false")
        fails_in_one_line(capfd, *predict, f"--data.predict_files=[{tmp_path / name}]", naming=naming)


def test_librispeech_layout_gives_lower_case_character_targets():
    data = LibriSpeechData(data_dir=FIXTURES / "librispeech", download=False)
    data.setup("fit")
    assert {part: len(dataset) for part, dataset in data.splits.items()} == {"train": 6, "val": 6, "test": 6}
    batch = data.splits["val"].__getitems__([0, 1])
    for text, targets, length in zip(batch["text"], batch["targets"], batch["target_lengths"]):
        assert text == text.lower() and " " in text and data.tokenizer.decode(targets[:length].tolist()) == text
    assert batch["audio"].shape[0] == 2 and not batch["single"].any()
    assert set(MD5) == {"train-clean-100", "dev-clean", "test-clean"}  # OpenSLR's published checksums


def test_a_librispeech_fit_reports_character_and_word_error_rates(tmp_path):
    run = cli("fit", "--config", config("librispeech_ctc"), *tiny("librispeech_ctc"), "--trainer.max_epochs=1", *QUIET)
    assert {"val/cer", "val/wer", "val/exact_match"} <= set(run.trainer.callback_metrics)
    assert "val/single_acc" not in run.trainer.callback_metrics  # no recording is scored alone here

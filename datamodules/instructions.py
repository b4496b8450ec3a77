"""Instruction/response pairs for fine-tuning a causal language model (notebook 15.9.4), from JSONL files.

Each line of a file is `{"instruction": "...", "response": "..."}`. An example is the notebook's prompt followed by the
response and the tokenizer's end-of-text token:

    ### Instruction:
    <instruction>

    ### Response:
    <response><eos>

Labels are the input ids with -100 (ignored by the loss) on the prompt *and* on the padding, so the model learns the
responses alone and learns where they end: the notebook masked the padding by its id, which for GPT-2 is also the
end-of-text id, so its model was never taught to stop. Padding is on the right for training and on the left for the
prompts that validation, test and predict continue with `generate()`.

    litlab fit --config configs/gpt2_lora.yaml --data.train_file my_pairs.jsonl --data.val_file held_out.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.data_module import DataModule, Strings, index_tensor
from datamodules.text_batches import Ragged
from datamodules.tokenizers import HubTokenizer
from litlab.errors import LitlabError

PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"


def read_pairs(path: Path) -> list[dict[str, str]]:
    """The file's pairs; one line naming the file and line for anything that is not an instruction/response pair."""
    path = Path(path)
    if not path.is_file():
        raise LitlabError(f'{path}: no such file (JSON lines of {{"instruction": ..., "response": ...}})')
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            pair = json.loads(line)
        except json.JSONDecodeError as err:
            raise LitlabError(f"{path}:{number}: not JSON ({err.msg})") from None
        if not isinstance(pair, dict) or not all(isinstance(pair.get(k), str) for k in ("instruction", "response")):
            raise LitlabError(f'{path}:{number}: needs string fields "instruction" and "response"')
        pairs.append({"instruction": pair["instruction"], "response": pair["response"]})
    if not pairs:
        raise LitlabError(f"{path}: holds no instruction/response pairs")
    return pairs


def left_aligned(ids: Tensor, lengths: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded rows (B, T) moved to the right end (padding on the left, as `generate()` continues them) and
    their mask."""
    steps = torch.arange(ids.size(1))
    shift = ids.size(1) - lengths.unsqueeze(1)  # (B, 1)
    mask = steps >= shift  # (B, T)
    moved = ids.gather(1, (steps - shift) % ids.size(1))
    return torch.where(mask, moved, pad_id), mask.long()


class InstructionPairs(Dataset):
    """Tokenised pairs; a batch (`__getitems__`) holds `ids`, `attention_mask` and `labels` (B, T) for the loss and,
    for generation, the left-padded prompts (`prompt_ids`, `prompt_mask`) with the texts (`instruction`,
    `response`)."""

    def __init__(self, pairs: list[dict[str, str]], tokenizer, max_length: int) -> None:
        self.pairs, self.tokenizer, self.max_length = pairs, tokenizer, max_length
        prompts = tokenizer([PROMPT.format(**p) for p in pairs], add_special_tokens=False)["input_ids"]
        answers = tokenizer([p["response"] for p in pairs], add_special_tokens=False)["input_ids"]
        prompts = [ids[: max_length - 1] for ids in prompts]  # room for one response token at least
        ends = [ids + [tokenizer.eos_token_id] for ids in answers]  # the model learns where an answer stops
        full = [p + a[: max_length - len(p)] for p, a in zip(prompts, ends)]
        self.full, self.prompts = Ragged.from_lists(full), Ragged.from_lists(prompts)  # tokenised once, held flat

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitems__(self, indices: list[int]) -> dict:
        pad_id, index = self.tokenizer.pad_token_id, index_tensor(indices)
        ids, lengths = self.full.batch(index, pad_id)  # (B, T), right-padded
        prompt_ids, prompt_lengths = self.prompts.batch(index, pad_id)
        steps = torch.arange(ids.size(1))
        mask = steps < lengths.unsqueeze(1)  # (B, T)
        answer = mask & (steps >= prompt_lengths.unsqueeze(1))
        prompt_ids, prompt_mask = left_aligned(prompt_ids, prompt_lengths, pad_id)
        return {
            "ids": ids,
            "attention_mask": mask.long(),
            "labels": torch.where(answer, ids, -100),  # prompt and padding: no loss
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "instruction": [self.pairs[i]["instruction"] for i in indices],
            "response": [self.pairs[i]["response"] for i in indices],
        }


class InstructionData(DataModule):
    """Instruction/response pairs from JSONL files, tokenised with a Hugging Face tokenizer.

    Args:
        train_file, val_file: JSON lines of {"instruction", "response"}; val_file: the held-out questions whose
            generated answers are scored.
        test_file: defaults to `val_file`.
        tokenizer: a Hugging Face tokenizer name or folder (the model's); one without a padding token pads with its
            end-of-text token (padding is masked by position, never by id).
        max_length: tokens of prompt and response together (longer ones are cut).
        predict_questions: instructions to answer with `litlab predict`.
        batch_size, eval_batch_size, num_workers: see `DataModule`.

    What a model may read (`Experiment.from_data`): `tokenizer` (the Hugging Face object).
    """

    def __init__(
        self,
        train_file: Path = Path("data/instructions/train.jsonl"),
        val_file: Path = Path("data/instructions/val.jsonl"),
        test_file: Path | None = None,
        tokenizer: str = "openai-community/gpt2",
        max_length: PositiveInt = 512,
        predict_questions: Strings | None = None,
        batch_size: PositiveInt = 4,
        eval_batch_size: PositiveInt | None = None,
        num_workers: NonNegativeInt = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        self._tokenizer = None
        self.splits: dict[str, InstructionPairs] = {}

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = HubTokenizer(self.hparams.tokenizer).tokenizer
            if self._tokenizer.pad_token_id is None:  # GPT-2's: padding is masked by position, so any id will do
                self._tokenizer.pad_token = self._tokenizer.eos_token
        return self._tokenizer

    def prepare_data(self) -> None:
        HubTokenizer(self.hparams.tokenizer)  # rank 0 fills the hub cache

    def setup(self, stage: str) -> None:
        hp = self.hparams
        files = {"train": hp.train_file, "val": hp.val_file, "test": hp.test_file or hp.val_file}
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ())
        for split in wanted:
            if split not in self.splits:
                self.splits[split] = InstructionPairs(read_pairs(files[split]), self.tokenizer, hp.max_length)

    def train_dataloader(self) -> DataLoader:
        return self.loader(self.splits["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.splits["val"])

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.splits["test"])

    def predict_dataloader(self) -> DataLoader:
        questions = self.hparams.predict_questions
        if not questions or not all(q.strip() for q in questions):
            raise LitlabError(
                "nothing to predict: pass --data.predict_questions '[\"Where was he born?\"]' (no empty ones)"
            )
        pairs = [{"instruction": q, "response": ""} for q in questions]
        return self.loader(InstructionPairs(pairs, self.tokenizer, self.hparams.max_length))

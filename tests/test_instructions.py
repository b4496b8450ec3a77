"""Instruction/response pairs for a causal LM (`datamodules.instructions`) and its LoRA fine-tuning (`gpt2_lora`)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES, QUIET, cli, config, fails_in_one_line, tiny

from datamodules.instructions import PROMPT, InstructionData

GPT2_TINY = ("--config", config("gpt2_lora"), *tiny("gpt2_lora"), *QUIET)


@pytest.fixture(scope="module")
def pairs() -> InstructionData:
    data = InstructionData(
        train_file=FIXTURES / "instructions/train.jsonl", val_file=FIXTURES / "instructions/val.jsonl",
        tokenizer=str(FIXTURES / "tiny-gpt2"), max_length=128,
    )  # fmt: skip
    data.setup("fit")
    return data


def test_labels_are_the_response_and_its_end_never_the_prompt_or_the_padding(pairs):
    tokenizer, dataset = pairs.tokenizer, pairs.splits["train"]
    batch = dataset.__getitems__([0, 1, 2])
    for row, pair in enumerate(dataset.pairs[:3]):
        prompt = tokenizer(PROMPT.format(**pair), add_special_tokens=False)["input_ids"]
        answer = tokenizer(pair["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        length = len(prompt) + len(answer)
        assert batch["ids"][row, :length].tolist() == prompt + answer
        assert batch["labels"][row].tolist() == [-100] * len(prompt) + answer + [-100] * (batch["ids"].size(1) - length)
        assert batch["attention_mask"][row].sum() == length
        # the prompt alone, padded on the left, for generate()
        assert batch["prompt_ids"][row, -len(prompt) :].tolist() == prompt
        assert batch["prompt_mask"][row].tolist() == [0] * (batch["prompt_ids"].size(1) - len(prompt)) + [1] * len(
            prompt
        )
    # GPT-2 has no padding token: it pads with end-of-text, which stays a label where it ends an answer
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert (batch["labels"] == tokenizer.eos_token_id).sum(1).tolist() == [1, 1, 1]


def test_gpt2_lora_trains_the_attention_adapters_alone(tmp_path):
    from transformers import AutoModelForCausalLM

    run = cli("fit", *GPT2_TINY, "--trainer.max_epochs=1", "--trainer.accumulate_grad_batches=1")
    trainable = {name: p for name, p in run.model.named_parameters() if p.requires_grad}
    assert all("c_attn.lora_" in name for name in trainable)
    assert sum(p.numel() for p in trainable.values()) == 2 * 8 * (32 + 3 * 32)  # 2 blocks, r 8, 32 -> 96
    assert all(p.abs().sum() > 0 for name, p in trainable.items() if "lora_B" in name)  # B starts at 0: it learned
    hub = AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny-gpt2").state_dict()
    frozen = {n.replace("net.base_model.model.", "").replace(".base_layer", ""): p for n, p in
              run.model.named_parameters() if not p.requires_grad}  # fmt: skip
    assert frozen and all(torch.equal(p, hub[name]) for name, p in frozen.items())  # the base is untouched


def test_bad_instruction_files_are_one_line(tmp_path, capfd):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "Where?", "response": "Here."}\nnot json\n')
    fails_in_one_line(capfd, "fit", *GPT2_TINY, f"--data.train_file={bad}", naming="bad.jsonl:2")
    bad.write_text(json.dumps({"question": "Where?", "answer": "Here."}) + "\n")
    fails_in_one_line(capfd, "fit", *GPT2_TINY, f"--data.train_file={bad}", naming="instruction")
    fails_in_one_line(capfd, "fit", *GPT2_TINY, f"--data.train_file={tmp_path / 'none.jsonl'}", naming="no such file")
    fails_in_one_line(capfd, "predict", *GPT2_TINY, "--data.predict_questions=['']", naming="nothing to predict")

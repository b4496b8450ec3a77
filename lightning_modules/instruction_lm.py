"""A hub causal language model fine-tuned on instruction/response pairs (notebook 15.9.4: GPT-2 medium with LoRA).

The notebook trained `gpt2-medium` with peft LoRA (r 8, alpha 32, dropout 0.05) for 100 epochs at lr 5e-3 on two
private facts among 200 web FAQ pairs; the loss fell only as it over-fitted, and a reworded question got a wrong answer.
Here the loss is on the responses alone (`datamodules.instructions`), and held-out questions are answered with
`generate()` each validation: `val/exact_match` (the answer equals the reference, spaces trimmed) and
`val/fuzzy_match` (difflib's similarity ratio of answer and reference, 0-1, averaged), so a reworded question is
measured rather than eyeballed. LoRA is litlab's (`--lora`, `litlab.adapters`) on GPT-2's fused attention projection
`c_attn` (or `q_proj`/`v_proj` of Llama-style models) by default.

    litlab fit --config configs/gpt2_lora.yaml --data.train_file pairs.jsonl --data.val_file held_out.jsonl
    litlab predict --ckpt_path <best.ckpt> --data.predict_questions '["Where was Liao Nianbo born?"]'
"""

from __future__ import annotations

import difflib

import torch
from jsonargparse.typing import NonNegativeFloat, PositiveInt
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_modules.hub import from_recorded_config, load_pretrained
from litlab.experiment import Experiment, per_stage


class InstructionLM(Experiment):
    """A causal LM (`AutoModelForCausalLM`) that answers instructions.

    Args:
        pretrained: a Hugging Face causal LM (name or folder): `openai-community/gpt2`, `openai-community/gpt2-medium`
            (the notebook's), or a local folder.
        max_new_tokens: the longest generated answer.
        temperature: 0: greedy decoding (val/test); above 0, sampling at this temperature with `top_p`.
        top_p: nucleus sampling's probability mass.
        hf_config: the model's config, recorded at the first fit.
        kwargs: the optimizer and schedule (`Experiment`).
    """

    monitor, monitor_mode = "val/loss", "min"
    prediction_format = "{input} -> {output}"
    lora_targets = ("c_attn", "q_proj", "v_proj")
    request_settings = ("max_new_tokens", "temperature", "top_p")

    def __init__(
        self,
        pretrained: str = "openai-community/gpt2",
        max_new_tokens: PositiveInt = 64,
        temperature: NonNegativeFloat = 0.0,
        top_p: float = 0.9,
        hf_config: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.net: nn.Module | None = None
        self.exact, self.fuzzy = per_stage(MeanMetric), per_stage(MeanMetric)

    def build(self) -> None:
        from transformers import AutoModelForCausalLM

        if self.hparams.hf_config is not None:  # from a checkpoint: its weights arrive when it is restored
            self.net = from_recorded_config(AutoModelForCausalLM, self.hparams.hf_config)
            return
        self.net = load_pretrained(AutoModelForCausalLM, self.hparams.pretrained)
        self.learned["hf_config"] = self.net.config.to_diff_dict()

    def answer(self, batch: dict) -> list[str]:
        """The generated answers to the batch's left-padded prompts, up to the end-of-text token."""
        tokenizer = self.from_data("tokenizer")
        temperature = self.setting("temperature")
        sampling = {"do_sample": True, "temperature": temperature, "top_p": self.setting("top_p")}
        generated = self.net.generate(
            input_ids=batch["prompt_ids"],
            attention_mask=batch["prompt_mask"],
            max_new_tokens=self.setting("max_new_tokens"),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **(sampling if temperature > 0 else {"do_sample": False}),
        )  # (B, prompt + new)
        new = generated[:, batch["prompt_ids"].size(1) :]
        return [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        out = self.net(input_ids=batch["ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        self.log_loss(stage, out.loss, batch_size=len(batch["ids"]))
        if stage != "train":
            answers, references = self.answer(batch), [r.strip() for r in batch["response"]]
            exact = torch.tensor([a == r for a, r in zip(answers, references)], dtype=torch.float)
            fuzzy = torch.tensor([difflib.SequenceMatcher(a=a, b=r).ratio() for a, r in zip(answers, references)])
            self.exact[stage](exact)
            self.fuzzy[stage](fuzzy)
            self.log(f"{stage}/exact_match", self.exact[stage], batch_size=len(answers))
            self.log(f"{stage}/fuzzy_match", self.fuzzy[stage], batch_size=len(answers))
            self.keep_for_figures(rows=list(zip(batch["instruction"], answers, references)))
        return out.loss

    def on_validation_epoch_end(self) -> None:
        if self.figure_batch is not None:
            self.report_table("val/answers", ["instruction", "answer", "reference"], self.figure_batch["rows"])

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        return [{"input": q, "output": a} for q, a in zip(batch["instruction"], self.answer(batch))]

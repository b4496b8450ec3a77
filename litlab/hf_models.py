"""Hugging Face models inside litlab: fetched once, recorded in the checkpoint, rebuilt without the hub.

`from_pretrained` is called for the first `fit` only (rank 0 fills the cache in `prepare_data`); the model's config is
then kept as a hyperparameter, so `test`/`predict` from a checkpoint rebuild the same architecture offline and the
checkpoint's weights are loaded into it.
"""

from __future__ import annotations

from torch import nn

from litlab.errors import LitlabError, first_line


def load_hf(auto_class, name: str, **kwargs):
    """`auto_class.from_pretrained(name)` (a model in train mode); offline without a cached copy, one clear line."""
    try:
        loaded = auto_class.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        from huggingface_hub.constants import HF_HUB_CACHE

        raise LitlabError(
            f"could not load {name!r} (looked in {HF_HUB_CACHE} and the folder {name!r}: "
            f"{first_line(err, 100)}): connect to the internet once, or pass a local folder"
        ) from None
    if isinstance(loaded, nn.Module):
        loaded.train()  # `from_pretrained` returns it in eval mode (no dropout), and Lightning keeps modules' modes
    return loaded


def load_tokenizer(name: str):
    """A Hugging Face tokenizer by hub name or local folder (`AutoTokenizer`), with `load_hf`'s offline error."""
    from transformers import AutoTokenizer

    return load_hf(AutoTokenizer, name)


def from_recorded_config(model_class, hf_config: dict):
    """A randomly initialised model of the recorded architecture (`config.to_diff_dict()`), for weights to come;
    `model_class` is an Auto class or a model class."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(**hf_config)
    return model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)

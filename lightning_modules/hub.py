"""Hugging Face models inside litlab: fetched once, recorded in the checkpoint, rebuilt without the hub.

`load_pretrained` is called for the first `fit` only (rank 0 fills the cache in `prepare_data`); the model's config is
then kept as a hyperparameter, so `test`/`predict` from a checkpoint rebuild the same architecture offline
(`from_recorded_config`) and the checkpoint's weights are loaded into it.
"""

from __future__ import annotations

from torch import nn

from litlab.errors import unavailable_from_hub


def load_pretrained(auto_class, name: str, **kwargs):
    """`auto_class.from_pretrained(name)` in train mode; offline without a cached copy, one clear line."""
    try:
        loaded = auto_class.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise unavailable_from_hub(name, err) from None
    if isinstance(loaded, nn.Module):
        loaded.train()  # `from_pretrained` returns it in eval mode (no dropout), and Lightning keeps modules' modes
    return loaded


def from_recorded_config(model_class, hf_config: dict):
    """A randomly initialised model of the recorded architecture (`config.to_diff_dict()`), for weights to come;
    `model_class` is an Auto class or a model class."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(**hf_config)
    return model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)

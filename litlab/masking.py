"""Credentials kept out of what a run writes and shows: `config.yaml`, checkpoints, the W&B run's config and its
record of the command line, and the lines `litlab tune` prints.

Masked: the password of a URL (`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`), and the value
of any config key or `key=value` whose name says it is a credential (password, secret, token, API key, credentials).
"""

from __future__ import annotations

import re
import sys
from typing import Any

MASK = "***"
# a key (its last dotted part) that names a credential; not the tokenizer's `pad_token` and the like
SECRET_NAME = re.compile(
    r"^(?:[\w-]*[_-])?(?:password|passwd|secret|api[_-]?key|credentials?)$|^(?:hf|access|auth|api|bearer)?[_-]?token$",
    re.IGNORECASE,
)
URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]+:)(?P<password>[^@\s]+)(?P<tail>@)")
NAMED_VALUE = re.compile(r"(?P<name>[\w.-]+)(?P<sep>\s*=\s*)(?P<value>[^\s,;&]+)")


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.match(name.lstrip("-").rsplit(".", 1)[-1]))


def mask_text(text: str) -> str:
    """`text` with URL passwords and `name=value` credentials masked."""
    text = URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", text)
    return NAMED_VALUE.sub(lambda m: f"{m['name']}{m['sep']}{MASK}" if is_secret_name(m["name"]) else m[0], text)


def mask(value: Any, key: str = "") -> Any:
    """A config (dicts, lists, strings) with its credentials masked: the whole value of a key named like one, and the
    passwords and `name=value` credentials inside every string."""
    if isinstance(value, dict):
        return {k: mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask(v) for v in value)
    if key and is_secret_name(key) and value not in (None, "", False):
        return MASK
    return mask_text(value) if isinstance(value, str) else value


def mask_command_line() -> None:
    """Mask credentials in `sys.argv` itself, once the arguments are read: W&B records the command line of its runs."""
    sys.argv[:] = [mask_text(arg) for arg in sys.argv]

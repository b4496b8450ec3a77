"""How litlab reports what a user can fix: one exception type, shown as a single line (`litlab: error: ...`) and
exit code 2 instead of a traceback, and the library notices it keeps quiet.

Raise `LitlabError` for what a user can fix: bad input, missing or corrupt data, a checkpoint that does not fit the
config. Bugs stay ordinary exceptions, with their tracebacks.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings


class LitlabError(Exception):
    """A problem with the user's input, stated in one line that says what is wrong and how to fix it."""


def first_line(err: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, cut to `limit` characters; its type's name when it has none (an
    assert's, a bare KeyError's), so that a one-line error never ends in an empty reason."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


def fail(message: str) -> None:
    """Print the one line and exit with code 2."""
    sys.stderr.write(f"litlab: error: {message}\n")  # one write: the ranks of a distributed run share the stream
    sys.stderr.flush()
    sys.exit(2)


# The optional packages litlab uses and the extra that installs each (pyproject's optional-dependencies).
EXTRAS = {
    "cv2": "detection",
    "pycocotools": "detection",
    "kagglehub": "detection",
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "matplotlib": "plots",
    "peft": "peft",
    "litserve": "serve",
    "soundfile": "speech",
    "tensorboard": "tensorboard",
    "tensorboardX": "tensorboard",
    "optuna": "tune",
    "optuna_integration": "tune",
}


def missing_package(err: BaseException | None) -> ModuleNotFoundError | None:
    """The ModuleNotFoundError behind an error (jsonargparse wraps the one a class raises while it is instantiated)."""
    while err is not None and not isinstance(err, ModuleNotFoundError):
        err = err.__cause__ or err.__context__
    return err


def raised_by_a_constructor(err: BaseException | None) -> LitlabError | None:
    """The LitlabError a model or DataModule raised in `__init__`: jsonargparse, instantiating the class from the
    config, raises its own ValueError with the constructor's error as its cause."""
    while err is not None and not isinstance(err, LitlabError):
        err = err.__cause__
    return err


def fail_if_missing_package(err: BaseException) -> None:
    """Exit with the install hint when a missing package is behind `err` (else return: the caller re-raises)."""
    missing = missing_package(err)
    if missing is not None:
        fail(install_hint(missing))


def install_hint(err: ModuleNotFoundError) -> str:
    """One line naming what is missing and how to install it: the litlab extra when one provides it (Lightning and
    torchmetrics name the package in their message, not in `err.name`)."""
    names = [err.name.split(".")[0]] if err.name else []
    names += re.findall(r"\w+", str(err))
    package = next((name for name in names if name in EXTRAS), None)
    if package is not None:
        extra = EXTRAS[package]
        return f"`{package}` is not installed: pip install 'litlab[{extra}]' (in a clone: pip install -e '.[{extra}]')"
    what = f"`{err.name}`" if err.name else first_line(err, 200)
    return f"a package is not installed: {what} (install it into the environment litlab runs in)"


def unavailable_from_hub(name: str, err: BaseException) -> LitlabError:
    """A model or tokenizer that Hugging Face could not load (offline, no cached copy, no such folder), in one line."""
    from huggingface_hub.constants import HF_HUB_CACHE

    return LitlabError(
        f"could not load {name!r} (looked in {HF_HUB_CACHE} and the folder {name!r}: {first_line(err, 100)}): "
        f"connect to the internet once, or pass a local folder"
    )


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


def quiet_known_noise() -> None:
    """Notices that say nothing to a litlab user."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # Lightning vs. newer torch
    warnings.filterwarnings("ignore", message=r".*callbacks used to create the checkpoint need to be provided.*")
    warnings.filterwarnings("ignore", message=r".*The dirpath has changed from.*")  # test/predict in a new run dir
    warnings.filterwarnings("ignore", message=r".*'set_vital' is deprecated.*")  # torchdata's loader vs. newer torch
    # sparse embedding gradients (`sparse_grads`): torch's note that it does not re-check each sparse tensor it builds
    warnings.filterwarnings("ignore", message=r".*Sparse invariant checks are implicitly disabled.*")
    # the launcher hands LightningCLI the arguments it prepared (the checkpoint's config first), not sys.argv
    warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter is intended to run from within Python")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())

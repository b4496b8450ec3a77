"""How litlab reports what a user can fix: one exception type, shown as a single line (`litlab: error: ...`) and
exit code 2 instead of a traceback, and the library notices it keeps quiet.

Raise `LitlabError` for what a user can fix: bad input, missing or corrupt data, a checkpoint that does not fit the
config. Bugs stay ordinary exceptions, with their tracebacks.
"""

from __future__ import annotations

import logging
import sys
import warnings


class LitlabError(Exception):
    """A problem with the user's input, stated in one line that says what is wrong and how to fix it."""


def fail(message: str) -> None:
    """Print the one line and exit with code 2."""
    print(f"litlab: error: {message}", file=sys.stderr)
    sys.exit(2)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


def quiet_known_noise() -> None:
    """Notices that say nothing to a litlab user."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # Lightning vs. newer torch
    warnings.filterwarnings("ignore", message=r".*callbacks used to create the checkpoint need to be provided.*")
    warnings.filterwarnings("ignore", message=r".*The dirpath has changed from.*")  # test/predict in a new run dir
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())

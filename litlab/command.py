"""The `litlab` console script. Ctrl-C before a fit can save anything (while torch and Lightning are imported, the
config is parsed, the data read) or outside a fit ends the command with one line instead of a traceback, and still
by SIGINT (exit status 130); a fit's own Ctrl-C is `litlab.survival`'s."""

from __future__ import annotations

import sys
from types import TracebackType


def run() -> None:
    previous = sys.excepthook

    def interrupted(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            print("litlab: interrupted", file=sys.stderr)
        else:
            previous(kind, value, traceback)

    sys.excepthook = interrupted
    from litlab.__main__ import main  # imports torch and Lightning: seconds

    main()

"""The `litlab` console script. Ctrl-C before a fit can save anything (while torch and Lightning are imported, the
config is parsed, the data read) or outside a fit ends the command with one line instead of a traceback, and by
SIGINT (`litlab.interrupts`); a fit's own Ctrl-C is `litlab.survival`'s."""

from __future__ import annotations

from litlab import interrupts


def run() -> None:
    interrupts.install()
    from litlab.__main__ import main  # imports torch and Lightning: seconds

    interrupts.end_if_received()  # a Ctrl-C that an import swallowed
    main()

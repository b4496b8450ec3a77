"""Ctrl-C outside a fit's training loop (`survival.Interruption` has that one): while torch and Lightning are imported,
the config is parsed, the data read, or a validate, test or predict runs, the command ends with one line, `litlab:
interrupted`, and by SIGINT (status 130 where Lightning caught the interrupt).

Python's own handler only raises `KeyboardInterrupt`, and the exception can be lost on its way up: under load, a
Ctrl-C during start-up was swallowed among the imports (numpy's, where it left a trace), and the command went on as if
nothing happened (the whole fit ran) or failed later on the half-imported module. So `record` also remembers the
signal, and the command looks at `received()` before its work starts (`litlab.command`, `cli.LitlabCLI.run`) and when
it ends on an error (the hook `install` sets) or on Lightning's exit after it caught the interrupt
(`survival.exit_on_signal`). This module imports nothing heavy: it is installed before torch is imported."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType, TracebackType
from typing import NoReturn

MESSAGE = "litlab: interrupted"
_received: list[int] = []


def install() -> None:
    """Records Ctrl-C from now on where Python's own handler is in place (not where it is ignored: `nohup`, `&`), and
    ends a command that an interrupt stopped with the one line instead of a traceback."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, record)
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            announce()  # Python then ends the process by SIGINT
        elif received():  # a swallowed Ctrl-C that broke what came after it (a half-imported module)
            end_by_sigint()
        else:
            previous(kind, value, traceback)

    sys.excepthook = excepthook


def record(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def received() -> bool:
    return bool(_received)


def announce() -> None:
    """The one line a command stopped by Ctrl-C ends with."""
    sys.stderr.write(f"{MESSAGE}\n")
    sys.stderr.flush()


def end_by_sigint() -> NoReturn:
    """The one line, then the process ends by SIGINT, as a shell expects of a command stopped by Ctrl-C."""
    announce()
    sys.stdout.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    raise SystemExit(128 + signal.SIGINT)  # where the signal cannot end it (not reached on POSIX)


def end_if_received() -> None:
    """Ends the command by SIGINT when a Ctrl-C came and was swallowed on the way (an import's)."""
    if received():
        end_by_sigint()

"""The `litlab` command: `litlab list`, `litlab tune ...` (`litlab.tune`), `litlab serve ...` (`litlab.serve`),
`litlab fit|validate|test|predict ...` (`litlab.cli.launch`). What a user can fix ends it with one line and exit
code 2; bugs keep their traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from litlab.catalogue import import_experiments, listing, uses_short_class_name
from litlab.cli import CONFIG_DIR, DESCRIPTION, SUBCOMMANDS, launch
from litlab.config_errors import explain, one_line
from litlab.errors import LitlabError, fail, fail_if_missing_package, quiet_known_noise, raised_by_a_constructor
from litlab.export import merge_main
from litlab.masking import mask_command_line

USAGE = "usage: litlab {fit,validate,test,predict,serve,tune,merge,list} [options]  (litlab <command> --help)"


def main(args: list[str] | None = None) -> None:
    quiet_known_noise()
    args = list(sys.argv[1:] if args is None else args)
    mask_command_line()  # read: W&B records the command line, with any password in it masked
    command, rest = (args[0], args[1:]) if args else (None, [])
    if command in ("list", "experiments"):
        try:
            print(listing(CONFIG_DIR, CONFIG_DIR.parent / "README.md"), flush=True)
        except BrokenPipeError:  # `litlab list | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if command in (None, "-h", "--help"):
        print(f"{USAGE}\n\n{DESCRIPTION}")
        return
    with one_line_errors():
        if uses_short_class_name(rest):
            import_experiments()
        if command == "tune":
            from litlab.tune import tune  # optuna is the [tune] extra

            tune(rest)
        elif command == "merge":
            merge_main(rest)
        elif command == "serve":
            from litlab.serve import serve_main  # litserve is the [serve] extra

            serve_main(rest)
        elif command in SUBCOMMANDS:
            launch(command, rest)
        else:
            raise LitlabError(f"no command {command!r}: {USAGE.removeprefix('usage: ')}")


@contextmanager
def one_line_errors() -> Iterator[None]:
    """What a user can fix ends the command with one line and exit code 2 (`errors.fail`); bugs keep their traceback."""
    try:
        yield
    except ArgumentError as err:
        message = explain(err)
        hint = "pass --config configs/<experiment>.yaml" if "are required" in message else "see `litlab <cmd> --help`"
        fail(f"{message} ({hint})")
    except (LitlabError, MisconfigurationException) as err:
        fail(one_line(err))
    except RuntimeError as err:
        if lost_a_peer(err):  # another rank stopped first and printed why: one line here, not a traceback
            fail(f"rank {rank_zero_only.rank} stopped: another process of the run ended first (see its error)")
        if "state_dict" not in str(err):
            raise
        fail(f"the checkpoint does not fit the configured model: {one_line(err)}")
    except (ValueError, TypeError, ImportError) as err:  # a logger or model whose package is not installed
        fail_if_missing_package(err)
        if (refused := raised_by_a_constructor(err)) is not None:
            fail(one_line(refused))
        raise


def lost_a_peer(err: RuntimeError) -> bool:
    """A collective of a distributed run failing in a rank other than 0 because a peer process is gone."""
    import torch.distributed as dist

    lost = isinstance(err, dist.DistBackendError) or "closed by peer" in str(err)
    return lost and getattr(rank_zero_only, "rank", 0) > 0


if __name__ == "__main__":
    main()

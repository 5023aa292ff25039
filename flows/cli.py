"""The `faceset` command line.

Each sub-command is a module in `flows/commands/` with `add_parser(subparsers)` and
`main(args) -> int`; they are discovered here, so adding a command touches one file.
Errors the user can fix (`FacesetError`, `RecipeError`) are printed as plain sentences
with what to do; their traceback only with `-v`, on the commands that have it, which
also print an unexpected error as one line unless `-v` is given.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
import threading
import traceback
from types import ModuleType

from flows import commands
from tasks.core.errors import FacesetError
from tasks.core.recipe import RecipeError

# In order of the help text; any other command module found is listed after these.
ORDER = ("build", "demo", "recipe", "preview", "review", "labels", "finetune", "evaluate", "apply", "takedown", "hydrate")


def _command_modules() -> list[ModuleType]:
    names = [info.name for info in pkgutil.iter_modules(commands.__path__)]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return [importlib.import_module(f"flows.commands.{name}") for name in names]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceset",
        description="Build labelled face-image datasets from the web, as a Prefect flow.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _command_modules():
        sub = module.add_parser(subparsers)
        sub.set_defaults(handler=module.main)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (`kill`, `docker stop`, systemd) stops a command as Ctrl-C does, by raising
    KeyboardInterrupt, so that Python unwinds: locks and leases are released, worker processes
    stopped, and Prefect's temporary server stopped at exit (its atexit hook). The default action
    would end the process at once and leave that server running. During a flow Prefect's own
    SIGTERM handler runs first and then calls this one."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = make_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    verbose = getattr(args, "verbose", None)  # commands with -v show tracebacks only when asked
    try:
        return int(args.handler(args) or 0)
    except (FacesetError, RecipeError) as exc:
        if verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume where it stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        if verbose is not False:
            raise
        print(f"error: {type(exc).__name__}: {exc}\nwhat to do: this looks like a bug in faceset; run the same "
              "command with -v and report what it prints", file=sys.stderr)
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)  # for callers in the same process (tests)


if __name__ == "__main__":
    sys.exit(main())

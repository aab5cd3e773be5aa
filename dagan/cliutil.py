"""What every command-line entry point shares: one-line errors with exit code 2, ``--debug`` tracebacks,
argument names accepted with dashes or underscores, and quiet logging set-up."""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from typing import Callable, List, Optional, Sequence

from .errors import DaganError


def _aliases(names) -> list:
    """``("--source_image",)`` -> ``["--source_image", "--source-image"]``."""
    flags = list(names)
    for name in names:
        if name.startswith("--"):
            body = name[2:]
            for alt in ("--" + body.replace("_", "-"), "--" + body.replace("-", "_")):
                if alt not in flags:
                    flags.append(alt)
    return flags


def _accept_both_spellings(container):
    """Make ``container.add_argument`` (a parser, group or exclusive group) register both spellings."""
    add_argument = container.add_argument
    add_exclusive = container.add_mutually_exclusive_group
    container.add_argument = lambda *names, **kwargs: add_argument(*_aliases(names), **kwargs)
    container.add_mutually_exclusive_group = lambda **kw: _accept_both_spellings(add_exclusive(**kw))
    return container


class DashUnderscoreParser(argparse.ArgumentParser):
    """An ArgumentParser where ``--source_image`` and ``--source-image`` are the same option, in argument
    groups and mutually exclusive groups too."""

    def add_argument(self, *names, **kwargs):
        return super().add_argument(*_aliases(names), **kwargs)

    def add_argument_group(self, *args, **kwargs):
        return _accept_both_spellings(super().add_argument_group(*args, **kwargs))

    def add_mutually_exclusive_group(self, **kwargs):
        return _accept_both_spellings(super().add_mutually_exclusive_group(**kwargs))

    def error(self, message: str):  # argparse's own usage errors: exit 2 with one line after the usage
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def setup_logging(quiet: bool = False, debug: bool = False) -> None:
    level = logging.DEBUG if debug else (logging.ERROR if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s")
    logging.getLogger("dagan").setLevel(level)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's stop), raised like Ctrl-C so that partial outputs are cleaned up."""


def _terminate(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_interrupts():
    """While a CLI runs in the main thread, SIGTERM unwinds it like Ctrl-C (``finally`` blocks and context
    managers run: temporary outputs are removed, encoders killed) instead of ending the process on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_cli(main: Callable[[Optional[List[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run ``main(argv)``; user mistakes (:class:`DaganError`) print one line and return 2; Ctrl-C returns 130
    and SIGTERM 143, both after the partial outputs are removed.

    ``--debug`` anywhere in ``argv`` re-raises so the full traceback is shown.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        with _sigterm_interrupts():
            return int(main(args) or 0)
    except DaganError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if debug:
            raise
        terminated = isinstance(exc, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 143 if terminated else 130

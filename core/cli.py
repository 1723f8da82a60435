"""What every command-line entry point does around its work: console logging, stop signals, and
errors a user can fix shown as one ``error: ...`` line with exit status 2 instead of a traceback."""
from __future__ import annotations

import logging
import sys
from typing import Callable

from . import signals
from .locks import FolderBusyError
from .logs import setup_console_logging

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FolderBusyError)
"""Errors that describe bad input (:class:`core.config.ConfigError` is a ValueError): shown without a traceback."""

RESUME_HINT = "run the same command again to resume"


def run_main(body: Callable[[], int | None], *, log_level: int | None = logging.INFO,
             user_errors: tuple[type[BaseException], ...] = (),
             resume_hint: str = RESUME_HINT) -> int:
    """Run ``body`` as a command's main part and return its exit status.

    Logging goes to the console at ``log_level`` (None: ``body`` sets it up); SIGTERM / SIGINT raise
    :class:`core.signals.Interrupted` (training loops checkpoint first), reported with
    ``resume_hint`` and the signal's exit status (130, 143). :data:`USER_ERRORS` and ``user_errors``
    print ``error: <message>`` on stderr and return 2; ``body``'s own return value (None: 0) otherwise.
    """
    if log_level is not None:
        setup_console_logging(log_level)
    signals.handle_stop_signals()
    try:
        status = body()
    except USER_ERRORS + tuple(user_errors) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except signals.Interrupted as err:
        print(f"{err}; {resume_hint}", file=sys.stderr)
        return err.exit_code
    return 0 if status is None else int(status)

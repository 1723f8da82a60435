"""Stopping long runs cleanly on SIGTERM / SIGINT (a scheduler's kill, Ctrl-C).

Entry points call :func:`handle_stop_signals` once: from then on either signal raises
:class:`Interrupted` where the program is, so ``except``/``finally`` blocks clean up (a feature-cache
entry being extracted is removed, nothing half-written stays). Inside a training loop
(:func:`deferred`) the signal only sets a flag; the loop finishes the update it is in, writes its
checkpoint and raises :class:`Interrupted` itself, so the next run resumes exactly there. A second
signal while one is pending stops at once.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}
"""What a process stopped by a signal exits with (128 + the signal's number, as a shell reports it)."""


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; ``signum`` says which, ``saved`` where a training loop left its checkpoint."""

    def __init__(self, signum: int, saved: str | None = None):
        self.signum, self.saved = signum, saved
        super().__init__(f"stopped by {signal.Signals(signum).name}"
                         + (f"; checkpoint saved: {saved}" if saved else ""))

    def __reduce__(self):  # crosses process boundaries (benchmark workers)
        return type(self), (self.signum, self.saved)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 1)


def _raise(signum, frame):
    raise Interrupted(signum)


def handle_stop_signals() -> None:
    """SIGTERM and SIGINT raise :class:`Interrupted` (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _raise)


class StopFlag:
    """Set by a stop signal inside :func:`deferred`; ``signum`` is the signal, or None."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextmanager
def deferred():
    """Within the block a stop signal sets the yielded :class:`StopFlag` instead of interrupting; a
    second one raises :class:`Interrupted` at once. The previous handlers come back afterwards."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def note(signum, frame):
        if flag:
            raise Interrupted(signum)
        flag.signum = signum

    previous = {s: signal.signal(s, note) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

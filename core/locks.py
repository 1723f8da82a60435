"""One process at a time in a run folder: an exclusive ``fcntl.flock`` that fails at once when held.

Two processes training one experiment (or pre-training into one folder) would overwrite each other's
checkpoints and logs; the second is refused with the holder named (process id and host, written in the
lock file). The kernel releases the lock of a killed process, so a stale file never blocks a resumed run.
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: runs unlocked
    fcntl = None


class FolderBusyError(RuntimeError):
    """Another live process holds the folder's lock."""


@contextlib.contextmanager
def exclusive(folder: str | Path, what: str):
    """Hold ``<folder>/.lock`` for the block; FolderBusyError naming ``what`` and the holder when another
    process holds it. Without ``fcntl``, or on a filesystem without locks, the block runs unlocked."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    path = folder / ".lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise FolderBusyError(f"{what} ({folder}) is in use by {holder}: wait for it to end, or stop it "
                                  "(it resumes from its last checkpoint)") from None
        except OSError:  # no locks on this filesystem
            yield
            return
        f.truncate(0)
        f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield

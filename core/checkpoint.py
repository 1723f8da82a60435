"""Atomic writes: a killed process never leaves a half-written checkpoint or results file behind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def previous_checkpoint(path: str | Path) -> Path:
    """Where :func:`atomic_save` with ``keep_previous`` keeps the file it replaces: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def atomic_save(obj: object, path: str | Path, keep_previous: bool = False) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``; with
    ``keep_previous`` the file it replaces is kept as :func:`previous_checkpoint` ``(path)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.is_file():  # a hard link: there is a last.pt at every moment
            previous = previous_checkpoint(path)
            previous.unlink(missing_ok=True)
            os.link(path, previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path

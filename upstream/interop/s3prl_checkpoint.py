"""Reading S3PRL checkpoint files safely: one loader and one error form for every S3PRL format here."""
from __future__ import annotations

import argparse
import pickle
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import torch


def checkpoint_error(path: Path, why: str) -> ValueError:
    """The error for an unusable checkpoint: it names the file."""
    return ValueError(f"{path}: {why}")


class _Stub:
    """Stands in for a pickled object of a module that is not importable here (trusted loads only)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_state"] = state


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (_Stub,), {"__module__": self.__name__})


@contextmanager
def _legacy_modules():
    """Old S3PRL checkpoints pickle a scheduler from a top-level ``optimizers`` module (see builder.py)."""
    added = "optimizers" not in sys.modules
    if added:
        sys.modules["optimizers"] = _StubModule("optimizers")
    try:
        yield
    finally:
        if added:
            sys.modules.pop("optimizers", None)


def load_checkpoint(path: Path, trusted: bool) -> object:
    """``torch.load`` an S3PRL checkpoint on the CPU.

    By default only tensors, plain containers and ``argparse.Namespace`` (S3PRL's runner saves its
    arguments) are unpickled; ``trusted=True`` allows any object, as S3PRL itself does.

    Raises:
        FileNotFoundError: no such file.
        ValueError (naming the file): unreadable, or holding objects a safe load refuses.
    """
    if not path.is_file():
        raise FileNotFoundError(f"S3PRL checkpoint not found: {path}")
    try:
        if trusted:
            with _legacy_modules():
                return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # with weights_only, also what a file of random bytes gives
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "Unsupported global" in ln or "WeightsUnpickler" in ln),
                      lines[0] if lines else "")
        raise checkpoint_error(
            path,
            "not a torch checkpoint, or one holding pickled objects beyond tensors and plain containers "
            f"({reason}); S3PRL loads such files with weights_only=False: if you trust this file, pass trusted=True",
        ) from None
    except Exception as e:  # noqa: BLE001  (re-raised: any failure to load becomes the one error naming the file)
        raise checkpoint_error(path, f"not a torch checkpoint ({type(e).__name__}: {e})") from None

"""Logging for every command: the console (:func:`setup_console_logging`) and an experiment's
``train.log`` (:func:`log_to_file`), which gets every message, the per-step losses included."""
from __future__ import annotations

import logging
from pathlib import Path


def setup_console_logging(level: int) -> None:
    """Log ``level`` and up to the console."""
    console = logging.StreamHandler()
    console.setLevel(level)
    logging.basicConfig(level=level, format="%(levelname)s %(message)s", handlers=[console])


def log_to_file(logger: logging.Logger, path: Path) -> None:
    """Send every record of ``logger`` (DEBUG and up) to ``path`` as well, replacing the file handler
    an earlier experiment of this process attached (the console keeps its own level)."""
    logger.setLevel(logging.DEBUG)
    target = str(Path(path).resolve())
    if any(getattr(h, "baseFilename", None) == target for h in logger.handlers):
        return
    for h in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        logger.removeHandler(h)
        h.close()
    handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)

"""Libri-light limited-supervision sets (``librispeech_finetuning/``) -> manifests.

Layout: ``librispeech_finetuning/1h/{0..5}/{clean,other}/<speaker>/<chapter>/…`` and
``librispeech_finetuning/9h/{clean,other}/…``, each in the LibriSpeech layout. The three settings:
    ``10min``: ``1h/0`` (one of the six 10-minute folds)
    ``1h``:    all of ``1h`` (the six folds)
    ``10h``:   ``1h`` + ``9h``
"""
from __future__ import annotations

from pathlib import Path

from .librispeech import read_librispeech_dir
from .manifest import ManifestError, Record, Skipped, prepare_manifests

SUBSETS = ("10min", "1h", "10h")


def find_finetuning_root(root: str | Path) -> Path:
    """``<root>/librispeech_finetuning`` or ``<root>`` itself when it holds ``1h/``."""
    root = Path(root)
    for candidate in (root / "librispeech_finetuning", root):
        if (candidate / "1h").is_dir():
            return candidate
    raise ManifestError(f"Libri-light limited set not found: neither {root / 'librispeech_finetuning' / '1h'} "
                        f"nor {root / '1h'} exists")


def subset_dirs(root: str | Path, subset: str) -> list[Path]:
    """The LibriSpeech-layout folders (``…/clean``, ``…/other``) that make up ``subset``."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown Libri-light subset {subset!r}; choose from {SUBSETS}")
    base = find_finetuning_root(root)
    folds = [base / "1h" / "0"] if subset == "10min" else sorted(p for p in (base / "1h").iterdir() if p.is_dir())
    if subset == "10h":
        if not (base / "9h").is_dir():
            raise ManifestError(f"Libri-light 10h needs {base / '9h'}, which does not exist")
        folds.append(base / "9h")
    dirs = [d for fold in folds for d in (fold / "clean", fold / "other") if d.is_dir()]
    if not dirs:
        raise ManifestError(f"Libri-light {subset}: no clean/ or other/ folders under {', '.join(map(str, folds))}")
    return dirs


def read_librilight(root: str | Path, subset: str, skipped: Skipped | None = None) -> list[Record]:
    """Every utterance of a Libri-light setting; ids are prefixed with the folder (``1h-0-clean/``) to stay unique.
    Unreadable audio goes to ``skipped`` (None: an error), as in :func:`corpora.librispeech.read_librispeech_dir`."""
    base = find_finetuning_root(root)
    records: list[Record] = []
    for d in subset_dirs(root, subset):
        prefix = "-".join(d.relative_to(base).parts) + "/"
        records += read_librispeech_dir(d, id_prefix=prefix, skipped=skipped)
    return records


def prepare_librilight(root: str | Path, out_dir: str | Path, subsets: list[str]) -> dict[str, Path]:
    """Write ``<out_dir>/librilight-<subset>.tsv`` for each setting named (``10min``, ``1h``, ``10h``)
    (:func:`corpora.manifest.prepare_manifests`: idempotent); returns ``librilight-<subset>`` -> path."""
    stamp = {"root": str(Path(root).resolve()), "subsets": list(subsets), "version": 1}

    def read():
        skipped: Skipped = []
        return {f"librilight-{s}": read_librilight(root, s, skipped) for s in subsets}, skipped

    return prepare_manifests(out_dir, "librilight", stamp, read)

"""Hugging Face model ids: :func:`resolve_model` finds a ``namespace/name`` in the local Hugging Face cache, or
downloads its configs and weights (only those) from the hub."""
from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from .model import has_weights

HUB_CONFIGS = ["config.json", "preprocessor_config.json"]
HUB_WEIGHTS = (["model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json"],
               ["pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json"])
"""What a model id fetches from the hub: its configs and one format of full-precision weights (safetensors
where the repository has them), nothing else."""
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""``namespace/name``: what is tried as a model id when no file or folder of that name exists."""
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".json")


def resolve_model(ref: str | Path) -> Path:
    """A folder or file path as it is; a Hugging Face model id as its folder in the local cache.

    An id not in the cache is downloaded (configs and weights only) unless the hub is offline
    (``HF_HUB_OFFLINE=1``); when that fails, or offline, the error names the id, the cache folder and
    how to bring the model over from a machine that has the network.

    Raises:
        FileNotFoundError: a path that does not exist, or an id that cannot be had.
    """
    path = Path(ref).expanduser()
    if path.exists():
        return path
    ref = str(ref)
    if not _MODEL_ID.match(ref) or ref.lower().endswith(_CHECKPOINT_SUFFIXES):
        raise FileNotFoundError(f"upstream checkpoint not found: {ref}")
    cache = constants.HF_HUB_CACHE
    for weights in HUB_WEIGHTS:  # ask the cache for what a download fetches, not the whole repository
        try:
            folder = Path(snapshot_download(ref, cache_dir=cache, local_files_only=True,
                                            allow_patterns=HUB_CONFIGS + weights))
        except LocalEntryNotFoundError:  # IncompleteSnapshotError too: a file these patterns take is missing
            continue
        if (folder / "config.json").is_file() and has_weights(folder):
            return folder
    advice = (f"On a machine with the network run `huggingface-cli download {ref}` (or `python -c \"from "
              f"huggingface_hub import snapshot_download; snapshot_download('{ref}')\"`) and copy its cache folder "
              f"models--{ref.replace('/', '--')} into {cache}, or pass the model's folder as -k")
    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(f"Hugging Face model {ref!r} is not in the local cache {cache} and the hub is offline "
                                f"(HF_HUB_OFFLINE). {advice}") from None
    try:
        for weights in HUB_WEIGHTS:
            folder = Path(snapshot_download(ref, cache_dir=cache, allow_patterns=HUB_CONFIGS + weights))
            if has_weights(folder):
                return folder
        raise FileNotFoundError("the repository has no model.safetensors or pytorch_model.bin weights")
    except Exception as e:  # noqa: BLE001  (any failure to fetch becomes the one error naming the id)
        raise FileNotFoundError(f"Hugging Face model {ref!r} is not in the local cache {cache} and could not be "
                                f"downloaded ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
                                f"{advice}") from None

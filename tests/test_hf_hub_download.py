"""``-u hf -k namespace/name`` with the hub reachable: a tiny HuBERT is served by a stand-in hub on
127.0.0.1 (``HF_ENDPOINT``), downloaded into a temporary cache (configs and weights only), loaded with the
folder's fingerprint and outputs, and built again from the cache alone with the hub offline and stopped."""
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
hub_constants = pytest.importorskip("huggingface_hub.constants")

from upstream import build_upstream  # noqa: E402  (after importorskip)

from .conftest import noise_batch  # noqa: E402  (after importorskip)
from .hub_standin import StandInHub, serve_folder  # noqa: E402  (after importorskip)

REPO = "superb-lite-test/tiny-hubert"
TINY = dict(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 2), conv_stride=(5, 4, 4), hidden_size=32,
            num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=2)
"""A HuBERT of about 100 KB: 80 samples per frame, two 32-d Transformer layers."""
NEEDED = {"config.json", "preprocessor_config.json", "model.safetensors"}
"""What the upstream must fetch from the repository."""
OTHERS = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
          "README.md": b"---\nlicense: mit\n---\n# tiny-hubert\n",
          "flax_model.msgpack": bytes(range(256)) * 64}
"""What a real repository holds besides: never fetched."""


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A random HuBERT and its feature extractor config, written with ``save_pretrained``."""
    torch.manual_seed(0)
    folder = tmp_path / "tiny-hubert"
    transformers.HubertModel(transformers.HubertConfig(**TINY)).eval().save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    assert {f.name for f in folder.iterdir()} == NEEDED
    return folder


@pytest.fixture
def hub(model_folder: Path, tmp_path: Path, monkeypatch) -> Iterator[StandInHub]:
    """The folder served as :data:`REPO` (with :data:`OTHERS`), ``huggingface_hub`` pointed at it with an
    empty cache under ``tmp_path`` and no token; the server stops when the test ends."""
    home_cache = Path(hub_constants.HF_HUB_CACHE)
    server = serve_folder(model_folder, REPO, OTHERS)
    try:
        monkeypatch.setattr(hub_constants, "ENDPOINT", server.endpoint)  # what HF_ENDPOINT sets at import
        monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server
    finally:
        server.close()
    assert not (home_cache / f"models--{REPO.replace('/', '--')}").exists()  # nothing written to ~/.cache


def _states(upstream) -> list[torch.Tensor]:
    wavs, lengths = noise_batch([4000, 2399], seed=3)
    with torch.no_grad():
        return upstream(wavs, lengths).hidden_states


def test_model_id_downloads_into_the_cache_and_matches_its_folder(hub: StandInHub, model_folder: Path,
                                                                   tmp_path: Path):
    reference = build_upstream("hf", model_folder)
    downloaded = build_upstream("hf", REPO)
    assert hub.fetched("GET") == NEEDED  # the configs and the weights came over the wire, nothing else
    assert hub.fetched("HEAD") == NEEDED
    assert ("GET", f"/api/models/{REPO}/revision/main") in hub.requests
    snapshot = tmp_path / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / hub.commit
    assert {f.name for f in snapshot.iterdir()} == NEEDED
    for name in NEEDED:
        assert (snapshot / name).read_bytes() == (model_folder / name).read_bytes()
    assert downloaded.fingerprint() == reference.fingerprint()
    assert downloaded.settings() == reference.settings()
    ours, theirs = _states(downloaded), _states(reference)
    assert len(ours) == len(theirs) == TINY["num_hidden_layers"] + 1
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_second_build_asks_the_hub_nothing(hub: StandInHub):
    fingerprint = build_upstream("hf", REPO).fingerprint()
    served = len(hub.requests)
    assert build_upstream("hf", REPO).fingerprint() == fingerprint
    assert hub.requests[served:] == []  # the local cache first (not even the revision is looked up)


def test_second_build_works_offline_with_the_hub_stopped(hub: StandInHub, model_folder: Path, monkeypatch):
    fingerprint = build_upstream("hf", REPO).fingerprint()
    hub.close()  # the hub cannot be reached any more
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    again = build_upstream("hf", REPO)
    reference = build_upstream("hf", model_folder)
    assert again.fingerprint() == fingerprint == reference.fingerprint()
    for a, b in zip(_states(again), _states(reference), strict=True):
        assert torch.equal(a, b)

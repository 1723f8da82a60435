"""Devices: choosing one (``--device``), the process-group backend, and training on it.

Tests parametrised over ``DEVICES`` run on the CPU everywhere and on a CUDA GPU where there is one
(skipped otherwise, with the reason); the NCCL test needs two GPUs.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core import distributed
from core.config import merge
from downstream.cli import main as downstream_main
from upstream import build_upstream
from upstream.pretrain import PretrainConfig, Pretrainer
from upstream.registry import save_upstream

from .conftest import killed_at_update, noise_batch
from .test_asr import _asr_corpus, _asr_run
from .test_hubert import SMALL as HUBERT_SMALL
from .test_runner import _overrides, _run

ROOT = Path(__file__).resolve().parents[1]
HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU"))]
TINY = {
    "fbank": {},
    "apc": {"preset": "tiny", "hidden_size": 32, "num_layers": 2},
    "mockingjay": {"preset": "tiny", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "intermediate_size": 64},
    "hubert": {"preset": "base", **HUBERT_SMALL},
    "bestrq": {"preset": "tiny", "embed_dim": 32, "num_layers": 2, "num_heads": 2, "ffn_dim": 64, "conv_kernel": 5,
               "codebook_size": 64},
}


@pytest.fixture
def device(request, monkeypatch) -> torch.device:
    """Make ``request.param`` this process's device for one test (restored afterwards), full-precision
    matrix products included (no TF32), so that GPU and CPU results compare closely."""
    monkeypatch.setattr(distributed, "_device", distributed.device())
    if HAS_CUDA:
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    return distributed.init(request.param)


def test_device_choices():
    assert distributed.resolve_device("auto", 0, cuda_devices=0) == torch.device("cpu")
    assert distributed.resolve_device("auto", 1, cuda_devices=2) == torch.device("cuda", 1)  # torchrun's LOCAL_RANK
    assert distributed.resolve_device("cuda", 1, cuda_devices=2) == torch.device("cuda", 1)
    assert distributed.resolve_device("cuda:0", 1, cuda_devices=2) == torch.device("cuda", 0)
    assert distributed.resolve_device("cpu", 0, cuda_devices=2) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"--device 'cuda': GPU 0 is not available \(0 visible.*use --device cpu"):
        distributed.resolve_device("cuda", 0, cuda_devices=0)
    with pytest.raises(ValueError, match="GPU 3 is not available"):
        distributed.resolve_device("cuda:3", 0, cuda_devices=2)
    for bad in ("gpu", "cuda:x", "cuda:"):
        with pytest.raises(ValueError, match="expected auto, cpu, cuda or cuda:N"):
            distributed.resolve_device(bad, 0, cuda_devices=1)
    assert distributed.backend_for(torch.device("cuda", 0)) == "nccl"
    assert distributed.backend_for(torch.device("cpu")) == "gloo"


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_is_a_clear_error(tmp_path: Path, capsys):
    args = ["-m", "train", "-u", "fbank", "-d", "ks", "-n", "x", "-p", str(tmp_path), "--device", "cuda"]
    assert downstream_main(args) == 2
    assert "--device 'cuda': GPU 0 is not available" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_rng_state_round_trip_and_older_checkpoints():
    state = distributed.rng_state()
    first = torch.rand(3)
    distributed.set_rng_state(state)
    assert torch.equal(torch.rand(3), first)
    distributed.set_rng_state(state["cpu"])  # checkpoints written before devices kept the bare CPU state
    assert torch.equal(torch.rand(3), first)


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("name", sorted(TINY))
def test_upstream_on_the_device_matches_the_cpu(name: str, device: torch.device, tmp_path: Path):
    torch.manual_seed(0)
    model = build_upstream(name, **TINY[name]).eval()
    wavs, lengths = noise_batch([16000, 11000], seed=3)
    if model.needs_fit:
        model.fit(w[:n] for w, n in zip(wavs, lengths, strict=True))
    with torch.no_grad():
        expected = model(wavs, lengths)
        moved = model.to(device)(wavs.to(device), lengths.to(device))
    assert moved.hidden_states[0].device.type == device.type
    assert torch.equal(moved.lengths.cpu(), expected.lengths)
    for a, b in zip(moved.hidden_states, expected.hidden_states, strict=True):
        torch.testing.assert_close(a.cpu(), b, atol=1e-4 * float(b.abs().max()) + 1e-5, rtol=1e-3)
    save_upstream(model, tmp_path / "up.pt")  # CPU tensors on disk, whatever the device
    assert all(t.device.type == "cpu" for t in torch.load(tmp_path / "up.pt", weights_only=True)["state_dict"].values())


@pytest.mark.parametrize("device", DEVICES, indirect=True)
@pytest.mark.parametrize("name", ["apc", "mockingjay", "hubert", "bestrq"])
def test_pretraining_runs_on_the_device(name: str, device: torch.device, sc_root: Path, tmp_path: Path):
    loop = {"total_steps": 2, "eval_every": 2, "save_every": 2, "log_every": 1, "batch_size": 8, "batch_seconds": 8.0,
            "valid_fraction": 0.15, "num_workers": 0, "warmup_fraction": 0.5}
    targets = {"sample_fraction": 0.5, "n_init": 1} if name == "hubert" else {}
    settings = {**TINY[name], **({"num_classes": 8} if name == "hubert" else {})}
    cfg = merge(PretrainConfig(), {"upstream": settings, "targets": targets, "train": loop})
    summary = Pretrainer(tmp_path / name, name, cfg, [sc_root]).run()
    assert summary["steps"] == 2 and summary["device"].startswith(device.type)
    assert torch.isfinite(torch.tensor(summary["final_valid_loss"]))
    ckpt = torch.load(tmp_path / name / "checkpoints/last.pt", weights_only=False)
    assert ("cuda" in ckpt["rng"]) == (device.type == "cuda")
    assert build_upstream(name, tmp_path / name / "upstream.pt").num_layers >= 1


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_keyword_head_on_the_device_resumes_exactly(device: torch.device, sc_root: Path, tmp_path: Path):
    """A head trained on the device: results say where it ran, and a killed run resumes to the same weights."""
    overrides = _overrides(sc_root, tmp_path, "train.total_steps=20", "featurizer.layer_norm=true")
    whole = _run(tmp_path, "whole", overrides).train()
    assert whole["training"]["device"].startswith(device.type)
    assert whole["splits"]["test"]["accuracy"] >= 0.75
    with killed_at_update(8):
        _run(tmp_path, "killed", overrides).train()
    resumed = _run(tmp_path, "killed", overrides).train()
    a, b = (torch.load(tmp_path / "exp" / n / "checkpoints/last.pt", weights_only=False) for n in ("whole", "killed"))
    for part in ("head", "featurizer"):
        for key in a[part]:
            torch.testing.assert_close(b[part][key], a[part][key])
    assert resumed["splits"]["test"] == {**whole["splits"]["test"], "seconds": resumed["splits"]["test"]["seconds"]}


@pytest.mark.parametrize("device", DEVICES, indirect=True)
def test_asr_finetuning_on_the_device(device: torch.device, tmp_path: Path):
    """The live upstream (fine-tuning, no cache) and the CTC loss on the device."""
    _asr_corpus(tmp_path / "corpus")
    results = _asr_run(tmp_path, "ft", "apc", "train.total_steps=6", "train.eval_every=6", "train.save_every=6",
                       "finetune.enabled=true", "finetune.freeze_steps=3", "upstream.preset=tiny",
                       "upstream.hidden_size=32", "upstream.num_layers=2").train()
    assert results["training"]["device"].startswith(device.type) and results["finetuned"]
    assert 0 <= results["splits"]["test"]["cer"] <= 100


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL data-parallel training needs two CUDA GPUs")
def test_two_gpu_processes_match_one(sc_root: Path, tmp_path: Path):
    """torchrun with 2 processes on 2 GPUs (NCCL) against 1 process on one GPU."""
    overrides = _overrides(sc_root, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "NVIDIA_TF32_OVERRIDE": "0"}
    for name, launcher in (("one", [sys.executable]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node=2"])):
        cmd = [*launcher, str(ROOT / "run_downstream.py"), "-m", "train", "-u", "fbank_global", "-d", "ks", "-n", name,
               "-p", str(tmp_path / "exp"), "--device", "cuda", *[a for o in overrides for a in ("-o", o)]]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / "exp" / n / "results.json").read_text()) for n in ("one", "two"))
    assert two["training"]["processes"] == 2 and two["training"]["device"].startswith("cuda:0")
    assert "(nccl backend)" in (tmp_path / "exp/two/train.log").read_text()
    for split in ("dev", "test"):
        assert two["splits"][split]["accuracy"] == pytest.approx(one["splits"][split]["accuracy"], abs=0.07)

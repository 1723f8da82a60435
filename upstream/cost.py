"""What an upstream costs to run: parameters, multiply-accumulates per second of audio, real-time
factor and peak memory of feature extraction, measured by :func:`measure_cost` (docs/cost.md).

**MACs** are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass per input
length (batch 1, no padding) and halved (its FLOPs count a multiply-add as 2). It counts the
operators that *ran*: a module called twice is counted twice, which is what computing it costs.
Its formulas cover matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``), convolutions and the
fused attention kernels; element-wise work (activations, norms, softmax, bias adds) is not counted.
So that every matrix product reaches a counted operator whatever the device, the counting pass runs
with PyTorch's reference ("math") attention (two ``bmm``: the same count the fused kernels'
formulas give) and with cuDNN off (a GRU/LSTM runs as ``mm`` per step instead of one ``_cudnn_rnn``).
Operators that do real arithmetic but have no formula (FFTs of STFT/log-mel front ends, ``mv``,
...) are listed in ``uncounted_ops``; ``macs_per_second`` leaves them out.

**Parameters** are counted once per tensor (``Module.parameters()`` skips shared ones, so a weight
tied between two modules counts once, unlike S3PRL's profiler): ``parameters`` is every parameter,
``parameters_used`` those the extraction forward pass reads (pre-training heads, quantisers and
predictors are left out). What the downstream head sees is ``num_layers`` x ``hidden_size`` values
per frame at ``frames_per_second`` (``features_per_frame``).

**Real-time factor and memory** come from a separate timed pass, the normal kernels on the
upstream's device: one untimed warm-up forward, then ``repeats`` forwards of each length;
``rtf`` = seconds of compute / seconds of audio (under 1: faster than real time). ``peak_mem_mb`` is
``torch.cuda.max_memory_allocated`` over the pass on a GPU (tensors only), and on the CPU the
process's peak resident set over the pass (Linux ``VmHWM``, reset before it through
``/proc/self/clear_refs``: model, interpreter and everything else resident included), or, where that
reset is unavailable, the process's lifetime peak (``resource.getrusage``); ``memory`` says which,
``mem_before_mb`` gives the same measure just before the pass (the difference: what the pass added)
and ``weights_mb`` the upstream's parameters and buffers. ``device`` and ``threads``
(``torch.get_num_threads()``) are recorded with them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from .base import Upstream

COST_VERSION = 1
"""Version of :func:`measure_cost`'s record: bump when what is counted changes (cached records are re-measured)."""
DEFAULT_LENGTHS_S = (2.0, 5.0, 10.0)
"""Input lengths in seconds the MACs are averaged over and the timed pass runs."""
SAMPLE_RATE = 16000
HEAVY_OP = re.compile(r"(^|_)(fft|stft|rnn|lstm|gru|attention|transformer|conv[a-z0-9]*|[a-z]*mm|[a-z]*mv|v?dot|einsum"
                      r"|matmul|linear|tensordot)(_|$)")
"""Operator names (``aten.`` left off) that do real arithmetic: those that ran without a FLOP formula are
reported as uncounted (``aten._fft_r2c``, ``aten.mv``, ``aten._cudnn_rnn``, ...)."""


class _OpRecorder(TorchDispatchMode):
    """Records which operators ran and the storages of every tensor they read."""

    def __init__(self):
        super().__init__()
        self.ops: set = set()
        self.storages: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops.add(func._overloadpacket)
        for value in (*args, *kwargs.values()):
            for tensor in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(tensor, torch.Tensor):
                    with contextlib.suppress(RuntimeError, NotImplementedError):
                        self.storages.add(tensor.untyped_storage().data_ptr())
        return func(*args, **kwargs)


def _device_of(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _waveform(seconds: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed (1, S) noise waveform of ``seconds`` and its length."""
    samples = round(seconds * SAMPLE_RATE)
    generator = torch.Generator().manual_seed(samples)
    wav = 0.1 * torch.randn(1, samples, generator=generator)
    return wav.to(device), torch.tensor([samples], device=device)


def count_macs(upstream: nn.Module, seconds: float) -> tuple[int, list[str], set[int]]:
    """One forward pass on ``seconds`` of audio -> (MACs, names of arithmetic operators that ran
    without a FLOP formula, storages of the tensors the pass read)."""
    wav, length = _waveform(seconds, _device_of(upstream))

    counter, recorder = FlopCounterMode(display=False), _OpRecorder()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), torch.backends.cudnn.flags(enabled=False), counter, recorder:
        upstream(wav, length)
    uncounted = sorted({str(op) for op in recorder.ops
                        if op not in flop_registry and HEAVY_OP.search(str(op).rsplit(".", 1)[-1])})
    return counter.get_total_flops() // 2, uncounted, recorder.storages


def parameter_counts(upstream: nn.Module, used_storages: set[int] | None = None) -> tuple[int, int | None]:
    """(every parameter, counted once per tensor; those whose storage is in ``used_storages``)."""
    params = list(upstream.parameters())  # deduplicated: a shared tensor is yielded once
    total = sum(p.numel() for p in params)
    if used_storages is None:
        return total, None
    return total, sum(p.numel() for p in params if p.untyped_storage().data_ptr() in used_storages)


def _peak_rss_reset() -> bool:
    """Reset the process's resident-set high-water mark (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_mb() -> float | None:
    """The process's resident set now, in MB (Linux); None elsewhere."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024
    return None


def _peak_rss_mb() -> tuple[float, str]:
    """The process's peak resident set in MB and how it was read."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024, "cpu peak RSS over the pass (VmHWM)"
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "cpu peak RSS over the process's life"


def describe(device: torch.device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def time_extraction(upstream: nn.Module, lengths_s=DEFAULT_LENGTHS_S, repeats: int = 3) -> dict:
    """The timed pass: ``rtf``, ``peak_mem_mb``, ``mem_before_mb`` (the same measure just before the
    pass), ``memory`` (what was measured), ``weights_mb`` (parameters and buffers), ``device``, ``threads``."""
    device = _device_of(upstream)
    cuda = device.type == "cuda"
    inputs = [_waveform(s, device) for s in lengths_s]
    with torch.inference_mode():
        upstream(*inputs[0])  # warm-up: lazy initialisation, kernel selection, allocator
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device) / 2**20
        else:
            before = _rss_mb()
        reset = not cuda and _peak_rss_reset()
        elapsed = 0.0
        for _ in range(repeats):
            for wav, length in inputs:
                t0 = time.perf_counter()
                upstream(wav, length)
                if cuda:
                    torch.cuda.synchronize(device)
                elapsed += time.perf_counter() - t0
    if cuda:
        peak, memory = torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated over the pass"
    else:
        peak, memory = _peak_rss_mb()
        if not reset:
            memory = "cpu peak RSS over the process's life"
    weights = sum(t.numel() * t.element_size() for t in (*upstream.parameters(), *upstream.buffers()))
    return {"rtf": elapsed / (repeats * sum(lengths_s)), "peak_mem_mb": round(peak, 1),
            "mem_before_mb": None if before is None else round(before, 1), "memory": memory,
            "weights_mb": round(weights / 2**20, 1), "device": describe(device), "threads": torch.get_num_threads()}


def measure_cost(upstream: Upstream, lengths_s=DEFAULT_LENGTHS_S, repeats: int = 3) -> dict:
    """The upstream's cost record (see the module docstring); the upstream is left in its train/eval mode.

    Keys: ``version``, ``lengths_s``, ``macs_per_second`` (mean over the lengths of MACs / seconds),
    ``macs`` (per length), ``uncounted_ops``, ``parameters``, ``parameters_used``, ``num_layers``,
    ``hidden_size``, ``features_per_frame``, ``frames_per_second``, ``rtf``, ``peak_mem_mb``,
    ``mem_before_mb``, ``memory``, ``weights_mb``, ``device``, ``threads``, ``repeats``, ``torch``.
    """
    lengths_s = tuple(float(s) for s in lengths_s)
    if not lengths_s or min(lengths_s) <= 0 or repeats < 1:
        raise ValueError(f"measure_cost needs positive lengths and repeats >= 1, got {lengths_s}, {repeats}")
    mode = upstream.training
    upstream.eval()
    try:
        macs, uncounted, storages = [], set(), set()
        for seconds in lengths_s:
            count, missing, read = count_macs(upstream, seconds)
            macs.append(count)
            uncounted.update(missing)
            storages |= read
        timed = time_extraction(upstream, lengths_s, repeats)
    finally:
        upstream.train(mode)
    total, used = parameter_counts(upstream, storages)
    num_layers, hidden_size = int(upstream.num_layers), int(upstream.hidden_size)
    frames = int(upstream.num_frames(torch.tensor([10 * SAMPLE_RATE]))[0]) / 10
    return {"version": COST_VERSION, "lengths_s": list(lengths_s),
            "macs_per_second": sum(m / s for m, s in zip(macs, lengths_s, strict=True)) / len(lengths_s),
            "macs": [int(m) for m in macs], "uncounted_ops": sorted(uncounted),
            "parameters": total, "parameters_used": used, "num_layers": num_layers, "hidden_size": hidden_size,
            "features_per_frame": num_layers * hidden_size, "frames_per_second": frames,
            **timed, "repeats": repeats, "torch": torch.__version__}


def cached_cost(upstream: Upstream, folder: str | Path, lengths_s=DEFAULT_LENGTHS_S, repeats: int = 3) -> dict:
    """:func:`measure_cost`, read from ``folder`` when this upstream (its fingerprint) was measured with
    the same lengths, repeats, device and thread count before, else measured and written there (a
    learning-rate grid or the folds of a corpus measure once). A record that cannot be read is measured again."""
    device = _device_of(upstream)
    settings = {"version": COST_VERSION, "fingerprint": upstream.fingerprint(),
                "lengths_s": [float(s) for s in lengths_s], "repeats": repeats, "device": describe(device),
                "threads": torch.get_num_threads()}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(folder) / f"{upstream.name}-{key}.json"
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and record.get("version") == COST_VERSION:
            return record
    record = measure_cost(upstream, lengths_s, repeats)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)  # whole or not at all; two processes measuring at once each write a whole record
    return record

"""The process's device and multi-process data-parallel training with ``torch.distributed``, shared
by pre-training and the downstream runner (launch with ``torchrun --nproc_per_node N``; without
torchrun the process-group functions here are no-ops for a single process).

:func:`init` resolves the device every model and batch of this process goes to (``--device``:
``auto`` takes GPU ``LOCAL_RANK`` when CUDA is available, else the CPU) and, under torchrun, joins
the process group: NCCL when the processes train on GPUs, gloo on the CPU.

Every process draws the same global batches (the batcher is seeded), takes the utterances
``batch[rank::world]`` and weights its mean loss by its share of what the loss averages over
(utterances, or tokens), so that DDP's gradient average equals the gradient of the global batch's
mean loss: the updates are one process's, up to floating-point noise. Process 0 alone writes logs,
checkpoints and results, validates and evaluates; the others wait at barriers.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_device = torch.device("cpu")


def resolve_device(choice: str, local_rank: int = 0, cuda_devices: int | None = None) -> torch.device:
    """The device ``choice`` names for the process of ``local_rank`` on this machine.

    Args:
        choice: ``auto`` (GPU ``local_rank`` if CUDA has one, else the CPU), ``cpu``, ``cuda``
            (GPU ``local_rank``) or ``cuda:N``.
        local_rank: the process's index on this machine (torchrun's ``LOCAL_RANK``).
        cuda_devices: GPUs visible (default: ``torch.cuda.device_count()`` when CUDA is available).

    Raises:
        ValueError: an unknown choice, or a GPU that is not there (the message says what is).
    """
    if cuda_devices is None:
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "auto":
        return torch.device("cuda", local_rank) if local_rank < cuda_devices else torch.device("cpu")
    if choice == "cuda" or choice.startswith("cuda:"):
        index = local_rank if choice == "cuda" else choice.removeprefix("cuda:")
        if not str(index).isdigit():
            raise ValueError(f"--device {choice!r}: expected {DEVICE_CHOICES}")
        if int(index) >= cuda_devices:
            build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
            raise ValueError(f"--device {choice!r}: GPU {index} is not available ({cuda_devices} visible; "
                             f"torch {torch.__version__}, {build}); use --device cpu")
        return torch.device("cuda", int(index))
    raise ValueError(f"--device {choice!r}: expected {DEVICE_CHOICES}")


def add_device_option(parser) -> None:
    """The ``--device`` option of every training command (an ``argparse`` parser), for :func:`init`."""
    parser.add_argument("--device", default="auto",
                        help=f"{DEVICE_CHOICES} (default: auto, a GPU when CUDA has one; "
                             "under torchrun GPU LOCAL_RANK)")


def backend_for(device: torch.device) -> str:
    """The process-group backend for processes training on ``device``: NCCL on GPUs, gloo on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init(choice: str = "auto") -> torch.device:
    """Set this process's device from ``choice`` (see :func:`resolve_device`) and, under torchrun
    (``WORLD_SIZE`` > 1), join the process group on the matching backend. Returns the device."""
    global _device
    world = int(os.environ.get("WORLD_SIZE", "1"))
    _device = resolve_device(choice, int(os.environ.get("LOCAL_RANK", "0")))
    if _device.type == "cuda":
        # cuBLAS reproducible under torch.use_deterministic_algorithms (set before its first call)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.cuda.set_device(_device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend_for(_device), device_id=_device if _device.type == "cuda" else None)
    return _device


def device() -> torch.device:
    """Where this process's models and batches live (the CPU until :func:`init` says otherwise)."""
    return _device


def describe_device() -> str:
    """The device in words for logs and results, e.g. ``cpu`` or ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if _device.type == "cuda":
        return f"{_device} ({torch.cuda.get_device_name(_device)})"
    return str(_device)


def rng_state() -> dict:
    """The random-number states training draws from (the CPU's and, on a GPU, the GPU's), for checkpoints."""
    state = {"cpu": torch.get_rng_state()}
    if _device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(_device)
    return state


def set_rng_state(state) -> None:
    """Restore :func:`rng_state` (or an older checkpoint's bare CPU state)."""
    if isinstance(state, torch.Tensor):
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    if _device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], _device)


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier(device_ids=[_device.index] if _device.type == "cuda" else None)


@contextlib.contextmanager
def main_first():
    """Process 0 runs the block first (e.g. writing manifests or a feature cache), then the others."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def shard(batch: list[int], units=len) -> tuple[list[int], float]:
    """This process's utterances of a global batch and the weight of its mean loss.

    ``units``: what the loss averages over, for a list of utterance indices (default: their number;
    a token-averaged loss passes its token count). The weight ``units(local) * world / units(batch)``
    makes the DDP average of the weighted per-process means the global mean. A process left without
    an utterance (a batch smaller than the world) gets the batch's first one with weight 0, so it
    still joins the gradient all-reduce.
    """
    world = world_size()
    local = batch[rank()::world]
    if not local:
        return batch[:1], 0.0
    return local, units(local) * world / units(batch)


def global_mean(local_mean: float, weight: float) -> float:
    """The global batch's mean loss from each process's mean and :func:`shard` weight."""
    if world_size() == 1:
        return local_mean
    total = torch.tensor([local_mean * weight], dtype=torch.float64, device=_device)  # NCCL reduces GPU tensors only
    dist.all_reduce(total)
    return float(total) / world_size()


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (one collective; every process must call it)."""
    if world_size() == 1:
        return flag
    value = torch.tensor([float(flag)], device=_device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def data_parallel(module: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``module`` (already on :func:`device`) wrapped in DistributedDataParallel when several
    processes train, else itself.

    ``find_unused_parameters``: for objectives that leave some parameters out of a step's graph.
    """
    if world_size() == 1:
        return module
    ids = [_device.index] if _device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids,
                                                     find_unused_parameters=find_unused_parameters)

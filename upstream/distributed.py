"""Multi-process data-parallel training with ``torch.distributed``, shared by pre-training and the
downstream runner (launch with ``torchrun --nproc_per_node N``; without torchrun everything here
is a no-op for a single process).

Every process draws the same global batches (the batcher is seeded), takes the utterances
``batch[rank::world]`` and weights its mean loss by its share of what the loss averages over
(utterances, or tokens), so that DDP's gradient average equals the gradient of the global batch's
mean loss: the updates are one process's, up to floating-point noise. Process 0 alone writes logs, checkpoints and results, validates and
evaluates; the others wait at barriers. Backend: gloo (the toolkit trains on the CPU).
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist


def init_from_env() -> None:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); nothing for one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


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
    total = torch.tensor([local_mean * weight], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total) / world_size()


def data_parallel(module: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel when several processes train, else itself.

    ``find_unused_parameters``: for objectives that leave some parameters out of a step's graph.
    """
    if world_size() == 1:
        return module
    return torch.nn.parallel.DistributedDataParallel(module, find_unused_parameters=find_unused_parameters)

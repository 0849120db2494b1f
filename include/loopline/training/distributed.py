"""Data-parallel training under ``torchrun``: who this process is, and the few collectives the trainer needs.

``torchrun --nproc-per-node N`` starts N copies of the trainer with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
set. Every copy reads the whole training set onto its device; each takes its share of every minibatch
(index slices, no DataLoader), DistributedDataParallel averages the gradients, and rank 0 alone talks to
MLflow and writes the result. Without those variables (or with ``WORLD_SIZE=1``) nothing here does
anything and training is the plain single-process loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


class DistributedSetupError(RuntimeError):
    """The torchrun environment is inconsistent; the message names the variable."""


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, registers and writes the result."""
        return self.rank == 0


SINGLE = DistributedContext()


def context_from_env(env: Mapping[str, str]) -> DistributedContext:
    """The context torchrun describes in ``env`` (``SINGLE`` outside torchrun)."""
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise DistributedSetupError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers: {exc}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedSetupError(
            f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}"
        )
    return DistributedContext(rank=rank, world_size=world, local_rank=local)


def backend_for(device_type: str) -> str:
    """NCCL between GPUs, gloo between CPU processes (the tests)."""
    return "nccl" if device_type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(context: DistributedContext, device_type: str) -> Iterator[None]:
    """Join the process group for the duration (no-op for a single process); torchrun set the rendezvous
    variables (MASTER_ADDR/PORT) the default ``env://`` init reads."""
    if not context.enabled:
        yield
        return
    import torch
    import torch.distributed as dist

    if device_type == "cuda":
        torch.cuda.set_device(context.local_rank)  # NCCL and the object collectives use the current device
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(
            backend=backend_for(device_type), rank=context.rank, world_size=context.world_size
        )
    try:
        yield
    finally:
        if owned:
            dist.destroy_process_group()


def my_share(batch: Any, context: DistributedContext) -> Any:
    """This rank's rows of a global minibatch (strided, so shares differ by at most one row)."""
    return batch[context.rank :: context.world_size] if context.enabled else batch


def contiguous_share(n: int, context: DistributedContext) -> slice:
    """This rank's contiguous block of ``n`` rows; concatenating every rank's block in rank order gives
    back the original order (validation scores are gathered that way)."""
    base, extra = divmod(n, context.world_size)
    start = context.rank * base + min(context.rank, extra)
    return slice(start, start + base + (1 if context.rank < extra else 0))


def all_gather_concat(array: Any, context: DistributedContext) -> Any:
    """Every rank's numpy ``array`` concatenated in rank order, on every rank."""
    if not context.enabled:
        return array
    import numpy as np
    import torch.distributed as dist

    parts: list[Any] = [None] * context.world_size
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)


def all_reduce_sum(tensor: Any, context: DistributedContext) -> Any:
    """The sum of ``tensor`` over ranks (in place; returned for convenience)."""
    if context.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_main(value: Any, context: DistributedContext) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank."""
    if not context.enabled:
        return value
    import torch.distributed as dist

    box = [value if context.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]

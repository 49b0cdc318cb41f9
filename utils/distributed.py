"""torch.distributed helpers driven by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

A single process without those variables runs non-distributed with no flags (EgoVLP issue #22).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)
_joined_process_group = False  # whether this process called init_process_group


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' → cuda:<local_rank> if CUDA is available else cpu; 'cuda' → cuda:<local_rank>."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device(device)


def init_distributed(device: str = "auto", timeout_minutes: int = 30) -> DistInfo:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU), or run alone."""
    global _joined_process_group
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={world_size} but {var} is not set; launch with torchrun")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        from datetime import timedelta
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                                timeout=timedelta(minutes=timeout_minutes),
                                device_id=dev if dev.type == "cuda" else None)
        _joined_process_group = True
        logger.info("joined process group: rank %d/%d (local %d), backend %s, device %s",
                    rank, world_size, local_rank, backend, dev)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def is_dist() -> bool:
    """True when a torch.distributed process group is initialised (any world size)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank in the initialised process group; 0 without one."""
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Number of ranks in the initialised process group; 1 without one."""
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """rank ``src``'s Python object on every rank (identity when not distributed)."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks, on ``tensor``'s device (a new tensor; a copy when not distributed).

    The reduction runs where the backend needs it (the current CUDA device for NCCL, else the CPU).
    """
    if not is_dist():
        return tensor.clone()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    reduced = tensor.to(device, copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(tensor.device)


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (``flag`` itself when not distributed)."""
    return bool(all_reduce_sum(torch.tensor([float(flag)])).item() > 0)


def exit_process(code: int) -> None:
    """End this process with ``code``. After a process group was joined, end it at once (logs and output flushed)
    rather than through interpreter shutdown: gloo's worker threads, kept alive by DDP's reference to the group,
    can abort a normal shutdown with ``terminate called without an active exception``."""
    if not _joined_process_group:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cleanup(failed: bool = False) -> None:
    """Leave the process group (safe to call when none exists).

    After a failure there is no barrier: the other ranks may be inside a collective and would keep this
    rank waiting for the whole timeout; exiting lets torchrun stop them.
    """
    if is_dist():
        if not failed:
            dist.barrier()
        dist.destroy_process_group()

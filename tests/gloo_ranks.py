"""Run a test function on several CPU ranks joined in a gloo process group (spawned processes).

Rendezvous goes through a ``FileStore`` file in a fresh temporary folder: no TCP port is picked (a port
found free by binding port 0 can be taken by another process before rank 0 listens on it) and no store
server thread lives in rank 0.

Teardown: every rank passes a barrier (no rank leaves while another still communicates), destroys the
group and ends with ``os._exit(0)``. Interpreter finalization must not run while gloo worker threads are
alive: a worker that drops the last reference to a finished collective's tensors then needs the GIL,
and a thread taking the GIL during finalization is ended by a forced unwind through a C++ destructor,
i.e. ``terminate called without an active exception`` (SIGABRT). ``destroy_process_group`` joins those
threads only when nothing else holds the group, and a ``DistributedDataParallel`` model keeps it
referenced on the C++ side even after the model is deleted (torch 2.13), so the threads outlive it.
"""
from __future__ import annotations

import datetime
import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def run_ranks(fn, world_size: int, *args) -> None:
    """Call ``fn(rank, world_size, *args)`` on ``world_size`` gloo ranks; raises if any rank fails.

    ``fn`` must be a module-level (picklable) function; it communicates through the default group.
    """
    with tempfile.TemporaryDirectory(prefix="gloo_store_") as folder:
        init_method = "file://" + os.path.join(folder, "store")
        mp.spawn(_rank_main, args=(fn, world_size, init_method, args), nprocs=world_size, join=True)


def _rank_main(rank: int, fn, world_size: int, init_method: str, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    fn(rank, world_size, *args)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

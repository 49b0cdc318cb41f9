"""Training-state persistence: atomic checkpoint writes, RNG capture/restore, resuming inside an epoch.

Checkpoints hold only tensors and plain containers, so ``torch.load(weights_only=True)`` reads them.
"""
from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from model.checkpoint import torch_load


def save_atomic(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the partial ``.<name>.tmp<PID>`` files a kill during :func:`save_atomic` left in ``run_dir``."""
    stale = [p for p in Path(run_dir).glob(".*.tmp*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


TRAINING_STATE_KEYS = ("state_dict", "optimizer", "epoch", "batch_in_epoch", "global_step", "micro_step", "rng")


def load_training_checkpoint(path: str | os.PathLike) -> dict:
    """One of our training checkpoints, loaded safely (weights only) on CPU.

    Anything else (an EgoVLP checkpoint, a bare state dict) is refused with a pointer to the right option.
    """
    hint = ("to start training from other weights (e.g. EgoVLP's egovlp.pth) set arch.args.load_checkpoint; "
            "-r/--resume continues one of this project's runs")
    try:
        ckpt = torch_load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} is not a training checkpoint of this project ({err.__class__.__name__}); "
                         f"{hint}") from None
    missing = [key for key in TRAINING_STATE_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a training checkpoint of this project (no {missing}); {hint}")
    return ckpt


def capture_all_ranks_rng(dist_info) -> list[dict]:
    """Every rank's :func:`capture_rng`, indexed by rank (a collective: all ranks must call it)."""
    rng = capture_rng()
    if not dist_info.distributed:
        return [rng]
    states = [None] * dist_info.world_size
    dist.all_gather_object(states, rng)
    return states


def capture_rng() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states of this process."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _SkipFirstBatches:
    """A batch sampler without its first ``skip`` batches (resuming in the middle of an epoch)."""

    def __init__(self, batch_sampler, skip: int):
        self.batch_sampler, self.skip = batch_sampler, skip

    def __iter__(self):
        for i, batch in enumerate(self.batch_sampler):
            if i >= self.skip:
                yield batch

    def __len__(self):
        return max(0, len(self.batch_sampler) - self.skip)


def resumed_epoch_loader(loader: DataLoader, skip_batches: int) -> DataLoader:
    """``loader`` itself, or (``skip_batches`` > 0) a loader over the same data and worker setup that starts at
    batch ``skip_batches`` of the epoch the loader's sampler is set to."""
    if not skip_batches:
        return loader
    workers = loader.num_workers > 0
    return DataLoader(loader.dataset, batch_sampler=_SkipFirstBatches(loader.batch_sampler, skip_batches),
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      worker_init_fn=loader.worker_init_fn, generator=loader.generator,
                      persistent_workers=loader.persistent_workers,
                      prefetch_factor=loader.prefetch_factor if workers else None)

"""Training-state persistence: atomic checkpoint writes and RNG capture/restore.

Checkpoints hold only tensors and plain containers, so ``torch.load(weights_only=True)`` reads them.
"""
from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch


def save_atomic(obj: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


TRAINING_STATE_KEYS = ("state_dict", "optimizer", "epoch", "batch_in_epoch", "global_step", "micro_step", "rng")


def load_training_checkpoint(path: str | os.PathLike) -> dict:
    """One of our training checkpoints, loaded safely (weights only) on CPU.

    Anything else (an EgoVLP checkpoint, a bare state dict) is refused with a pointer to the right option.
    """
    hint = ("to start training from other weights (e.g. EgoVLP's egovlp.pth) set arch.args.load_checkpoint; "
            "-r/--resume continues one of this project's runs")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path} is not a training checkpoint of this project ({err.__class__.__name__}); "
                         f"{hint}") from None
    missing = [key for key in TRAINING_STATE_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a training checkpoint of this project (no {missing}); {hint}")
    return ckpt


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

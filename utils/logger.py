"""Console + file logging; only rank 0 logs below WARNING unless ``all_ranks``."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def setup_logging(log_dir: str | Path | None = None, rank: int = 0, level: int = logging.INFO,
                  all_ranks: bool = False) -> None:
    """Configure the root logger: console on every rank (WARNING+ off rank 0), ``log_dir/train.log`` on rank 0.

    With ``all_ranks`` every rank logs at ``level`` and writes ``log_dir/train_rank{r}.log``.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    verbose = all_ranks or rank == 0
    root.setLevel(level if verbose else logging.WARNING)
    fmt = logging.Formatter(FORMAT if rank == 0 and not all_ranks else f"[rank {rank}] " + FORMAT,
                            datefmt="%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    root.addHandler(console)
    if log_dir is not None and verbose:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        name = f"train_rank{rank}.log" if all_ranks else "train.log"
        file_handler = logging.FileHandler(Path(log_dir) / name)
        file_handler.setFormatter(fmt)
        root.addHandler(file_handler)

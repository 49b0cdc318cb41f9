"""Per-item evaluator outputs gathered from every rank's shard into one matrix."""
from __future__ import annotations

import torch

from utils import distributed


def gather_rows(rows: list[torch.Tensor], values: list[torch.Tensor], num_rows: int, what: str) -> torch.Tensor:
    """Every rank's ``values`` (float [b, D] per batch) placed at their ``rows`` of one float64 [num_rows, D]
    matrix, summed over ranks; raises unless each row was filled exactly once (no duplicate, none missing)."""
    # rank 0's shard starts at row 0, so it always knows the width; a rank with an empty shard adds zeros
    dim = distributed.broadcast_object(values[0].shape[1] if values else None)
    matrix, counts = torch.zeros(num_rows, dim, dtype=torch.float64), torch.zeros(num_rows, dtype=torch.float64)
    if rows:
        index = torch.cat(rows).long()
        matrix.index_add_(0, index, torch.cat(values).double().cpu())
        counts.index_add_(0, index, torch.ones(len(index), dtype=torch.float64))
    matrix, counts = distributed.all_reduce_sum(matrix), distributed.all_reduce_sum(counts)
    if not torch.all(counts == 1):
        bad = torch.nonzero(counts != 1).flatten()[:5].tolist()
        raise RuntimeError(f"{what}: rows {bad} were scored {counts[bad].tolist()} times; every row must be "
                           f"scored exactly once across ranks")
    return matrix


def num_rows_over_ranks(rows: list[torch.Tensor]) -> int:
    """1 + the largest row index any rank scored (0 when none did)."""
    last = torch.tensor([max((int(r.max()) for r in rows if len(r)), default=-1)], dtype=torch.float64)
    if distributed.is_dist():
        torch.distributed.all_reduce(last, op=torch.distributed.ReduceOp.MAX)
    return int(last.item()) + 1

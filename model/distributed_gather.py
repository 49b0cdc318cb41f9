"""All-gather of per-rank batches along dim 0, with and without gradient.

Ranks may hold different batch sizes (e.g. the last batch of an epoch): the sizes are
gathered first, every rank pads its tensor to the largest size, gathers, and the padding is
stripped, so the result is the concatenation of the true local batches in rank order.

``all_gather_with_grad`` differs from EgoVLP's gather in its backward: the gradient of the
gathered tensor is all-reduced (summed over ranks) and each rank keeps its own slice. When
every rank computes the same loss on the global batch, rank r's local gradient is then
``world_size * dLoss/d(local rows)``, and DDP's gradient averaging divides that by
``world_size`` again, so W ranks x batch b produce the gradients of 1 process x batch W*b.
``torch.distributed.nn.functional.all_gather`` has the same semantics but is deprecated
(FutureWarning on every call) in torch 2.13; all-reduce is available on every backend.

All functions are the identity when torch.distributed is unavailable, uninitialised, or
the world has a single rank.
"""
import torch
import torch.distributed as dist

from utils.distributed import get_rank, get_world_size


def is_distributed():
    """True when torch.distributed is initialised with more than one rank."""
    return get_world_size() > 1


def gather_batch_sizes(local_size, device):
    """Sizes of every rank's batch, in rank order (one all-gather of an int64 scalar)."""
    if not is_distributed():
        return [int(local_size)]
    size = torch.tensor([int(local_size)], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _pad_rows(tensor, num_rows):
    """``tensor`` [n, ...] padded with zero rows to [num_rows, ...]."""
    missing = num_rows - tensor.shape[0]
    if missing == 0:
        return tensor
    padding = tensor.new_zeros((missing,) + tuple(tensor.shape[1:]))
    return torch.cat([tensor, padding], dim=0)


def _strip_padding(gathered, sizes):
    """Concatenate the first ``sizes[r]`` rows of each rank's padded block."""
    return torch.cat([block[:size] for block, size in zip(gathered, sizes)], dim=0)


class _AllGatherSumBackward(torch.autograd.Function):
    """All-gather of equally sized tensors whose backward all-reduces the gradient."""

    @staticmethod
    def forward(ctx, tensor):
        gathered = [torch.empty_like(tensor) for _ in range(get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.stack(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_gathered):
        grad = grad_gathered.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[get_rank()]


def all_gather_with_grad(tensor, sizes=None):
    """Concatenate every rank's ``tensor`` [b_r, ...] into [sum_r b_r, ...], differentiably.

    ``sizes``: every rank's b_r (from ``gather_batch_sizes``), gathered here when None.
    Gradients flowing back are summed over ranks (see the module docstring).
    """
    if not is_distributed():
        return tensor
    if sizes is None:
        sizes = gather_batch_sizes(tensor.shape[0], tensor.device)
    padded = _pad_rows(tensor, max(sizes))
    gathered = _AllGatherSumBackward.apply(padded)
    return _strip_padding(gathered, sizes)


@torch.no_grad()
def all_gather_tensor(tensor, sizes=None):
    """Concatenate every rank's ``tensor`` [b_r, ...] into [sum_r b_r, ...] without gradient."""
    if not is_distributed():
        return tensor
    if sizes is None:
        sizes = gather_batch_sizes(tensor.shape[0], tensor.device)
    padded = _pad_rows(tensor, max(sizes)).contiguous()
    gathered = [torch.empty_like(padded) for _ in range(len(sizes))]
    dist.all_gather(gathered, padded)
    return _strip_padding(gathered, sizes)

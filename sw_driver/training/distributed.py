"""Data parallelism over ``torch.distributed`` (``docs/training.md``, "Several GPUs or hosts").

Every rank holds a replica of everything (MLPs, optimizer, host table, hot table, EAL) and
the whole data set. Each (micro-)batch -- a hybrid / gpu-only mini-batch, a Hotline popular
micro-batch or a chunk of the non-popular one -- is cut into ``world_size`` contiguous shares
(:meth:`DataParallel.share`, ``torch.tensor_split``'s sizes); a rank runs forward and backward
on its share only, then

* the MLP gradients (and the share's summed loss, one more element) are **all-reduced**
  (sum) in one flat buffer, and every rank takes the same SGD step;
* the embedding-row gradients are **all-gathered**: rank ``r`` contributes the gradients of
  its share's lookups, padded to the largest share. The row indices need not travel: every
  rank knows the whole (micro-)batch's indices (same data, same schedule), so the gathered
  gradients, concatenated in rank order, are exactly the single-process ``[B, T, dim]``
  gradient of the (micro-)batch in lookup order, and every rank applies the same
  ``index_add_`` to its table replica -- hot rows and cold rows alike.

The loss is ``sum over the share / N`` with the global mini-batch size ``N``, so the summed
gradients equal the single-process ones up to the order of the floating-point summation.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["DataParallel", "free_port", "init_from_env", "default_backend"]


def default_backend(device):
    """``"nccl"`` for CUDA training devices, ``"gloo"`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def free_port():
    """A TCP port on localhost that was free a moment ago (for ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_from_env(backend, timeout_s=600):
    """``init_process_group(backend, init_method="env://")`` when the torchrun variables say
    there are several processes (``WORLD_SIZE > 1``; ``RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT`` must be set); returns ``(rank, world_size, local_rank)``. With
    ``WORLD_SIZE`` unset or 1 nothing is initialised and ``(0, 1, 0)`` is returned."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={world} but {var} is not set (launch with "
                                   f"torchrun or set RANK, MASTER_ADDR, MASTER_PORT)")
        dist.init_process_group(backend, init_method="env://",
                                timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size(), local


class _RowsExchange:
    """An all-gather of row gradients in flight; :meth:`result` waits for it."""

    def __init__(self, work, recv, sizes):
        self.work, self.recv, self.sizes = work, recv, sizes

    def result(self):
        self.work.wait()
        return torch.cat([r[:n] for r, n in zip(self.recv, self.sizes)])


class DataParallel:
    """The trainer's side of ``torch.distributed``: rank, world size, process group
    (``None`` = the default group, which must be initialised)."""

    def __init__(self, group=None):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("distributed training needs torch.distributed."
                               "init_process_group() first (docs/training.md)")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.backend = dist.get_backend(group)

    def sizes(self, n):
        """Share sizes of an ``n``-input (micro-)batch, rank order (``tensor_split``)."""
        q, r = divmod(int(n), self.world_size)
        return [q + (1 if k < r else 0) for k in range(self.world_size)]

    def share(self, n):
        """``(a, b)``: this rank's inputs ``a..b-1`` of an ``n``-input (micro-)batch."""
        q, r = divmod(int(n), self.world_size)
        a = self.rank * q + min(self.rank, r)
        return a, a + q + (1 if self.rank < r else 0)

    def start_rows(self, grad, n):
        """Start the all-gather of this rank's row gradients ``[n_share, T, dim]`` of an
        ``n``-input (micro-)batch; ``.result()`` gives the ``[n, T, dim]`` gradient of the
        whole (micro-)batch in input order."""
        sizes = self.sizes(n)
        m = max(sizes)
        send = grad.contiguous()
        if send.shape[0] < m:
            send = torch.cat([send, send.new_zeros(m - send.shape[0], *send.shape[1:])])
        recv = [torch.empty_like(send) for _ in range(self.world_size)]
        work = dist.all_gather(recv, send, group=self.group, async_op=True)
        return _RowsExchange(work, recv, sizes)

    def all_reduce_grads(self, params, extra):
        """Sum the parameters' gradients over the ranks in one flat buffer (each ``.grad``
        becomes a view of it) with ``extra`` (a 1-element tensor, the share's loss) appended;
        returns the summed ``extra``."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]
                         + [extra.detach().reshape(1).to(grads[0].dtype)])
        dist.all_reduce(flat, group=self.group)
        off = 0
        for p, g in zip(params, grads):
            k = g.numel()
            p.grad = flat[off:off + k].view_as(g)
            off += k
        return flat[-1]

    def all_equal(self, values, what, device):
        """Raise ``RuntimeError`` unless every rank passed the same int64 ``values``."""
        mine = torch.tensor([int(v) for v in values], dtype=torch.int64, device=device)
        got = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(got, mine, group=self.group)
        bad = [r for r, g in enumerate(got) if not torch.equal(g, got[0])]
        if bad:
            raise RuntimeError(f"ranks disagree on {what}: rank 0 has {got[0].tolist()}, rank "
                               f"{bad[0]} has {got[bad[0]].tolist()}; every rank must use the "
                               f"same settings, seed and data")

    def all_reduce_sum(self, values, device):
        """Sum float64 ``values`` over the ranks; returns a list of floats."""
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        dist.all_reduce(t, group=self.group)
        return t.tolist()

    def barrier(self):
        dist.barrier(group=self.group)

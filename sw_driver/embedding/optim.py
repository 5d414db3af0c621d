"""Embedding optimizers applied to rows, with their state stored beside the row.

A table row is ``[dim + state_width]`` floats: the embedding, then the optimizer's state for
that row. The state therefore travels with the row wherever it goes -- gathered with it into
the device's working rows, kept in the hot table for hot rows, written back with it -- and
no separate state table has to follow the schedule.
"""

from __future__ import annotations

import math

import torch

__all__ = ["EmbeddingSGD", "RowWiseAdagrad", "make_optimizer"]


def _check_lr(lr):
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return float(lr)


class EmbeddingSGD:
    """Sparse SGD: ``w[idx] -= lr * grad`` (duplicates add up, in lookup order on the CPU).
    No state (``state_width = 0``)."""

    name = "sgd"
    state_width = 0

    def __init__(self, lr=0.1):
        self.lr = _check_lr(lr)

    def init_state(self, table, dim):
        """Initialise the state columns of ``table`` (none)."""

    def update(self, weight, idx, grad, dim):
        """Apply ``grad`` (``[m, dim]``) for the lookups ``idx`` (rows of ``weight``)."""
        target = weight if weight.shape[1] == dim else weight[:, :dim]
        target.index_add_(0, idx, grad.reshape(idx.numel(), dim).mul(-self.lr))

    def config(self):
        return {"name": self.name, "lr": self.lr}


class RowWiseAdagrad:
    """Row-wise Adagrad, as FBGEMM's ``EXACT_ROWWISE_ADAGRAD`` (TorchRec's default): per
    distinct row ``r`` of a step, ``g = sum of its gradients``, ``s_r += mean(g * g)``,
    ``w_r -= lr * g / (sqrt(s_r) + eps)``. One float of state per row (``state_width = 1``),
    initialised to ``initial_accumulator``."""

    name = "rowwise_adagrad"
    state_width = 1

    def __init__(self, lr=0.05, eps=1e-8, initial_accumulator=0.0):
        self.lr = _check_lr(lr)
        self.eps = float(eps)
        self.initial_accumulator = float(initial_accumulator)
        if not self.eps > 0 or self.initial_accumulator < 0:
            raise ValueError("RowWiseAdagrad: eps must be > 0 and initial_accumulator >= 0")

    def init_state(self, table, dim):
        table[:, dim] = self.initial_accumulator

    def update(self, weight, idx, grad, dim):
        """Without a host synchronisation (no ``torch.unique``, whose size depends on the
        data): the lookups are sorted by row (stable, so each row's gradients keep their
        lookup order), numbered by distinct row with a prefix sum, and summed per row into
        an ``[m, dim]`` buffer (``m`` lookups bound the distinct rows). Every lookup then
        computes its row's new state and values from the old ones -- duplicates compute
        the same numbers -- and one non-accumulating ``index_put_`` writes them."""
        m = idx.numel()
        if m == 0:
            return
        srt, perm = torch.sort(idx, stable=True)
        first = torch.ones(m, dtype=torch.bool, device=idx.device)
        first[1:] = srt[1:] != srt[:-1]
        seg = torch.cumsum(first, 0) - 1                  # distinct-row number per lookup
        g = torch.zeros(m, dim, dtype=grad.dtype, device=grad.device)
        g.index_add_(0, seg, grad.reshape(m, dim).index_select(0, perm))
        g = g.index_select(0, seg)                         # each lookup: its row's sum
        old = weight.index_select(0, srt)
        state = old[:, dim] + g.mul(g).mean(1)
        new = torch.empty_like(old)
        new[:, :dim] = old[:, :dim] - (self.lr * g) / (state.sqrt() + self.eps).unsqueeze(1)
        new[:, dim] = state
        if weight.shape[1] > dim + 1:
            new[:, dim + 1:] = old[:, dim + 1:]
        weight.index_put_((srt,), new)

    def config(self):
        return {"name": self.name, "lr": self.lr, "eps": self.eps,
                "initial_accumulator": self.initial_accumulator}


def make_optimizer(spec):
    """An optimizer object from itself, a name (``"sgd"``, ``"rowwise_adagrad"``) or a
    ``config()`` dict."""
    if isinstance(spec, (EmbeddingSGD, RowWiseAdagrad)):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if isinstance(spec, dict):
        kw = {k: v for k, v in spec.items() if k != "name"}
        name = str(spec.get("name", "")).replace("-", "_")
        if name == "sgd":
            return EmbeddingSGD(**kw)
        if name == "rowwise_adagrad":
            return RowWiseAdagrad(**kw)
    raise ValueError(f"unknown embedding optimizer {spec!r}; use 'sgd' or 'rowwise_adagrad'")

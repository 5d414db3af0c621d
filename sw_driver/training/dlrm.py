"""The DLRM example model (Naumov et al., 2019) without its embedding storage.

``DLRM(n_dense, n_tables, dim)`` is a bottom MLP on the dense features, a dot-product
interaction between the bottom output and the ``T`` embedding vectors, and a top MLP that
ends in one logit. The model takes the **already gathered** embedding rows ``[B, T, dim]``:
where the rows live (device table, host table, hot table + cold rows) is the business of the
training mode (``sw_driver.training.modes``), which is what Hotline changes.

Interaction, as Facebook's DLRM (``interact_features``, ``arch_interaction_op="dot"``,
``arch_interaction_itself=False``): ``Z = [x; e_1..e_T]`` (``[B, T+1, dim]``), all pairwise
dot products ``Z Z^T`` and the strictly lower triangle ``(i, j), j < i`` of it, i.e. the
``(T+1)T/2`` distinct pairs, concatenated after ``x`` and fed to the top MLP. (The strictly
lower triangle of a symmetric matrix is its strictly upper one: the same pairs.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DLRM", "mlp"]


def mlp(sizes, *, last_relu):
    """``Linear`` layers ``sizes[0] -> sizes[1] -> ...`` with ReLU between them (and after
    the last one when ``last_relu``). Weights use DLRM's init: normal with std
    ``sqrt(2 / (fan_in + fan_out))``, biases normal with std ``sqrt(1 / fan_out)``."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(n_in, n_out)
        with torch.no_grad():
            lin.weight.normal_(0.0, math.sqrt(2.0 / (n_in + n_out)))
            lin.bias.normal_(0.0, math.sqrt(1.0 / n_out))
        layers.append(lin)
        if last_relu or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DLRM(nn.Module):
    """DLRM with dot interaction; embeddings are an input.

    Parameters
    ----------
    n_dense : int
        Dense features per sample (13 for Criteo, 2 for Avazu).
    n_tables : int
        Embedding tables ``T`` (one row per table per sample).
    dim : int
        Embedding dimension; the bottom MLP ends at ``dim``.
    bottom : sequence of int
        Hidden sizes of the bottom MLP (default ``(512, 256)``): ``n_dense -> 512 -> 256 ->
        dim``, ReLU after every layer (DLRM's ``sigmoid_bot=-1``).
    top : sequence of int
        Hidden sizes of the top MLP (default ``(512, 256)``): ``dim + (T+1)T/2 -> 512 ->
        256 -> 1``, ReLU between layers, no activation on the logit.

    ``forward(dense [B, n_dense], emb [B, T, dim]) -> logits [B]``.
    """

    def __init__(self, n_dense, n_tables, dim, bottom=(512, 256), top=(512, 256)):
        super().__init__()
        if n_tables < 1 or dim < 1 or n_dense < 0:
            raise ValueError(f"bad DLRM sizes: n_dense={n_dense}, n_tables={n_tables}, dim={dim}")
        self.n_dense, self.n_tables, self.dim = int(n_dense), int(n_tables), int(dim)
        self.bottom = mlp([self.n_dense, *bottom, self.dim], last_relu=True)
        n = self.n_tables + 1
        li, lj = torch.tril_indices(n, n, offset=-1)     # DLRM's (i, j), j < i, row-major
        # One flat gather from the [n * n] products instead of advanced indexing on 2 dims.
        self.register_buffer("_pairs", li * n + lj, persistent=False)
        self.n_pairs = int(self._pairs.numel())
        self.top = mlp([self.dim + self.n_pairs, *top, 1], last_relu=False)

    def interact(self, x, emb):
        """``cat([x, pairwise dots of [x; emb] (strict lower triangle)], 1)``."""
        z = torch.cat([x.unsqueeze(1), emb], dim=1)             # [B, T+1, dim]
        zz = torch.bmm(z, z.transpose(1, 2))                      # [B, T+1, T+1]
        return torch.cat([x, zz.flatten(1).index_select(1, self._pairs)], dim=1)

    def forward(self, dense, emb):
        if emb.dim() != 3 or emb.shape[1] != self.n_tables or emb.shape[2] != self.dim:
            raise ValueError(f"emb must be [B, {self.n_tables}, {self.dim}], "
                             f"got {tuple(emb.shape)}")
        x = self.bottom(dense)
        return self.top(self.interact(x, emb)).squeeze(1)

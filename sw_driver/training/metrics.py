"""Quality metrics computed in torch: ROC AUC by ranks (ties averaged) and log loss."""

from __future__ import annotations

import torch

__all__ = ["roc_auc", "log_loss"]


def roc_auc(scores, labels):
    """ROC AUC of ``scores`` (any monotone score: logits or probabilities) against 0/1
    ``labels``, by the rank-sum (Mann-Whitney U) formula with tied scores given their average
    rank: ``(sum of positive ranks - P (P + 1) / 2) / (P N)``. Computed in float64 on the
    tensors' device. Returns a Python float; ``nan`` when a class is absent."""
    s = torch.as_tensor(scores).detach().reshape(-1).to(torch.float64)
    y = torch.as_tensor(labels).detach().reshape(-1).to(s.device)
    if s.numel() != y.numel():
        raise ValueError(f"{s.numel()} scores but {y.numel()} labels")
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = s.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    sorted_s, order = torch.sort(s, stable=True)
    _, counts = torch.unique_consecutive(sorted_s, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)          # 1-based rank of group's last
    avg = ends - (counts.to(torch.float64) - 1.0) / 2.0        # average 1-based rank of group
    ranks_sorted = torch.repeat_interleave(avg, counts)
    ranks = torch.empty_like(ranks_sorted)
    ranks[order] = ranks_sorted
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def log_loss(logits, labels):
    """Mean binary cross-entropy of ``sigmoid(logits)`` against ``labels`` (natural log),
    computed from the logits in float64 (stable for large magnitudes). Returns a float."""
    z = torch.as_tensor(logits).detach().reshape(-1).to(torch.float64)
    y = torch.as_tensor(labels).detach().reshape(-1).to(z.device, torch.float64)
    return float(torch.nn.functional.binary_cross_entropy_with_logits(z, y))

"""A two-tower retrieval model trained with Hotline, in its own short loop (not DLRM).

User tower: the user id and the bag of items the user clicked before (multi-hot, mean
pooled); item tower: the item id and its category. The logit is the dot product of the two
towers' outputs. Data: synthetic, with a hidden user-item affinity and Zipf-skewed ids so
that a few rows are popular. ``python -m sw_driver.examples.two_tower`` prints the loss.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from sw_driver.embedding import (EmbeddingBagConfig, HotlineEmbeddingBagCollection,
                                 RowWiseAdagrad, SparseFeatures)

KEYS = ("user", "history", "item", "category")


def synthetic_batches(n_batches, batch_size, users=2000, items=3000, categories=20,
                      history=(1, 6), seed=0):
    """``[(SparseFeatures, labels)]``: a click iff the user's hidden taste matches the item's
    category (with 10 % label noise); ids Zipf-like (popular users and items)."""
    g = torch.Generator().manual_seed(seed)
    taste = torch.randint(categories, (users,), generator=g)
    item_cat = torch.randint(categories, (items,), generator=g)

    def zipf(n, size):
        u = torch.rand(size, generator=g)
        return torch.clamp((n ** u - 1).long(), 0, n - 1)       # log-uniform: skewed

    out = []
    for _ in range(n_batches):
        user = zipf(users, batch_size)
        item = zipf(items, batch_size)
        lens = torch.randint(history[0], history[1] + 1, (batch_size,), generator=g)
        hist = zipf(items, int(lens.sum()))
        label = (taste[user] == item_cat[item]).float()
        flip = torch.rand(batch_size, generator=g) < 0.1
        label = torch.where(flip, 1 - label, label)
        values = torch.cat([user, hist, item, item_cat[item]])
        lengths = torch.cat([torch.ones(batch_size, dtype=torch.int64), lens,
                             torch.ones(2 * batch_size, dtype=torch.int64)])
        out.append((SparseFeatures(KEYS, values, lengths), label))
    return out


class TwoTower(nn.Module):
    """Two MLP towers over Hotline's pooled embeddings; logit = <user, item>."""

    def __init__(self, ebc, dim, hidden=32):
        super().__init__()
        self.ebc = ebc
        self.user = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.item = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, features):
        e = self.ebc(features)                      # [B, 4, dim] in KEYS order
        u = self.user(torch.cat([e[:, 0], e[:, 1]], 1))
        i = self.item(torch.cat([e[:, 2], e[:, 3]], 1))
        return (u * i).sum(1)


def build(dim=16, batch_size=128, hot_budget=1024, seed=0, **kw):
    """The model with its Hotline collection and the MLP optimizer."""
    tables = [EmbeddingBagConfig("user", 2000), EmbeddingBagConfig("history", 3000, "mean"),
              EmbeddingBagConfig("item", 3000), EmbeddingBagConfig("category", 20)]
    ebc = HotlineEmbeddingBagCollection(tables, dim, batch_size=batch_size,
                                        optimizer=RowWiseAdagrad(lr=0.05),
                                        hot_budget=hot_budget, seed=seed, **kw)
    torch.manual_seed(seed)
    model = TwoTower(ebc, dim)
    opt = torch.optim.Adam([p for n, p in model.named_parameters()], lr=3e-3)
    return model, opt


def train(n_batches=60, batch_size=128, learn_batches=6, epochs=3, seed=0, **kw):
    """Train and return the mean loss of each epoch (learning batches included)."""
    model, opt = build(batch_size=batch_size, seed=seed, **kw)
    ebc = model.ebc
    data = synthetic_batches(n_batches, batch_size, seed=seed)
    losses = []

    def step(features, labels):
        loss = F.binary_cross_entropy_with_logits(model(features), labels, reduction="sum")
        opt.zero_grad()
        (loss / batch_size).backward()              # the embedding step runs in backward
        opt.step()
        return float(loss.detach())

    for epoch in range(epochs):
        total = 0.0
        rest = data
        if epoch == 0:                              # learn popularity on the first batches
            for feats, labels in data[:learn_batches]:
                ebc.learn(feats)
                total += step(feats, labels)
            ebc.freeze()
            rest = data[learn_batches:]
        for mb in ebc.working_sets(rest):           # popular micro-batches first
            total += step(mb.features, mb.payload)
        losses.append(total / (n_batches * batch_size))
    ebc.close()
    return losses


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m sw_driver.examples.two_tower",
                                description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args(argv)
    for e, loss in enumerate(train(a.batches, epochs=a.epochs)):
        print(f"epoch {e + 1}: loss {loss:.4f}")


if __name__ == "__main__":
    main()

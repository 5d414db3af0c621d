"""A click log streamed from disk (``ClickLogStream`` through ``stream_loader``, worker
processes, chunks smaller than a batch) feeds the drop-in module's working sets exactly as the
same log read into memory does: same micro-batches, same rows, same model afterwards."""

import torch
import torch.nn.functional as F
from torch import nn

from sw_driver.data import find_shared_data, read_criteo
from sw_driver.data.stream import ClickLogStream, stream_loader
from sw_driver.embedding import EmbeddingBagConfig, HotlineEmbeddingBagCollection, RowWiseAdagrad

# Criteo Kaggle's sizes capped at 64 rows: small enough that some inputs are popular.
SIZES = (64, 64, 64, 64, 64, 24, 64, 64, 3, 64, 64, 64, 64, 27, 64, 64, 10, 64, 64, 4, 64,
         18, 15, 64, 64, 64)
B, DIM, LEARN = 64, 4, 4


def _log(tmp_path):
    """The Criteo sample's first 1,500 rows (or synthetic rows in the same layout)."""
    src = find_shared_data("criteo_kaggle_8k")
    out = tmp_path / "day_0"
    if src is not None:
        lines = (src / "train.tsv").read_text().splitlines()[:1500]
    else:
        g = torch.Generator().manual_seed(0)
        lines = []
        for _ in range(1500):
            ints = [str(int(v)) for v in torch.randint(0, 50, (13,), generator=g)]
            cats = [f"{int(v):08x}" for v in torch.randint(0, 2000, (26,), generator=g)]
            lines.append("\t".join([str(int(torch.rand(1, generator=g) < 0.25))] + ints + cats))
    out.write_text("\n".join(lines) + "\n")
    return out


class Tiny(nn.Module):
    """Dense features and the 26 pooled embeddings into one linear logit."""

    def __init__(self, ebc):
        super().__init__()
        self.ebc = ebc
        torch.manual_seed(0)
        self.head = nn.Linear(13 + 26 * DIM, 1)

    def forward(self, sparse, dense):
        return self.head(torch.cat([dense, self.ebc(sparse).flatten(1)], 1)).squeeze(1)


def _train(batches):
    """Learn on the first batches, then working sets; returns (table, head weights, order)."""
    tables = [EmbeddingBagConfig(f"C{t + 1}", n) for t, n in enumerate(SIZES)]
    ebc = HotlineEmbeddingBagCollection(tables, DIM, batch_size=B, working_set=3,
                                        optimizer=RowWiseAdagrad(lr=0.05), hot_budget=1024,
                                        seed=1)
    model = Tiny(ebc)
    opt = torch.optim.SGD(model.head.parameters(), lr=0.05)

    def step(sparse, dense, labels):
        loss = F.binary_cross_entropy_with_logits(model(sparse, dense), labels,
                                                  reduction="sum")
        opt.zero_grad()
        (loss / B).backward()
        opt.step()

    it = iter(batches)
    for _ in range(LEARN):
        batch = next(it)
        ebc.learn(batch.sparse)
        step(batch.sparse, batch.dense, batch.labels)
    ebc.freeze()
    order = []
    pairs = ((batch.sparse, (batch.dense, batch.labels)) for batch in it)
    for mb in ebc.working_sets(pairs):
        dense, labels = mb.payload
        step(mb.features, dense, labels)
        order.append((mb.kind, mb.size, float(labels.sum())))
    table = ebc.embedding_table().clone()
    ebc.close()
    return table, model.head.weight.detach().clone(), order


def test_streamed_log_trains_like_the_log_in_memory(tmp_path):
    path = _log(tmp_path)
    whole = read_criteo(path, table_sizes=SIZES)
    in_memory = _train(whole.mini_batches(B))
    stream = ClickLogStream(path, "criteo", B, table_sizes=SIZES, chunk_rows=40)
    streamed = _train(stream_loader(stream, num_workers=2, prefetch_factor=2))
    assert in_memory[2] == streamed[2] and len(in_memory[2]) > 10
    assert {k for k, _, _ in in_memory[2]} == {"popular", "non_popular"}
    assert torch.equal(in_memory[0], streamed[0])
    assert torch.equal(in_memory[1], streamed[1])

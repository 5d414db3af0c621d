"""The small training set-up shared by the exactness, re-learning, checkpoint and distributed
tests: five tables from 3 to 5000 rows, dim 8, tiny MLPs, working sets of three 32-input
mini-batches, and skewed synthetic data whose cold rows recur in consecutive working sets."""

from sw_driver.data import SyntheticClickGenerator

SIZES = (3, 40, 200, 1000, 5000)
HOT_BUDGET = 256
KW = dict(dim=8, bottom=(16,), top=(16,), lr=0.1, batch_size=32, working_set=3,
          sample_rate=0.1, seed=0, gather_threads=2)


def small_click_data(n=1200, seed=3):
    """``n`` samples with popular inputs (hot heads of 8 rows) and many recurring cold rows."""
    return SyntheticClickGenerator(SIZES, p_hot=0.6, head_rows=8, n_dense=4, seed=seed).batch(n)


class SequentialReference:
    """Plain sequential DLRM training on one full table: the order-by-order reference that the
    pipelined modes must equal bit for bit. ``step(idx)`` trains the inputs ``idx`` of ``ds``
    as one SGD step (loss = summed BCE / N, then the embedding optimizer on the looked-up
    rows: sparse SGD, or with ``adagrad_eps`` row-wise Adagrad written out here: per distinct
    row the summed gradient ``G``, ``s += mean(G^2)``, ``w -= lr G / (sqrt(s) + eps)``, with
    the accumulators in a table of their own)."""

    def __init__(self, ds, kw, adagrad_eps=None):
        import torch
        from sw_driver.training import DLRM, init_table, table_offsets

        self.ds, self.n, self.lr = ds, kw["batch_size"], kw["lr"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(kw["seed"])
            self.model = DLRM(ds.n_dense, ds.n_tables, kw["dim"], kw["bottom"], kw["top"])
        self.opt = torch.optim.SGD(self.model.parameters(), lr=self.lr)
        self.table = init_table(ds.table_sizes, kw["dim"], kw["seed"])
        self.offsets = table_offsets(ds.table_sizes)
        self.eps = adagrad_eps
        self.state = torch.zeros(self.table.shape[0])

    def step(self, idx):
        import torch.nn.functional as F

        ds = self.ds
        g = ds.sparse[idx] + self.offsets
        rows = self.table[g].requires_grad_()
        logits = self.model(ds.dense[idx], rows)
        loss = F.binary_cross_entropy_with_logits(logits, ds.labels[idx], reduction="sum") / self.n
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        grad = rows.grad.flatten(0, 1)
        if self.eps is None:
            self.table.index_add_(0, g.flatten(), -self.lr * grad)
            return
        import torch
        uniq, inv = torch.unique(g.flatten(), return_inverse=True)
        G = torch.zeros(uniq.numel(), grad.shape[1]).index_add_(0, inv, grad)
        self.state[uniq] += G.mul(G).mean(1)
        self.table[uniq] -= (self.lr * G) / (self.state[uniq].sqrt() + self.eps).unsqueeze(1)

    def working_set(self, sched, start):
        """Train one working set's schedule in the documented order: the popular
        micro-batches, then the non-popular micro-batch in near-equal steps of at most N
        inputs. ``start`` is the working set's first sample in ``ds``."""
        import torch

        for mb in sched.popular_micro_batches:
            self.step(start + mb)
        k = sched.non_popular.numel()
        if k:
            for chunk in torch.tensor_split(sched.non_popular, -(-k // self.n)):
                self.step(start + chunk)

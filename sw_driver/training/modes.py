"""The three embedding-storage modes of the trainer (``docs/training.md``), all on the drop-in
module :class:`~sw_driver.embedding.HotlineEmbeddingBagCollection`.

The module keeps the ``T`` tables as **one** concatenated ``float32 [sum(table_rows), dim]``
tensor (table ``t`` starts at ``offsets[t]``; lookup ``(t, r)`` is global row
``offsets[t] + r``), so a mini-batch is one gather and one ``index_add_`` whatever ``T``, and
applies the sparse SGD on rows (``table.index_add_(0, idx, -lr * grad)``). The trainer's single
micro-batch step (:meth:`Trainer._step`: forward, backward, ``torch.optim.SGD`` on the MLPs,
the row-gradient exchange when distributed) sits between the module's ``lookup`` and
``apply_gradient``. The modes differ only in the module's ``mode``:

* ``gpu-only`` -- the table on the training device (the ceiling);
* ``hybrid`` -- the table in host memory; rows gathered on the CPU, copied to the device,
  gradients copied back, sparse SGD on the CPU (the paper's baseline);
* ``hotline`` -- the table in host memory, popular rows in a hot table on the device, working
  sets scheduled by the driver and pipelined by the module (cold gather and copies overlap
  the popular micro-batches, :mod:`sw_driver.embedding.pipeline`).
"""

from __future__ import annotations

import math

import torch

__all__ = ["MODES", "EmbeddingStore", "init_table", "table_offsets", "eal_config_for_budget"]

MODES = ("gpu-only", "hybrid", "hotline")


def table_offsets(table_rows):
    """int64 ``[T]``: first global row of each table (``sum(table_rows[:t])``)."""
    rows = torch.tensor([int(r) for r in table_rows], dtype=torch.int64)
    return torch.cumsum(rows, 0) - rows


def init_table(table_rows, dim, seed, out=None, pin=False):
    """The concatenated table initialised as DLRM does: table ``t`` uniform in
    ``+-sqrt(1 / n_t)``, drawn from a CPU generator seeded with ``seed`` table after table, so
    every mode starts from the same values. Filled in place in ``out`` when given, else
    allocated (pinned when ``pin``)."""
    total = sum(int(r) for r in table_rows)
    if out is None:
        out = torch.empty(total, dim, dtype=torch.float32, pin_memory=pin)
    g = torch.Generator().manual_seed(int(seed))
    start = 0
    for n in table_rows:
        n = int(n)
        bound = math.sqrt(1.0 / n)
        out[start:start + n].uniform_(-bound, bound, generator=g)
        start += n
    return out


def eal_config_for_budget(hot_budget, table_rows, ways=None, banks=16, policy="srrip"):
    """The EAL geometry for a hot budget (rows the hot table may hold).

    Rule: ``entries = banks * sets * ways`` is the smallest power of two ``>= hot_budget``
    (at least ``ways``) with ``ways = 4`` (srrip, the paper's) or ``16`` (lfu: wider sets let
    it keep the globally frequent rows, docs/benchmarks.md) unless given, and ``banks =
    min(16, entries / ways)``, so ``sets = entries / (banks * ways)``. The key fields keep the spec's defaults (5 table bits,
    24 row bits) unless the tables need more. The popular set is at most ``entries`` rows
    (srrip: entries with RRPV <= 1 at freeze time; lfu: every tracked row), so the hot table's
    device memory is ``entries * dim * 4`` bytes. ``policy`` is the EAL's (docs/spec.md 4).
    """
    from hotline_spec.config import EALConfig

    if hot_budget < 1:
        raise ValueError(f"hot_budget must be >= 1, got {hot_budget}")
    if ways is None:
        ways = 4 if policy == "srrip" else 16
    entries = max(ways, 1 << (int(hot_budget) - 1).bit_length())
    banks = min(banks, entries // ways)
    sets = entries // (banks * ways)
    table_bits = max(5, (len(table_rows) - 1).bit_length())
    row_bits = max(24, (max(int(r) for r in table_rows) - 1).bit_length())
    return EALConfig(banks=banks, sets=sets, ways=ways, table_bits=table_bits,
                     row_bits=row_bits, policy=policy)


# ------------------------------------------------------------------------------------------
class EmbeddingStore:
    """The trainer's embedding rows in one mode: a
    :class:`~sw_driver.embedding.HotlineEmbeddingBagCollection` (``ebc``) with one one-hot
    table per categorical feature, the trainer's embedding optimizer
    (:class:`~sw_driver.embedding.EmbeddingSGD` with the trainer's ``lr`` by default), and
    ``bounds_check="none"`` (a ``ClickDataset`` checked its rows when it was built)."""

    def __init__(self, trainer, host_init, mode, hotline_options=None):
        from sw_driver.embedding import EmbeddingBagConfig, HotlineEmbeddingBagCollection

        tr = trainer
        self.tr, self.name = tr, mode
        self.device, self.cuda, self.dim = tr.device, tr.cuda, tr.dim
        tables = [EmbeddingBagConfig(f"t{t}", n) for t, n in enumerate(tr.table_sizes)]
        opts = dict(hotline_options or {})
        if mode == "hotline" and opts.get("max_cold_rows") is None:
            opts["max_cold_rows"] = _cold_rows(opts, tr)
        self.ebc = HotlineEmbeddingBagCollection(
            tables, tr.dim, batch_size=tr.batch_size, optimizer=tr.embedding_optimizer,
            device=tr.device, mode=mode, working_set=tr.working_set,
            np_micro_batch_size=tr.np_micro_batch_size, bounds_check="none",
            host_table=host_init, timer=tr.timer, trace_working_set=tr.trace_working_set,
            **opts)

    # --- what the trainer and the benchmark read -----------------------------------------
    @property
    def dev(self):
        """The driver (hotline; ``None`` otherwise)."""
        return self.ebc.dev if self.ebc is not None else None

    @property
    def frozen(self):
        """Whether the EAL is frozen (hotline)."""
        return self.ebc.frozen

    @property
    def hot(self):
        """The driver's ``HotRows`` of the last freeze (hotline), else ``None``."""
        return self.ebc.hot

    @property
    def hot_rows(self):
        """Rows in the hot table (popular entries at freeze time)."""
        return self.ebc.hot_rows

    @property
    def working(self):
        """The device buffer: hot table, then the working set's cold rows (hotline)."""
        return self.ebc.working

    @property
    def table(self):
        """The complete table (on the device in gpu-only mode, else in host memory)."""
        return self.ebc.table

    def close(self):
        """Release everything the module holds (driver, thread, tables, buffers) at once,
        even while a reference cycle keeps the trainer object itself alive."""
        if self.ebc is not None:
            self.ebc.close()
            self.ebc = None

    # --- one mini-batch the gpu-only / hybrid way ----------------------------------------
    def step(self, data, a, b, kind="step", index=0):
        """Train samples ``a..b-1`` as one mini-batch with every row read from the table:
        gpu-only on the device; hybrid (and hotline's learning phase): CPU gather -> H2D ->
        forward/backward -> D2H of the gradient -> sparse SGD on the CPU."""
        tr, ebc = self.tr, self.ebc
        rec = tr.timer.record(kind, index)
        if self.name == "gpu-only":
            tok = rec.dev_begin("compute")
            rows, plan = ebc.lookup(data.sparse[a:b])
            grad = tr._step(data.dense[a:b], data.labels[a:b], rows)
            ebc.apply_gradient(plan, grad)
            rec.dev_end(tok)
        else:
            rows, plan = ebc.lookup(data.sparse_cpu[a:b], rec)
            tok = rec.dev_begin("compute")
            grad = tr._step(data.dense[a:b], data.labels[a:b], rows)
            rec.dev_end(tok)
            ebc.apply_gradient(plan, grad)
        tr.timer.close(rec)

    # --- gpu-only / hybrid -----------------------------------------------------------------
    def train(self, data, start, stop, progress=None, first_index=0):
        """Train samples ``start..stop-1``: mini-batches (gpu-only, hybrid) or working sets
        (hotline, which needs a frozen EAL)."""
        if self.name == "hotline":
            return self._train_working_sets(data, start, stop, progress, first_index)
        N = self.tr.batch_size
        for i, a in enumerate(range(start, stop, N)):
            b = min(a + N, stop)
            self.step(data, a, b, "step", first_index + i)
            if progress:
                progress(b - a)

    # --- hotline ---------------------------------------------------------------------------
    def _train_working_sets(self, data, start, stop, progress, first_index):
        """Working sets of ``W`` mini-batches through the module's pipeline; the payload of
        each micro-batch is its samples' positions in ``data``."""
        tr, ebc = self.tr, self.ebc
        if not ebc.frozen:
            raise RuntimeError("hotline training needs a frozen EAL: call freeze() first")
        step = tr.working_set * tr.batch_size
        device = data.labels.device

        def batches():
            for a in range(start, stop, step):
                b = min(a + step, stop)
                yield data.sparse[a:b], torch.arange(a, b, device=device)

        for mb in ebc.working_sets(batches(), first_index):
            pos = mb.payload
            rows, plan = ebc.lookup(mb.features)
            grad = tr._step(data.dense.index_select(0, pos), data.labels.index_select(0, pos),
                            rows)
            ebc.apply_gradient(plan, grad)
            if progress:
                progress(mb.size)

    def learn(self, sparse_cpu):
        """Feed row indices ``int64 [n, T]`` to the EAL (learn mode, stream order)."""
        if self.frozen:
            raise RuntimeError("popularity is frozen; learn() must come before freeze()")
        self.ebc.learn(sparse_cpu)

    def freeze(self, popular_max_rrpv=None):
        """Freeze the EAL and fill the hot table from the host table."""
        return self.ebc.freeze(popular_max_rrpv)

    def begin_relearn(self, flush=True):
        """Start a re-learn: the hot rows go home (``flush=False`` drops them, after the host
        table was overwritten), the tag store is cleared and the EAL learns again."""
        self.ebc.relearn(flush=flush)

    def tag_store(self):
        """The EAL tag store as CPU tensors (``Transport.dump_tensors``)."""
        return self.ebc.tag_store()

    def restore(self, tag_store, frozen, popular_max_rrpv=None):
        """Replace the EAL's state by ``tag_store`` and, if ``frozen``, freeze and refill the
        hot table from the host table (which must already hold the complete table)."""
        self.ebc.restore(tag_store, frozen, popular_max_rrpv)

    def flush(self):
        """Copy the hot rows back to the host table, which is then complete."""
        self.ebc.flush()

    # --- evaluation and checkpoints --------------------------------------------------------
    def eval_rows(self, data, a, b):
        """Rows ``[b - a, T, dim]`` on the device for evaluation (under ``no_grad``)."""
        sparse = data.sparse if self.name == "gpu-only" else data.sparse_cpu
        return self.ebc.lookup(sparse[a:b])[0]

    def full_table(self):
        """The complete table (hot rows flushed first); the caller must not modify it."""
        self.flush()
        return self.ebc.table[:, :self.dim]

    def optimizer_state(self):
        """A CPU copy of the embedding optimizer's per-row state (hot rows flushed), or
        ``None`` when it keeps none (SGD)."""
        if self.ebc.width == self.dim:
            return None
        self.flush()
        return self.ebc.table[:, self.dim:].detach().to("cpu", copy=True)

    def load_table(self, table, state=None):
        """Overwrite the complete table with ``table`` (``[sum(table_rows), dim]``) and the
        optimizer's per-row state with ``state`` (re-initialised when ``None``)."""
        self.ebc.table[:, :self.dim].copy_(table)
        if self.ebc.width > self.dim:
            if state is None:
                self.ebc.optimizer.init_state(self.ebc.table, self.dim)
            else:
                self.ebc.table[:, self.dim:].copy_(state)


def _cold_rows(opts, tr):
    """The cold-row buffer: every lookup of a working set cold (``W * N * T``), or the most
    cold rows the fragmenter's de-dup table lets a working set have, whichever is less."""
    from hotline_spec.config import FragmenterConfig

    frag = opts.get("fragmenter") or FragmenterConfig(eal=opts["eal_config"])
    return min(tr.working_set * tr.batch_size * tr.n_tables, frag.cold_capacity)

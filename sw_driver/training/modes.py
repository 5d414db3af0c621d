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
import os

import torch

__all__ = ["MODES", "EmbeddingStore", "init_table", "table_offsets", "eal_config_for_budget",
           "DEFAULT_POLICY", "fragmenter_for", "memory_budget"]

MODES = ("gpu-only", "hybrid", "hotline")

#: The EAL policy of the trainer, its command line and ``eal_config_for_budget``: ``lfu``
#: finds 0.89-1.00 of an exact oracle's popular inputs where the paper's ``srrip`` finds
#: 0.41-0.92 (docs/benchmarks.md, "EAL policies"); ``srrip`` stays available.
DEFAULT_POLICY = "lfu"


def table_offsets(table_rows):
    """int64 ``[T]``: first global row of each table (``sum(table_rows[:t])``)."""
    rows = torch.tensor([int(r) for r in table_rows], dtype=torch.int64)
    return torch.cumsum(rows, 0) - rows


def init_table(table_rows, dim, seed, out=None, pin=False, threads=None):
    """The concatenated table initialised as DLRM does: table ``t`` uniform in
    ``+-sqrt(1 / n_t)``, drawn from a CPU generator seeded with ``seed`` table after table, so
    every mode starts from the same values. Filled in place in ``out`` when given, else
    allocated (pinned when ``pin``).

    ``threads`` (default: the CPU count, at most 32) fills chunks of rows in parallel with
    the same values as one generator drawing table after table, row after row: each chunk's
    generator starts from the serial generator's state at the chunk's first element (one
    32-bit Mersenne-Twister draw an element, skipped ahead in compiled code,
    :mod:`sw_driver.training.mt_skip`), and torch's ``uniform_`` (serial, GIL released)
    draws the chunk. ``threads=1``, small tables, an ``out`` that is not float32 with
    contiguous rows, or a torch whose
    generator does not behave so (checked once per process) take the serial loop."""
    total = sum(int(r) for r in table_rows)
    if out is None:
        out = torch.empty(total, dim, dtype=torch.float32, pin_memory=pin)
    if threads is None:
        threads = min(32, os.cpu_count() or 1)
    if threads > 1 and total * dim >= 2 * _INIT_CHUNK and out.dtype == torch.float32:
        from .mt_skip import parallel_uniform_tables
        if parallel_uniform_tables(out, [int(n) for n in table_rows], int(seed), threads,
                                   _INIT_CHUNK):
            return out
    g = torch.Generator().manual_seed(int(seed))
    start = 0
    for n in table_rows:
        n = int(n)
        bound = math.sqrt(1.0 / n)
        out[start:start + n].uniform_(-bound, bound, generator=g)
        start += n
    return out


#: Elements per parallel chunk of :func:`init_table` (about 16 MiB of float32).
_INIT_CHUNK = 1 << 22


def eal_config_for_budget(hot_budget, table_rows, ways=None, banks=16, policy=DEFAULT_POLICY):
    """The EAL geometry for a hot budget (rows the hot table may hold).

    Rule: ``entries = banks * sets * ways`` is the smallest power of two ``>= hot_budget``
    (at least ``ways``) with ``ways = 4`` (srrip, the paper's) or ``16`` (lfu: wider sets let
    it keep the globally frequent rows, docs/benchmarks.md) unless given, and ``banks =
    min(16, entries / ways)``, so ``sets = entries / (banks * ways)``. The key fields keep the spec's defaults (5 table bits,
    24 row bits) unless the tables need more. The popular set is at most ``entries`` rows
    (srrip: entries with RRPV <= 1 at freeze time; lfu: every tracked row), so the hot table's
    device memory is ``entries * dim * 4`` bytes. ``policy`` is the EAL's (docs/spec.md 4;
    default :data:`DEFAULT_POLICY`, ``lfu``).
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
        # The de-dup table and the cold buffer default in the module: sized for its working
        # set (W * N inputs of T lookups), as fragmenter_for and cold_buffer_rows say.
        opts = dict(hotline_options or {})
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


def fragmenter_for(eal_config, working_set, batch_size, n_tables, cold_share=1.0):
    """The trainer's default de-dup table: sized for a working set of ``working_set *
    batch_size`` inputs of ``n_tables`` lookups (``hotline_spec.config.
    fragmenter_for_working_set``; ``cold_share = 1``: every lookup may be a distinct cold row),
    so that working sets (almost) never end early; never smaller than the RTL's default."""
    from hotline_spec.config import fragmenter_for_working_set

    return fragmenter_for_working_set(eal_config, int(working_set) * int(batch_size),
                                      int(n_tables), cold_share=cold_share)


def cold_buffer_rows(fragmenter, working_set, batch_size, lookups_per_input):
    """Rows of the cold-row buffer (device) and of each pinned staging buffer: the most cold
    rows a working set can have, ``min(W * N * lookups, fragmenter.cold_capacity)``."""
    return min(int(working_set) * int(batch_size) * int(lookups_per_input),
               fragmenter.cold_capacity)


def _pow2_at_least(m):
    return 1 << max(0, int(m) - 1).bit_length()


def memory_budget(table_rows, dim, mode="hotline", *, batch_size, working_set=4,
                  state_width=0, eal_config=None, hot_budget=4096, policy=DEFAULT_POLICY,
                  fragmenter=None, max_cold_rows=None, hot_rows=None, cuda=True,
                  lookups_per_input=None):
    """Bytes the embedding storage of one mode allocates, item by item (``docs/training.md``,
    "Memory budget"): a dict ``{item: bytes}`` plus the totals ``device_total`` (the training
    device: GPU memory on CUDA), ``pinned_total`` (page-locked host memory; 0 without CUDA,
    where the same buffers are ordinary host memory and counted in ``host_total``) and
    ``host_total`` (pageable host memory).

    A stored row is ``width = dim + state_width`` float32 (the embedding optimizer's state
    travels with the row). Items:

    * ``host_table``: ``sum(table_rows) * width * 4`` (host; hybrid and hotline);
    * ``device_table`` (gpu-only): the same on the device;
    * ``hybrid_rows`` / ``hybrid_grad`` (hybrid, and hotline's learning mini-batches):
      the hybrid path's reusable buffers for one mini-batch's lookups, ``P = next power of
      two >= batch_size * lookups`` rows of ``width`` / ``dim`` floats (pinned on CUDA);
    * hotline: ``hot_table`` (device; ``hot_rows`` rows: the hot capacity of the compact
      layout when given, else the EAL's ``entries``), ``cold_buffer`` (device, ``cap`` rows),
      ``slot_map`` (device, int32 per global row; int64 with ``entries >= 2**31``),
      ``staging_in`` and ``staging_out`` (pinned, ``cap`` rows each), where ``cap`` =
      :func:`cold_buffer_rows` (``max_cold_rows`` when given) for the ``fragmenter``
      (default :func:`fragmenter_for`) of the EAL (``eal_config``, default
      ``eal_config_for_budget(hot_budget, table_rows, policy=policy)``).

    Not counted: the MLPs and their activations, staged data sets, the driver's per-schedule
    tensors (a few ``int64`` per lookup of one working set) and allocator rounding.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rows = sum(int(r) for r in table_rows)
    T = len(table_rows) if lookups_per_input is None else int(lookups_per_input)
    width, f4 = int(dim) + int(state_width), 4
    out = {}
    pinned = {}
    if mode == "gpu-only":
        out["device_table"] = rows * width * f4
    else:
        out["host_table"] = rows * width * f4
        p = _pow2_at_least(int(batch_size) * T)
        pinned["hybrid_rows"] = p * width * f4
        pinned["hybrid_grad"] = p * int(dim) * f4
    device_items = {"device_table", "hot_table", "cold_buffer", "slot_map"}
    if mode == "hotline":
        eal = eal_config or eal_config_for_budget(hot_budget, table_rows, policy=policy)
        frag = fragmenter or fragmenter_for(eal, working_set, batch_size, T)
        cap = int(max_cold_rows) if max_cold_rows else cold_buffer_rows(
            frag, working_set, batch_size, T)
        hot = eal.entries if hot_rows is None else int(hot_rows)
        out["hot_table"] = hot * width * f4
        out["cold_buffer"] = cap * width * f4
        out["slot_map"] = rows * (4 if eal.entries < 2**31 else 8)
        pinned["staging_in"] = cap * width * f4
        pinned["staging_out"] = cap * width * f4
    out.update(pinned)
    out["device_total"] = sum(v for k, v in out.items() if k in device_items)
    out["pinned_total"] = sum(pinned.values()) if cuda else 0
    out["host_total"] = out.get("host_table", 0) + (0 if cuda else sum(pinned.values()))
    return out

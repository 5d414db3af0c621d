"""``HotlineEmbeddingBagCollection``: Hotline's embedding storage as a drop-in ``nn.Module``.

The module owns the host tables (CPU memory), the hot table (training device), the driver
(:class:`~sw_driver.driver.HotlineDevice`) and the embedding optimizer, whose step is fused
into backward as in FBGEMM's table-batched embeddings: ``loss.backward()`` updates the rows
that the forward read. A training loop looks like (docs/training.md)::

    ebc = HotlineEmbeddingBagCollection(tables, dim=16, batch_size=256,
                                        optimizer=RowWiseAdagrad(lr=0.05))
    for feats, payload in head:            # 1. learn popularity (trained on host rows)
        ebc.learn(feats); train_step(feats, payload)
    ebc.freeze()
    for mb in ebc.working_sets(batches):   # 2. popular micro-batches, then the rest
        train_step(mb.features, mb.payload)

Storage: one ``float32`` tensor ``[sum(num_embeddings), dim + state_width]`` (table ``t``
from row ``offsets[t]``); each row's optimizer state sits in its last columns, so the state
travels with the row through gathers, the hot table and write-backs. ``mode`` says where it
lives: ``"hotline"`` (host memory, popular rows in a hot table on the device, working sets
pipelined by :mod:`.pipeline`), ``"hybrid"`` (host memory, every lookup gathered on the CPU:
the paper's baseline) or ``"gpu-only"`` (all of it on the device: the ceiling). The DLRM
trainer (:mod:`sw_driver.training`) runs its three modes on this module.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .features import InputMajor, SparseFeatures, check_index_dtype
from .optim import make_optimizer
from .pipeline import WorkingSetPipeline, _payload_map
from ..training.timing import PhaseTimer, _NullRecord

__all__ = ["EmbeddingBagConfig", "HotlineEmbeddingBagCollection", "MicroBatch",
           "BOUNDS_CHECK_MODES", "POOLING_MODES", "PLACEMENT_MODES"]

#: FBGEMM's bounds-check modes: ``error`` (FATAL), ``warn`` (WARNING: clamp), ``ignore``
#: (IGNORE: drop the lookup) and ``none`` (NONE: the caller vouches for the indices; the
#: driver's schedule still refuses an out-of-range row in hotline working sets)
BOUNDS_CHECK_MODES = ("error", "warn", "ignore", "none")
POOLING_MODES = ("sum", "mean")
#: where the rows live (see the module doc)
PLACEMENT_MODES = ("hotline", "hybrid", "gpu-only")


@dataclass(frozen=True)
class EmbeddingBagConfig:
    """One table: ``name`` (its key in :class:`SparseFeatures`), ``num_embeddings`` rows and
    its ``pooling`` (``"sum"`` or ``"mean"``; an empty bag pools to zeros)."""

    name: str
    num_embeddings: int
    pooling: str = "sum"

    def __post_init__(self):
        if isinstance(self.num_embeddings, bool) or int(self.num_embeddings) < 1:
            raise ValueError(f"table {self.name!r}: num_embeddings must be >= 1, not "
                             f"{self.num_embeddings!r}")
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"table {self.name!r}: pooling must be one of {POOLING_MODES}, "
                             f"not {self.pooling!r}")


class _Plan:
    """What one forward read: ``idx`` rows of ``weight`` (``"working"``: the device's hot +
    cold rows; ``"host"``: the host table), pooled into ``n_bags`` bags. A ``"working"`` plan
    also keeps its micro-batch (``sf``: the working set, its generation and the hot table's
    epoch), so that a late backward finds its rows (:meth:`HotlineEmbeddingBagCollection.
    apply_gradient`)."""

    def __init__(self, target, idx, bags, n_bags, scale, batch, one_hot, rec=None, sf=None):
        self.target, self.idx, self.bags, self.n_bags = target, idx, bags, n_bags
        self.scale, self.batch, self.one_hot = scale, batch, one_hot
        self.rec = rec or _NULL_RECORD
        self.sf = sf


class _FusedLookup(torch.autograd.Function):
    """Forward: the pooled rows; backward: the optimizer step on those rows (no gradient
    tensor for the table is ever materialised)."""

    @staticmethod
    def forward(ctx, anchor, ebc, plan, pooled):
        ctx.ebc, ctx.plan = ebc, plan
        return pooled.detach().clone() if pooled.requires_grad else pooled

    @staticmethod
    def backward(ctx, grad):
        ctx.ebc.apply_gradient(ctx.plan, grad)
        return None, None, None, None


class MicroBatch:
    """One micro-batch of a working set, from :meth:`HotlineEmbeddingBagCollection.working_sets`.

    ``features``: pass it to the collection's forward (it carries the schedule's rows);
    ``payload``: the batches' payload (a tensor, tuple, list or dict of tensors with the
    sample dimension first) restricted to this micro-batch's samples, in the same order;
    ``kind``: ``"popular"`` or ``"non_popular"``; ``size``: samples; ``working_set``: index."""

    def __init__(self, features, payload, kind, size, working_set):
        self.features, self.payload, self.kind = features, payload, kind
        self.size, self.working_set = size, working_set


class _Scheduled:
    """The features of a micro-batch: its samples' lookups in the working set's schedule
    (``kind``, ``index``: its place in working set ``ws_index``, for error messages)."""

    def __init__(self, ebc, ws, group, kind="popular", index=0, ws_index=0):
        self.ebc, self.ws = ebc, ws
        self.samples, self.pos, self.bags = group     # its lookups: positions in ws.im
        self.generation = ebc._ws_generation
        self.hot_epoch = ebc._hot_epoch
        self.kind, self.index, self.ws_index = kind, index, ws_index

    def label(self):
        return f"{self.kind} micro-batch {self.index} of working set {self.ws_index}"


#: the record of a switched-off phase timer (the trainer passes its own records)
_NULL_RECORD = _NullRecord()


class HotlineEmbeddingBagCollection(nn.Module):
    """Embedding bags whose popular rows live in GPU memory and the rest in host memory.

    Parameters
    ----------
    tables : sequence of :class:`EmbeddingBagConfig` (or ``(name, num_embeddings)``)
    dim : embedding dimension (every table)
    batch_size : mini-batch size ``N``: the popular micro-batch size, and the scale of a
        working set (``working_set * N`` samples)
    optimizer : :class:`~.optim.EmbeddingSGD`, :class:`~.optim.RowWiseAdagrad`, or a name
    device : where the hot table and the pooled outputs live
    mode : ``"hotline"`` (default), ``"hybrid"`` (rows in host memory, no EAL: every
        lookup gathered on the CPU) or ``"gpu-only"`` (every row on ``device``)
    hot_budget : rows the hot table may hold (EAL geometry by
        :func:`~sw_driver.training.eal_config_for_budget`, unless ``eal_config`` is given)
    policy : the EAL's popularity policy, ``"lfu"`` (default: it finds the most of an exact
        oracle's popular inputs, docs/benchmarks.md) or ``"srrip"`` (the paper's)
    working_set : ``W``, mini-batches per working set
    np_micro_batch_size : the non-popular micro-batch is cut into steps of at most this many
        samples (default ``batch_size``; ``0``: one step)
    bounds_check : ``"error"`` (raise, naming table, sample and row), ``"warn"`` (clamp
        into the table and warn with the count), ``"ignore"`` (drop the lookup from its bag
        silently), ``"none"`` (no check: for indices already validated, e.g. a
        ``ClickDataset``); violations are counted in :attr:`bounds_violations`
    seed : initial values: table ``t`` uniform in ``+-sqrt(1 / num_embeddings)`` (DLRM)
    host_table : optional ``float32 [sum(num_embeddings), dim + state_width]`` CPU tensor
        used in place as the initial rows (several collections can share a start point);
        its state columns are initialised by the optimizer
    pipelined : gather the next cold rows in the background while the popular
        micro-batches train (``False``: the same order, one step after another)
    timer : a :class:`~sw_driver.training.timing.PhaseTimer` that gets one record per
        working set (phases ``schedule``, ``popular``, ``gather``, ``h2d``, ``non_popular``,
        ``d2h``, ``write_back``) and a ``drain`` record; ``trace_working_set`` picks the
        working set (index within a :meth:`working_sets` call) whose timeline it keeps
    transport, gather_threads, fragmenter, eal_config, max_cold_rows : the driver's
        (``fragmenter`` default: the de-dup table sized for ``working_set * batch_size``
        inputs of one lookup per table, so working sets do not end early;
        ``max_cold_rows`` default: the most cold rows such a working set can have)

    Memory (``sw_driver.training.modes.memory_budget``, docs/training.md "Memory budget"):
    the hot table holds the popular rows found at :meth:`freeze` (compact slots, grown by a
    re-learn that finds more), the cold buffer ``max_cold_rows`` rows, both on ``device``;
    two pinned staging buffers of ``max_cold_rows`` rows; the host table.
    """

    def __init__(self, tables, dim, *, batch_size, optimizer="sgd", device="cpu",
                 mode="hotline", hot_budget=4096, policy=None, working_set=4,
                 np_micro_batch_size=None, bounds_check="error", seed=0, host_table=None,
                 pipelined=True, timer=None, trace_working_set=None, transport="model",
                 gather_threads=2, fragmenter=None, eal_config=None, max_cold_rows=None):
        super().__init__()
        from sw_driver.training.modes import (DEFAULT_POLICY, cold_buffer_rows,
                                              eal_config_for_budget, init_table, table_offsets)

        self.tables = tuple(t if isinstance(t, EmbeddingBagConfig) else EmbeddingBagConfig(*t)
                            for t in tables)
        if not self.tables:
            raise ValueError("HotlineEmbeddingBagCollection: no tables")
        names = [t.name for t in self.tables]
        if len(set(names)) != len(names):
            raise ValueError(f"HotlineEmbeddingBagCollection: table names repeat: {names}")
        dim, batch_size, working_set = (_whole(v, name, 1) for v, name in (
            (dim, "dim"), (batch_size, "batch_size"), (working_set, "working_set")))
        if np_micro_batch_size is not None:
            np_micro_batch_size = _whole(np_micro_batch_size, "np_micro_batch_size", 0)
        if max_cold_rows is not None:
            max_cold_rows = _whole(max_cold_rows, "max_cold_rows", 1)
        _check_device(device)
        if bounds_check not in BOUNDS_CHECK_MODES:
            raise ValueError(f"bounds_check must be one of {BOUNDS_CHECK_MODES}, not "
                             f"{bounds_check!r}")
        if mode not in PLACEMENT_MODES:
            raise ValueError(f"mode must be one of {PLACEMENT_MODES}, not {mode!r}")
        self.mode = mode
        self.keys = tuple(names)
        self.dim = int(dim)
        self.batch_size = int(batch_size)
        self.working_set_size = int(working_set)
        self.np_micro_batch_size = (self.batch_size if np_micro_batch_size is None
                                    else int(np_micro_batch_size))
        self.bounds_check = bounds_check
        self.bounds_violations = 0
        self.pipelined = bool(pipelined)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.optimizer = make_optimizer(optimizer)
        self.table_rows = tuple(int(t.num_embeddings) for t in self.tables)
        self._rows = torch.tensor(self.table_rows, dtype=torch.int64)
        self.offsets = table_offsets(self.table_rows)
        self._offsets_dev = {}
        self._mean = torch.tensor([t.pooling == "mean" for t in self.tables])
        self.width = self.dim + self.optimizer.state_width
        self.timer = timer or PhaseTimer(self.device, enabled=False)
        self.trace_working_set = trace_working_set
        shape = (sum(self.table_rows), self.width)
        if host_table is None:
            # Not pinned: nothing DMAs from it (copies go through pinned staging buffers),
            # and the pinned allocator would round a huge table up to a power of two.
            host_table = torch.empty(shape)
            init_table(self.table_rows, self.dim, seed, out=host_table[:, :self.dim])
        elif tuple(host_table.shape) != shape or host_table.dtype != torch.float32:
            raise ValueError(f"host_table must be float32 {list(shape)} (rows, dim + the "
                             f"optimizer's {self.optimizer.state_width} state columns), not "
                             f"{host_table.dtype} {list(host_table.shape)}")
        self.optimizer.init_state(host_table, self.dim)
        #: the complete rows with their optimizer state: on ``device`` in gpu-only mode,
        #: else in host memory (hot rows are current in :attr:`working` while frozen)
        self.table = host_table.to(self.device, copy=True) if mode == "gpu-only" else host_table
        self._pin_rows = self._pin_grad = None      # hybrid-path staging (CUDA)
        self._read_done = None                       # the last H2D out of _pin_rows
        self._grad_done = torch.cuda.Event() if self.cuda else None
        self.working = None
        self.hot = None
        self.dev = self.pipeline = None
        self.entries = 0
        self._ws_generation = 0
        self._hot_epoch = 0              # +1 at every freeze / relearn: the hot layout changed
        if mode == "hotline":
            from sw_driver.driver import HotlineDevice

            self.eal_config = eal_config or eal_config_for_budget(hot_budget, self.table_rows,
                                                                  policy=policy or DEFAULT_POLICY)
            # The de-dup table is sized for a working set of W * N inputs (one lookup per
            # table each) unless a fragmenter is given, so schedules do not end early; hot
            # rows are compact (0..n_hot-1), so the hot table holds the popular rows, not
            # one slot per EAL entry. ``entries`` (the hot table's rows) is set at freeze.
            inputs = self.working_set_size * self.batch_size
            self.dev = HotlineDevice(self.table_rows, self.width, config=self.eal_config,
                                     transport=transport, device=str(self.device),
                                     gather_threads=gather_threads, fragmenter=fragmenter,
                                     working_set=(inputs, len(self.tables)),
                                     hot_slots="compact")
            cold = cold_buffer_rows(self.dev.fragmenter, self.working_set_size,
                                    self.batch_size, len(self.tables))
            self.pipeline = WorkingSetPipeline(self, int(max_cold_rows or cold))
            self.cap = self.pipeline.cap

    # --- state --------------------------------------------------------------------------
    @property
    def host_table(self):
        """The rows in host memory ``[sum(rows), dim + state_width]`` (``None`` in gpu-only
        mode); hot rows are stale there until :meth:`flush`."""
        return None if self.mode == "gpu-only" else self.table

    @property
    def frozen(self):
        """Whether popularity is frozen (training then goes through :meth:`working_sets`)."""
        return self.dev is not None and self.dev.state == "frozen"

    @property
    def hot_rows(self):
        """Rows in the hot table."""
        return 0 if self.hot is None else self.hot.n

    def close(self):
        """Release the driver, the background thread and every table and buffer the module
        holds, so the memory is free at once (idempotent; the module cannot train after).
        An open :meth:`working_sets` loop is ended first (its rows are written home)."""
        if self.pipeline is not None:
            if self.table is not None:
                self.pipeline.end_loop()
            self.pipeline.close()
        if self.dev is not None and not self.dev.closed:
            self.dev.close()
        if self.cuda and self.working is not None:
            try:
                torch.cuda.synchronize(self.device)
            except RuntimeError:        # closing after a CUDA error: keep that error visible
                pass
        self.table = self.working = None
        self._pin_rows = self._pin_grad = None

    def _need_open(self, what):
        if self.table is None:
            raise RuntimeError(f"HotlineEmbeddingBagCollection.{what}: the collection is "
                               f"closed (close() released its tables); build a new one")

    def _need_no_loop(self, what):
        if self.pipeline is not None and self.pipeline.loop is not None:
            raise RuntimeError(f"HotlineEmbeddingBagCollection.{what}() inside a working_sets() "
                               f"loop (working set {self.pipeline.loop.ws_index} in flight): "
                               f"finish the loop, break out of it or close() it first")

    def _need_hotline(self, what):
        self._need_open(what)
        if self.dev is None:
            raise RuntimeError(f"HotlineEmbeddingBagCollection.{what}() is for mode "
                               f"'hotline', not {self.mode!r}")

    # --- input --------------------------------------------------------------------------
    def _prepare(self, features, scheduled=False):
        """The features as :class:`InputMajor` (on their own device), bounds-checked by the
        mode (``scheduled``: for a working set, whose schedule checks the range itself)."""
        if isinstance(features, torch.Tensor):
            if features.dim() != 2 or features.shape[1] != len(self.keys):
                raise ValueError(f"one-hot features must be [batch, {len(self.keys)}] (one "
                                 f"column per table), not {list(features.shape)}")
            check_index_dtype(features.dtype, "one-hot features: row indices")
            im = InputMajor.from_dense(features.to(torch.int64))
        elif isinstance(features, SparseFeatures):
            if features.keys != self.keys:
                raise ValueError(f"features have keys {list(features.keys)}, the "
                                 f"collection's tables are {list(self.keys)} (same names, "
                                 f"same order)")
            im = features.input_major()
        else:
            raise TypeError(f"features must be SparseFeatures or an [batch, tables] tensor, "
                            f"not {type(features).__name__}")
        mode = self.bounds_check
        if mode == "none":
            # "none" never lets a row of one table read another's (a row past the end of
            # table t is row offsets[t] + row of the concatenated rows): indices on the host
            # are checked anyway (no device is involved, the check costs little next to the
            # gather); on the device an asynchronous assertion (no host synchronisation; a
            # failure is a device-side assert, as in nn.EmbeddingBag). A working set's
            # schedule checks its rows itself.
            if im.rows.device.type != "cpu":
                if not scheduled and im.rows.numel():
                    limit = self._cached("rows", self._rows, im.rows.device)[im.tables]
                    torch._assert_async(((im.rows >= 0) & (im.rows < limit)).all(),
                                        "HotlineEmbeddingBagCollection: a row index is outside "
                                        "its table (bounds_check='none')")
                return im
            mode = "error"
        elif scheduled and mode == "error" and im.rows.device.type != "cpu":
            return im       # the schedule raises the same error after its one host copy
        limit = self._cached("rows", self._rows, im.rows.device)[im.tables]
        bad = (im.rows < 0) | (im.rows >= limit)
        n_bad = int(bad.sum())
        if not n_bad:
            return im
        self.bounds_violations += n_bad
        j = int(torch.nonzero(bad)[0])
        t = int(im.tables[j])
        sample = int(im.bags[j]) // im.n_tables
        where = (f"table {self.keys[t]!r}: row {int(im.rows[j])} of sample {sample} is outside "
                 f"0..{self.table_rows[t] - 1}")
        if mode == "error":
            from sw_driver.errors import IndexOutOfRangeError
            err = IndexOutOfRangeError(t, int(im.rows[j]), (sample, t), self.table_rows[t],
                                       "features")
            how = ("'none' checks indices that are on the host anyway"
                   if self.bounds_check == "none" else "'error'")
            err.args = (f"{where} ({n_bad} lookups out of range; bounds_check={how})",)
            raise err
        if mode == "warn":
            warnings.warn(f"{where}; {n_bad} out-of-range lookups clamped into their tables "
                          f"(bounds_check='warn')", stacklevel=3)
            rows = torch.minimum(torch.clamp(im.rows, min=0), limit - 1)
            dense = None if im.dense is None else rows.view(im.n, im.n_tables)
            # Same bags, same offsets: keep their host copy (device features would otherwise
            # copy them back to the host again in the working-set loop).
            return InputMajor(im.tables, rows, im.bags, im.offsets, im.n, im.n_tables, dense,
                              offsets_host=im.offsets_host)
        keep = ~bad                                            # "ignore": drop the lookups
        sample_of = im.bags // im.n_tables
        per = torch.zeros(im.n, dtype=torch.int64, device=keep.device).index_add_(
            0, sample_of, keep.long())
        return InputMajor(im.tables[keep], im.rows[keep], im.bags[keep],
                          torch.cat([per.new_zeros(1), torch.cumsum(per, 0)]), im.n,
                          im.n_tables)

    def _offsets_on(self, device):
        return self._cached("offsets", self.offsets, device)

    def _cached(self, name, t, device):
        """Host constant ``t`` on ``device``, copied once (a copy per step would be a
        blocking host-to-device copy)."""
        key = (name, str(device))
        if key not in self._offsets_dev:
            self._offsets_dev[key] = t.to(device)
        return self._offsets_dev[key]

    def _scale(self, tables, bags, n_bags):
        """Per-lookup pooling weights (``None`` when every table sums)."""
        if not bool(self._mean.any()):           # a host tensor: no device read
            return None
        # Lookups per bag without bincount (whose size is read from the device): exact
        # float counts (below 2**24) by index_add, as bincount's clamped to >= 1.
        counts = torch.zeros(n_bags, dtype=torch.float32, device=bags.device)
        counts.index_add_(0, bags, torch.ones(bags.shape, dtype=torch.float32,
                                              device=bags.device))
        mean = self._cached("mean", self._mean, tables.device)
        return torch.where(mean[tables], 1.0 / counts.clamp(min=1)[bags],
                           torch.ones((), dtype=torch.float32, device=tables.device))

    # --- forward / backward -------------------------------------------------------------
    def lookup(self, features, rec=None):
        """``(pooled [B, T, dim], plan)`` without autograd; :meth:`apply_gradient` with the
        gradient of ``pooled`` takes the optimizer step (for trainers that exchange
        gradients, e.g. data parallel). ``forward`` is both, fused into backward. ``rec``:
        a phase-timer record for the copies of the host path (``gather``, ``h2d``; then
        ``d2h``, ``update`` in :meth:`apply_gradient`)."""
        rec = rec or _NULL_RECORD
        self._need_open("lookup")
        if isinstance(features, _Scheduled):
            return self._lookup_scheduled(features, rec)
        if isinstance(features, MicroBatch):
            raise TypeError("lookup/forward take mb.features, not the MicroBatch itself")
        im = self._prepare(features)
        B, T = im.n, im.n_tables
        g = self._offsets_on(im.rows.device)[im.tables] + im.rows
        scale = self._scale(im.tables, im.bags, B * T)
        if self.frozen:
            if torch.is_grad_enabled():
                raise RuntimeError("HotlineEmbeddingBagCollection: popularity is frozen; train "
                                   "through working_sets(...) (forward outside it is for "
                                   "evaluation, under torch.no_grad())")
            # Hot rows from the hot table, the rest from the host table (stale there until
            # flush; inside a working_sets loop the cold rows in flight are written home
            # first); the slot map is indexed where it lives, not copied.
            self.pipeline.publish()
            slot_map = self.dev.slot_map
            slot = slot_map[g.to(slot_map.device)].to(self.device, torch.int64)
            rows = self.table[g.cpu(), :self.dim].to(self.device)
            hot_rows = self.working.index_select(0, slot.clamp(min=0))[:, :self.dim]
            rows = torch.where((slot >= 0).unsqueeze(1), hot_rows, rows)
            g = g.cpu()
        else:
            g = g.to(self.table.device)
            rows = self._read_rows(g, rec)
        plan = _Plan("table", g, im.bags, B * T, scale, B, im.dense is not None
                     and scale is None, rec)
        return self._pool_rows(rows, plan), plan

    def _read_rows(self, g, rec):
        """Rows ``g`` of :attr:`table` on the device (hybrid path: CPU gather into a pinned
        buffer, then a non-blocking copy)."""
        if self.mode == "gpu-only":
            return self.table.index_select(0, g)[:, :self.dim]
        m = g.numel()
        tok = rec.host_begin("gather")
        if self.cuda:
            if self._read_done is not None:      # the last copy out of the buffer is done
                self._read_done.synchronize()
            if self._pin_rows is None or self._pin_rows.shape[0] < m:
                self._pin_rows = torch.empty(_grown(m), self.width, pin_memory=True)
            staged = torch.index_select(self.table, 0, g, out=self._pin_rows[:m])
        else:
            staged = self.table.index_select(0, g)
        rec.host_end(tok)
        tok = rec.dev_begin("h2d")
        if self.cuda:
            rows = self._upload(staged)
            self._read_done = torch.cuda.Event()
            self._read_done.record(torch.cuda.current_stream(self.device))
        else:
            rows = staged
        rec.dev_end(tok)
        return rows[:, :self.dim] if self.width > self.dim else rows

    def _upload(self, staged):
        """A non-blocking copy of pinned host rows to the device (current stream)."""
        return staged.to(self.device, non_blocking=True)

    def _lookup_scheduled(self, sf, rec):
        if sf.generation != self._ws_generation or self.working is None:
            raise RuntimeError("this micro-batch's working set is over; use each MicroBatch "
                               "inside its working_sets() iteration")
        ws, im = sf.ws, sf.ws.im
        pos, bags = sf.pos, sf.bags              # planned with the schedule
        remapped = ws.remapped.reshape(-1)
        idx = remapped[pos.to(remapped.device)].to(self.device)
        B, T = sf.samples.numel(), im.n_tables
        tables = im.tables[pos.to(im.tables.device)] if im.dense is None else pos % T
        scale = self._scale(tables, bags, B * T)
        plan = _Plan("working", idx, bags.to(self.device), B * T, scale, B,
                     im.dense is not None and scale is None, rec, sf)
        rows = self.working.index_select(0, idx)
        if self.width > self.dim:
            rows = rows[:, :self.dim]
        return self._pool_rows(rows, plan), plan

    def _pool_rows(self, rows, plan):
        T = len(self.tables)
        if plan.one_hot:                       # one lookup per bag, in bag order
            return rows.reshape(plan.batch, T, self.dim)
        if plan.scale is not None:
            rows = rows * plan.scale.to(rows.device).unsqueeze(1)
        out = torch.zeros(plan.n_bags, self.dim, device=rows.device, dtype=rows.dtype)
        out.index_add_(0, plan.bags.to(rows.device), rows)
        return out.view(plan.batch, T, self.dim)

    def apply_gradient(self, plan, grad):
        """The optimizer step on the rows ``plan`` read, for ``grad = d loss / d pooled``."""
        g = grad.detach().reshape(plan.n_bags, self.dim)
        if not plan.one_hot:
            g = g.index_select(0, plan.bags.to(g.device))
            if plan.scale is not None:
                g = g * plan.scale.to(g.device).unsqueeze(1)
        if plan.target == "working":
            sf = plan.sf
            if self.working is None:
                raise RuntimeError(f"backward of the {sf.label()}: the collection is closed "
                                   f"(close() released its rows); call backward() before")
            if sf.hot_epoch != self._hot_epoch:
                raise RuntimeError(f"backward of the {sf.label()}: popularity was re-learned "
                                   f"since its forward (relearn(), freeze() or a loaded "
                                   f"state); call backward() before that")
            if sf.generation == self._ws_generation:   # its working set is in progress
                self.optimizer.update(self.working, plan.idx, g, self.dim)
            else:
                self._late_update(plan, g)
            return
        if self.table is None:
            raise RuntimeError("backward: the collection is closed (close() released its "
                               "tables); call backward() before")
        rec = plan.rec
        if self.mode == "gpu-only":
            self.optimizer.update(self.table, plan.idx, g, self.dim)
            return
        tok = rec.dev_begin("d2h")
        if self.cuda:       # device gradient -> pinned host buffer, on the training stream
            m = g.shape[0]
            if self._pin_grad is None or self._pin_grad.shape[0] < m:
                self._pin_grad = torch.empty(_grown(m), self.dim, pin_memory=True)
            host = self._pin_grad[:m]
            host.copy_(g, non_blocking=True)
            self._grad_done.record(torch.cuda.current_stream(self.device))
        else:
            host = g
        rec.dev_end(tok)
        tok = rec.host_begin("update")
        if self.cuda:
            self._grad_done.synchronize()
        self.optimizer.update(self.table, plan.idx, host, self.dim)
        rec.host_end(tok)

    def _late_update(self, plan, g):
        """The optimizer step of a micro-batch whose working set is over (one backward for
        losses summed over several micro-batches): its hot rows are still in the hot table;
        each of its cold rows is wherever it lives now -- in the current working set's rows
        if that one gathered it, else in the host table (the write-backs in flight are
        finished first). Distinct rows never span both, so a row-wise optimizer sees each
        row's gradients together, in lookup order, as in an in-time step. Reads the indices
        on the host (a synchronisation, for this unusual pattern only)."""
        E = self.entries
        pipe = self.pipeline
        pipe.settle()
        idx = plan.idx.cpu()
        cold = idx >= E
        cold_rows = plan.sf.ws.sched.cold_global_rows
        # Only the cold lookups' entries of glob are used; a working set without cold rows
        # (every input popular) has an empty list, which no index may read.
        glob = (cold_rows[(idx - E).clamp(0, cold_rows.numel() - 1)] if cold_rows.numel()
                else torch.zeros_like(idx))
        target = idx.clone()                          # hot: the same slot
        on_host = cold.clone()
        cur = pipe.resident()
        if cur is not None:                           # its cold rows are in working[E:]
            rows = cur.sched.cold_global_rows
            order = torch.argsort(rows)
            srt = rows[order]
            at = torch.searchsorted(srt, glob).clamp(max=srt.numel() - 1)
            found = cold & (srt[at] == glob)
            target = torch.where(found, E + order[at], target)
            on_host = cold & ~found
            pipe.wait_resident(cur)
        dev = self.working.device
        keep = ~on_host
        if bool(keep.any()):
            self.optimizer.update(self.working, target[keep].to(dev),
                                  g[keep.to(g.device)], self.dim)
        if bool(on_host.any()):
            self.optimizer.update(self.table, glob[on_host], g[on_host.to(g.device)].cpu(),
                                  self.dim)

    def forward(self, features):
        """Pooled embeddings ``[B, T, dim]`` (table order) of ``features``
        (:class:`SparseFeatures`, an ``[B, T]`` one-hot tensor, or a :class:`MicroBatch`'s
        ``features``). Under autograd, backward applies the embedding optimizer."""
        pooled, plan = self.lookup(features)
        if not torch.is_grad_enabled():
            return pooled
        anchor = torch.zeros((), requires_grad=True)
        return _FusedLookup.apply(anchor, self, plan, pooled)

    # --- popularity ---------------------------------------------------------------------
    def learn(self, features):
        """Feed the lookups of ``features`` to the EAL (stream order)."""
        self._need_hotline("learn")
        self._need_no_loop("learn")
        if self.frozen:
            raise RuntimeError("HotlineEmbeddingBagCollection.learn: popularity is frozen; "
                               "call relearn() first")
        im = self._prepare(features)
        if im.dense is not None:
            self.dev.learn(im.dense.cpu())
        else:
            self.dev.learn_bags(im.tables.cpu(), im.rows.cpu())

    def freeze(self, popular_max_rrpv=None):
        """Freeze popularity (threshold ``popular_max_rrpv``, default the EAL config's) and
        move the hot rows (with their optimizer state) to the device; returns the driver's
        ``HotRows``."""
        self._need_hotline("freeze")
        self._need_no_loop("freeze")
        self._hot_epoch += 1
        # The hot table keeps the rows it has (a re-learn with more popular rows grows it;
        # no loop is open, so the cold rows after it hold nothing).
        self.hot = self.dev.freeze(popular_max_rrpv, hot_capacity=self.entries)
        if self.working is None or self.dev.hot_capacity != self.entries:
            self.entries = self.dev.hot_capacity
            self.working = None         # the old buffer is freed before the new one is made
            self.working = torch.zeros(self.entries + self.cap, self.width, device=self.device)
        self.dev.load_hot_table(self.table, self.working[:self.entries])
        if self.cuda:
            # The slot map and the hot table were written on the current stream; the
            # schedule stream reads the slot map.
            torch.cuda.synchronize(self.device)
        return self.hot

    def flush(self):
        """Copy the hot rows home: the host table is then complete. Inside a
        :meth:`working_sets` loop the cold rows in flight go home too (the previous working
        set's write-back is finished, the current one's rows are copied), so the host table
        is what training the micro-batches so far one after another gives."""
        self._need_open("flush")
        if self.pipeline is not None:
            self.pipeline.publish()
        if self.frozen and self.working is not None:
            self.dev.store_hot_table(self.working[:self.entries], self.table)

    def relearn(self, flush=True):
        """Flush, clear the EAL and learn again (call :meth:`learn` then :meth:`freeze`).
        ``flush=False`` drops the hot rows instead (when the host table was just
        overwritten, e.g. from a checkpoint)."""
        self._need_hotline("relearn")
        self._need_no_loop("relearn")
        if flush:
            self.flush()
        self.dev.clear()
        self.hot = None
        self._hot_epoch += 1

    def tag_store(self):
        """The EAL's tag store as CPU tensors in dump order (``Transport.dump_tensors``):
        with the threshold while frozen this is all the popularity state."""
        self._need_hotline("tag_store")
        d = self.dev.transport.dump_tensors()
        return {k: torch.as_tensor(v).detach().cpu().clone() for k, v in d.items()}

    def restore(self, tag_store, frozen, popular_max_rrpv=None):
        """Replace the EAL's state by ``tag_store`` (:meth:`tag_store`) and, if ``frozen``,
        freeze with ``popular_max_rrpv`` and fill the hot table from the host table (which
        must already hold the complete rows)."""
        self._need_no_loop("restore")
        self.relearn(flush=False)
        self.dev.load_tag_store(tag_store)
        if frozen:
            self.freeze(popular_max_rrpv)

    # --- working sets -------------------------------------------------------------------
    def _schedule(self, im):
        if im.dense is not None:
            return self.dev.schedule(im.dense, self.batch_size)
        return self.dev.schedule_bags(im.tables, im.rows, im.offsets, self.batch_size)

    def working_sets(self, batches, first_index=0):
        """Train ``batches`` (an iterable of ``(features, payload)``) as working sets of
        ``working_set * batch_size`` samples: yields :class:`MicroBatch` objects -- each
        working set's popular micro-batches, then its non-popular samples in steps of at most
        ``np_micro_batch_size``. Train each one (forward, backward) before asking for the
        next: meanwhile the next cold rows are gathered, and after the last one the final
        write-back runs, so the host table is current when the loop ends (hot rows: call
        :meth:`flush`). Leaving the loop early (``break``, an exception) writes the rows of
        the working set in progress back too. ``first_index`` numbers the timer's records."""
        self._need_hotline("working_sets")
        if not self.frozen:
            raise RuntimeError("working_sets: popularity is not frozen; learn(...) and "
                               "freeze() first")
        return self.pipeline.loop_over(batches, _whole(first_index, "first_index", 0))

    def _micro(self, ws, group, kind, k, index=0):
        samples = group[0]
        pay = _payload_map(ws.payload, lambda t: t.index_select(0, samples.to(t.device)))
        return MicroBatch(_Scheduled(self, ws, group, kind, index, k), pay, kind,
                          samples.numel(), k)

    # --- tables and checkpoints ---------------------------------------------------------
    def embedding_table(self, name=None):
        """The complete rows (hot rows flushed first): all tables ``[sum(rows), dim]``, or
        table ``name``'s ``[num_embeddings, dim]`` (views of :attr:`table`)."""
        self._need_open("embedding_table")
        self.flush()
        if name is None:
            return self.table[:, :self.dim]
        t = self.keys.index(name)
        a = int(self.offsets[t])
        return self.table[a:a + self.table_rows[t], :self.dim]

    def optimizer_state(self):
        """The optimizer's per-row state ``[sum(rows), state_width]`` (hot rows flushed)."""
        self._need_open("optimizer_state")
        self.flush()
        return self.table[:, self.dim:]

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self._need_open("state_dict")
        super()._save_to_state_dict(destination, prefix, keep_vars)
        self.flush()
        destination[prefix + "rows"] = self.table.detach().to("cpu", copy=True)
        destination[prefix + "frozen"] = torch.tensor(self.frozen)
        if self.dev is not None:
            thr = self.dev.popular_max_rrpv if self.frozen else None
            destination[prefix + "popular_max_rrpv"] = torch.tensor(-1 if thr is None else thr)
            for k, v in self.tag_store().items():
                destination[prefix + "tag_store." + k] = v

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        self._need_open("load_state_dict")
        self._need_no_loop("load_state_dict")
        rows = state_dict.get(prefix + "rows")
        if rows is None:
            missing_keys.append(prefix + "rows")
            return
        if tuple(rows.shape) != tuple(self.table.shape):
            error_msgs.append(f"{prefix}rows: shape {tuple(rows.shape)} differs from the "
                              f"collection's {tuple(self.table.shape)} (tables, dim, "
                              f"optimizer state)")
            return
        self.table.copy_(rows)
        tags = {k[len(prefix + "tag_store."):]: v for k, v in state_dict.items()
                if k.startswith(prefix + "tag_store.")}
        if self.dev is not None:
            if not tags:
                missing_keys.append(prefix + "tag_store")
                return
            thr = int(state_dict.get(prefix + "popular_max_rrpv", torch.tensor(-1)))
            self.restore(tags, bool(state_dict.get(prefix + "frozen", torch.tensor(False))),
                         None if thr < 0 else thr)
        own = (prefix + "rows", prefix + "frozen", prefix + "popular_max_rrpv")
        for k in state_dict:
            if k.startswith(prefix) and k not in own \
                    and not k.startswith(prefix + "tag_store.") and "." not in k[len(prefix):]:
                unexpected_keys.append(k)

    def extra_repr(self):
        return (f"tables={[(t.name, t.num_embeddings, t.pooling) for t in self.tables]}, "
                f"dim={self.dim}, mode={self.mode}, optimizer={self.optimizer.name}, "
                f"hot entries={self.entries}")


def _whole(v, name, minimum):
    """``v`` as an ``int >= minimum`` (a Python, NumPy or one-element torch integer); a
    bool, a float (even 2.0) or another type raises ``TypeError``, a smaller value
    ``ValueError``."""
    if isinstance(v, (bool, float)) or (isinstance(v, torch.Tensor) and (
            v.dtype == torch.bool or v.dtype.is_floating_point)):
        raise TypeError(f"HotlineEmbeddingBagCollection: {name} must be a whole number "
                        f">= {minimum}, not {v!r}")
    try:
        n = operator.index(v)
    except TypeError:
        raise TypeError(f"HotlineEmbeddingBagCollection: {name} must be a whole number "
                        f">= {minimum}, not {type(v).__name__} {v!r}") from None
    if n < minimum:
        raise ValueError(f"HotlineEmbeddingBagCollection: {name} must be >= {minimum}, not {n}"
                         + (" (0 means one step)" if name == "np_micro_batch_size" else ""))
    return n


def _check_device(device):
    """A CUDA ``device`` that this process cannot use is one error here, not a traceback
    from the first copy."""
    d = torch.device(device)
    if d.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise RuntimeError(f"HotlineEmbeddingBagCollection: device={str(device)!r} but CUDA is "
                           f"not available (torch {torch.__version__}, no GPU visible); "
                           f"use device='cpu'")
    if d.index is not None and d.index >= torch.cuda.device_count():
        raise RuntimeError(f"HotlineEmbeddingBagCollection: device={str(device)!r} but only "
                           f"{torch.cuda.device_count()} CUDA device(s) are visible")


def _grown(m):
    """Rows for a reusable pinned buffer that must hold ``m``: the next power of two, so a
    stream of varying multi-hot sizes allocates a few times, not every step."""
    return 1 << max(0, int(m) - 1).bit_length()

"""The three embedding-storage modes of the trainer (``docs/training.md``).

All modes keep the ``T`` tables as **one** concatenated ``float32 [sum(table_rows), dim]``
tensor (table ``t`` starts at ``offsets[t]``; lookup ``(t, r)`` is global row
``offsets[t] + r``), so a mini-batch is one gather and one ``index_add_`` whatever ``T``.
They share the trainer's single micro-batch step (:meth:`Trainer._step`: forward, backward,
``torch.optim.SGD`` on the MLPs) and its sparse SGD on rows
(``table.index_add_(0, idx, -lr * grad)``); they differ only in where the rows live:

* :class:`GpuOnlyStore` -- the table on the training device (the ceiling);
* :class:`HybridStore` -- the table in host memory; rows gathered on the CPU, copied to the
  device, gradients copied back, sparse SGD on the CPU (the paper's baseline);
* :class:`HotlineStore` -- the table in host memory, popular rows in a hot table on the
  device, working sets scheduled by the driver and pipelined (cold gather and copies overlap
  the popular micro-batches).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["MODES", "GpuOnlyStore", "HybridStore", "HotlineStore", "init_table",
           "table_offsets", "eal_config_for_budget"]

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
    from hotline_hw.config import EALConfig

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
class _Store:
    """Common part: the trainer, the device, the table offsets."""

    name = "?"

    def __init__(self, trainer):
        self.tr = trainer
        self.device = trainer.device
        self.cuda = trainer.cuda
        self.dim = trainer.dim

    def main_stream(self):
        """The stream the trainer's kernels run on: the current stream of the training
        device (CUDA; ``None`` on the CPU). Every event a store records names its stream."""
        return torch.cuda.current_stream(self.device) if self.cuda else None

    def close(self):
        """Release what the store holds (device tensors, pinned buffers, references to the
        host table) so that the memory is free as soon as the trainer is closed, even while
        a reference cycle keeps the trainer object itself alive."""
        pass

    def eval_rows(self, data, a, b):
        """Rows ``[b - a, T, dim]`` on the device for evaluation (complete table)."""
        raise NotImplementedError

    def full_table(self):
        """The complete table in host memory (a tensor the caller must not modify)."""
        raise NotImplementedError

    def load_table(self, table):
        """Overwrite the complete table with ``table`` (``[sum(table_rows), dim]``, any
        device), e.g. from a checkpoint."""
        raise NotImplementedError


class GpuOnlyStore(_Store):
    """Everything on the training device: ``table[offsets + sparse]``."""

    name = "gpu-only"

    def __init__(self, trainer, host_init):
        super().__init__(trainer)
        self.table = host_init.to(self.device, copy=True)
        self.offsets = trainer.offsets.to(self.device)

    def train(self, data, start, stop, progress=None, first_index=0):
        tr, N = self.tr, self.tr.batch_size
        for i, a in enumerate(range(start, stop, N)):
            b = min(a + N, stop)
            rec = tr.timer.record("step", first_index + i)
            tok = rec.dev_begin("compute")
            gidx = (data.sparse[a:b] + self.offsets).reshape(-1)
            rows = self.table.index_select(0, gidx).view(b - a, -1, self.dim)
            grad = tr._step(data.dense[a:b], data.labels[a:b], rows)
            tr._sgd(self.table, gidx, grad)
            rec.dev_end(tok)
            tr.timer.close(rec)
            if progress:
                progress(b - a)

    def eval_rows(self, data, a, b):
        gidx = (data.sparse[a:b] + self.offsets).reshape(-1)
        return self.table.index_select(0, gidx).view(b - a, -1, self.dim)

    def full_table(self):
        return self.table.cpu() if self.cuda else self.table

    def load_table(self, table):
        self.table.copy_(table)

    def close(self):
        self.table = None            # the device copy of the whole table


class _HostTableStore(_Store):
    """A store whose table lives in (pinned) host memory, with the hybrid step."""

    def __init__(self, trainer, host_init):
        super().__init__(trainer)
        self.host_table = host_init
        self.offsets_cpu = trainer.offsets
        cap = trainer.batch_size * trainer.n_tables
        self._rows_pin = torch.empty(cap, self.dim, pin_memory=self.cuda)
        self._grad_pin = torch.empty(cap, self.dim, pin_memory=self.cuda)
        self._d2h_done = torch.cuda.Event() if self.cuda else None

    def hybrid_step(self, data, a, b, kind="step", index=0):
        """One mini-batch the hybrid way: CPU gather -> H2D -> forward/backward on the device
        -> D2H of ``-lr * grad`` -> ``index_add_`` into the host table."""
        tr = self.tr
        rec = tr.timer.record(kind, index)
        flat = (data.sparse_cpu[a:b] + self.offsets_cpu).reshape(-1)
        m = flat.numel()
        tok = rec.host_begin("gather")
        rows_host = torch.index_select(self.host_table, 0, flat, out=self._rows_pin[:m])
        rec.host_end(tok)
        tok = rec.dev_begin("h2d")
        rows = rows_host.to(self.device, non_blocking=True) if self.cuda else rows_host.detach()
        rec.dev_end(tok)
        tok = rec.dev_begin("compute")
        grad = tr._step(data.dense[a:b], data.labels[a:b], rows.view(b - a, -1, self.dim))
        upd = grad.reshape(m, self.dim).mul(-tr.lr)
        rec.dev_end(tok)
        tok = rec.dev_begin("d2h")
        upd_host = self._grad_to_host(upd, m)
        rec.dev_end(tok)
        tok = rec.host_begin("update")
        self._wait_grad()
        self.host_table.index_add_(0, flat, upd_host)
        rec.host_end(tok)
        tr.timer.close(rec)

    def _grad_to_host(self, upd, m):
        """Start the copy of the ``m`` updates to the pinned buffer (CUDA: non-blocking, on
        the training device's current stream, with an event recorded on that same stream --
        not on the current device's, which is another GPU when training on ``cuda:1``)."""
        if not self.cuda:
            return upd
        upd_host = self._grad_pin[:m]
        upd_host.copy_(upd, non_blocking=True)
        self._d2h_done.record(self.main_stream())
        return upd_host

    def _wait_grad(self):
        """Wait for :meth:`_grad_to_host`'s copy; it follows the step's H2D copy on the same
        stream, so ``_rows_pin`` is free again too."""
        if self.cuda:
            self._d2h_done.synchronize()

    def eval_rows(self, data, a, b):
        flat = (data.sparse_cpu[a:b] + self.offsets_cpu).reshape(-1)
        rows = self.host_table.index_select(0, flat)
        return rows.to(self.device).view(b - a, -1, self.dim)

    def load_table(self, table):
        self.host_table.copy_(table)

    def close(self):
        self.host_table = None       # the caller's tensor (bench) or our own
        self._rows_pin = self._grad_pin = None


class HybridStore(_HostTableStore):
    """The paper's baseline: tables in CPU memory, MLPs on the device."""

    name = "hybrid"

    def train(self, data, start, stop, progress=None, first_index=0):
        N = self.tr.batch_size
        for i, a in enumerate(range(start, stop, N)):
            b = min(a + N, stop)
            self.hybrid_step(data, a, b, "step", first_index + i)
            if progress:
                progress(b - a)

    def full_table(self):
        return self.host_table


class HotlineStore(_HostTableStore):
    """Hotline: host table + hot table on the device, pipelined working sets.

    Device memory: ``working = [entries + cap, dim]`` where ``working[:entries]`` **is** the
    hot table (slot ``s`` holds the popular row of slot ``s``; unused slots are zero) and
    ``working[entries:entries + n_cold]`` receives the cold rows of the current working set.
    So ``cat([hot_table, cold_rows])`` of docs/driver.md costs nothing: the remapped lookups
    index ``working`` directly, and the non-popular micro-batch's ``index_add_`` updates hot
    rows in place and cold rows in the device copy. ``cap`` defaults to ``W * N * T`` (every
    lookup of a working set cold), the most a working set can need.

    Pipeline and hazard handling: see :meth:`train` and docs/training.md.
    """

    name = "hotline"

    def __init__(self, trainer, host_init, device_factory):
        super().__init__(trainer, host_init)
        tr = trainer
        self.dev = device_factory()
        self.config = self.dev.config
        self.entries = self.config.entries
        self.cap = int(tr.max_cold_rows or min(tr.working_set * tr.batch_size * tr.n_tables,
                                               self.dev.fragmenter.cold_capacity))
        self.working = None
        self.hot = None
        self.frozen = False
        self._staging_in = torch.empty(self.cap, self.dim, pin_memory=self.cuda)
        self._staging_out = torch.empty(self.cap, self.dim, pin_memory=self.cuda)
        self._last_h2d = None        # the last H2D out of staging_in (CUDA)
        if self.cuda:
            self.side = torch.cuda.Stream(self.device)        # H2D / D2H copies
            # High priority: the schedule of k+1 sits between the host and popular(k+1);
            # its few small kernels should not queue behind non_popular(k)'s.
            self.sched_stream = torch.cuda.Stream(self.device, priority=-1)
            self._pool = None
        else:
            self.side = self.sched_stream = None
            # The CPU stand-in of the side stream: one background thread for the cold path.
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="hotline-cold")

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self.dev is not None:
            self.dev.close()
            self.dev = None
        if self.cuda and self.working is not None:
            try:
                torch.cuda.synchronize(self.device)     # no copy may still use the buffers
            except RuntimeError:        # closing after a CUDA error: keep that error visible
                pass
        self.working = None
        self._staging_in = self._staging_out = None
        super().close()

    # --- learning -------------------------------------------------------------------------
    def learn(self, sparse_cpu):
        """Feed row indices ``int64 [n, T]`` to the EAL (learn mode, stream order)."""
        if self.frozen:
            raise RuntimeError("popularity is frozen; learn() must come before freeze()")
        self.dev.learn(sparse_cpu)

    def freeze(self, popular_max_rrpv=None):
        """Freeze the EAL and fill the hot table from the host table at the hot rows
        (threshold ``popular_max_rrpv``, default the EAL config's)."""
        self.hot = self.dev.freeze(popular_max_rrpv)
        self.frozen = True
        if self.working is None:
            self.working = torch.zeros(self.entries + self.cap, self.dim, device=self.device)
        self.dev.load_hot_table(self.host_table, self.working[:self.entries])
        if self.cuda:
            # The slot map and the hot table were written on the current stream; the
            # schedule stream reads the slot map.
            torch.cuda.synchronize(self.device)
        return self.hot

    def begin_relearn(self, flush=True):
        """Start a re-learn: the hot rows go home (the host table is then complete, so no
        update is lost when rows leave the hot table), the tag store is cleared and the EAL
        learns again. Call between :meth:`train` calls (the pipeline is drained then).
        ``flush=False`` drops the hot rows instead (after the host table was overwritten,
        e.g. by a checkpoint)."""
        if self.frozen and flush:
            self.flush()
        self.dev.clear()
        self.frozen = False
        self.hot = None

    def tag_store(self):
        """The EAL tag store as CPU tensors in dump order (``Transport.dump_tensors``):
        ``bank``, ``set``, ``valid``, ``rrpv``, ``tag``; with the threshold while frozen this
        is all the popularity state (``freeze`` rebuilds hot rows and slot map from it)."""
        d = self.dev.transport.dump_tensors()
        return {k: torch.as_tensor(v).detach().cpu().clone() for k, v in d.items()}

    def restore(self, tag_store, frozen, popular_max_rrpv=None):
        """Replace the EAL's state by ``tag_store`` (from :meth:`tag_store`) and, if
        ``frozen``, freeze with ``popular_max_rrpv`` and fill the hot table from the host
        table (which must already hold the checkpoint's complete table)."""
        self.dev.clear()
        self.frozen = False
        self.hot = None
        self.dev.load_tag_store(tag_store)
        if frozen:
            self.freeze(popular_max_rrpv)

    def flush(self):
        """Copy the hot rows back to the host table, which is then complete."""
        if self.frozen:
            self.dev.store_hot_table(self.working[:self.entries], self.host_table)

    def full_table(self):
        self.flush()
        return self.host_table

    @property
    def hot_rows(self):
        """Rows in the hot table (popular entries at freeze time)."""
        return 0 if self.hot is None else int(self.hot.slots.numel())

    # --- one working set ------------------------------------------------------------------
    def _schedule(self, data, a, b, rec):
        tok = rec.host_begin("schedule")
        if self.cuda:
            with torch.cuda.stream(self.sched_stream):
                sched = self.dev.schedule(data.sparse[a:b], self.tr.batch_size)
                ready = torch.cuda.Event()
                ready.record(self.sched_stream)
        else:
            sched = self.dev.schedule(data.sparse[a:b], self.tr.batch_size)
            ready = None
        rec.host_end(tok)
        # The schedule may cover fewer inputs than asked (ended early, spec 7.5).
        return _Pending(sched, a, a + sched.n_inputs, ready, self.device,
                        self.tr.np_micro_batch_size)

    def _popular(self, data, p, rec):
        if p.micro:
            self._train_chunks(data, p, p.micro, "popular", rec)

    def _non_popular(self, data, p, rec):
        # The non-popular micro-batch, in ceil(n / np_micro_batch_size) near-equal SGD steps
        # (default size N): all of them read the same gathered cold rows.
        self._train_chunks(data, p, p.non_popular_chunks, "non_popular", rec)

    def _train_chunks(self, data, p, chunks, phase, rec):
        """One SGD step per chunk of working-set inputs, reading and updating ``working``
        (hot table + this working set's cold rows) through the remapped lookups."""
        tr = self.tr
        tok = rec.dev_begin(phase)
        dense, labels = data.dense[p.a:p.b], data.labels[p.a:p.b]
        for chunk in chunks:
            idx = p.remapped.index_select(0, chunk).reshape(-1)
            rows = self.working.index_select(0, idx).view(chunk.numel(), -1, self.dim)
            grad = tr._step(dense.index_select(0, chunk), labels.index_select(0, chunk), rows)
            tr._sgd(self.working, idx, grad)
        rec.dev_end(tok)

    def _write_back(self, prev, rec):
        """Write the previous working set's updated cold rows to the host table (after its
        device-to-host copy has completed)."""
        if prev is None or prev.n_cold == 0:
            return
        tok = rec.host_begin("write_back")
        if self.cuda:
            prev.d2h_done.synchronize()
        self.dev.write_back(prev.sched, self._staging_out[:prev.n_cold], self.host_table)
        rec.host_end(tok)

    def _gather(self, p, rec):
        if p.n_cold == 0:
            return None
        if p.n_cold > self.cap:
            raise RuntimeError(f"working set has {p.n_cold} cold rows, more than the "
                               f"{self.cap}-row cold buffer (max_cold_rows)")
        tok = rec.host_begin("gather")
        if self._last_h2d is not None:
            # staging_in is about to be overwritten by CPU threads: the previous
            # non-blocking H2D that reads it must be done. It always is by now (write_back
            # waited for the D2H queued behind it on the side stream), so this costs
            # nothing; it keeps the rule local instead of resting on that chain.
            self._last_h2d.synchronize()
            self._last_h2d = None
        staged = self.dev.gather(p.sched, self.host_table, self._staging_in)
        rec.host_end(tok)
        return staged

    def _h2d(self, p, staged, rec):
        E = self.entries
        dst = self.working[E:E + p.n_cold]
        if self.cuda:
            # Write after read on working[E:]: the previous non_popular read it on the main
            # stream and its D2H on this side stream; that D2H waited for the non_popular
            # (event), and this copy is queued behind the D2H on the same stream.
            with torch.cuda.stream(self.side):
                tok = rec.dev_begin("h2d", self.side)
                dst.copy_(staged, non_blocking=True)
                rec.dev_end(tok, self.side)
                p.h2d_done = torch.cuda.Event()
                p.h2d_done.record(self.side)
            self._last_h2d = p.h2d_done
        else:
            tok = rec.host_begin("h2d")
            dst.copy_(staged)
            rec.host_end(tok)

    def _d2h(self, p, rec):
        E = self.entries
        src = self.working[E:E + p.n_cold]
        if self.cuda:
            np_done = torch.cuda.Event()
            np_done.record(self.main_stream())          # after non-popular(k)
            with torch.cuda.stream(self.side):
                self.side.wait_event(np_done)
                tok = rec.dev_begin("d2h", self.side)
                self._staging_out[:p.n_cold].copy_(src, non_blocking=True)
                rec.dev_end(tok, self.side)
                p.d2h_done = torch.cuda.Event()
                p.d2h_done.record(self.side)
        else:
            tok = rec.host_begin("d2h")
            self._staging_out[:p.n_cold].copy_(src)
            rec.host_end(tok)

    def _cold_path_cpu(self, prev, p, rec):
        """CPU stand-in for the side stream: write-back of the previous working set, then the
        gather and 'H2D' copy of this one, in that order (the hazard order)."""
        self._write_back(prev, rec)
        staged = self._gather(p, rec)
        if staged is not None:
            self._h2d(p, staged, rec)

    def train(self, data, start, stop, progress=None, first_index=0):
        """Train samples ``start..stop-1`` as working sets of ``W`` mini-batches.

        Order per loop iteration ``k`` (host program order; GPU streams in brackets)::

            popular(k)          [main]    hot rows updated in place in working[:E]
            write_back(k-1)     host      after d2h(k-1) completed  \\  CPU: background
            gather(k)           host      host_table -> staging_in   |  thread, while the
            h2d(k)              [side]    staging_in -> working[E:]  /  popular run
            non_popular(k)      [main]    waits h2d(k)
            d2h(k)              [side]    waits non_popular(k); working[E:] -> staging_out
            schedule(k+1)       [sched]   host syncs: unique + the cold list; overlaps np(k)

        The read-after-write hazard -- a cold row of working set k+1 that working set k
        updated -- is closed by write_back(k) preceding gather(k+1) in host program order
        (and d2h(k) completing before write_back(k)); hot rows never leave the device, so
        they have no hazard. Write-after-read on the cold buffers: h2d(k+1) overwrites
        working[E:] and staging_in only after d2h(k) (hence non_popular(k) and h2d(k)) has
        completed, which write_back(k) waited for.
        """
        tr = self.tr
        if not self.frozen:
            raise RuntimeError("hotline training needs a frozen EAL: call freeze() first")
        step = tr.working_set * tr.batch_size
        if start >= stop:
            return
        main = self.main_stream()
        prev = None
        boot = tr.timer.record("working_set", first_index, stream=main)
        # A working set is W*N inputs unless the de-dup rule ends it early (spec 7.5): the
        # next one starts where the schedule stopped, so bounds are known one ahead.
        nxt = self._schedule(data, start, min(start + step, stop), boot)
        k = 0
        while nxt is not None:
            ws = first_index + k
            rec = boot if k == 0 else tr.timer.record(
                "working_set", ws, stream=main, sync=ws == tr.trace_working_set,
                keep=ws == tr.trace_working_set)
            p = nxt
            if self.cuda:
                main.wait_event(p.ready)
                p.to_main(main)
            if not self.cuda:        # cold path on the background thread, started first
                fut = self._pool.submit(self._cold_path_cpu, prev, p, rec)
            self._popular(data, p, rec)
            if self.cuda:            # the popular kernels are queued: the host is free
                self._write_back(prev, rec)
                staged = self._gather(p, rec)
                if staged is not None:
                    self._h2d(p, staged, rec)
            else:
                fut.result()
            if p.non_popular.numel():
                if self.cuda and p.n_cold:
                    main.wait_event(p.h2d_done)
                self._non_popular(data, p, rec)
                if p.n_cold:
                    self._d2h(p, rec)
            prev = p
            nxt = (self._schedule(data, p.b, min(p.b + step, stop), rec) if p.b < stop
                   else None)
            tr.timer.close(rec)
            if progress:
                progress(p.b - p.a)
            k += 1
        # Drain: the last working set's cold rows go home.
        rec = tr.timer.record("drain", stream=main)
        self._write_back(prev, rec)
        tr.timer.close(rec)



class _Pending:
    """A scheduled working set and its per-working-set state (events, sizes)."""

    def __init__(self, sched, a, b, ready, device, np_chunk):
        self.sched, self.a, self.b, self.ready = sched, a, b, ready
        self.n_cold = int(sched.n_cold)
        self.remapped = sched.remapped
        self.micro = list(sched.popular_micro_batches)
        self.non_popular = sched.non_popular
        self._np_chunk = np_chunk
        self.h2d_done = self.d2h_done = None
        self._device = device

    @property
    def non_popular_chunks(self):
        """The non-popular micro-batch cut into SGD steps (views; none when empty)."""
        n = self.non_popular.numel()
        if n == 0:
            return []
        k = -(-n // self._np_chunk) if self._np_chunk else 1
        return list(torch.tensor_split(self.non_popular, k))     # near-equal, none tiny

    def to_main(self, main):
        """Make the schedule's device tensors safe to use on the main stream: move index
        tensors that are still on the host (one pinned copy each) and tell the caching
        allocator that the main stream uses them."""
        dev = self._device

        def on_device(t):
            if t.device.type != "cuda":
                t = t.pin_memory().to(dev, non_blocking=True)
            else:
                t.record_stream(main)
            return t

        self.remapped = on_device(self.remapped)
        self.micro = [on_device(m) for m in self.micro]
        self.non_popular = on_device(self.non_popular)

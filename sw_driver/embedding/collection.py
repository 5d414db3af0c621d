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

Storage: one ``float32`` host tensor ``[sum(num_embeddings), dim + state_width]`` (table ``t``
from row ``offsets[t]``); each row's optimizer state sits in its last columns, so the state
travels with the row through gathers, the hot table and write-backs.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import nn

from .features import InputMajor, SparseFeatures
from .optim import make_optimizer

__all__ = ["EmbeddingBagConfig", "HotlineEmbeddingBagCollection", "MicroBatch",
           "BOUNDS_CHECK_MODES", "POOLING_MODES"]

BOUNDS_CHECK_MODES = ("error", "warn", "ignore")
POOLING_MODES = ("sum", "mean")


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
    cold rows; ``"host"``: the host table), pooled into ``n_bags`` bags."""

    def __init__(self, target, idx, bags, n_bags, scale, batch, one_hot):
        self.target, self.idx, self.bags, self.n_bags = target, idx, bags, n_bags
        self.scale, self.batch, self.one_hot = scale, batch, one_hot


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
    """The features of a micro-batch: its samples' lookups in the working set's schedule."""

    def __init__(self, ebc, im, sched, samples):
        self.ebc, self.im, self.sched, self.samples = ebc, im, sched, samples
        self.generation = ebc._ws_generation


# --- payload helpers ---------------------------------------------------------------------
def _payload_map(p, fn):
    if p is None:
        return None
    if isinstance(p, torch.Tensor):
        return fn(p)
    if isinstance(p, dict):
        return {k: _payload_map(v, fn) for k, v in p.items()}
    if isinstance(p, (tuple, list)):
        return type(p)(_payload_map(v, fn) for v in p)
    raise TypeError(f"payload must be a tensor, tuple, list or dict of tensors, not "
                    f"{type(p).__name__}")


def _payload_cat(parts):
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    if isinstance(first, dict):
        return {k: _payload_cat([p[k] for p in parts]) for k in first}
    return type(first)(_payload_cat([p[i] for p in parts]) for i in range(len(first)))


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
    hot_budget : rows the hot table may hold (EAL geometry by
        :func:`~sw_driver.training.eal_config_for_budget`, unless ``eal_config`` is given)
    policy : the EAL's popularity policy (``"srrip"`` or ``"lfu"``)
    working_set : ``W``, mini-batches per working set
    np_micro_batch_size : the non-popular micro-batch is cut into steps of at most this many
        samples (default ``batch_size``; ``0``: one step)
    bounds_check : ``"error"`` (raise, naming table, sample and row), ``"warn"`` (clamp
        into the table and warn with the count), ``"ignore"`` (drop the lookup from its bag
        silently); violations are counted in :attr:`bounds_violations` in every mode
    seed : initial values: table ``t`` uniform in ``+-sqrt(1 / num_embeddings)`` (DLRM)
    pipelined : gather the next cold rows on a background thread while the popular
        micro-batches train (``False``: the same order, one step after another)
    transport, gather_threads, fragmenter, eal_config, max_cold_rows : the driver's
    """

    def __init__(self, tables, dim, *, batch_size, optimizer="sgd", device="cpu",
                 hot_budget=4096, policy="srrip", working_set=4, np_micro_batch_size=None,
                 bounds_check="error", seed=0, pipelined=True, transport="model",
                 gather_threads=2, fragmenter=None, eal_config=None, max_cold_rows=None):
        super().__init__()
        from sw_driver.driver import HotlineDevice
        from sw_driver.training.modes import eal_config_for_budget, init_table, table_offsets

        self.tables = tuple(t if isinstance(t, EmbeddingBagConfig) else EmbeddingBagConfig(*t)
                            for t in tables)
        if not self.tables:
            raise ValueError("HotlineEmbeddingBagCollection: no tables")
        names = [t.name for t in self.tables]
        if len(set(names)) != len(names):
            raise ValueError(f"HotlineEmbeddingBagCollection: table names repeat: {names}")
        for name, v in (("dim", dim), ("batch_size", batch_size), ("working_set", working_set)):
            if isinstance(v, bool) or int(v) < 1:
                raise ValueError(f"HotlineEmbeddingBagCollection: {name} must be >= 1, not {v!r}")
        if bounds_check not in BOUNDS_CHECK_MODES:
            raise ValueError(f"bounds_check must be one of {BOUNDS_CHECK_MODES}, not "
                             f"{bounds_check!r}")
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
        self.optimizer = make_optimizer(optimizer)
        self.table_rows = tuple(int(t.num_embeddings) for t in self.tables)
        self._rows = torch.tensor(self.table_rows, dtype=torch.int64)
        self.offsets = table_offsets(self.table_rows)
        self._mean = torch.tensor([t.pooling == "mean" for t in self.tables])
        self.width = self.dim + self.optimizer.state_width
        host = torch.empty(sum(self.table_rows), self.width)
        host[:, :self.dim] = init_table(self.table_rows, self.dim, seed)
        self.optimizer.init_state(host, self.dim)
        self.host_table = host
        self.eal_config = eal_config or eal_config_for_budget(hot_budget, self.table_rows,
                                                              policy=policy)
        self.dev = HotlineDevice(self.table_rows, self.width, config=self.eal_config,
                                 transport=transport, device=str(self.device),
                                 gather_threads=gather_threads, fragmenter=fragmenter)
        E = self.entries = self.eal_config.entries
        T = len(self.tables)
        self.cap = int(max_cold_rows or self.dev.fragmenter.cold_capacity)
        self.working = None
        self.hot = None
        self._staging_in = torch.empty(self.cap, self.width)
        self._staging_out = torch.empty(self.cap, self.width)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hotline-cold")
        self._ws_generation = 0
        del E, T

    # --- state --------------------------------------------------------------------------
    @property
    def frozen(self):
        """Whether popularity is frozen (training then goes through :meth:`working_sets`)."""
        return self.dev.state == "frozen"

    @property
    def hot_rows(self):
        """Rows in the hot table."""
        return 0 if self.hot is None else self.hot.n

    def close(self):
        """Release the driver and the background thread (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if not self.dev.closed:
            self.dev.close()

    # --- input --------------------------------------------------------------------------
    def _prepare(self, features):
        """The features as :class:`InputMajor` on the CPU, bounds-checked by the mode."""
        if isinstance(features, torch.Tensor):
            features = SparseFeatures.from_dense(features, self.keys)
        if not isinstance(features, SparseFeatures):
            raise TypeError(f"features must be SparseFeatures or an [batch, tables] tensor, "
                            f"not {type(features).__name__}")
        if features.keys != self.keys:
            raise ValueError(f"features have keys {list(features.keys)}, the collection's "
                             f"tables are {list(self.keys)} (same names, same order)")
        im = features.to("cpu").input_major()
        bad = (im.rows < 0) | (im.rows >= self._rows[im.tables])
        n_bad = int(bad.sum())
        if not n_bad:
            return im
        self.bounds_violations += n_bad
        j = int(torch.nonzero(bad)[0])
        t = int(im.tables[j])
        sample = int(im.bags[j]) // im.n_tables
        where = (f"table {self.keys[t]!r}: row {int(im.rows[j])} of sample {sample} is outside "
                 f"0..{self.table_rows[t] - 1}")
        if self.bounds_check == "error":
            from sw_driver.errors import IndexOutOfRangeError
            err = IndexOutOfRangeError(t, int(im.rows[j]), (sample, t), self.table_rows[t],
                                       "features")
            err.args = (f"{where} ({n_bad} lookups out of range; bounds_check='error')",)
            raise err
        if self.bounds_check == "warn":
            warnings.warn(f"{where}; {n_bad} out-of-range lookups clamped into their tables "
                          f"(bounds_check='warn')", stacklevel=3)
            hi = self._rows[im.tables] - 1
            rows = torch.minimum(torch.clamp(im.rows, min=0), hi)
            dense = None if im.dense is None else rows.view(im.n, im.n_tables)
            return InputMajor(im.tables, rows, im.bags, im.offsets, im.n, im.n_tables, dense)
        keep = ~bad                                            # "ignore": drop the lookups
        sample_of = im.bags // im.n_tables
        per = torch.zeros(im.n, dtype=torch.int64).index_add_(0, sample_of, keep.long())
        return InputMajor(im.tables[keep], im.rows[keep], im.bags[keep],
                          torch.cat([per.new_zeros(1), torch.cumsum(per, 0)]), im.n,
                          im.n_tables)

    def _scale(self, tables, bags, n_bags):
        """Per-lookup pooling weights (``None`` when every table sums)."""
        if not bool(self._mean.any()):
            return None
        counts = torch.bincount(bags, minlength=n_bags).clamp(min=1)
        return torch.where(self._mean[tables], 1.0 / counts[bags].to(torch.float32),
                           torch.ones((), dtype=torch.float32))

    # --- forward / backward -------------------------------------------------------------
    def lookup(self, features):
        """``(pooled [B, T, dim], plan)`` without autograd; :meth:`apply_gradient` with the
        gradient of ``pooled`` takes the optimizer step (for trainers that exchange
        gradients, e.g. data parallel). ``forward`` is both, fused into backward."""
        if isinstance(features, _Scheduled):
            return self._lookup_scheduled(features)
        im = self._prepare(features)
        B, T = im.n, im.n_tables
        g = self.offsets[im.tables] + im.rows
        scale = self._scale(im.tables, im.bags, B * T)
        if self.frozen:
            if torch.is_grad_enabled():
                raise RuntimeError("HotlineEmbeddingBagCollection: popularity is frozen; train "
                                   "through working_sets(...) (forward outside it is for "
                                   "evaluation, under torch.no_grad())")
            slot = self.dev.slot_map.cpu()[g].to(torch.int64)
            rows = self.host_table[g, :self.dim].to(self.device)
            hot = slot >= 0
            if bool(hot.any()):
                hot_d = hot.to(self.device)
                rows[hot_d] = self.working[slot[hot].to(self.device), :self.dim]
        else:
            rows = self.host_table[g, :self.dim].to(self.device)
        plan = _Plan("host", g, im.bags, B * T, scale, B, im.dense is not None
                     and scale is None)
        return self._pool_rows(rows, plan), plan

    def _lookup_scheduled(self, sf):
        if sf.generation != self._ws_generation or self.working is None:
            raise RuntimeError("this micro-batch's working set is over; use each MicroBatch "
                               "inside its working_sets() iteration")
        pos, bags = sf.im.select(sf.samples.cpu())
        remapped = sf.sched.remapped.reshape(-1)
        idx = remapped[pos.to(remapped.device)].to(self.device)
        B, T = sf.samples.numel(), sf.im.n_tables
        tables = sf.im.tables[pos] if sf.im.dense is None else pos % T
        scale = self._scale(tables, bags, B * T)
        plan = _Plan("working", idx, bags.to(self.device), B * T, scale, B,
                     sf.im.dense is not None and scale is None)
        rows = self.working.index_select(0, idx)[:, :self.dim]
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
        g = grad.reshape(plan.n_bags, self.dim)
        if not plan.one_hot:
            g = g.index_select(0, plan.bags.to(g.device))
            if plan.scale is not None:
                g = g * plan.scale.to(g.device).unsqueeze(1)
        if plan.target == "working":
            self.optimizer.update(self.working, plan.idx, g, self.dim)
        else:
            self.optimizer.update(self.host_table, plan.idx, g.detach().cpu(), self.dim)

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
        im = self._prepare(features)
        if im.dense is not None:
            self.dev.learn(im.dense)
        else:
            self.dev.learn_bags(im.tables, im.rows)

    def freeze(self):
        """Freeze popularity and move the hot rows (with their optimizer state) to the
        device; returns the driver's ``HotRows``."""
        self.hot = self.dev.freeze()
        if self.working is None:
            self.working = torch.zeros(self.entries + self.cap, self.width, device=self.device)
        self.dev.load_hot_table(self.host_table, self.working[:self.entries])
        return self.hot

    def flush(self):
        """Copy the hot rows home: the host table is then complete."""
        if self.frozen and self.working is not None:
            self.dev.store_hot_table(self.working[:self.entries], self.host_table)

    def relearn(self):
        """Flush, clear the EAL and learn again (call :meth:`learn` then :meth:`freeze`)."""
        self.flush()
        self.dev.clear()
        self.hot = None

    # --- working sets -------------------------------------------------------------------
    def _schedule(self, im):
        if im.dense is not None:
            return self.dev.schedule(im.dense, self.batch_size)
        return self.dev.schedule_bags(im.tables, im.rows, im.offsets, self.batch_size)

    def _cold_path(self, prev, sched):
        """Write-back of the previous working set, then the gather of this one into
        ``working[E:]`` (in that order: a row both use is read after it was written)."""
        if prev is not None and prev.n_cold:
            self.dev.write_back(prev, self._staging_out[:prev.n_cold], self.host_table)
        if sched.n_cold:
            staged = self.dev.gather(sched, self.host_table, self._staging_in)
            self.working[self.entries:self.entries + sched.n_cold].copy_(staged)

    def working_sets(self, batches):
        """Train ``batches`` (an iterable of ``(features, payload)``) as working sets of
        ``working_set * batch_size`` samples: yields :class:`MicroBatch` objects -- each
        working set's popular micro-batches, then its non-popular samples in steps of at most
        ``np_micro_batch_size``. Train each one (forward, backward) before asking for the
        next: meanwhile the next cold rows are gathered, and after the last one the final
        write-back runs, so the host table is current when the loop ends (hot rows: call
        :meth:`flush`)."""
        if not self.frozen:
            raise RuntimeError("working_sets: popularity is not frozen; learn(...) and "
                               "freeze() first")
        step = self.working_set_size * self.batch_size
        pend_im, pend_pay, n_pend = [], [], 0
        it = iter(batches)
        done = False
        prev = None
        k = 0
        E = self.entries
        while True:
            while n_pend < step and not done:
                try:
                    item = next(it)
                except StopIteration:
                    done = True
                    break
                feats, payload = item if isinstance(item, tuple) and len(item) == 2 else (item,
                                                                                           None)
                im = self._prepare(feats)
                pend_im.append(im)
                pend_pay.append(payload)
                n_pend += im.n
            if n_pend == 0:
                break
            im_all = InputMajor.cat(pend_im)
            pay_all = _payload_cat(pend_pay)
            n_take = min(step, n_pend)
            im = im_all.slice(0, n_take) if n_take < n_pend else im_all
            sched = self._schedule(im)
            n_in = sched.n_inputs
            rest = im_all.slice(n_in, n_pend) if n_in < n_pend else None
            pay = _payload_map(pay_all, lambda t: t[:n_in])
            pay_rest = _payload_map(pay_all, lambda t: t[n_in:])
            if n_in < im.n:
                im = im.slice(0, n_in)
            pend_im, pend_pay = ([rest], [pay_rest]) if rest is not None else ([], [])
            n_pend -= n_in
            self._ws_generation += 1
            fut = None
            if self.pipelined:
                fut = self._pool.submit(self._cold_path, prev, sched)
            else:
                self._cold_path(prev, sched)
            try:
                for micro in sched.popular_micro_batches:
                    yield self._micro(im, sched, micro, pay, "popular", k)
            finally:
                if fut is not None:
                    fut.result()
            n = sched.non_popular.numel()
            if n:
                parts = -(-n // self.np_micro_batch_size) if self.np_micro_batch_size else 1
                for chunk in torch.tensor_split(sched.non_popular, parts):
                    yield self._micro(im, sched, chunk, pay, "non_popular", k)
            if sched.n_cold:
                self._staging_out[:sched.n_cold].copy_(self.working[E:E + sched.n_cold])
            prev = sched
            k += 1
        if prev is not None and prev.n_cold:
            self.dev.write_back(prev, self._staging_out[:prev.n_cold], self.host_table)
        self._ws_generation += 1

    def _micro(self, im, sched, samples, payload, kind, k):
        dev_idx = samples
        pay = _payload_map(payload, lambda t: t.index_select(0, dev_idx.to(t.device)))
        return MicroBatch(_Scheduled(self, im, sched, samples), pay, kind, int(samples.numel()),
                          k)

    # --- tables and checkpoints ---------------------------------------------------------
    def embedding_table(self, name=None):
        """The complete rows (hot rows flushed first): all tables ``[sum(rows), dim]``, or
        table ``name``'s ``[num_embeddings, dim]`` (views of the host table)."""
        self.flush()
        if name is None:
            return self.host_table[:, :self.dim]
        t = self.keys.index(name)
        a = int(self.offsets[t])
        return self.host_table[a:a + self.table_rows[t], :self.dim]

    def optimizer_state(self):
        """The optimizer's per-row state ``[sum(rows), state_width]`` (hot rows flushed)."""
        self.flush()
        return self.host_table[:, self.dim:]

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        self.flush()
        destination[prefix + "rows"] = self.host_table.clone()
        destination[prefix + "frozen"] = torch.tensor(self.frozen)
        for k, v in self.dev.transport.dump_tensors().items():
            destination[prefix + "tag_store." + k] = torch.as_tensor(v).detach().cpu().clone()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        rows = state_dict.get(prefix + "rows")
        if rows is None:
            missing_keys.append(prefix + "rows")
            return
        if tuple(rows.shape) != tuple(self.host_table.shape):
            error_msgs.append(f"{prefix}rows: shape {tuple(rows.shape)} differs from the "
                              f"collection's {tuple(self.host_table.shape)} (tables, dim, "
                              f"optimizer state)")
            return
        self.host_table.copy_(rows)
        tags = {k[len(prefix + "tag_store."):]: v for k, v in state_dict.items()
                if k.startswith(prefix + "tag_store.")}
        self.hot = None
        self.dev.load_tag_store(tags)
        if bool(state_dict.get(prefix + "frozen", torch.tensor(False))):
            self.freeze()
        for k in state_dict:
            if k.startswith(prefix) and k not in (prefix + "rows", prefix + "frozen") \
                    and not k.startswith(prefix + "tag_store.") and "." not in k[len(prefix):]:
                unexpected_keys.append(k)

    def extra_repr(self):
        return (f"tables={[(t.name, t.num_embeddings, t.pooling) for t in self.tables]}, "
                f"dim={self.dim}, optimizer={self.optimizer.name}, hot entries={self.entries}")

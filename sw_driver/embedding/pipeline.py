"""The working-set pipeline of :class:`~.collection.HotlineEmbeddingBagCollection`.

One iteration ``k`` (host program order; CUDA streams in brackets)::

    popular(k)        [main]   the caller trains the popular micro-batches (hot rows only)
    write_back(k-1)   host     after d2h(k-1) completed: staging_out -> host table
    gather(k)         host     host table -> staging_in (driver, threads)
    h2d(k)            [side]   staging_in -> working[E:E + n_cold]
    non_popular(k)    [main]   waits h2d(k); the caller trains the rest in chunks
    d2h(k)            [side]   waits non_popular(k); working[E:] -> staging_out
    schedule(k+1)     [sched]  the driver's schedule on its own high-priority stream

On the CPU a one-thread executor plays the side stream: write-back(k-1), gather(k) and the
"H2D" copy of k run on it while the caller trains popular(k); both touch disjoint memory
(``working[:E]`` against the host table and ``working[E:]``). On CUDA the popular kernels are
queued first and the host does the cold path while the device runs them.

Hazards: a cold row of working set ``k`` that ``k-1`` updated is read by gather(k) only after
write_back(k-1), which waited for d2h(k-1), which waited for non_popular(k-1) (read after
write). h2d(k) overwrites ``working[E:]`` and gather(k) ``staging_in`` only after d2h(k-1)
completed (write after read). Hot rows never leave the device while frozen. docs/training.md
("Pipeline order", "Streams and events") has the table of every hand-off.
"""

from __future__ import annotations

import contextlib
import gc
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch

from .features import InputMajor, SparseFeatures
from ..training.timing import _NullRecord

_NULL = _NullRecord()


@contextlib.contextmanager
def deliberate_sync(cuda):
    """Marks a host synchronisation that is there by design (docs/training.md, "Host
    synchronisations"): it stays allowed under ``torch.cuda.set_sync_debug_mode("error")``,
    which then catches any other one inside the working-set loop."""
    mode = 0
    if cuda:
        try:
            mode = torch.cuda.get_sync_debug_mode()
        except (RuntimeError, AttributeError):        # no CUDA runtime (a fake in tests)
            mode = 0
        if mode:
            torch.cuda.set_sync_debug_mode(0)
    try:
        yield
    finally:
        if mode:
            torch.cuda.set_sync_debug_mode(mode)


def _upload(t, device):
    """A host tensor to ``device`` through pinned memory, non-blocking (current stream)."""
    if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)

__all__ = ["WorkingSet", "WorkingSetPipeline"]


class WorkingSet:
    """A scheduled working set: the driver's ``Schedule``, its inputs (:class:`InputMajor`),
    the payload of those inputs, and the events of its copies (CUDA)."""

    def __init__(self, sched, im, payload, ready):
        self.sched, self.im, self.payload, self.ready = sched, im, payload, ready
        self.n_inputs = int(sched.n_inputs)
        self.n_cold = int(sched.n_cold)
        self.remapped = sched.remapped
        self.micro = list(sched.popular_micro_batches)
        self.non_popular = sched.non_popular
        #: per micro-batch ``(samples, lookup positions, bags)``: popular, then non-popular
        self.popular_groups, self.np_groups = [], []
        self.h2d_done = self.d2h_done = None
        self.cold_started = False        # its cold path (write-back before, gather) began
        self.gathered = False            # its cold rows are in working[E:]
        self.copied_out = False          # d2h issued (its rows go to staging_out)
        self.written_back = False        # its rows are home

    def non_popular_chunks(self, size):
        """The non-popular inputs in ``ceil(n / size)`` near-equal steps (``size`` 0: one)."""
        n = self.non_popular.numel()
        if n == 0:
            return []
        k = -(-n // size) if size else 1
        return list(torch.tensor_split(self.non_popular, k))

    def plan_lookups(self, np_size, cuda):
        """Each micro-batch's samples and the positions and bags of their lookups, computed
        once per working set (on the schedule stream on CUDA). Multi-hot: how many lookups
        each micro-batch owns depends on the data; those counts come to the host in one
        copy (a synchronisation of the schedule stream only)."""
        im = self.im
        groups = [("popular", s) for s in self.micro] + \
            [("non_popular", s) for s in self.non_popular_chunks(np_size)]
        T = im.n_tables
        out = []
        if im.dense is not None:
            for kind, s in groups:
                pos = (s.unsqueeze(1) * T + torch.arange(T, device=s.device)).reshape(-1)
                out.append((kind, s, pos, torch.arange(pos.numel(), device=s.device)))
        elif groups:
            dev = groups[0][1].device
            offs = im.offsets.to(dev)
            lens = offs[1:] - offs[:-1]
            counts = torch.stack([lens[s].sum() for _, s in groups])
            with deliberate_sync(cuda):
                counts = counts.cpu().tolist()
            for (kind, s), total in zip(groups, counts):
                pos, bags = im.select(s, total)
                out.append((kind, s, pos, bags))
        self.popular_groups = [g[1:] for g in out if g[0] == "popular"]
        self.np_groups = [g[1:] for g in out if g[0] == "non_popular"]

    def to_main(self, main, device):
        """Make the tensors made on the schedule stream safe on the main stream: indices
        still on the host move over (one pinned copy each), device tensors are marked as
        used by ``main`` for the caching allocator."""

        def on_main(t):
            if not isinstance(t, torch.Tensor):
                return t
            if t.device.type != "cuda":
                return t.pin_memory().to(device, non_blocking=True)
            t.record_stream(main)
            return t

        self.remapped = on_main(self.remapped)
        self.micro = [on_main(m) for m in self.micro]
        self.non_popular = on_main(self.non_popular)
        self.popular_groups = [tuple(on_main(t) for t in g) for g in self.popular_groups]
        self.np_groups = [tuple(on_main(t) for t in g) for g in self.np_groups]
        self.payload = _payload_map(self.payload, on_main)
        for name in ("tables", "rows", "bags", "offsets", "dense"):
            t = getattr(self.im, name)
            if isinstance(t, torch.Tensor) and t.device.type == "cuda":
                t.record_stream(main)


class _Pending:
    """The loop's inputs read but not yet scheduled: their lookups (``ims``) and payloads
    (``pays``), ``n`` samples in all; ``done`` once the iterable is exhausted; ``items``
    read so far (for error messages); ``structure``: the payload nesting of the first
    pending batch (every batch concatenated with it must match)."""

    def __init__(self):
        self.ims, self.pays = [], []
        self.n = 0
        self.done = False
        self.items = 0
        self.structure = None


class _Loop:
    """The open ``working_sets()`` loop: its generator (weakly, so that dropping it ends the
    loop) and the working set it is in."""

    def __init__(self, ws_index):
        self.gen = None
        self.ws_index = ws_index


class WorkingSetPipeline:
    """The cold path of the working sets and the generator that drives them.

    Owns the pinned staging buffers (``cap`` rows of ``width`` floats each), the side and
    schedule streams (CUDA) or the background thread (CPU). :meth:`run` is what
    ``HotlineEmbeddingBagCollection.working_sets`` returns."""

    def __init__(self, ebc, cap):
        self.ebc = ebc
        self.device = ebc.device
        self.cuda = self.device.type == "cuda"
        self.cap = int(cap)
        self.staging_in = torch.empty(self.cap, ebc.width, pin_memory=self.cuda)
        self.staging_out = torch.empty(self.cap, ebc.width, pin_memory=self.cuda)
        self._last_h2d = None                # the last H2D out of staging_in (CUDA)
        self.loop = None                     # the open working_sets() loop (one at a time)
        self.prev = self.cur = self.fut = None   # its working sets in flight, cold path
        if self.cuda:
            self.side = torch.cuda.Stream(self.device)              # H2D / D2H copies
            # High priority: the schedule of k+1 sits between the host and popular(k+1);
            # its few small kernels should not queue behind non_popular(k)'s.
            self.sched_stream = torch.cuda.Stream(self.device, priority=-1)
            self._pool = None
        else:
            self.side = self.sched_stream = None
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="hotline-cold")

    def main_stream(self):
        """The current stream of the training device (CUDA; ``None`` on the CPU): every
        event the pipeline records names its stream."""
        return torch.cuda.current_stream(self.device) if self.cuda else None

    def close(self):
        """Stop the background thread and drop the buffers (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self.cuda and self.staging_in is not None:
            try:
                torch.cuda.synchronize(self.device)     # no copy may still use the buffers
            except RuntimeError:        # closing after a CUDA error: keep that error visible
                pass
        self.staging_in = self.staging_out = None

    # --- one working set's steps -------------------------------------------------------
    def schedule(self, im, payload, rec):
        """Classify and fragment ``im`` into a :class:`WorkingSet` (on the schedule stream
        on CUDA, with everything the micro-batches need: the inputs cut where the schedule
        ended, the payload of those inputs on the device, each micro-batch's lookups; the
        ``ready`` event follows all of it)."""
        tok = rec.host_begin("schedule")
        ebc = self.ebc
        with self._on_sched_stream():
            if self.cuda:
                im = im.to_device(self.device)
            with deliberate_sync(self.cuda):        # the driver's cold-list copy
                sched = ebc._schedule(im)
            ws = WorkingSet(sched, im, None, None)
            n_in = ws.n_inputs                      # fewer when a de-dup bank filled (7.5)
            if n_in < im.n:
                ws.im = im.slice(0, n_in)
            ws.payload = _payload_map(payload, lambda t: t[:n_in])
            if self.cuda:
                ws.payload = _payload_map(ws.payload, lambda t: _upload(t, self.device))
            ws.plan_lookups(ebc.np_micro_batch_size, self.cuda)
            if self.cuda:
                ws.ready = torch.cuda.Event()
                ws.ready.record(self.sched_stream)
        rec.host_end(tok)
        return ws

    def write_back(self, ws, rec):
        """Write ``ws``'s updated cold rows (in ``staging_out``) to the host table, after its
        device-to-host copy completed."""
        if ws is None or ws.n_cold == 0 or ws.written_back:
            return
        tok = rec.host_begin("write_back")
        if ws.d2h_done is not None:
            with deliberate_sync(self.cuda):       # the host reads what the D2H wrote
                ws.d2h_done.synchronize()
        ebc = self.ebc
        ebc.dev.write_back(ws.sched, self.staging_out[:ws.n_cold], ebc.table)
        ws.written_back = True
        rec.host_end(tok)

    def gather(self, ws, rec):
        """Gather ``ws``'s cold rows from the host table into ``staging_in``."""
        if ws.n_cold == 0:
            return None
        if ws.n_cold > self.cap:
            raise RuntimeError(f"working set has {ws.n_cold} cold rows, more than the "
                               f"{self.cap}-row cold buffer (max_cold_rows)")
        tok = rec.host_begin("gather")
        if self._last_h2d is not None:
            # staging_in is about to be overwritten by CPU threads: the previous
            # non-blocking H2D out of it must be done. It always is by now (write_back
            # waited for the D2H queued behind it on the side stream); the check keeps the
            # rule local instead of resting on that chain.
            with deliberate_sync(self.cuda):
                self._last_h2d.synchronize()
            self._last_h2d = None
        staged = self.ebc.dev.gather(ws.sched, self.ebc.table, self.staging_in)
        rec.host_end(tok)
        return staged

    def h2d(self, ws, staged, rec):
        """Copy the staged cold rows into ``working[E:E + n_cold]``."""
        E = self.ebc.entries
        dst = self.ebc.working[E:E + ws.n_cold]
        if self.cuda:
            # Write after read on working[E:]: the previous non_popular read it on the main
            # stream and its D2H on this side stream; that D2H waited for the non_popular
            # (event), and this copy is queued behind the D2H on the same stream.
            with torch.cuda.stream(self.side):
                tok = rec.dev_begin("h2d", self.side)
                dst.copy_(staged, non_blocking=True)
                rec.dev_end(tok, self.side)
                ws.h2d_done = torch.cuda.Event()
                ws.h2d_done.record(self.side)
            self._last_h2d = ws.h2d_done
        else:
            tok = rec.host_begin("h2d")
            dst.copy_(staged)
            rec.host_end(tok)
        ws.gathered = True

    def d2h(self, ws, rec):
        """Copy ``working[E:E + n_cold]`` to ``staging_out`` after the non-popular steps."""
        E = self.ebc.entries
        src = self.ebc.working[E:E + ws.n_cold]
        if self.cuda:
            np_done = torch.cuda.Event()
            np_done.record(self.main_stream())          # after non_popular(k)
            with torch.cuda.stream(self.side):
                self.side.wait_event(np_done)
                tok = rec.dev_begin("d2h", self.side)
                self.staging_out[:ws.n_cold].copy_(src, non_blocking=True)
                rec.dev_end(tok, self.side)
                ws.d2h_done = torch.cuda.Event()
                ws.d2h_done.record(self.side)
        else:
            tok = rec.host_begin("d2h")
            self.staging_out[:ws.n_cold].copy_(src)
            rec.host_end(tok)
        ws.copied_out = True

    def cold_path(self, prev, ws, rec):
        """write_back(prev), then gather(ws) and its H2D: the hazard order."""
        ws.cold_started = True
        self.write_back(prev, rec)
        staged = self.gather(ws, rec)
        if staged is not None:
            self.h2d(ws, staged, rec)

    def _on_sched_stream(self):
        return torch.cuda.stream(self.sched_stream) if self.cuda else contextlib.nullcontext()

    # --- the open loop, seen from outside (late backward, flush, evaluation) ----------------
    def loop_over(self, batches, first_index):
        """The generator of ``working_sets``; refused at once while another loop is open."""
        self._need_free(None)
        loop = _Loop(first_index)
        gen = self.run(batches, first_index, loop)
        loop.gen = weakref.ref(gen)
        return gen

    def _need_free(self, loop):
        if self.loop is not None and self.loop is not loop:
            gc.collect()                # a loop dropped inside a reference cycle ends here
        if self.loop is not None and self.loop is not loop:
            raise RuntimeError(f"working_sets: another working_sets() loop is still open (in "
                               f"working set {self.loop.ws_index}); finish it, break out of it "
                               f"or call its close() first (both would share the device rows)")

    def end_loop(self):
        """End the open loop, if any (its rows go home), e.g. before ``close()``."""
        gen = self.loop.gen() if self.loop is not None and self.loop.gen else None
        if gen is not None:
            try:
                gen.close()
            except ValueError:          # called from inside the loop's own generator
                pass

    def settle(self):
        """Finish the cold path in flight (the background thread's write-back, gather and
        copy on the CPU; the previous working set's write-back, which waits for its D2H):
        the host table then holds every row that is not in ``working[E:]``."""
        if self.loop is None:
            return
        if self.fut is not None:
            f, self.fut = self.fut, None
            f.result()
        self.write_back(self.prev, _NULL)

    def resident(self):
        """The working set of the open loop whose cold rows are in ``working[E:]`` (gathered,
        not yet written back), or ``None``."""
        cur = self.cur
        if self.loop is None or cur is None or not cur.gathered or cur.written_back \
                or not cur.n_cold:
            return None
        return cur

    def wait_resident(self, ws):
        """Order the main stream after ``ws``'s H2D (CUDA) before it reads those rows."""
        if self.cuda and ws.h2d_done is not None:
            self.main_stream().wait_event(ws.h2d_done)

    def publish(self):
        """:meth:`settle`, then copy the current working set's cold rows (as trained so far)
        to the host table without ending anything: the host table is then what the
        micro-batches trained so far give one after another (hot rows aside: they are
        current in the hot table)."""
        if self.loop is None:
            return
        self.settle()
        cur = self.resident()
        if cur is not None:
            self.wait_resident(cur)
            ebc = self.ebc
            E = ebc.entries
            rows = ebc.working[E:E + cur.n_cold]
            ebc.table.index_copy_(0, cur.sched.cold_global_rows, rows.to("cpu"))

    # --- the generator -----------------------------------------------------------------
    def _order_after_caller(self, feats):
        """Features made on the device by the caller's stream: the schedule stream reads them
        only after what that stream has queued so far, and their memory is marked as used by
        the schedule stream. Without the mark, a caller that drops them (a generator making
        each batch on the device) hands their block back to its own stream at once, and its
        next allocation there (the next batch) may overwrite them before the schedule
        stream's kernels have read them: nothing orders the caller's stream after the
        schedule stream until the working set's ``ready`` event."""
        self.sched_stream.wait_stream(self.main_stream())
        if isinstance(feats, torch.Tensor):
            tensors = (feats,)
        else:
            tensors = (feats.values, feats.lengths, getattr(feats, "_dense", None))
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.is_cuda:
                t.record_stream(self.sched_stream)

    def _next(self, it, pend, rec):
        """Schedule the next working set from the pending inputs (``pend``, a
        :class:`_Pending`) plus new batches of ``it``, or ``None`` at the end."""
        ebc = self.ebc
        step = ebc.working_set_size * ebc.batch_size
        ims, pays = pend.ims, pend.pays
        while pend.n < step and not pend.done:
            try:
                item = next(it)
            except StopIteration:
                pend.done = True
                break
            i = pend.items
            pend.items += 1
            feats, payload = _split_item(item, i)
            on_dev = (feats if isinstance(feats, torch.Tensor) else feats.values).is_cuda
            if self.cuda and on_dev:
                self._order_after_caller(feats)
            # On the schedule stream: a bounds check's host sync then waits for the schedule
            # kernels only, not for the training queued on the main stream.
            with self._on_sched_stream():
                im = ebc._prepare(feats, scheduled=True)
                if im.dense is None and im.offsets.is_cuda and im.offsets_host is None:
                    with deliberate_sync(self.cuda):     # multi-hot built on the device
                        im.host_offsets()
            _check_payload(payload, im.n, i, pend.structure if pays else None)
            if not pays:
                pend.structure = _structure(payload)
            ims.append(im)
            pays.append(payload)
            pend.n += im.n
        n = pend.n
        if n == 0:
            return None
        with self._on_sched_stream():
            im_all = InputMajor.cat(ims)
            im = im_all.slice(0, step) if step < n else im_all
        pay_all = _payload_cat(pays)
        ws = self.schedule(im, pay_all, rec)
        n_in = ws.n_inputs
        with self._on_sched_stream():
            ims[:] = [im_all.slice(n_in, n)] if n_in < n else []
        pays[:] = [_payload_map(pay_all, lambda t: t[n_in:])] if n_in < n else []
        pend.n = n - n_in
        return ws

    def run(self, batches, first_index, loop):
        """Yield the micro-batches of ``batches`` (see ``working_sets``); records phase
        timings in the collection's timer. ``loop``: this generator's :class:`_Loop`; only
        one loop may be open at a time (they would share ``working[E:]`` and the staging
        buffers)."""
        ebc = self.ebc
        ebc._need_open("working_sets")
        self._need_free(loop)
        self.loop = loop
        self.prev = self.cur = self.fut = None
        timer = ebc.timer
        main = self.main_stream()
        try:
            it = iter(batches)
            pend = _Pending()
            k = 0
            rec = timer.record("working_set", first_index, stream=main)
            nxt = self._next(it, pend, rec)
            while nxt is not None:
                ws_index = first_index + k
                loop.ws_index = ws_index
                if k:
                    trace = ws_index == ebc.trace_working_set
                    rec = timer.record("working_set", ws_index, stream=main, sync=trace,
                                       keep=trace)
                cur = self.cur = nxt
                nxt = None
                ebc._ws_generation += 1
                if self.cuda:
                    main.wait_event(cur.ready)
                    cur.to_main(main, self.device)
                if ebc.pipelined and not self.cuda:   # cold path first, on the thread
                    cur.cold_started = True
                    self.fut = self._pool.submit(self.cold_path, self.prev, cur, rec)
                if cur.popular_groups:
                    tok = rec.dev_begin("popular")
                    for j, group in enumerate(cur.popular_groups):
                        yield ebc._micro(cur, group, "popular", ws_index, j)
                    rec.dev_end(tok)
                if self.fut is not None:
                    f, self.fut = self.fut, None
                    f.result()
                elif not cur.cold_started:  # CUDA: the popular kernels are queued; or serial
                    self.cold_path(self.prev, cur, rec)
                if cur.np_groups:
                    if self.cuda and cur.n_cold:
                        main.wait_event(cur.h2d_done)
                    tok = rec.dev_begin("non_popular")
                    for j, group in enumerate(cur.np_groups):
                        yield ebc._micro(cur, group, "non_popular", ws_index, j)
                    rec.dev_end(tok)
                if cur.n_cold:
                    self.d2h(cur, rec)
                self.prev, self.cur = cur, None
                nxt = self._next(it, pend, rec)
                timer.close(rec)
                k += 1
            rec = timer.record("drain", stream=main)
            self.write_back(self.prev, rec)
            timer.close(rec)
        finally:
            # Left early (an exception, the loop dropped or closed): no update may be lost.
            try:
                if self.fut is not None:
                    f, self.fut = self.fut, None
                    f.result()
                prev, cur = self.prev, self.cur
                if prev is not None and not prev.written_back:
                    self.write_back(prev, timer.record("drain", stream=main))
                if cur is not None and cur.gathered and not cur.written_back:
                    if not cur.copied_out:
                        self.d2h(cur, timer.record("drain", stream=main))
                    self.write_back(cur, timer.record("drain", stream=main))
            finally:
                ebc._ws_generation += 1
                self.prev = self.cur = self.fut = None
                self.loop = None


def _split_item(item, i):
    """``(features, payload)`` of item ``i`` of a ``working_sets`` iterable: a pair (tuple or
    list of two) or the features alone."""
    if isinstance(item, (tuple, list)):
        if len(item) != 2:
            raise TypeError(f"working_sets: item {i} is a {type(item).__name__} of {len(item)}; "
                            f"each item must be a (features, payload) pair or the features "
                            f"alone")
        feats, payload = item
    else:
        feats, payload = item, None
    if not isinstance(feats, (torch.Tensor, SparseFeatures)):
        raise TypeError(f"working_sets: item {i}: features must be SparseFeatures or an "
                        f"[batch, tables] tensor, not {type(feats).__name__} (items are "
                        f"(features, payload) pairs)")
    return feats, payload


def _structure(p):
    """The shape of a payload's nesting (types and keys), to compare batches."""
    if p is None or isinstance(p, torch.Tensor):
        return type(p).__name__
    if isinstance(p, dict):
        return ("dict", tuple((k, _structure(v)) for k, v in p.items()))
    if isinstance(p, (tuple, list)):
        return (type(p).__name__, tuple(_structure(v) for v in p))
    return type(p).__name__


def _check_payload(p, n, i, first, path=""):
    """Every tensor of batch ``i``'s payload has one row per sample (``n``), and the payload
    is nested as the first batch's (``first``)."""
    _check_payload_leaves(p, n, i, path)
    if first is not None and _structure(p) != first:
        raise TypeError(f"working_sets: batch {i}: the payload is nested differently from "
                        f"the first batch's (same tensors, tuples, lists and dict keys in "
                        f"every batch)")


def _check_payload_leaves(p, n, i, path):
    if p is None:
        return
    if isinstance(p, torch.Tensor):
        rows = p.shape[0] if p.dim() else None
        if rows != n:
            what = "a 0-dim tensor" if rows is None else f"{rows} rows (first dimension)"
            raise ValueError(f"working_sets: batch {i}: payload{path} has {what} but its "
                             f"features have {n} samples; every payload tensor needs one row "
                             f"per sample")
        return
    if isinstance(p, dict):
        for k, v in p.items():
            _check_payload_leaves(v, n, i, f"{path}[{k!r}]")
        return
    if isinstance(p, (tuple, list)):
        for j, v in enumerate(p):
            _check_payload_leaves(v, n, i, f"{path}[{j}]")
        return
    raise TypeError(f"working_sets: batch {i}: payload{path} is a {type(p).__name__}, not a "
                    f"tensor (a payload is a tensor, or a tuple, list or dict of tensors)")


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

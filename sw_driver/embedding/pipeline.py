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
from concurrent.futures import ThreadPoolExecutor

import torch

from .features import InputMajor

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
        self.h2d_done = self.d2h_done = None
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
        for name in ("tables", "rows", "bags", "offsets", "dense"):
            t = getattr(self.im, name)
            if isinstance(t, torch.Tensor) and t.device.type == "cuda":
                t.record_stream(main)


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
        """Classify and fragment ``im`` (on the schedule stream on CUDA)."""
        tok = rec.host_begin("schedule")
        if self.cuda:
            with torch.cuda.stream(self.sched_stream):
                sched = self.ebc._schedule(im)
                ready = torch.cuda.Event()
                ready.record(self.sched_stream)
        else:
            sched, ready = self.ebc._schedule(im), None
        rec.host_end(tok)
        return WorkingSet(sched, im, payload, ready)

    def write_back(self, ws, rec):
        """Write ``ws``'s updated cold rows (in ``staging_out``) to the host table, after its
        device-to-host copy completed."""
        if ws is None or ws.n_cold == 0 or ws.written_back:
            return
        tok = rec.host_begin("write_back")
        if ws.d2h_done is not None:
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
        self.write_back(prev, rec)
        staged = self.gather(ws, rec)
        if staged is not None:
            self.h2d(ws, staged, rec)

    # --- the generator -----------------------------------------------------------------
    def _on_sched_stream(self):
        return torch.cuda.stream(self.sched_stream) if self.cuda else contextlib.nullcontext()

    def _next(self, it, pend, rec):
        """Schedule the next working set from the pending inputs plus new batches of ``it``
        (``pend``: ``[ims, payloads, n, done]``), or ``None`` at the end."""
        ebc = self.ebc
        step = ebc.working_set_size * ebc.batch_size
        ims, pays = pend[0], pend[1]
        while pend[2] < step and not pend[3]:
            try:
                item = next(it)
            except StopIteration:
                pend[3] = True
                break
            feats, payload = (item if isinstance(item, tuple) and len(item) == 2
                              else (item, None))
            # On the schedule stream: a bounds check's host sync then waits for the schedule
            # kernels only, not for the training queued on the main stream.
            with self._on_sched_stream():
                im = ebc._prepare(feats)
            ims.append(im)
            pays.append(payload)
            pend[2] += im.n
        n = pend[2]
        if n == 0:
            return None
        with self._on_sched_stream():
            im_all = InputMajor.cat(ims)
            im = im_all.slice(0, step) if step < n else im_all
        pay_all = _payload_cat(pays)
        ws = self.schedule(im, None, rec)
        n_in = ws.n_inputs                      # fewer when a de-dup bank filled (spec 7.5)
        if n_in < im.n:
            ws.im = im.slice(0, n_in)
        ws.payload = _payload_map(pay_all, lambda t: t[:n_in])
        ims[:] = [im_all.slice(n_in, n)] if n_in < n else []
        pays[:] = [_payload_map(pay_all, lambda t: t[n_in:])] if n_in < n else []
        pend[2] = n - n_in
        return ws

    def run(self, batches, first_index=0):
        """Yield the micro-batches of ``batches`` (see ``working_sets``); records phase
        timings in the collection's timer."""
        ebc = self.ebc
        timer = ebc.timer
        main = self.main_stream()
        E = ebc.entries
        it = iter(batches)
        pend = [[], [], 0, False]
        prev = cur = fut = None
        k = 0
        rec = timer.record("working_set", first_index, stream=main)
        nxt = self._next(it, pend, rec)
        try:
            while nxt is not None:
                ws_index = first_index + k
                if k:
                    trace = ws_index == ebc.trace_working_set
                    rec = timer.record("working_set", ws_index, stream=main, sync=trace,
                                       keep=trace)
                cur, nxt = nxt, None
                ebc._ws_generation += 1
                if self.cuda:
                    main.wait_event(cur.ready)
                    cur.to_main(main, self.device)
                if ebc.pipelined and not self.cuda:   # cold path first, on the thread
                    fut = self._pool.submit(self.cold_path, prev, cur, rec)
                if cur.micro:
                    tok = rec.dev_begin("popular")
                    for samples in cur.micro:
                        yield ebc._micro(cur, samples, "popular", ws_index)
                    rec.dev_end(tok)
                if fut is not None:
                    fut, f = None, fut
                    f.result()
                else:                     # CUDA: the popular kernels are queued; or serial
                    self.cold_path(prev, cur, rec)
                chunks = cur.non_popular_chunks(ebc.np_micro_batch_size)
                if chunks:
                    if self.cuda and cur.n_cold:
                        main.wait_event(cur.h2d_done)
                    tok = rec.dev_begin("non_popular")
                    for samples in chunks:
                        yield ebc._micro(cur, samples, "non_popular", ws_index)
                    rec.dev_end(tok)
                if cur.n_cold:
                    self.d2h(cur, rec)
                prev, cur = cur, None
                nxt = self._next(it, pend, rec)
                timer.close(rec)
                k += 1
            rec = timer.record("drain", stream=main)
            self.write_back(prev, rec)
            timer.close(rec)
        finally:
            # Left early (an exception, or the loop stopped asking): no update may be lost.
            if fut is not None:
                fut.result()
            if prev is not None and not prev.written_back:
                self.write_back(prev, timer.record("drain", stream=main))
            if cur is not None and cur.gathered and not cur.written_back:
                if not cur.copied_out:
                    self.d2h(cur, timer.record("drain", stream=main))
                self.write_back(cur, timer.record("drain", stream=main))
            ebc._ws_generation += 1


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

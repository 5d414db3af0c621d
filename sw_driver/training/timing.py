"""Per-step / per-working-set phase timings: CUDA events on the GPU, ``perf_counter`` on the
host, resolved lazily so that recording never synchronises the device.

A :class:`PhaseTimer` hands out one :class:`Record` per training step (a mini-batch in the
``gpu-only``/``hybrid`` modes, one iteration of the pipelined loop in ``hotline`` mode). A
record holds, per phase, a list of intervals. Device phases (kernels and copies on a CUDA
stream) are bracketed by CUDA events recorded on that stream; host phases (CPU gather,
write-back, schedule) by ``time.perf_counter``. On a CPU training device every phase is a
host phase. Events are converted to milliseconds only once they have completed
(``Event.query()``), so :meth:`PhaseTimer.summary` is the only call that may wait
(it synchronises once).

Every CUDA event is recorded on an explicit stream of the trainer's device (the current stream
of *that* device when the caller names none) and every synchronisation names the device:
``torch.cuda.Event.record()`` without a stream and ``torch.cuda.synchronize()`` without a
device act on the process's current device, which need not be the training device
(``cuda:1``). With ``annotate=True`` each phase is also a ``torch.profiler.record_function``
range (and an NVTX range on CUDA), so a ``torch.profiler`` trace or an Nsight Systems capture
shows the phases by name.

Times inside a record are relative to its start: host times to the host clock when the record
opened, device times to a base event recorded on the main stream at that moment. The two
clocks agree only when the device was idle at the record's start; records opened with
``sync=True`` (the traced working set) synchronise first, so their timeline is aligned.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import torch

__all__ = ["PhaseTimer", "Record"]


class Record:
    """Phase intervals of one step (see module doc). Use :meth:`host` / :meth:`dev_begin` /
    :meth:`dev_end`; a phase may occur several times (its durations add up)."""

    def __init__(self, timer, kind, index, stream):
        self.timer, self.kind, self.index = timer, kind, index
        self.cuda = timer.cuda
        self.annotate = timer.annotate
        self.t0 = time.perf_counter()
        self._host = defaultdict(list)       # phase -> [(start_s, end_s)]
        self._dev = defaultdict(list)        # phase -> [[start_event, end_event]]
        self._lock = threading.Lock()
        self.base = None
        if self.cuda:
            self.base = torch.cuda.Event(enable_timing=True)
            self.base.record(timer.stream(stream))
        self.intervals = None                # phase -> [(start_ms, end_ms)] once resolved

    # host phases ------------------------------------------------------------------------
    def host_begin(self, phase):
        """Start a host interval; returns a token for :meth:`host_end`."""
        return (phase, time.perf_counter(), self._range_begin(phase))

    def host_end(self, token):
        phase, start, rng = token
        end = time.perf_counter()
        self._range_end(rng)
        with self._lock:
            self._host[phase].append((start, end))

    # profiler ranges (annotate=True); begun and ended on the same thread ----------------
    def _range_begin(self, phase):
        if not self.annotate:
            return None
        rf = torch.profiler.record_function(phase)
        rf.__enter__()
        if self.cuda:
            torch.cuda.nvtx.range_push(phase)
        return rf

    def _range_end(self, rf):
        if rf is not None:
            if self.cuda:
                torch.cuda.nvtx.range_pop()
            rf.__exit__(None, None, None)

    # device phases ----------------------------------------------------------------------
    def dev_begin(self, phase, stream=None):
        """Start a device interval on ``stream`` (current stream when ``None``)."""
        if not self.cuda:
            return self.host_begin(phase)
        rng = self._range_begin(phase)
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(self.timer.stream(stream))
        return (phase, ev, rng)

    def dev_end(self, token, stream=None):
        if not self.cuda:
            return self.host_end(token)
        phase, start, rng = token
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(self.timer.stream(stream))
        self._range_end(rng)
        with self._lock:
            self._dev[phase].append((start, ev))

    def _ready(self):
        # The base event too: elapsed_time() raises unless both of its events completed, and
        # a side-stream event (an H2D copy) may complete before the main stream reaches the
        # base event recorded ahead of it in host order.
        if self.base is not None and not self.base.query():
            return False
        return all(e.query() for pairs in self._dev.values() for p in pairs for e in p)

    def _resolve(self):
        out = {}
        for phase, spans in self._host.items():
            out.setdefault(phase, []).extend(
                ((s - self.t0) * 1e3, (e - self.t0) * 1e3) for s, e in spans)
        for phase, spans in self._dev.items():
            out.setdefault(phase, []).extend(
                (self.base.elapsed_time(s), self.base.elapsed_time(e)) for s, e in spans)
        self.intervals = {p: sorted(v) for p, v in out.items()}
        self._dev = self._host = None
        return self.intervals

    def durations(self):
        """``{phase: total ms}`` (resolved records only)."""
        return {p: sum(e - s for s, e in v) for p, v in (self.intervals or {}).items()}


class _NullRecord:
    """What a disabled timer hands out: every call is a no-op."""

    kind, index, intervals = None, -1, None

    def host_begin(self, phase):
        return None

    def host_end(self, token):
        pass

    def dev_begin(self, phase, stream=None):
        return None

    def dev_end(self, token, stream=None):
        pass


class PhaseTimer:
    """Collects :class:`Record` objects and sums their phases per record kind.

    ``PhaseTimer(device, enabled=True, annotate=False)``: ``device`` is the training device
    (CUDA events and synchronisations go to it, see the module doc). :meth:`record` opens a record, :meth:`close` files
    it, :meth:`summary` returns ``{kind: {"count": n, "phases": {phase: {"total_ms",
    "mean_ms"}}}}`` where ``mean_ms`` is per record of that kind. The last record opened with
    ``keep=True`` is kept whole (:attr:`traced`) for timeline plots.
    """

    def __init__(self, device, enabled=True, annotate=False):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.enabled = bool(enabled)
        self.annotate = bool(annotate)
        self.reset()

    def stream(self, stream=None):
        """``stream``, or the current stream of the training device when ``None``."""
        return stream if stream is not None else torch.cuda.current_stream(self.device)

    def synchronize(self):
        """Wait for all work on the training device (not the current device)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset(self):
        """Forget every record and sum."""
        self._pending = []
        self._totals = defaultdict(lambda: defaultdict(float))   # kind -> phase -> ms
        self._counts = defaultdict(int)
        self._keep = set()
        self.traced = None

    def record(self, kind, index=0, *, stream=None, sync=False, keep=False):
        """Open a record of ``kind`` (``"working_set"``, ``"step"``, ``"learn_step"``).
        ``sync=True`` synchronises the device first so that host and device times share one
        origin; ``keep=True`` keeps the record as :attr:`traced`."""
        if not self.enabled:
            return _NullRecord()
        if sync:
            self.synchronize()
        rec = Record(self, kind, index, stream)
        if keep:
            self._keep.add(id(rec))
        return rec

    def close(self, rec):
        """File ``rec``; resolves the oldest pending records whose events have completed."""
        if not self.enabled or isinstance(rec, _NullRecord):
            return
        self._pending.append(rec)
        if len(self._pending) > 8:
            self._drain(block=False)

    def _drain(self, block):
        if block:
            self.synchronize()
        keep = []
        for rec in self._pending:
            if block or not rec.cuda or rec._ready():
                rec._resolve()
                self._counts[rec.kind] += 1
                for phase, ms in rec.durations().items():
                    self._totals[rec.kind][phase] += ms
                if id(rec) in self._keep:
                    self._keep.discard(id(rec))
                    self.traced = rec
            else:
                keep.append(rec)
        self._pending = keep

    def summary(self):
        """Per kind: ``count`` records and per phase ``total_ms`` and ``mean_ms`` (per record
        of that kind). Synchronises the device once."""
        self._drain(block=True)
        out = {}
        for kind, n in self._counts.items():
            phases = {p: {"total_ms": t, "mean_ms": t / n} for p, t in self._totals[kind].items()}
            out[kind] = {"count": n, "phases": phases}
        return out

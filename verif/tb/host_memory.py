"""The simulated host DRAM: an AXI4 subordinate with latency, reordering, back-pressure,
error injection and protocol checks, for cocotb testbenches of the DMA engines.

cocotbext-axi's ``AxiRam`` serves one burst at a time with no latency; :class:`HostMemory`
uses the same bus and channel classes (``AxiBus``, ``AxiARSink``, ``AxiRSource``,
``AxiAWSink``, ``AxiWSink``, ``AxiBSource``) but schedules responses itself: every request is
time-stamped at its handshake and answered no earlier than ``latency`` cycles later, with
any number of requests in flight, so bandwidth-delay products are modelled.

Typical use::

    mem = HostMemory(dut, "m_axi", dut.clk, dut.rst, size=1 << 20, read_latency=500)
    mem.set_pause(0.2, seed=3)                  # idle/back-pressure on every channel
    mem.inject_error(0x4000, 0x4040, RESP_SLVERR, kind="read")
    mem.inject_error_nth(0x1000, 0x1100, 2, RESP_DECERR)  # only the 2nd read touching it
    ...
    mem.assert_clean()                          # no protocol violation seen
"""

import logging
import random
from collections import deque

import cocotb
from cocotb.triggers import Event, RisingEdge, Timer
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus
from cocotbext.axi.axi_channels import AxiARSink, AxiRSource, AxiAWSink, AxiWSink, AxiBSource

__all__ = ["HostMemory", "ErrorInjector", "ProtocolViolation", "RESP_OKAY", "RESP_SLVERR",
           "RESP_DECERR"]

RESP_OKAY, RESP_SLVERR, RESP_DECERR = 0, 2, 3
BURST_INCR = 1
PAGE_BYTES = 4096  # AXI4: no burst may cross a 4 KiB boundary
MAX_BURST_BEATS = 256  # AXI4 INCR
_R_LOW_WATER = 2  # R beats kept queued ahead of the bus: no bubble between bursts
_R_BATCH = 8      # beats interleaved per decision in reorder mode


class ProtocolViolation(AssertionError):
    """The manager broke an AXI4 rule (raised at once with ``strict=True``)."""


class _Burst:
    __slots__ = ("id", "addr", "beats", "resp", "ready", "next", "commit")

    def __init__(self, id_, addr, beats, resp, ready, commit=None):
        self.id, self.addr, self.beats, self.resp, self.ready = id_, addr, beats, resp, ready
        self.next = 0  # next beat to send
        self.commit = commit  # a write's memory update, applied when its B is sent


class ErrorInjector:
    """Which bursts get an error response: static ranges and n-th-access rules.

    A plain-Python object (no simulator needed), consulted once per burst in the order of the
    request handshakes. A *range* rule fails every burst of its kind that touches
    ``[start, end)``; an *n-th* rule counts the bursts of its kind that touch its range from
    the moment it is added and fails the ``nth`` (1 = the first) up to ``nth + count - 1``,
    e.g. the second read of a list that a device reads twice (check pass, then move pass).
    The first matching rule gives the response; every rule counts every burst it sees.

    Attributes
    ----------
    failed : list of tuple
        ``(kind, addr, nbytes, resp)`` of every burst answered with an injected error, in
        order.
    """

    def __init__(self):
        self._rules = []  # [kind, start, end, resp, first, last, seen]; first=None: always
        self.failed = []

    @staticmethod
    def _check(kind, resp):
        if kind not in ("read", "write"):
            raise ValueError(f"inject_error: kind must be 'read' or 'write', not {kind!r}")
        if resp not in (RESP_SLVERR, RESP_DECERR):
            raise ValueError(f"inject_error: resp must be SLVERR (2) or DECERR (3), not {resp}")

    def add_range(self, start, end, resp=RESP_SLVERR, kind="read"):
        self._check(kind, resp)
        self._rules.append([kind, start, end, resp, None, None, 0])

    def add_nth(self, start, end, nth, resp=RESP_SLVERR, kind="read", count=1):
        self._check(kind, resp)
        if nth < 1 or count < 1:
            raise ValueError(f"inject_error_nth: nth ({nth}) and count ({count}) must be >= 1")
        self._rules.append([kind, start, end, resp, nth, nth + count - 1, 0])

    def clear(self):
        self._rules.clear()

    def pending(self):
        """n-th rules whose bursts have not all come yet (a test can assert it is 0)."""
        return sum(1 for r in self._rules if r[4] is not None and r[6] < r[5])

    def resp_for(self, kind, addr, nbytes):
        """The response for a ``kind`` burst of ``nbytes`` at ``addr``: an injected error
        or ``RESP_OKAY``."""
        resp = RESP_OKAY
        for rule in self._rules:
            r_kind, start, end, err, first, last, _ = rule
            if r_kind != kind or not (addr < end and start < addr + nbytes):
                continue
            rule[6] += 1
            hit = first is None or first <= rule[6] <= last
            if hit and resp == RESP_OKAY:
                resp = err
        if resp != RESP_OKAY:
            self.failed.append((kind, addr, nbytes, resp))
        return resp


def random_pauses(prob, rng):
    """A cocotbext-axi pause generator: each cycle paused with probability ``prob``."""
    while True:
        yield rng.random() < prob


class HostMemory:
    """Host DRAM as an AXI4 subordinate on the DUT ports ``<prefix>_ar*``, ``_r*``, ...

    Parameters
    ----------
    dut : cocotb handle
        The top level holding the ports.
    prefix : str
        Port prefix, e.g. ``"m_axi"`` for ``m_axi_arvalid``.
    clock, reset : cocotb handles
        The bus clock and (optionally) the reset, active high unless
        ``reset_active_level=False``; the channels are idle while it is asserted.
    mem : writable buffer, optional
        The memory itself: a ``bytearray``, an ``mmap.mmap`` shared with another process,
        anything ``memoryview`` can write. Byte ``i`` is bus address ``base + i``.
    size : int, optional
        Size of a new zeroed ``bytearray`` when ``mem`` is not given.
    base : int
        Bus address of byte 0.
    read_latency, write_latency : int
        Cycles from a read request's AR handshake to its first R beat, and from a write's
        last W beat to its B response (at least; the channels add a cycle each). A write's
        data reaches the memory when its B response is sent: reads before that see the old
        data, as a manager that does not wait for B must expect.
    reorder : bool
        Answer bursts of different IDs in random order, interleaving up to ``interleave``
        read bursts beat by beat (bursts of one ID stay in order, as AXI4 requires).
    seed : int
        Seeds the reordering (and :meth:`set_pause`).
    strict : bool
        Raise :class:`ProtocolViolation` at the first violation instead of only recording it
        in :attr:`violations`.
    record : bool
        Keep every burst in :attr:`bursts` as ``(kind, id, addr, beats, cache, prot)``.
    allow_w_before_aw : bool
        AXI4 (A3.3.1) lets write data arrive before its address; by default this model
        reports it as a violation all the same (a manager that never does it is the stricter
        design the row mover keeps); ``True`` counts it in :attr:`early_w_beats` instead.

    Attributes
    ----------
    violations : list of str
        Protocol violations seen: burst crossing 4 KiB, size other than the bus width,
        unaligned start, not INCR, more than 256 beats, wrong ``wlast``, W beats ahead of
        their AW, access outside the memory.
    read_bursts, read_beats, write_bursts, write_beats, read_errors, write_errors : int
        Counters (errors: bursts answered SLVERR/DECERR).
    max_reads_in_flight : int
        Most read bursts accepted and not yet fully answered at one time.
    failed_writes : list of (int, bytes)
        Write bursts answered with an error: start address and, per byte of the burst, 1
        where its strobe was set (the bytes that would have been written and were not).
    """

    def __init__(self, dut, prefix, clock, reset=None, *, mem=None, size=None, base=0,
                 read_latency=0, write_latency=0, reorder=False, interleave=4, seed=0,
                 strict=False, record=False, reset_active_level=True,
                 allow_w_before_aw=False):
        if mem is None:
            if size is None:
                raise ValueError("HostMemory: give a buffer (mem) or a size")
            mem = bytearray(size)
        self.mem = mem
        self._mv = memoryview(mem).cast("B")
        self.size = len(self._mv)
        self.base = base
        self.clock = clock
        self.read_latency = read_latency
        self.write_latency = write_latency
        self.reorder = reorder
        self.interleave = max(1, interleave)
        self.strict = strict
        self.record = record
        self.allow_w_before_aw = allow_w_before_aw
        self.early_w_beats = 0
        self.rng = random.Random(seed)
        self._seed = seed
        self.log = logging.getLogger(f"cocotb.{prefix}.host_memory")

        bus = AxiBus.from_prefix(dut, prefix)
        args = (clock, reset, reset_active_level)
        self.ar = AxiARSink(bus.read.ar, *args)
        self.r = AxiRSource(bus.read.r, *args)
        self.aw = AxiAWSink(bus.write.aw, *args)
        self.w = AxiWSink(bus.write.w, *args)
        self.b = AxiBSource(bus.write.b, *args)
        # Requests are taken from the sinks at once; the R queue is kept short (see
        # _drain_reads) so that reordering decisions are made close to the bus.
        self.b.queue_occupancy_limit = 2
        # Stamp every handshake with its time: latency and AW/W ordering are measured from
        # the cycle a transfer happened, not from when the model got round to it.
        for channel in (self.ar, self.aw, self.w):
            channel._transaction_obj = self._stamped(channel._transaction_obj)

        self.byte_lanes = len(bus.read.r.rdata) // 8
        self.size_log = (self.byte_lanes - 1).bit_length()
        self._full_strb = (1 << self.byte_lanes) - 1
        self._has_wstrb = hasattr(bus.write.w, "wstrb")

        self.violations = []
        self.failed_writes = []  # (addr, one 0/1 byte per burst byte: strobed)
        self.bursts = []
        self.errors = ErrorInjector()
        self.read_bursts = self.read_beats = self.read_errors = 0
        self.write_bursts = self.write_beats = self.write_errors = 0
        self.reads_in_flight = 0
        self.max_reads_in_flight = 0
        self.writes_pending = 0  # AW accepted, B not yet handed to the B channel

        self._reads = deque()       # accepted read bursts, in order
        self._read_event = Event()
        self._writes = deque()      # B responses to send: _Burst with resp, ready
        self._write_event = Event()
        self._period = None
        cocotb.start_soon(self._start())

    # ---- configuration -----------------------------------------------------------------
    def set_pause(self, prob, seed=None):
        """Random idle/back-pressure on all five channels: each cycle, independently per
        channel, ``ready`` (AR, AW, W) or ``valid`` (R, B) is held low with probability
        ``prob``; 0 switches it off."""
        rng = random.Random(self._seed if seed is None else seed)
        gens = {}
        for name in ("ar", "r", "aw", "w", "b"):
            gens[name] = random_pauses(prob, random.Random(rng.getrandbits(32))) if prob else None
        self.set_pause_generators(**gens)

    def set_pause_generators(self, ar=None, r=None, aw=None, w=None, b=None):
        """cocotbext-axi pause generators (iterables of bools, one per cycle) per channel;
        ``None`` removes a channel's."""
        for channel, gen in ((self.ar, ar), (self.r, r), (self.aw, aw), (self.w, w),
                             (self.b, b)):
            if gen is None:
                channel.clear_pause_generator()
                channel.pause = False
            else:
                channel.set_pause_generator(gen)

    def inject_error(self, start, end, resp=RESP_SLVERR, kind="read"):
        """Answer ``resp`` (SLVERR or DECERR) to every ``kind`` (``"read"``/``"write"``)
        burst that touches bus addresses ``[start, end)``; a failing write changes nothing."""
        self.errors.add_range(start, end, resp, kind)

    def inject_error_nth(self, start, end, nth, resp=RESP_SLVERR, kind="read", count=1):
        """Answer ``resp`` to the ``nth`` (1 = first) ``kind`` burst that touches
        ``[start, end)``, counted from now (and to the ``count - 1`` after it); the others
        are answered normally. :attr:`injected` lists the bursts that failed."""
        self.errors.add_nth(start, end, nth, resp, kind, count)

    @property
    def injected(self):
        """``(kind, addr, nbytes, resp)`` of every burst answered with an injected error."""
        return self.errors.failed

    def clear_errors(self):
        """Remove every injected error (the record in :attr:`injected` stays)."""
        self.errors.clear()

    # ---- host-side access --------------------------------------------------------------
    def read(self, addr, length):
        """``length`` bytes at bus address ``addr`` (no bus traffic)."""
        off = addr - self.base
        return bytes(self._mv[off:off + length])

    def write(self, addr, data):
        """Store ``data`` at bus address ``addr`` (no bus traffic)."""
        off = addr - self.base
        self._mv[off:off + len(data)] = data

    def idle(self):
        """No read or write in flight and nothing left to send."""
        return (not self._reads and not self._writes and self.reads_in_flight == 0
                and self.writes_pending == 0 and self.r.idle() and self.b.idle()
                and self.w.empty() and self.aw.empty() and self.ar.empty())

    def assert_clean(self):
        """Raise :class:`ProtocolViolation` if any violation was recorded."""
        if self.violations:
            raise ProtocolViolation(f"{len(self.violations)} AXI violations; first: "
                                    f"{self.violations[:5]}")

    # ---- internals ---------------------------------------------------------------------
    def _commit(self, off, payload, partial):
        """Store a write burst's data (strobes of partial beats in ``partial``)."""
        lanes = self.byte_lanes
        if not partial:
            self._mv[off:off + len(payload)] = payload
            return
        for n in range(len(payload) // lanes):
            strb = partial.get(n, self._full_strb)
            if strb == self._full_strb:
                self._mv[off + n * lanes:off + (n + 1) * lanes] = payload[n * lanes:(n + 1) * lanes]
                continue
            for i in range(lanes):
                if strb >> i & 1:
                    self._mv[off + n * lanes + i] = payload[n * lanes + i]
    @staticmethod
    def _stamped(factory):
        def make():
            obj = factory()
            obj.stamp = get_sim_time("step")
            return obj
        return make

    def _violation(self, msg):
        self.violations.append(msg)
        self.log.error("AXI violation: %s", msg)
        if self.strict:
            raise ProtocolViolation(msg)

    def _check_request(self, kind, tr, addr, beats, size, burst):
        nbytes = beats << self.size_log
        if size != self.size_log:
            self._violation(f"{kind} at {addr:#x}: size {size} is not the bus width "
                            f"({self.size_log})")
        if burst != BURST_INCR:
            self._violation(f"{kind} at {addr:#x}: burst type {burst}, expected INCR")
        if beats > MAX_BURST_BEATS:
            self._violation(f"{kind} at {addr:#x}: {beats} beats > {MAX_BURST_BEATS}")
        if addr % self.byte_lanes:
            self._violation(f"{kind} at {addr:#x}: not aligned to {self.byte_lanes} B")
        if addr // PAGE_BYTES != (addr + nbytes - 1) // PAGE_BYTES:
            self._violation(f"{kind} at {addr:#x}, {nbytes} B: crosses a 4 KiB boundary")
        inside = self.base <= addr and addr + nbytes <= self.base + self.size
        if not inside:
            self._violation(f"{kind} at {addr:#x}, {nbytes} B: outside the memory")
        resp = self.errors.resp_for(kind, addr, nbytes)
        if not inside:
            resp = RESP_DECERR
        if self.record:
            p = "ar" if kind == "read" else "aw"
            self.bursts.append((kind, int(getattr(tr, p + "id")), addr, beats,
                                int(getattr(tr, p + "cache")), int(getattr(tr, p + "prot"))))
        return resp

    async def _start(self):
        # The clock period turns latencies in cycles into simulation steps.
        await RisingEdge(self.clock)
        t0 = get_sim_time("step")
        await RisingEdge(self.clock)
        self._period = get_sim_time("step") - t0
        self._launch()

    def _launch(self):
        self._tasks = [cocotb.start_soon(self._accept_reads()),
                       cocotb.start_soon(self._answer_reads()),
                       cocotb.start_soon(self._accept_writes()),
                       cocotb.start_soon(self._answer_writes())]

    def abort_in_flight(self):
        """Forget every burst in flight, as a system reset of the interconnect does: call it
        while the DUT is held in reset. Memory contents and counters stay."""
        for task in getattr(self, "_tasks", []):
            task.cancel()
        self._reads.clear()
        self._writes.clear()
        self.reads_in_flight = 0
        self.writes_pending = 0
        for channel in (self.ar, self.r, self.aw, self.w, self.b):
            channel.clear()
        if self._period is not None:
            self._launch()

    async def _accept_reads(self):
        while True:
            ar = await self.ar.recv()
            addr, beats = int(ar.araddr), int(ar.arlen) + 1
            resp = self._check_request("read", ar, addr, beats, int(ar.arsize), int(ar.arburst))
            self.read_bursts += 1
            self.read_beats += beats
            if resp != RESP_OKAY:
                self.read_errors += 1
            self.reads_in_flight += 1
            self.max_reads_in_flight = max(self.max_reads_in_flight, self.reads_in_flight)
            self._reads.append(_Burst(int(ar.arid), addr, beats, resp,
                                      ar.stamp + self.read_latency * self._period))
            self._read_event.set()

    def _beat(self, burst):
        """The R transaction of ``burst``'s next beat."""
        r = self.r._transaction_obj()
        r.rid = burst.id
        r.rresp = burst.resp
        r.rlast = int(burst.next == burst.beats - 1)
        if burst.resp == RESP_OKAY:
            off = burst.addr - self.base + (burst.next << self.size_log)
            r.rdata = int.from_bytes(self._mv[off:off + self.byte_lanes], "little")
        else:
            r.rdata = 0
        burst.next += 1
        return r

    async def _wait_until(self, when):
        now = get_sim_time("step")
        if when > now:
            await Timer(when - now, "step")

    async def _wait_request(self, queue, event):
        while not queue:
            event.clear()
            await event.wait()

    async def _drain_reads(self):
        """Sleep while more than ``_R_LOW_WATER`` beats wait in the R channel's queue. The
        channel sends at most one beat per cycle, so ``count - low`` cycles is a lower
        bound on the time it takes: one wake-up per burst instead of one per beat."""
        while self.r.count() > _R_LOW_WATER:
            await Timer((self.r.count() - _R_LOW_WATER) * self._period, "step")

    async def _answer_reads(self):
        active = []  # bursts being answered, interleaved beat by beat (reorder mode)
        while True:
            if not self.reorder and not active:
                await self._wait_request(self._reads, self._read_event)
                burst = self._reads.popleft()
                await self._wait_until(burst.ready)
                await self._drain_reads()
                for _ in range(burst.beats):
                    self.r.send_nowait(self._beat(burst))
                self.reads_in_flight -= 1
                continue
            # Reorder: the oldest burst of each ID not being answered may start when due.
            if len(active) < self.interleave:
                now = get_sim_time("step")
                busy_ids = {b.id for b in active}
                seen, due = set(), []
                for b in self._reads:
                    if b.id in seen or b.id in busy_ids:
                        continue
                    seen.add(b.id)
                    if b.ready <= now:
                        due.append(b)
                while due and len(active) < self.interleave:
                    b = due.pop(self.rng.randrange(len(due)))
                    self._reads.remove(b)
                    active.append(b)
            if not active:
                if not self._reads:
                    await self._wait_request(self._reads, self._read_event)
                else:
                    await self._wait_until(min(b.ready for b in self._reads))
                continue
            # A batch of beats picked at random among the active bursts.
            await self._drain_reads()
            for _ in range(_R_BATCH):
                burst = active[self.rng.randrange(len(active))]
                self.r.send_nowait(self._beat(burst))
                if burst.next == burst.beats:
                    active.remove(burst)
                    self.reads_in_flight -= 1
                    if not active:
                        break

    async def _accept_writes(self):
        lanes = self.byte_lanes
        while True:
            aw = await self.aw.recv()
            addr, beats = int(aw.awaddr), int(aw.awlen) + 1
            resp = self._check_request("write", aw, addr, beats, int(aw.awsize),
                                       int(aw.awburst))
            self.writes_pending += 1
            payload = bytearray(beats * lanes)
            masks = []
            last_stamp = aw.stamp
            for n in range(beats):
                # W brings at most one beat per cycle: sleep until most of the burst can
                # be there rather than waking for every beat.
                missing = beats - n - self.w.count()
                if missing > 1:
                    await Timer((missing - 1) * self._period, "step")
                w = await self.w.recv()
                if w.stamp < aw.stamp:
                    if self.allow_w_before_aw:
                        self.early_w_beats += 1
                    else:
                        self._violation(f"write at {addr:#x}: W beat {n} before its AW")
                last = int(w.wlast)
                if last != (n == beats - 1):
                    self._violation(f"write at {addr:#x}: wlast={last} on beat {n} of {beats}")
                payload[n * lanes:(n + 1) * lanes] = int(w.wdata).to_bytes(lanes, "little")
                strb = int(w.wstrb) if self._has_wstrb else self._full_strb
                if strb != self._full_strb:
                    masks.append((n, strb))
                last_stamp = w.stamp
            self.write_bursts += 1
            self.write_beats += beats
            commit = None
            if resp == RESP_OKAY:
                commit = (addr - self.base, payload, dict(masks))
            else:
                self.write_errors += 1
                strobed = bytearray(beats * lanes)
                full = dict(masks)
                for n in range(beats):
                    strb = full.get(n, self._full_strb)
                    for i in range(lanes):
                        strobed[n * lanes + i] = strb >> i & 1
                self.failed_writes.append((addr, bytes(strobed)))
            self._writes.append(_Burst(int(aw.awid), addr, beats, resp,
                                       last_stamp + self.write_latency * self._period, commit))
            self._write_event.set()

    async def _answer_writes(self):
        while True:
            await self._wait_request(self._writes, self._write_event)
            if self.reorder:
                now = get_sim_time("step")
                seen, due = set(), []
                for b in self._writes:
                    if b.id not in seen:
                        seen.add(b.id)
                        if b.ready <= now:
                            due.append(b)
                if not due:
                    await self._wait_until(min(b.ready for b in self._writes))
                    if get_sim_time("step") < min(b.ready for b in self._writes):
                        await RisingEdge(self.clock)
                    continue
                burst = due[self.rng.randrange(len(due))]
                self._writes.remove(burst)
            else:
                burst = self._writes.popleft()
                await self._wait_until(burst.ready)
            # A write becomes visible when its response is given, not before: a manager
            # that reads (or reports completion) before B would see the old data.
            if burst.commit is not None:
                self._commit(*burst.commit)
            bt = self.b._transaction_obj()
            bt.bid = burst.id
            bt.bresp = burst.resp
            await self.b.send(bt)
            self.writes_pending -= 1

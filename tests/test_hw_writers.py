"""The output side of the device in the Amaranth simulator: Packer, BurstWriter, AxiArbiter.

Every bench is one testbench that plays all sides cycle by cycle (sources with random valid
gaps, sinks and AXI subordinates with random ready and latency) and checks the blocks against
plain-Python references: the packer against a list model of packed beats, the writer against
a byte map of host memory and the AXI burst rules, the arbiter against per-port expectations
of every R and B beat and the AW order of W.
"""

import random

import pytest
from amaranth import Module, Value
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hotline_spec.commands import ErrorCause, Engine
from hotline_spec.config import SMALL_DEVICE, DEFAULT_DEVICE
from hotline_hw.dma.packer import Packer
from hotline_hw.dma.burst_writer import BurstWriter
from hotline_hw.dma.axi_mux import AxiArbiter, id_prefixes, read_id_bits


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


class Held:
    """AXI/stream rule on one channel: once valid is up without ready, valid stays up and
    the payload does not change until the handshake."""

    def __init__(self, name):
        self.name, self.waiting = name, None

    def check(self, valid, ready, payload):
        if self.waiting is not None:
            assert valid, f"{self.name}: valid dropped before ready"
            assert payload == self.waiting, f"{self.name}: payload changed under valid"
        self.waiting = payload if valid and not ready else None


def _raw(view):
    return Value.cast(view)


# ---------------------------------------------------------------------------------------
# Packer
# ---------------------------------------------------------------------------------------

def packer_reference(W, offset, segments):
    """Packed beats of one stream as ``{position: word}`` dicts: word 0 at ``offset``,
    a partial beat at each flush (one after every segment), a new beat after it."""
    beats, cur, pos = [], {}, offset
    for words in segments:
        for w in words:
            cur[pos] = w
            pos += 1
            if pos == W:
                beats.append(cur)
                cur, pos = {}, 0
        if cur:
            beats.append(cur)
        cur, pos = {}, 0
    return beats


@pytest.mark.parametrize("word_bits,lanes,bus_bits", [
    (64, 4, 128), (64, 2, 128), (64, 1, 128), (64, 5, 128), (32, 3, 256), (64, 2, 64),
    (64, 8, 128),
], ids=["4into2", "2into2", "1into2", "5into2", "3into8", "2into1", "8into2"])
def test_packer_matches_reference(word_bits, lanes, bus_bits):
    """Random valid patterns (dense, sparse, empty beats), random offsets, flushes after
    random counts (in the last beat's cycle or later), random input gaps and output
    stalls: the beats are the reference's, strobes exact, nothing lost or repeated."""
    rng = random.Random(word_bits * 100 + lanes * 10 + bus_bits)
    W = bus_bits // word_bits
    dut = Packer(word_bits, lanes, bus_bits)
    streams = []
    for _ in range(40):
        segments = []
        for _ in range(rng.randint(1, 3)):
            density = rng.choice([1.0, 0.7, 0.3, 0.0])
            beats = []
            for _ in range(rng.choice([0, 1, 2, rng.randint(3, 30)])):
                mask = sum(1 << i for i in range(lanes) if rng.random() < density)
                beats.append((mask, [rng.getrandbits(word_bits) for _ in range(lanes)]))
            segments.append(beats)
        streams.append((rng.randrange(W), segments))
    expected = []
    for offset, segments in streams:
        words = [[w for mask, ws in seg for i, w in enumerate(ws) if mask >> i & 1]
                 for seg in segments]
        expected += packer_reference(W, offset, words)
    got = []
    out_rule = Held("beats")
    wmask = (1 << word_bits) - 1

    async def bench(ctx):
        p_in, p_out = _raw(dut.words.payload), _raw(dut.beats.payload)

        def cycle_outputs(ready):
            ctx.set(dut.beats.ready, ready)
            v = ctx.get(dut.beats.valid)
            raw = ctx.get(p_out)
            out_rule.check(v, ready, raw)
            if v and ready:
                data, strobe = raw & ((1 << bus_bits) - 1), raw >> bus_bits
                beat = {}
                for k in range(W):
                    s = (strobe >> (k * word_bits // 8)) & ((1 << word_bits // 8) - 1)
                    assert s in (0, (1 << word_bits // 8) - 1), "strobe splits a word"
                    if s:
                        beat[k] = (data >> (k * word_bits)) & wmask
                assert beat, "a beat without a word"
                got.append(beat)

        async def tick():
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.flush, 0)

        ready_p = 0.7
        for offset, segments in streams:
            # A new stream starts only once the packer is idle.
            ctx.set(dut.words.valid, 0)
            while True:
                cycle_outputs(rng.random() < ready_p)
                if ctx.get(dut.idle):
                    break
                await tick()
            ctx.set(dut.start, 1)
            ctx.set(dut.offset, offset)
            await tick()
            ready_p = rng.choice([1.0, 0.8, 0.4])
            for beats in segments:
                for i, (mask, ws) in enumerate(beats):
                    while rng.random() < 0.25:
                        ctx.set(dut.words.valid, 0)
                        cycle_outputs(rng.random() < ready_p)
                        await tick()
                    ctx.set(dut.words.valid, 1)
                    ctx.set(p_in, mask | sum(w << (lanes + j * word_bits) for j, w in enumerate(ws)))
                    while True:
                        cycle_outputs(rng.random() < ready_p)
                        if ctx.get(dut.words.ready):
                            break
                        await tick()
                    if i == len(beats) - 1 and rng.random() < 0.5:
                        ctx.set(dut.flush, 1)          # flush in the last beat's cycle
                        await tick()
                        break
                    await tick()
                else:
                    ctx.set(dut.words.valid, 0)
                    for _ in range(rng.randint(0, 2)):
                        cycle_outputs(rng.random() < ready_p)
                        await tick()
                    ctx.set(dut.flush, 1)
                    cycle_outputs(rng.random() < ready_p)
                    await tick()
                ctx.set(dut.words.valid, 0)
        for _ in range(40):
            cycle_outputs(rng.random() < 0.7)
            await tick()
        assert ctx.get(dut.idle)

    _run(dut, bench)
    assert got == expected


def test_packer_dense_rate():
    """Dense input: W words per cycle out (lanes >= W), lanes words per cycle (lanes < W)."""
    for word_bits, lanes, bus_bits, per_cycle in [(64, 2, 128, 1.0), (64, 4, 128, 1.0),
                                                  (64, 1, 128, 0.5), (32, 8, 128, 1.0)]:
        dut = Packer(word_bits, lanes, bus_bits)
        n_in = 64
        seen = []

        async def bench(ctx):
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.beats.ready, 1)
            ctx.set(dut.words.valid, 1)
            ctx.set(_raw(dut.words.payload), (1 << lanes) - 1)
            sent, cyc = 0, 0
            while sent < n_in:
                if ctx.get(dut.words.ready):
                    sent += 1
                if ctx.get(dut.beats.valid):
                    seen.append(cyc)
                await ctx.tick()
                cyc += 1

        _run(dut, bench)
        span = seen[-1] - seen[0] + 1
        assert (len(seen) - 1) / (span - 1) >= per_cycle * 0.99, (word_bits, lanes, bus_bits)


# ---------------------------------------------------------------------------------------
# BurstWriter
# ---------------------------------------------------------------------------------------

class WriteSubordinate:
    """AXI write subordinate: random AW/W readiness and B latency, W taken only for an
    accepted AW, B in order. Checks the burst rules; writes a byte map."""

    def __init__(self, rng, dcfg, ready=(0.7, 0.7), b_delay=(1, 12), max_beats=None):
        self.rng, self.c = rng, dcfg
        self.ready = ready
        self.b_delay = b_delay
        self.max_beats = max_beats or dcfg.burst_beats
        self.mem = {}
        self.aws = []            # accepted, W not complete: [addr, len, beats done, index]
        self.bs = []             # [due cycle, index]
        self.bursts = []         # every accepted AW: (addr, len)
        self.error_burst = None
        self.rules = [Held("aw"), Held("w")]
        self.w_gaps = 0

    def cycle(self, ctx, axi, now):
        c, rng = self.c, self.rng
        awready = rng.random() < self.ready[0]
        wready = rng.random() < self.ready[1] and bool(self.aws)   # W only after its AW
        ctx.set(axi.awready, awready)
        ctx.set(axi.wready, wready)
        b = self.bs[0] if self.bs and self.bs[0][0] <= now else None
        ctx.set(axi.bvalid, b is not None)
        if b is not None:
            ctx.set(axi.bresp, 2 + rng.getrandbits(1) if b[1] == self.error_burst else 0)
            ctx.set(axi.bid, 0)
        awvalid, wvalid = ctx.get(axi.awvalid), ctx.get(axi.wvalid)
        aw = (ctx.get(axi.awaddr), ctx.get(axi.awlen), ctx.get(axi.awsize),
              ctx.get(axi.awburst), ctx.get(axi.awid))
        w = (ctx.get(axi.wdata), ctx.get(axi.wstrb), ctx.get(axi.wlast))
        self.rules[0].check(awvalid, awready, aw)
        self.rules[1].check(wvalid, wready, w)
        assert ctx.get(axi.bready)
        # A burst has all its data in the writer when its AW is raised: W has no gap from
        # then on (W of the burst at the head of the W order: aws empty, or its own AW
        # accepted).
        if (self.aws or awvalid) and not wvalid:
            self.w_gaps += 1
        if b is not None:
            self.bs.pop(0)
        if awvalid and awready:
            addr, length, size, burst, _ = aw
            length += 1
            nb = c.bus_bytes
            assert size == (nb - 1).bit_length() and burst == 1
            assert addr % nb == 0
            assert length <= self.max_beats, "burst too long"
            assert addr // 4096 == (addr + length * nb - 1) // 4096, "burst crosses 4 KiB"
            self.aws.append([addr, length, 0, len(self.bursts)])
            self.bursts.append((addr, length))
        if wvalid and wready:
            head = self.aws[0]
            data, strobe, last = w
            base = head[0] + head[2] * c.bus_bytes
            for j in range(c.bus_bytes):
                if strobe >> j & 1:
                    assert base + j not in self.mem, "byte written twice"
                    self.mem[base + j] = (data >> (8 * j)) & 0xFF
            head[2] += 1
            assert last == (head[2] == head[1]), "wlast wrong"
            if last:
                self.aws.pop(0)
                self.bs.append([now + rng.randint(*self.b_delay), head[3]])
        return b

    def outstanding(self):
        return bool(self.aws or self.bs)


def stream_bytes(addr, beats, nb):
    """The byte map a stream of (data, strobe) beats should leave from ``addr``."""
    mem = {}
    for i, (data, strobe) in enumerate(beats):
        for j in range(nb):
            if strobe >> j & 1:
                mem[addr + i * nb + j] = (data >> (8 * j)) & 0xFF
    return mem


@pytest.mark.parametrize("dcfg", [SMALL_DEVICE, SMALL_DEVICE.replace(bus_bits=64, burst_beats=4),
                                  SMALL_DEVICE.replace(bus_bits=512, burst_beats=16),
                                  SMALL_DEVICE.replace(burst_beats=1),
                                  SMALL_DEVICE.replace(bus_bits=512, burst_beats=64)],
                         ids=["bus128", "bus64-burst4", "bus512-burst16", "burst1",
                              "bus512-burst64"])
def test_burst_writer_bytes_bursts_errors(dcfg):
    """Streams of random length from random bus-aligned addresses (often just below a 4 KiB
    boundary), random input gaps and AW/W/B delays, three streams with a B error at a random
    burst: every byte lands where it should (and nothing else), bursts obey the rules, W
    never waits on data once its AW is accepted, ``idle`` only when all is answered, the
    error record names the failing burst, nothing is issued after it."""
    rng = random.Random(dcfg.bus_bits + dcfg.burst_beats)
    nb = dcfg.bus_bytes
    dut = BurstWriter(dcfg, Engine.WORD_WRITE, bursts_in_flight=4)
    sub = WriteSubordinate(rng, dcfg)

    async def bench(ctx):
        now = 0
        p_in = _raw(dut.beats.payload)
        for s in range(30):
            page = rng.randrange(16) * 4096
            addr = page + rng.choice([rng.randrange(4096 // nb), 4096 // nb - rng.randint(1, 3)]) * nb
            n = rng.choice([1, 2, rng.randint(3, 40), rng.randint(40, 200)])
            beats = [(rng.getrandbits(dcfg.bus_bits), rng.choice([(1 << nb) - 1, rng.getrandbits(nb)]))
                     for _ in range(n)]
            error_stream = s in (5, 13, 22)
            first_burst = len(sub.bursts)
            # bursts of this stream: count them for the error index
            sub.error_burst = None
            if error_stream:
                chunk = min(dcfg.burst_beats, 4096 // nb)
                nbursts = len({(addr // nb + i) // chunk for i in range(n)})
                sub.error_burst = first_burst + rng.randrange(nbursts)
            sub.mem = {}
            ctx.set(dut.start, 1)
            ctx.set(dut.addr, addr)
            ctx.set(dut.flush, 0)
            ctx.set(dut.beats.valid, 0)
            await ctx.tick()
            now += 1
            ctx.set(dut.start, 0)
            i, flush_at, err_cycle, held_valid = 0, None, None, False
            prev_aw = (0, 0)
            while True:
                if i < n and rng.random() < 0.8:
                    ctx.set(dut.beats.valid, 1)
                    ctx.set(p_in, beats[i][0] | beats[i][1] << dcfg.bus_bits)
                elif not (held_valid):
                    ctx.set(dut.beats.valid, 0)
                if i == n and flush_at is None:
                    flush_at = now + rng.randint(0, 3)
                ctx.set(dut.flush, flush_at is not None and now >= flush_at)
                b = sub.cycle(ctx, dut.axi, now)
                valid, ready = ctx.get(dut.beats.valid), ctx.get(dut.beats.ready)
                awvalid = ctx.get(dut.axi.awvalid)
                if err_cycle is not None and awvalid and not (prev_aw[0] and not prev_aw[1]):
                    assert now <= err_cycle + 1, "a burst issued after the error"
                prev_aw = (awvalid, ctx.get(dut.axi.awready))
                if b is not None and b[1] == sub.error_burst:
                    err_cycle = now
                idle = ctx.get(dut.idle)
                if idle:
                    # (beats accepted in earlier cycles: this cycle's is not in yet)
                    assert not sub.outstanding() and not prev_aw[0], "idle with a burst open"
                    if err_cycle is None:
                        assert len(sub.mem) == len(stream_bytes(addr, beats[:i], nb)), \
                            "idle with data not written"
                held_valid = valid and not ready
                if valid and ready:
                    i += 1
                await ctx.tick()
                now += 1
                if idle and i == n and flush_at is not None and now > flush_at + 1:
                    break
                assert now < 30000, "stuck"
            want = stream_bytes(addr, beats, nb)
            if error_stream:
                assert err_cycle is not None
                err = ctx.get(dut.error)
                bad_addr, _ = sub.bursts[sub.error_burst]
                assert err["valid"] == 1 and err["engine"] == Engine.WORD_WRITE
                assert err["cause"] in (ErrorCause.WRITE_SLVERR, ErrorCause.WRITE_SLVERR + 1)
                assert err["addr"] == bad_addr
                # Every burst issued wrote its own data; those up to the bad one all went.
                assert all(want[a] == v for a, v in sub.mem.items())
                for a, length in sub.bursts[first_burst:sub.error_burst + 1]:
                    for x in range(a, a + length * nb):
                        assert sub.mem.get(x) == want.get(x)
            else:
                assert ctx.get(dut.error)["valid"] == 0
                assert sub.mem == want
        assert sub.w_gaps == 0

    _run(dut, bench)


def test_packer_burst_writer_rate():
    """Packer -> BurstWriter with an always-ready subordinate: sustained beats per cycle on
    a long stream (>= 0.9)."""
    dcfg = DEFAULT_DEVICE
    m = Module()
    m.submodules.packer = pk = Packer(64, dcfg.eal.lanes, dcfg.bus_bits)
    m.submodules.writer = bw = BurstWriter(dcfg, Engine.WORD_WRITE)
    wiring.connect(m, pk.beats, bw.beats)
    n_words = 2048
    n_beats = n_words * 64 // dcfg.bus_bits
    result = {}

    async def bench(ctx):
        ctx.set(pk.start, 1)
        ctx.set(pk.offset, 1)
        ctx.set(bw.start, 1)
        ctx.set(bw.addr, 0x10000 - 5 * dcfg.bus_bytes)
        await ctx.tick()
        ctx.set(pk.start, 0)
        ctx.set(bw.start, 0)
        ctx.set(bw.axi.awready, 1)
        ctx.set(bw.axi.wready, 1)
        lanes = dcfg.eal.lanes
        ctx.set(_raw(pk.words.payload), (1 << lanes) - 1)
        sent, w_beats, first, last, cyc, bq = 0, 0, None, None, 0, []
        while True:
            ctx.set(pk.words.valid, sent < n_words)
            ctx.set(bw.axi.bvalid, bool(bq) and bq[0] <= cyc)
            ctx.set(pk.flush, 0)
            if sent < n_words and ctx.get(pk.words.ready):
                sent += lanes
                if sent >= n_words:
                    ctx.set(pk.flush, 1)
            if bq and bq[0] <= cyc:
                bq.pop(0)
            if ctx.get(bw.axi.wvalid):
                w_beats += 1
                first = cyc if first is None else first
                last = cyc
                if ctx.get(bw.axi.wlast):
                    bq.append(cyc + 20)
            ctx.set(bw.flush, sent >= n_words and ctx.get(pk.idle))
            await ctx.tick()
            cyc += 1
            if sent >= n_words and ctx.get(bw.idle) and ctx.get(pk.idle):
                break
        result["rate"] = (w_beats - 1) / (last - first) if last > first else 0
        result["beats"] = w_beats

    _run(m, bench)
    # offset 1: one more (partial) beat than n_beats
    assert result["beats"] == n_beats + 1
    print(f"Packer -> BurstWriter: {result['rate']:.3f} beats/cycle over {result['beats']} beats")
    assert result["rate"] >= 0.9


# ---------------------------------------------------------------------------------------
# AxiArbiter
# ---------------------------------------------------------------------------------------

def test_id_prefixes():
    """Aligned prefix codes, fewest outer bits, largest port at 0 (top bit 0 = rows)."""
    assert id_prefixes({"lists": 1, "rows": 7}) == (8, {"rows": 0, "lists": 128})
    assert id_prefixes({"rows": 4, "words": 1}) == (5, {"rows": 0, "words": 16})
    bits, bases = id_prefixes({"a": 0, "b": 3, "c": 1, "d": 1, "e": 0})
    assert bits == 4
    spans = sorted((bases[k], bases[k] + (1 << w)) for k, w in
                   {"a": 0, "b": 3, "c": 1, "d": 1, "e": 0}.items())
    assert all(s[1] <= t[0] for s, t in zip(spans, spans[1:]))
    assert all(bases[k] % (1 << w) == 0 for k, w in {"b": 3, "c": 1, "d": 1}.items())
    dcfg = DEFAULT_DEVICE
    arb = AxiArbiter(dcfg)
    assert arb.out_id_bits == read_id_bits(dcfg) + 1
    assert set(arb.ports) == {"lists", "rows", "words"}
    arb._MustUse__silence = True


@pytest.mark.parametrize("readers,writers", [
    (None, None), (None, {"rows": 4, "words": 1, "cold": 1, "sum": 2}),
    ({"lists": 1}, {"words": 1}), ({"a": 2, "b": 1, "c": 1}, {"rows": 4, "x": 3}),
], ids=["2r2w", "2r4w", "1r1w-disjoint", "3r2w"])
def test_arbiter_routes_everything(readers, writers):
    """Two readers and two (four) writers doing random bursts at once against a subordinate
    with random ready, latency, interleaved R of different IDs and B out of order across
    IDs: every R and B beat reaches its owner under its own ID and in order per ID, W never
    interleaves and follows the AW order, the AXI hold rules hold on every channel."""
    dcfg = SMALL_DEVICE                           # read_id_bits = 4
    rng = random.Random(len(readers or "") * 10 + len(writers or ""))
    arb = AxiArbiter(dcfg, readers=readers, writers=writers)
    readers = arb.readers
    writers = arb.writers
    ob = arb.out_id_bits
    rb, wb = arb.read_base, arb.write_base
    nb = dcfg.bus_bytes
    out = arb.out
    N_BURSTS = 40

    def rdata(addr, beat):
        return (addr * 7 + beat * 13 + 1) & ((1 << dcfg.bus_bits) - 1)

    # Manager models.
    class Reader:
        def __init__(self, name):
            self.name, self.port, self.w = name, arb.ports[name], readers[name]
            self.todo = [(rng.getrandbits(self.w), rng.randrange(1 << 20) * nb, rng.randrange(8))
                         for _ in range(N_BURSTS)]
            self.cur = None
            self.expect = {}       # id -> [[addr, len, beat]]
            self.got = 0

    class Writer:
        def __init__(self, name, tag):
            self.name, self.port, self.w, self.tag = name, arb.ports[name], writers[name], tag
            self.bursts = [(rng.getrandbits(self.w), rng.randrange(1 << 20) * nb, rng.randrange(8))
                           for _ in range(N_BURSTS)]
            self.aw_i, self.w_i, self.w_beat = 0, 0, 0
            self.aw_cur, self.w_cur = None, None
            self.expect_b = {}     # id -> count of bursts whose B is due
            self.b_got = 0

        def wdata(self, k, beat):
            return (self.tag << 24) | (k << 8) | beat

    rds = [Reader(n) for n in readers]
    wrs = [Writer(n, t + 1) for t, n in enumerate(writers)]
    by_tag = {w.tag: w for w in wrs}
    rules = {ch: Held(ch) for ch in ("ar", "aw", "w")}

    async def bench(ctx):
        now = 0
        s_reads = []               # [outer id, addr, len, beat]
        s_aws = []                 # accepted AWs whose W is not complete: [owner, id, len, done]
        s_w_owner_seq = {}         # writer tag -> next burst index expected
        s_bs = []                  # [due, outer id, writer]
        while True:
            # ---- managers drive ----
            for r in rds:
                if r.cur is None and r.todo and rng.random() < 0.5:
                    r.cur = r.todo.pop(0)
                ctx.set(r.port.arvalid, r.cur is not None)
                if r.cur is not None:
                    ctx.set(r.port.arid, r.cur[0])
                    ctx.set(r.port.araddr, r.cur[1])
                    ctx.set(r.port.arlen, r.cur[2])
                ctx.set(r.port.rready, rng.getrandbits(1))    # ignored by the arbiter
            for w in wrs:
                if w.aw_cur is None and w.aw_i < N_BURSTS and rng.random() < 0.5:
                    w.aw_cur = w.aw_i
                ctx.set(w.port.awvalid, w.aw_cur is not None)
                if w.aw_cur is not None:
                    bid, addr, ln = w.bursts[w.aw_cur]
                    ctx.set(w.port.awid, bid)
                    ctx.set(w.port.awaddr, addr)
                    ctx.set(w.port.awlen, ln)
                # W may run ahead of AW (up to the next burst to be announced).
                if w.w_cur is None and w.w_i < N_BURSTS and w.w_i <= w.aw_i and rng.random() < 0.7:
                    w.w_cur = w.w_i
                ctx.set(w.port.wvalid, w.w_cur is not None)
                if w.w_cur is not None:
                    ln = w.bursts[w.w_cur][2]
                    ctx.set(w.port.wdata, w.wdata(w.w_cur, w.w_beat))
                    ctx.set(w.port.wstrb, 0xFFFF)
                    ctx.set(w.port.wlast, w.w_beat == ln)
            # ---- subordinate drives ----
            arready, awready, wready = (rng.random() < 0.6 for _ in range(3))
            ctx.set(out.arready, arready)
            ctx.set(out.awready, awready)
            ctx.set(out.wready, wready)
            # R: a random burst among those at the head of their ID (interleaved IDs).
            heads = {}
            for rd in s_reads:
                heads.setdefault(rd[0], rd)
            r_beat = rng.choice(list(heads.values())) if heads and rng.random() < 0.7 else None
            ctx.set(out.rvalid, r_beat is not None)
            if r_beat is not None:
                ctx.set(out.rid, r_beat[0])
                ctx.set(out.rdata, rdata(r_beat[1], r_beat[3]))
                ctx.set(out.rlast, r_beat[3] == r_beat[2])
                ctx.set(out.rresp, 0)
            due = [b for b in s_bs if b[0] <= now]
            b_beat = rng.choice(due) if due and rng.random() < 0.7 else None
            if b_beat is not None:
                # out of order across IDs only: the oldest due of its ID
                b_beat = next(b for b in s_bs if b[1] == b_beat[1])
                if b_beat[0] > now:
                    b_beat = None
            ctx.set(out.bvalid, b_beat is not None)
            if b_beat is not None:
                ctx.set(out.bid, b_beat[1])
                ctx.set(out.bresp, 0)
            # ---- sample ----
            assert ctx.get(out.rready) and ctx.get(out.bready)
            ar = tuple(ctx.get(getattr(out, n)) for n in ("arid", "araddr", "arlen"))
            aw = tuple(ctx.get(getattr(out, n)) for n in ("awid", "awaddr", "awlen"))
            wv = tuple(ctx.get(getattr(out, n)) for n in ("wdata", "wlast"))
            arv, awv, wvv = ctx.get(out.arvalid), ctx.get(out.awvalid), ctx.get(out.wvalid)
            rules["ar"].check(arv, arready, ar)
            rules["aw"].check(awv, awready, aw)
            rules["w"].check(wvv, wready, wv)
            # readers: R delivery and AR handshake
            r_hits = 0
            for r in rds:
                p = r.port
                if ctx.get(p.rvalid):
                    r_hits += 1
                    rid = ctx.get(p.rid)
                    assert r_beat is not None and r_beat[0] == rb[r.name] | rid, "R to wrong port"
                    head = r.expect[rid][0]
                    assert ctx.get(p.rdata) == rdata(head[0], head[2])
                    assert ctx.get(p.rlast) == (head[2] == head[1])
                    head[2] += 1
                    if head[2] > head[1]:
                        r.expect[rid].pop(0)
                        r.got += 1
                if r.cur is not None and ctx.get(p.arready):
                    r.expect.setdefault(r.cur[0], []).append([r.cur[1], r.cur[2], 0])
                    r.cur = None
            assert r_hits == (r_beat is not None)
            b_hits = 0
            for w in wrs:
                p = w.port
                if ctx.get(p.bvalid):
                    b_hits += 1
                    bid = ctx.get(p.bid)
                    assert b_beat is not None and b_beat[1] == wb[w.name] | bid and b_beat[2] is w
                    assert w.expect_b.get(bid, 0) > 0
                    w.expect_b[bid] -= 1
                    w.b_got += 1
                if w.aw_cur is not None and ctx.get(p.awready):
                    w.aw_cur, w.aw_i = None, w.aw_i + 1
                if w.w_cur is not None and ctx.get(p.wready):
                    assert w.w_cur < w.aw_i, "W passed before its AW was accepted"
                    if w.w_beat == w.bursts[w.w_cur][2]:
                        w.w_cur, w.w_i, w.w_beat = None, w.w_i + 1, 0
                    else:
                        w.w_beat += 1
            assert b_hits == (b_beat is not None)
            # subordinate bookkeeping
            if r_beat is not None:
                r_beat[3] += 1
                if r_beat[3] > r_beat[2]:
                    s_reads.remove(r_beat)
            if b_beat is not None:
                s_bs.remove(b_beat)
            if arv and arready:
                s_reads.append([ar[0], ar[1], ar[2], 0])
            if awv and awready:
                owner = next(w for w in wrs if (aw[0] >> w.w) == (wb[w.name] >> w.w))
                k = s_w_owner_seq.get(owner.tag, 0)
                s_w_owner_seq[owner.tag] = k + 1
                assert owner.bursts[k][1:] == (aw[1], aw[2]) and wb[owner.name] | owner.bursts[k][0] == aw[0]
                s_aws.append([owner, aw[0], aw[2], 0, k])
            if wvv and wready:
                assert s_aws, "W before any AW"
                head = s_aws[0]
                data, last = wv
                assert data == head[0].wdata(head[4], head[3]), "W from the wrong writer/burst"
                assert last == (head[3] == head[2])
                head[3] += 1
                if last:
                    s_aws.pop(0)
                    s_bs.append([now + rng.randint(1, 10), head[1], head[0]])
                    head[0].expect_b[head[1] & ((1 << head[0].w) - 1)] = \
                        head[0].expect_b.get(head[1] & ((1 << head[0].w) - 1), 0) + 1
            await ctx.tick()
            now += 1
            if all(r.got == N_BURSTS for r in rds) and all(w.b_got == N_BURSTS for w in wrs):
                break
            assert now < 20000, "stuck"

    _run(arb, bench)

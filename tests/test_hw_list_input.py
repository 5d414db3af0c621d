"""Amaranth-simulator unit tests of the device's input side: the ListReader against a small
Python AXI read responder, the KeyChecker stream stage against a plain-Python reference
(with a Python model of the table RAM and its one-cycle read latency), the LaneFormatter for
several lane / bus widths, and the WordSerializer; all under random valid gaps and
back-pressure."""

import random

import pytest
from amaranth.sim import Simulator

from hotline_hw.dma.key_checker import KeyChecker
from hotline_hw.dma.lane_formatter import LaneFormatter
from hotline_hw.dma.list_reader import ListReader, WordSerializer, list_fifo_beats
from hotline_spec.commands import Engine, ErrorCause
from hotline_spec.config import DeviceConfig, EALConfig
from hw_models import table_ram as table_ram_model

EAL = EALConfig(lanes=4, banks=4, sets=16, table_bits=2, row_bits=6)
M64 = (1 << 64) - 1


def _dcfg(bus_bits, lanes=4, **kw):
    # The smallest list FIFO (two bursts), so that its credits bind in every test.
    kw.setdefault("list_beats", 2 * kw.get("burst_beats", DeviceConfig.burst_beats))
    return DeviceConfig(eal=EAL.replace(lanes=lanes), bus_bits=bus_bits, addr_bits=40,
                        read_ids=4, **kw)


def _run(dut, benches, processes=(), limit=200_000):
    """Run until the first of ``benches`` returns (the others and ``processes`` are
    background models), at most ``limit`` cycles."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    main, *background = benches
    done = []

    async def first(ctx):
        await main(ctx)
        done.append(1)

    sim.add_testbench(first)
    for bench in background:
        sim.add_testbench(bench, background=True)
    for proc in processes:
        sim.add_process(proc)
    for chunk in range(1, limit // 500 + 2):
        sim.run_until(1e-8 * 500 * chunk)
        if done:
            break
    assert done, "the bench did not finish"


def _reader_beats(words, addr, W, errors=()):
    """The beats a ListReader emits for ``words`` at ``addr``: (words of the beat, mask,
    error), word positions outside the list hold junk."""
    skip = (addr >> 3) % W
    n = -(-(skip + len(words)) // W)
    beats = []
    for b in range(n):
        ws, mask = [], 0
        for k in range(W):
            i = b * W + k - skip
            if 0 <= i < len(words):
                ws.append(words[i])
                mask |= 1 << k
            else:
                ws.append(0xDEAD_0000 + k)
        beats.append((ws, mask, int(b in errors)))
    return beats


def _pack(ws):
    return sum(w << (64 * k) for k, w in enumerate(ws))


# ---------------------------------------------------------------- KeyChecker -----------

def _cause(word, tables, check_rows, row_bytes, c):
    e = c.eal
    if word >> e.key_bits:
        return ErrorCause.BAD_KEY
    if check_rows:
        base, stride, rows = tables[word >> e.row_bits]
        if word & ((1 << e.row_bits) - 1) >= rows:
            return ErrorCause.ROW_OUT_OF_RANGE
        if base % c.bus_bytes or stride % c.bus_bytes or stride < row_bytes:
            return ErrorCause.BAD_TABLE
    return ErrorCause.NONE


def _check_reference(beats, addr, tables, check_rows, row_bytes, c):
    """What the KeyChecker must forward, and its error record and passed."""
    W = c.words_per_beat
    base = addr & ~(c.bus_bytes - 1)
    skip = (addr >> 3) % W
    out, err, stopped = [], None, False
    for b, (ws, mask, error) in enumerate(beats):
        if stopped:
            continue
        if error:
            stopped = True
            continue
        keep = 0
        for k in range(W):
            if not (mask >> k) & 1:
                continue
            cause = _cause(ws[k], tables, check_rows, row_bytes, c)
            if cause:
                err = (int(cause), base + b * c.bus_bytes + 8 * k, b * W + k - skip)
                stopped = True
                break
            keep |= 1 << k
        if keep:
            out.append((_pack(ws), keep))
    passed = sum(bin(m).count("1") for _, m in out)
    return out, err, passed


def _random_tables(rng, c):
    e = c.eal
    tables = []
    for _ in range(e.max_tables):
        kind = rng.random()
        base = rng.randrange(1 << 20) * c.bus_bytes
        stride = rng.randrange(1, 64) * c.bus_bytes
        rows = rng.choice([0, 1, rng.randrange(1 << e.row_bits), 1 << e.row_bits,
                           (1 << e.row_bits) + 5, 1 << 31])
        if kind < 0.15:
            base += rng.choice([1, 4, 8])    # misaligned base (8: unless the bus is 64 b)
        elif kind < 0.3:
            stride = rng.choice([stride + 4, stride + 8, 8])   # misaligned or too small
        tables.append((base, stride, rows))
    return tables


def _random_keys(rng, n, tables, c, bad_rate):
    """Mostly good keys (for check_rows = 1), a few bad ones of every kind."""
    e = c.eal
    ok = [not (b % c.bus_bytes or s % c.bus_bytes or s < 2 * c.bus_bytes)
          for b, s, r in tables]
    good = [t for t, (b, s, r) in enumerate(tables) if r and ok[t]]
    bad_table = [t for t, (b, s, r) in enumerate(tables) if r and not ok[t]]
    short = [t for t, (b, s, r) in enumerate(tables) if r < 1 << e.row_bits]
    words = []
    for _ in range(n):
        r = rng.random()
        if r < bad_rate / 3:
            words.append(rng.getrandbits(64) | 1 << rng.randrange(e.key_bits, 64))
        elif r < 2 * bad_rate / 3 and short:
            t = rng.choice(short)
            words.append(t << e.row_bits | rng.randrange(tables[t][2], 1 << e.row_bits))
        elif (r < bad_rate and bad_table) or not good:
            t = rng.choice(bad_table or range(len(tables)))
            words.append(t << e.row_bits | rng.randrange(min(max(tables[t][2], 1),
                                                             1 << e.row_bits)))
        else:
            t = rng.choice(good)
            words.append(t << e.row_bits | rng.randrange(min(tables[t][2], 1 << e.row_bits)))
    return words


@pytest.mark.parametrize("bus_bits", [64, 128, 256, 512])
def test_key_checker_matches_reference(bus_bits):
    """Random lists (bad keys at random positions, error beats, tables of every kind,
    check_rows 0/1) fed with random valid gaps, drained with random ready: every forwarded
    beat, the error record and ``passed`` match the reference; the table RAM
    model answers one cycle after the address."""
    c = _dcfg(bus_bits)
    W = c.words_per_beat
    rng = random.Random(bus_bits)
    dut = KeyChecker(c)
    state = {"tables": _random_tables(rng, c), "ready": 0.7, "got": []}
    cases = []
    for i in range(60):
        tables = _random_tables(rng, c)
        addr = rng.randrange(1 << 30) * 8
        n = rng.choice([1, 2, 3, rng.randrange(1, 40), rng.randrange(1, 40)])
        check_rows = rng.random() < 0.6
        row_bytes = rng.choice([c.bus_bytes, 2 * c.bus_bytes])
        keys = _random_keys(rng, n, tables, c, rng.choice([0, 0.05, 0.2, 0.5]))
        nb = -(-((addr >> 3) % W + n) // W)
        errors = {rng.randrange(nb)} if rng.random() < 0.2 else set()
        cases.append((tables, addr, check_rows, row_bytes,
                      _reader_beats(keys, addr, W, errors)))
    checked = [0, 0]
    causes = set()

    table_ram = table_ram_model(dut.tables, lambda t: state["tables"][t])

    async def consumer(ctx):
        out = dut.checked
        while True:
            ctx.set(out.ready, rng.random() < state["ready"])
            _, _, valid, ready, data, mask, error = await ctx.tick().sample(
                out.valid, out.ready, out.payload.data, out.payload.mask, out.payload.error)
            if valid and ready:
                assert not error
                state["got"].append((data, mask))

    async def bench(ctx):
        for tables, addr, check_rows, row_bytes, beats in cases:
            state["tables"] = tables
            state["ready"] = rng.choice([1.0, 0.7, 0.3])
            gap = rng.choice([0, 0.3, 0.7])
            ctx.set(dut.check_rows, check_rows)
            ctx.set(dut.row_bytes, row_bytes)
            ctx.set(dut.addr, addr)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            state["got"] = []
            for ws, mask, error in beats:
                while rng.random() < gap:
                    await ctx.tick()
                ctx.set(dut.beats.valid, 1)
                ctx.set(dut.beats.payload.data, _pack(ws))
                ctx.set(dut.beats.payload.mask, mask)
                ctx.set(dut.beats.payload.error, error)
                await ctx.tick().until(dut.beats.ready)
                ctx.set(dut.beats.valid, 0)
            await ctx.tick().until(~dut.busy)
            out, err, passed = _check_reference(beats, addr, tables, check_rows,
                                                           row_bytes, c)
            assert state["got"] == out
            rec = dut.error
            if err is None:
                assert not ctx.get(rec.valid)
            else:
                checked[1] += 1
                causes.add(err[0])
                assert ctx.get(rec.valid)
                assert (ctx.get(rec.cause), ctx.get(rec.addr), ctx.get(rec.index)) == err
                assert ctx.get(rec.engine) == Engine.LIST_CHECK
            assert ctx.get(dut.passed) == passed
            checked[0] += 1

    _run(dut, [bench, consumer], [table_ram])
    assert checked[0] == len(cases) and checked[1] >= 10
    assert causes == {ErrorCause.BAD_KEY, ErrorCause.ROW_OUT_OF_RANGE, ErrorCause.BAD_TABLE}


def test_key_checker_full_rate_and_stall():
    """Good keys, valid always and ready always: one beat per cycle in and out, beats.ready
    never drops; then a long stall of ``checked`` loses nothing."""
    c = _dcfg(128)
    W = c.words_per_beat
    dut = KeyChecker(c)
    tables = [(0, 4 * c.bus_bytes, 1 << 20)] * c.max_tables
    keys = list(range(200))
    beats = _reader_beats(keys, 0x1000, W)
    got, cycles = [], []

    table_ram = table_ram_model(dut.tables, lambda t: tables[t])

    async def bench(ctx):
        ctx.set(dut.addr, 0x1000)
        ctx.set(dut.check_rows, 1)
        ctx.set(dut.row_bytes, c.bus_bytes)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.checked.ready, 1)
        for cyc in range(len(beats) + 10):
            ready = cyc < len(beats) // 2 or cyc > len(beats) // 2 + 20
            if cyc < len(beats) // 2:
                ctx.set(dut.beats.valid, 1)
                ctx.set(dut.beats.payload.data, _pack(beats[cyc][0]))
                ctx.set(dut.beats.payload.mask, beats[cyc][1])
            else:
                ctx.set(dut.beats.valid, 0)
            ctx.set(dut.checked.ready, ready)
            _, _, in_ready, valid, data = await ctx.tick().sample(
                dut.beats.ready, dut.checked.valid, dut.checked.payload.data)
            if cyc < len(beats) // 2:
                assert in_ready
            if valid and ready:
                got.append(data)
                cycles.append(cyc)
        # Stalled for 20 cycles with beats inside: the rest must come out afterwards.
        for cyc in range(30):
            ctx.set(dut.beats.valid, 0)
            _, _, valid, data = await ctx.tick().sample(dut.checked.valid,
                                                        dut.checked.payload.data)
            if valid:
                got.append(data)
        assert got == [_pack(b[0]) for b in beats[:len(beats) // 2]]
        first = cycles[0]
        assert cycles[:len(beats) // 2 - 5] == list(range(first, first + len(beats) // 2 - 5))
        assert ctx.get(dut.passed) == sum(bin(b[1]).count("1") for b in beats[:len(beats) // 2])

    _run(dut, [bench], [table_ram], limit=2000)


# ---------------------------------------------------------------- LaneFormatter --------

@pytest.mark.parametrize("lanes,W", [(1, 2), (2, 2), (4, 2), (1, 1), (4, 8), (2, 8)])
def test_lane_formatter(lanes, W):
    """Random beats (random masks, empty groups, mask 0) with random gaps and ready: the
    lookup beats are the reference's, lane by lane; then a dense stream with ready high
    moves min(L, W) words per cycle."""
    c = _dcfg(64 * W, lanes=lanes)
    e = c.eal
    rng = random.Random(lanes * 100 + W)
    dut = LaneFormatter(c)
    G = -(-W // lanes)
    beats = []
    for _ in range(150):
        mask = rng.choice([(1 << W) - 1, rng.getrandbits(W), 0, 1 << rng.randrange(W)])
        beats.append(([rng.getrandbits(64) for _ in range(W)], mask))
    expect = []
    for ws, mask in beats:
        for g in range(G):
            lanes_ = []
            for j in range(lanes):
                w = g * lanes + j
                valid = w < W and (mask >> w) & 1
                lanes_.append((1, ws[w] & ((1 << e.key_bits) - 1)) if valid else (0, None))
            if any(v for v, _ in lanes_):
                expect.append(lanes_)
    dense = [([rng.getrandbits(64) for _ in range(W)], (1 << W) - 1) for _ in range(40)]
    got, out_cycles = [], []
    mode = {"ready": 0.6, "cycle": 0}

    async def consumer(ctx):
        out = dut.lookups
        while True:
            ctx.set(out.ready, rng.random() < mode["ready"])
            _, _, valid, ready, payload = await ctx.tick().sample(out.valid, out.ready,
                                                                  out.payload)
            mode["cycle"] += 1
            if valid and ready:
                got.append([(int(payload[j].valid), int(payload[j].key))
                            for j in range(lanes)])
                out_cycles.append(mode["cycle"])

    async def bench(ctx):
        for ws, mask in beats:
            while rng.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.beats.valid, 1)
            ctx.set(dut.beats.payload.data, _pack(ws))
            ctx.set(dut.beats.payload.mask, mask)
            await ctx.tick().until(dut.beats.ready)
            ctx.set(dut.beats.valid, 0)
        await ctx.tick().until(~dut.busy)
        assert len(got) == len(expect)
        for g, x in zip(got, expect):
            assert [v for v, _ in g] == [v for v, _ in x]
            assert [k for (v, k) in g if v] == [k for (v, k) in x if v]
        # Dense input, ready high: one lookup beat (min(L, W) words) per cycle.
        mode["ready"] = 1.0
        del got[:], out_cycles[:]
        for ws, mask in dense:
            ctx.set(dut.beats.valid, 1)
            ctx.set(dut.beats.payload.data, _pack(ws))
            ctx.set(dut.beats.payload.mask, mask)
            await ctx.tick().until(dut.beats.ready)
        ctx.set(dut.beats.valid, 0)
        await ctx.tick().repeat(3 * G + 10)
        assert len(got) == len(dense) * G
        assert out_cycles == list(range(out_cycles[0], out_cycles[0] + len(got)))
        assert [k for beat in got for v, k in beat if v] == \
            [w & ((1 << e.key_bits) - 1) for ws, _ in dense for w in ws]

    _run(dut, [bench, consumer], limit=20_000)


# ---------------------------------------------------------------- ListReader -----------

def _mem(addr):
    """Host memory: the 64-bit word at byte address ``addr`` (a multiple of 8)."""
    return (addr * 0x9E3779B97F4A7C15 + 0x1234567) & M64


@pytest.mark.parametrize("bus_bits,burst", [(128, 8), (64, 4), (256, 2), (512, 1)])
def test_list_reader_against_axi_responder(bus_bits, burst):
    """Random lists (any 8-aligned address, crossing 4 KiB, 1..200 words) read through a
    Python AXI responder with random AR/R gaps, some beats answered SLVERR/DECERR, and a
    consumer with random ready: bursts are legal (ID 0, full size, <= burst_beats, inside
    4 KiB), never more beats requested than the FIFO holds, the beats and masks are the
    list, an error stops new bursts and is recorded (LIST_READ, beat address, index), and
    every word position is still emitted."""
    c = _dcfg(bus_bits, burst_beats=burst)
    W, bb = c.words_per_beat, c.bus_bytes
    depth = list_fifo_beats(c)
    rng = random.Random(bus_bits + burst)
    dut = ListReader(c)
    st = {"ars": [], "bad": {}, "requested": 0, "taken": 0, "cycle": 0, "beats": [],
          "ready": 0.7, "err_cycle": None, "ar_cycles": [], "ar_seen": None}

    async def ar_side(ctx):
        axi = dut.axi
        while True:
            ctx.set(axi.arready, rng.random() < 0.6)
            _, _, valid, ready, addr, ln, size, arid, burst_ = await ctx.tick().sample(
                axi.arvalid, axi.arready, axi.araddr, axi.arlen, axi.arsize, axi.arid,
                axi.arburst)
            if valid and st["ar_seen"] is None:
                st["ar_seen"] = st["cycle"]         # the cycle the burst was started
            if valid and ready:
                st["ar_cycles"].append(st["ar_seen"])
                st["ar_seen"] = None
                assert (size, arid, burst_) == (bb.bit_length() - 1, 0, 1)
                assert addr % bb == 0 and ln + 1 <= burst
                assert addr // 4096 == (addr + (ln + 1) * bb - 1) // 4096
                st["ars"].append((addr, ln + 1))
                st["requested"] += ln + 1
                assert st["requested"] - st["taken"] <= depth

    async def r_side(ctx):
        axi = dut.axi
        while True:
            if st["ars"] and rng.random() < 0.7:
                addr, n = st["ars"][0]
                ctx.set(axi.rvalid, 1)
                ctx.set(axi.rdata, _pack([_mem(addr + 8 * k) for k in range(W)]))
                ctx.set(axi.rresp, st["bad"].get(addr, 0))
                ctx.set(axi.rlast, n == 1)
                _, _, rready = await ctx.tick().sample(axi.rready)
                assert rready
                if addr in st["bad"] and st["err_cycle"] is None:
                    st["err_cycle"] = st["cycle"]
                st["ars"][0] = (addr + bb, n - 1)
                if n == 1:
                    st["ars"].pop(0)
                ctx.set(axi.rvalid, 0)
            else:
                await ctx.tick()

    async def consumer(ctx):
        out = dut.beats
        while True:
            ctx.set(out.ready, rng.random() < st["ready"])
            _, _, valid, ready, data, mask, error = await ctx.tick().sample(
                out.valid, out.ready, out.payload.data, out.payload.mask, out.payload.error)
            st["cycle"] += 1
            if valid and ready:
                st["taken"] += 1
                st["beats"].append((data, mask, error))

    async def bench(ctx):
        errors_seen = 0
        for case in range(30):
            addr = rng.choice([rng.randrange(1 << 27) * 8, 4096 - 8 * rng.randrange(1, 9),
                               4096 * rng.randrange(1, 99)])
            count = rng.choice([1, 2, W, W + 1, rng.randrange(1, 200)])
            skip = (addr >> 3) % W
            nb = -(-(skip + count) // W)
            base = addr - 8 * skip
            st["bad"] = {}
            if rng.random() < 0.3:
                st["bad"][base + bb * rng.randrange(nb)] = rng.choice([2, 3])
            st["beats"], st["err_cycle"], st["ar_cycles"] = [], None, []
            st["requested"] = st["taken"] = 0
            st["ready"] = rng.choice([1.0, 0.7, 0.2])
            ctx.set(dut.addr, addr)
            ctx.set(dut.count, count)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick().until(~dut.busy)
            assert not st["ars"]
            beats = st["beats"]
            assert len(beats) == nb
            ref = _reader_beats([_mem(addr + 8 * i) for i in range(count)], addr, W)
            bad_beat = min(((a - base) // bb for a in st["bad"]), default=None)
            for b, ((data, mask, error), (ws, rmask, _)) in enumerate(zip(beats, ref)):
                assert mask == rmask, (case, b)
                real = _pack([_mem(base + b * bb + 8 * k) for k in range(W)])
                if bad_beat is None or b < bad_beat:
                    assert (data, error) == (real, 0), (case, b)
                elif b == bad_beat:
                    assert error == 1
                elif not error:
                    assert data == real
            rec = dut.error
            if bad_beat is None:
                assert not ctx.get(rec.valid)
            else:
                errors_seen += 1
                assert ctx.get(rec.valid)
                resp = st["bad"][base + bad_beat * bb]
                assert ctx.get(rec.cause) == ErrorCause.READ_SLVERR + (resp == 3)
                assert ctx.get(rec.engine) == Engine.LIST_READ
                assert ctx.get(rec.addr) == base + bad_beat * bb
                assert ctx.get(rec.index) == max(0, bad_beat * W - skip)
                # No burst is started after the error beat arrived.
                assert all(cy <= st["err_cycle"] + 1 for cy in st["ar_cycles"])
        assert errors_seen >= 3

    _run(dut, [bench, ar_side, r_side, consumer])


def test_list_reader_full_rate():
    """A long list with an always-ready bus and consumer: about one beat per cycle."""
    c = _dcfg(128, burst_beats=8)
    dut = ListReader(c)
    n_words = 2000
    got = []

    async def responder(ctx):
        axi = dut.axi
        ars = []
        ctx.set(axi.arready, 1)
        while True:
            if ars:
                addr, n = ars[0]
                ctx.set(axi.rvalid, 1)
                ctx.set(axi.rdata, _pack([_mem(addr), _mem(addr + 8)]))
                ctx.set(axi.rlast, n == 1)
                ars[0] = (addr + 16, n - 1)
                if n == 1:
                    ars.pop(0)
            else:
                ctx.set(axi.rvalid, 0)
            _, _, v, a, ln = await ctx.tick().sample(axi.arvalid, axi.araddr, axi.arlen)
            if v:
                ars.append((a, ln + 1))

    async def bench(ctx):
        ctx.set(dut.beats.ready, 1)
        ctx.set(dut.addr, 0x10000)
        ctx.set(dut.count, n_words)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles = 0
        while ctx.get(dut.busy):
            _, _, valid = await ctx.tick().sample(dut.beats.valid)
            got.append(valid)
            cycles += 1
        assert sum(got) == n_words // 2
        assert cycles < n_words // 2 * 1.1 + 20, cycles

    _run(dut, [bench, responder], limit=5000)


def test_word_serializer():
    """Random beats and masks under random valid and ready: the masked words come out in
    order, each with its beat's error flag, at one per cycle when dense."""
    c = _dcfg(256)
    W = c.words_per_beat
    rng = random.Random(5)
    dut = WordSerializer(c)
    beats = [([rng.getrandbits(64) for _ in range(W)], rng.getrandbits(W), rng.random() < 0.2)
             for _ in range(200)]
    expect = [(ws[k], int(err)) for ws, mask, err in beats for k in range(W) if mask >> k & 1]
    got = []

    async def consumer(ctx):
        while True:
            ctx.set(dut.words.ready, rng.random() < 0.7)
            _, _, v, r, word, err = await ctx.tick().sample(
                dut.words.valid, dut.words.ready, dut.words.payload.word,
                dut.words.payload.error)
            if v and r:
                got.append((word, err))

    async def bench(ctx):
        for ws, mask, err in beats:
            while rng.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.beats.valid, 1)
            ctx.set(dut.beats.payload.data, _pack(ws))
            ctx.set(dut.beats.payload.mask, mask)
            ctx.set(dut.beats.payload.error, err)
            await ctx.tick().until(dut.beats.ready)
            ctx.set(dut.beats.valid, 0)
        await ctx.tick().repeat(3 * W + 10)
        assert got == expect

    _run(dut, [bench, consumer], limit=20_000)

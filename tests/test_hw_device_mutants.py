"""Checks added by the mutation exercise (``verif/mutation.py``, docs/verification.md): what
the sequencer reports for each command, and which error a failed list command blames.

``test_sequencer_outcomes_pulses_and_starts`` drives the :class:`Sequencer` with refused and
valid commands (every opcode, random ``irq`` flags) and fake executors that finish after
random delays with random errors; a plain-Python model (the driver's own
``check_command`` for the refusals) gives, per command, the executor it must start with
which parameters, the ``finished``/``failed``/``irq_done`` pulse, the error record and the
halt. ``test_first_in_list_matches_reference`` compares
:func:`hotline_hw.device.blame.first_in_list` with the rule it states.
"""

import random

import pytest
from amaranth import Module, Signal, Elaboratable
from amaranth.sim import Simulator

from hotline_hw.device.blame import first_in_list
from hotline_hw.device.command import ExecutorKind
from hotline_hw.device.sequencer import Sequencer, EXECUTORS
from hotline_hw.job import error_record
from hotline_spec.commands import Opcode, ErrorCause, Engine
from hotline_spec.config import SMALL_DEVICE
from sw_driver.device_checks import check_command
from hw_models import table_ram as table_ram_model

KIND = {Opcode.FENCE: ExecutorKind.NONE, Opcode.LEARN: ExecutorKind.LOOKUP,
        Opcode.LOOKUP: ExecutorKind.LOOKUP, Opcode.DUMP: ExecutorKind.DUMP,
        Opcode.CLEAR: ExecutorKind.CLEAR, Opcode.GATHER: ExecutorKind.ROWS,
        Opcode.WRITE_BACK: ExecutorKind.ROWS}
LIST_OPS = (Opcode.LEARN, Opcode.LOOKUP, Opcode.GATHER, Opcode.WRITE_BACK)


def make_script(rng, dcfg, n):
    """Commands: dicts with the registers, the fake executor's delay and error, and the
    expected outcome. ``addr1`` carries the command's index (aligned for every opcode)."""
    script = []
    for i in range(n):
        op = rng.choice(list(Opcode))
        count = dcfg.eal.entries if op == Opcode.DUMP else rng.randrange(1, 50)
        addr0 = 8 * rng.randrange(1 << 20)
        addr1 = (i + 1) << 12
        if op in LIST_OPS + (Opcode.DUMP,) and rng.random() < 0.15:
            if rng.random() < 0.5:
                count = 0 if op != Opcode.DUMP else count - 1
            elif op != Opcode.DUMP:
                addr0 += 4
        fault = check_command(dcfg, op, count, addr0, addr1, dcfg.bus_bytes)
        runs = fault is None and op != Opcode.FENCE
        fail = (rng.choice([ErrorCause.READ_SLVERR, ErrorCause.WRITE_DECERR])
                if runs and rng.random() < 0.15 else 0)
        script.append({"op": op, "irq": rng.randrange(2), "count": count, "addr0": addr0,
                       "addr1": addr1, "delay": rng.randrange(0, 8), "fail": fail,
                       "fault": fault, "runs": runs})
    return script


def test_sequencer_outcomes_pulses_and_starts():
    dcfg = SMALL_DEVICE
    dut = Sequencer(dcfg)
    rng = random.Random(21)
    script = make_script(rng, dcfg, 80)
    # Command 0 is a FENCE with irq submitted while the reset clear still runs.
    script[0] = {"op": Opcode.FENCE, "irq": 1, "count": 0, "addr0": 0, "addr1": 1 << 12,
                 "delay": 0, "fail": 0, "fault": None, "runs": False}
    assert sum(s["fault"] is not None for s in script) >= 5
    assert sum(bool(s["fail"]) for s in script) >= 5
    starts = []        # (executor, index, params) in start order
    events = []        # (opcode, count, failed, irq_done) of every `finished` pulse
    cycle = [0]
    last_submit = [-10]

    def executor(name):
        job = getattr(dut, name)

        async def run(ctx):
            while True:
                await ctx.tick()
                if not ctx.get(job.start):
                    continue
                i = (ctx.get(job.params.addr1) >> 12) - 1
                p = job.params
                starts.append((name, i, (ctx.get(p.opcode), ctx.get(p.count), ctx.get(p.addr0),
                                         ctx.get(p.addr1), ctx.get(p.row_bytes),
                                         ctx.get(p.threshold))))
                s = script[i]
                ctx.set(job.busy, 1)
                await ctx.tick()
                for _ in range(s["delay"]):
                    await ctx.tick()
                ctx.set(job.error.valid, 1 if s["fail"] else 0)
                ctx.set(job.error.cause, s["fail"])
                ctx.set(job.error.engine, Engine.ROW_READ)
                ctx.set(job.error.addr, 0x5000 + i)
                ctx.set(job.error.index, i)
                ctx.set(job.done, 1)
                await ctx.tick()
                ctx.set(job.done, 0)
                ctx.set(job.busy, 0)
        return run

    async def monitor(ctx):
        while True:
            if ctx.get(dut.finished):
                events.append((ctx.get(dut.finished_opcode), ctx.get(dut.finished_count),
                               ctx.get(dut.failed), ctx.get(dut.irq_done)))
            else:
                assert not ctx.get(dut.irq_done) and not ctx.get(dut.failed)
            if ctx.get(dut.submit):
                last_submit[0] = cycle[0]
            # STATUS.busy: a command runs or is queued (a just-written command needs two
            # cycles to reach the queue's output), or the reset clear runs.
            if not ctx.get(dut.busy) and not ctx.get(dut.halted):
                assert not ctx.get(dut.init)
                assert (ctx.get(dut.free) == dcfg.cmd_depth
                        or cycle[0] - last_submit[0] <= 1), f"idle with a command queued, cycle {cycle[0]}"
            await ctx.tick()
            cycle[0] += 1

    async def submit(ctx, s):
        ctx.set(dut.staged.opcode, s["op"])
        ctx.set(dut.staged.irq, s["irq"])
        ctx.set(dut.staged.count, s["count"])
        ctx.set(dut.staged.addr0, s["addr0"])
        ctx.set(dut.staged.addr1, s["addr1"])
        ctx.set(dut.submit, 1)
        await ctx.tick()
        ctx.set(dut.submit, 0)

    async def host(ctx):
        ctx.set(dut.row_bytes, dcfg.bus_bytes)
        ctx.set(dut.threshold, 2)
        # Reset: the tag-store clear holds every command back.
        ctx.set(dut.engine_busy, 1)
        await submit(ctx, script[0])
        for _ in range(15):
            await ctx.tick()
            assert ctx.get(dut.init) and ctx.get(dut.busy)
        assert ctx.get(dut.completed) == 0 and not events
        ctx.set(dut.engine_busy, 0)
        expected = [(Opcode.FENCE, 0, 0, 1)]
        i, dropped = 1, 0
        finished = [0]
        while i < len(script):
            first = i
            for _ in range(rng.randrange(1, dcfg.cmd_depth + 1)):
                if i == len(script) or ctx.get(dut.full):
                    break
                await submit(ctx, script[i])
                i += 1
            for j in range(first, i):
                s = script[j]
                for _ in range(200):          # a cycle budget: a hang fails here
                    if ctx.get(dut.completed) + ctx.get(dut.dropped) > j or ctx.get(dut.halted):
                        break
                    await ctx.tick()
                else:
                    raise AssertionError(f"command {j} did not finish in 200 cycles (hang)")
                failed = s["fault"] is not None or bool(s["fail"])
                finished.append(j)
                expected.append((s["op"], s["count"], int(failed), int(s["irq"] and not failed)))
                if not ctx.get(dut.halted):
                    assert not failed, f"command {j} ({s['op'].name}) completed, not failed"
                    continue
                assert failed, f"command {j} ({s['op'].name}) halted without an error"
                err = dut.error
                if s["fault"] is not None:
                    f = s["fault"]
                    want = (f.cause, Engine.DECODER, f.address)
                else:
                    want = (s["fail"], Engine.ROW_READ, 0x5000 + j)
                assert (ctx.get(err.valid), ctx.get(err.cause), ctx.get(err.engine),
                        ctx.get(err.addr)) == (1,) + want, f"command {j}"
                assert ctx.get(dut.err_command) == j
                # The halt lasts until err_ack: nothing is dropped or run meanwhile.
                before = (ctx.get(dut.dropped), ctx.get(dut.completed))
                for _ in range(12):
                    await ctx.tick()
                    assert ctx.get(dut.halted)
                assert (ctx.get(dut.dropped), ctx.get(dut.completed)) == before
                ctx.set(dut.err_ack, 1)
                await ctx.tick()
                ctx.set(dut.err_ack, 0)
                for _ in range(40):
                    await ctx.tick()
                assert not ctx.get(dut.halted) and not ctx.get(dut.error.valid)
                dropped += i - j - 1
                assert ctx.get(dut.dropped) == dropped
                break
        for _ in range(5):
            await ctx.tick()
        assert not ctx.get(dut.busy)
        assert ctx.get(dut.submitted) == len(script)
        assert ctx.get(dut.completed) + ctx.get(dut.dropped) == len(script)
        assert events == expected
        # Exactly the commands that ran (finished, not refused, not FENCE) started the
        # executor of their opcode, once each, in order, with their registers.
        assert [k for _, k, _ in starts] == [k for k in finished if script[k]["runs"]]
        for name, k, params in starts:
            s = script[k]
            assert name == EXECUTORS[KIND[s["op"]]], (k, name, s["op"].name)
            assert params == (s["op"], s["count"], s["addr0"], s["addr1"], dcfg.bus_bytes, 2)
        assert len(starts) >= 20

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for name in EXECUTORS.values():
        sim.add_testbench(executor(name), background=True)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(host)
    sim.run()


class _Blame(Elaboratable):
    def __init__(self):
        self.check, self.read = Signal(error_record()), Signal(error_record())
        self.later = [Signal(error_record(), name=f"later{k}") for k in range(3)]
        self.m = Module()
        self.out = first_in_list(self.m, self.check, self.read, *self.later)

    def elaborate(self, platform):
        return self.m


def blame_reference(check, read, later):
    """The record to report: of the key check's and the read's, the earlier in the list
    (the read's at the same address: the key in a failed beat is never checked), else the
    first valid later one, else none."""
    if check["valid"] and read["valid"]:
        return check if check["addr"] < read["addr"] else read
    for rec in (check, read, *later):
        if rec["valid"]:
            return rec
    return None


def test_first_in_list_matches_reference():
    dut = _Blame()
    rng = random.Random(3)

    def rand_record(tag):
        return {"valid": int(rng.random() < 0.5), "cause": rng.randrange(1, 12),
                "engine": rng.randrange(16), "addr": rng.choice([0x100, 0x108, 0x140, 0x180]),
                "index": tag}

    async def bench(ctx):
        for _ in range(400):
            check, read = rand_record(1), rand_record(2)
            later = [rand_record(3 + k) for k in range(3)]
            for sig, rec in [(dut.check, check), (dut.read, read)] + list(zip(dut.later, later)):
                for field, value in rec.items():
                    ctx.set(getattr(sig, field), value)
            await ctx.tick()            # the check-first compare is registered
            want = blame_reference(check, read, later)
            got = {f: ctx.get(getattr(dut.out, f)) for f in ("valid", "cause", "engine",
                                                            "addr", "index")}
            if want is None:
                assert got["valid"] == 0
            else:
                assert got == want, (check, read, later)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# ---- LookupExecutor against fakes of the engine and the bus -----------------------------
def test_lookup_executor_writes_every_result():
    """LEARN/LOOKUP through :class:`LookupExecutor` with a fake engine (results after a
    random latency, ``busy`` while it holds a lookup) and a host memory model on both AXI
    ports: every command ends with ``done``, no error, and exactly its result words written.
    Short lists (one list beat) given to an idle engine are the case where the end of the
    key stream must wait for the results themselves, not only for an idle engine."""
    from hotline_hw.device.lookup_executor import LookupExecutor
    dcfg = SMALL_DEVICE
    e = dcfg.eal
    bb = dcfg.bus_bytes
    W = dcfg.words_per_beat
    dut = LookupExecutor(dcfg)
    rng = random.Random(7)
    mem = {}                           # byte address -> value (absent: 0xEE)
    engine_q = []                      # (ready cycle, beat) in flight in the fake engine
    now = [0]

    def key_result(key):
        return (key * 2654435761) % (1 << e.slot_bits) | (key & 1) << 32

    def read_beat(addr):
        return sum(mem.get(addr + b, 0xEE) << (8 * b) for b in range(bb))

    async def clock(ctx):
        while True:
            await ctx.tick()
            now[0] += 1

    async def list_port(ctx):
        axi = dut.list_axi
        while True:
            ctx.set(axi.arready, 1)
            _, _, valid, addr, length = await ctx.tick().sample(axi.arvalid, axi.araddr, axi.arlen)
            if not valid:
                continue
            ctx.set(axi.arready, 0)
            for _ in range(rng.randrange(0, 12)):
                await ctx.tick()
            for k in range(length + 1):
                ctx.set(axi.rvalid, 1)
                ctx.set(axi.rdata, read_beat(addr + k * bb))
                ctx.set(axi.rresp, 0)
                ctx.set(axi.rlast, k == length)
                await ctx.tick()
                ctx.set(axi.rvalid, 0)

    write_port = _write_responder(dut.write_axi, mem, rng, bb, b_delay=5)

    async def engine(ctx):
        latency = 6
        while True:
            ready = rng.random() < 0.8
            ctx.set(dut.lookups.ready, ready)
            ctx.set(dut.engine_busy, bool(engine_q))
            head = engine_q[0] if engine_q and engine_q[0][0] <= now[0] else None
            ctx.set(dut.results.valid, head is not None)
            if head is not None:
                for lane, (v, key) in enumerate(head[1]):
                    ctx.set(dut.results.payload[lane].valid, v)
                    ctx.set(dut.results.payload[lane].hit, key_result(key) >> 32)
                    ctx.set(dut.results.payload[lane].slot, key_result(key) & 0xFFFFFFFF)
            _, _, lv, rv, rr, *lanes = await ctx.tick().sample(
                dut.lookups.valid, dut.results.valid, dut.results.ready,
                *[x for lane in range(e.lanes) for x in (dut.lookups.payload[lane].valid,
                                                          dut.lookups.payload[lane].key)])
            if rv and rr:
                engine_q.pop(0)
            if lv and ready:
                engine_q.append((now[0] + latency + rng.randrange(0, 10),
                                 [(lanes[2 * k], lanes[2 * k + 1]) for k in range(e.lanes)]))

    async def host(ctx):
        done = 0
        for n in range(40):
            count = rng.choice([1, 1, 2, 3, rng.randrange(1, 30)])
            addr0 = 0x10000 + 8 * rng.randrange(64)
            addr1 = 0x40000 + 8 * rng.randrange(64)
            keys = [rng.randrange(1 << e.key_bits) for _ in range(count)]
            for i, k in enumerate(keys):
                for b in range(8):
                    mem[addr0 + 8 * i + b] = k >> (8 * b) & 0xFF
            before = dict(mem)
            op = rng.choice([Opcode.LEARN, Opcode.LOOKUP])
            p = dut.job.params
            for field, value in (("opcode", op), ("count", count), ("addr0", addr0),
                                 ("addr1", addr1), ("row_bytes", bb), ("threshold", 1)):
                ctx.set(getattr(p, field), value)
            for _ in range(rng.randrange(20, 40)):      # the engine goes idle
                await ctx.tick()
            ctx.set(dut.job.start, 1)
            await ctx.tick()
            ctx.set(dut.job.start, 0)
            assert ctx.get(dut.learn) == (op == Opcode.LEARN)
            for _ in range(2000):
                if ctx.get(dut.job.done):
                    break
                await ctx.tick()
            else:
                raise AssertionError(f"command {n} did not finish in 2000 cycles (hang)")
            assert not ctx.get(dut.job.error.valid), n
            await ctx.tick()
            for a in set(mem) | set(before):
                i = (a - addr1) // 8
                if 0 <= i < count:
                    want = key_result(keys[i]) >> (8 * ((a - addr1) % 8)) & 0xFF
                    assert mem.get(a) == want, (n, count, i, hex(a))
                else:
                    assert mem.get(a) == before.get(a), (n, count, hex(a))
            for i in range(count):
                assert addr1 + 8 * i in mem, (n, i)
            done += 1
        assert done == 40

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in (clock, list_port, write_port, engine):
        sim.add_testbench(bench, background=True)
    sim.add_testbench(host)
    sim.run()


# ---- KeyChecker at the boundaries of the row checks -------------------------------------
def test_key_checker_row_boundaries():
    """Rows ``rows - 1`` (good) and ``rows`` (ROW_OUT_OF_RANGE), stride == ROW_BYTES (good)
    and one beat less (BAD_TABLE), against the reference of tests/test_hw_list_input.py."""
    from test_hw_list_input import _dcfg, _reader_beats, _check_reference, _pack, _run
    from hotline_hw.dma.key_checker import KeyChecker
    c = _dcfg(128)
    e = c.eal
    rb = 2 * c.bus_bytes
    dut = KeyChecker(c)
    rng = random.Random(4)
    nt = 1 << e.table_bits
    cases = []
    for _ in range(40):
        tables = [(c.bus_bytes * rng.randrange(1 << 10),
                   rb if rng.random() < 0.8 else rb - c.bus_bytes,
                   rng.choice([1, 2, 7, (1 << e.row_bits) - 1])) for _ in range(nt)]
        keys = []
        for _ in range(rng.randrange(1, 12)):
            t = rng.randrange(nt)
            rows = tables[t][2]
            row = rows - 1 if rng.random() < 0.85 else rows
            keys.append(t << e.row_bits | row)
        addr = 8 * rng.randrange(1 << 20)
        cases.append((tables, addr, keys))
    state = {"tables": cases[0][0], "got": []}
    seen = set()

    table_ram = table_ram_model(dut.tables, lambda t: state["tables"][t])

    async def consumer(ctx):
        out = dut.checked
        ctx.set(out.ready, 1)
        while True:
            _, _, valid, data, mask = await ctx.tick().sample(out.valid, out.payload.data,
                                                              out.payload.mask)
            if valid:
                state["got"].append((data, mask))

    async def bench(ctx):
        for tables, addr, keys in cases:
            beats = _reader_beats(keys, addr, c.words_per_beat)
            state["tables"] = tables
            ctx.set(dut.check_rows, 1)
            ctx.set(dut.row_bytes, rb)
            ctx.set(dut.addr, addr)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            state["got"] = []
            for ws, mask, error in beats:
                ctx.set(dut.beats.valid, 1)
                ctx.set(dut.beats.payload.data, _pack(ws))
                ctx.set(dut.beats.payload.mask, mask)
                ctx.set(dut.beats.payload.error, error)
                await ctx.tick().until(dut.beats.ready)
                ctx.set(dut.beats.valid, 0)
            await ctx.tick().until(~dut.busy)
            out, err, passed = _check_reference(beats, addr, tables, 1, rb, c)
            assert state["got"] == out
            if err is None:
                assert not ctx.get(dut.error.valid)
            else:
                seen.add(err[0])
                assert (ctx.get(dut.error.cause), ctx.get(dut.error.addr),
                        ctx.get(dut.error.index)) == err
            assert ctx.get(dut.passed) == passed

    _run(dut, [bench, consumer], [table_ram])
    assert seen == {ErrorCause.ROW_OUT_OF_RANGE, ErrorCause.BAD_TABLE}


# ---- RowExecutor: a GATHER cut short by a list read error --------------------------------
def _byte(mem, a):
    return mem.get(a, (a * 7 + 3) & 0xFF)


def _read_responder(axi, mem, rng, bb, bad=lambda addr: False):
    """AXI4 reads, one burst at a time, in order; SLVERR for the beats ``bad`` names."""
    async def run(ctx):
        while True:
            ctx.set(axi.arready, 1)
            _, _, valid, addr, length, rid = await ctx.tick().sample(
                axi.arvalid, axi.araddr, axi.arlen, axi.arid)
            if not valid:
                continue
            ctx.set(axi.arready, 0)
            for _ in range(rng.randrange(0, 10)):
                await ctx.tick()
            for k in range(length + 1):
                a = addr + k * bb
                ctx.set(axi.rvalid, 1)
                ctx.set(axi.rid, rid)
                ctx.set(axi.rdata, sum(_byte(mem, a + b) << (8 * b) for b in range(bb)))
                ctx.set(axi.rresp, 0b10 if bad(a) else 0)
                ctx.set(axi.rlast, k == length)
                await ctx.tick()
                ctx.set(axi.rvalid, 0)
    return run


def _write_responder(axi, mem, rng, bb, b_delay=0):
    """AXI4 writes, one burst at a time (AW, its W beats, then B after up to ``b_delay``
    idle cycles), OKAY."""
    async def run(ctx):
        while True:
            ctx.set(axi.awready, 1)
            _, _, valid, addr, length, wid = await ctx.tick().sample(
                axi.awvalid, axi.awaddr, axi.awlen, axi.awid)
            if not valid:
                continue
            ctx.set(axi.awready, 0)
            for k in range(length + 1):
                while True:
                    ready = rng.random() < 0.7
                    ctx.set(axi.wready, ready)
                    _, _, wv, data, strb, last = await ctx.tick().sample(
                        axi.wvalid, axi.wdata, axi.wstrb, axi.wlast)
                    if wv and ready:
                        break
                ctx.set(axi.wready, 0)
                assert last == (k == length)
                for b in range(bb):
                    if strb >> b & 1:
                        mem[addr + k * bb + b] = data >> (8 * b) & 0xFF
            for _ in range(rng.randrange(0, b_delay + 1)):
                await ctx.tick()
            ctx.set(axi.bvalid, 1)
            ctx.set(axi.bid, wid)
            ctx.set(axi.bresp, 0)
            await ctx.tick()
            ctx.set(axi.bvalid, 0)
    return run


@pytest.mark.parametrize("op", [Opcode.GATHER, Opcode.WRITE_BACK], ids=["gather", "write_back"])
def test_row_executor_cut_short_by_a_list_read_error(op):
    """GATHER and WRITE_BACK through :class:`RowExecutor` with a host memory model. With a
    read error on one beat of the key list, a GATHER moves exactly the rows of the keys in
    the beats before it (the error often comes right behind the first good beats, while
    their keys are still inside the checker: the mover must not be stopped before they
    arrive) and a WRITE_BACK moves nothing (its check pass refuses it); both report the
    list read error. Without one, every row moves. The buffer and the table rows hold
    different bytes, so a row written back shows."""
    from hotline_hw.device.row_executor import RowExecutor
    dcfg = SMALL_DEVICE
    e = dcfg.eal
    bb = dcfg.bus_bytes
    W = dcfg.words_per_beat
    rb = 2 * bb
    dut = RowExecutor(dcfg)
    rng = random.Random(9)
    mem = {}
    base, rows = 0x100000, 64
    state = {"bad": None}

    table_ram = table_ram_model(dut.tables, lambda t: (base, rb, rows) if t == 0 else (0, 0, 0))

    def bad(a):
        return state["bad"] is not None and a == state["bad"]

    async def host(ctx):
        errors = 0
        for n in range(30):
            count = rng.randrange(1, 10)
            addr0 = 0x10000 + 8 * rng.randrange(32)
            addr1 = 0x40000 + bb * rng.randrange(32)
            keys = rng.sample(range(rows), count)
            for i, k in enumerate(keys):
                for b in range(8):
                    mem[addr0 + 8 * i + b] = k >> (8 * b) & 0xFF
            first_beat = addr0 & ~(bb - 1)
            nbeats = (addr0 + 8 * count - first_beat + bb - 1) // bb
            state["bad"] = None
            moved = count
            if rng.random() < 0.6 and nbeats > 1:
                j = rng.choice([1, 1, rng.randrange(1, nbeats)])
                state["bad"] = first_beat + j * bb
                # GATHER: the keys in the beats before it; WRITE_BACK: none.
                moved = (state["bad"] - addr0) // 8 if op == Opcode.GATHER else 0
                errors += 1
            before = dict(mem)
            p = dut.job.params
            for field, value in (("opcode", op), ("count", count), ("addr0", addr0),
                                 ("addr1", addr1), ("row_bytes", rb), ("threshold", 0)):
                ctx.set(getattr(p, field), value)
            await ctx.tick()
            ctx.set(dut.job.start, 1)
            await ctx.tick()
            ctx.set(dut.job.start, 0)
            for _ in range(3000):
                if ctx.get(dut.job.done):
                    break
                await ctx.tick()
            else:
                raise AssertionError(f"command {n} did not finish in 3000 cycles (hang)")
            err = dut.job.error
            if state["bad"] is None:
                assert not ctx.get(err.valid), n
            else:
                assert (ctx.get(err.valid), ctx.get(err.cause), ctx.get(err.engine),
                        ctx.get(err.addr)) == (1, ErrorCause.READ_SLVERR, Engine.LIST_READ,
                                               state["bad"]), n
            await ctx.tick()
            dest = []
            for i in range(count):
                src, dst = base + keys[i] * rb, addr1 + i * rb
                if op == Opcode.WRITE_BACK:
                    src, dst = dst, src
                dest.append(dst)
                for b in range(0, rb, 8):
                    want = _byte(before, src + b) if i < moved else _byte(before, dst + b)
                    assert _byte(mem, dst + b) == want, (n, op.name, count, moved, i, b)
            # Nothing written outside the rows moved.
            for a in mem:
                if a not in before and not any(d <= a < d + rb for d in dest[:moved]):
                    raise AssertionError(f"command {n}: wrote {a:#x} outside its rows")
        assert errors >= 8

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(table_ram)
    sim.add_testbench(_read_responder(dut.list_axi, mem, rng, bb, bad), background=True)
    sim.add_testbench(_read_responder(dut.row_axi, mem, rng, bb), background=True)
    sim.add_testbench(_write_responder(dut.row_axi, mem, rng, bb), background=True)
    sim.add_testbench(host)
    sim.run()

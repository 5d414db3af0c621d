"""cocotb testbench of the accelerator top level (``hotline_accelerator``).

One cocotb test, :func:`run_case`, plays the case named in ``HOTLINE_CASE`` (a JSON file:
``{"config": DeviceConfig dict, "case": name, "seed", "read_latency", "write_latency",
"pause", "reorder", "report"}``) and writes a report. Every case keeps a mirror of the whole
simulated host memory: after each command the mirror gets the writes the command should make,
and the entire memory must equal it, so a stray write anywhere (outside a destination, into a
guard byte, by a refused command) fails the case. After every case the AXI handshake monitor
(all ten channels) and the host memory's protocol checks must have seen no violation, and
the functional coverage bins are written to ``functional_coverage.json`` in the work folder.

LEARN, LOOKUP and GATHER read their list once and WRITE_BACK twice (a check pass first); a
bad key or a list read error ends a command with the keys before it processed
(docs/device.md, "Errors"): :meth:`Case.list_error_moves` and :meth:`Case.expect_cut_short`
are the one place that says what moved.
"""

import json
import os
import random
import time

import cocotb
import numpy as np
import torch
from cocotb.triggers import ClockCycles, ReadOnly

from hotline_spec.commands import Opcode, ErrorCause, Engine, MAGIC
from hotline_hw.axi import RESP_OKAY, RESP_SLVERR, RESP_DECERR
from verif.golden import AccessLogger
from verif.tb.device import DeviceBench, CommandFailed, config_from_dict, report_bins

KEYS, RESULTS, DUMP, TABLES, BUFFERS = 0x1_0000, 0x2_0000, 0x3_0000, 0x4_0000, 0xA_0000
MEM_SIZE = 1 << 21


class Case:
    """Shared state of one case: the bench, the golden tag store, the memory mirror."""

    def __init__(self, dut, spec):
        self.spec = spec
        self.cfg = config_from_dict(spec["config"])
        self.rng = random.Random(spec["seed"])
        self.bench = DeviceBench(dut, self.cfg, mem_size=MEM_SIZE, seed=spec["seed"],
                                 read_latency=spec.get("read_latency", 20),
                                 write_latency=spec.get("write_latency", 20),
                                 pause=spec.get("pause", 0.0), reorder=spec.get("reorder", False))
        self.golden = AccessLogger(self.cfg.eal)
        self.report = {"checks": 0}
        self.mirror = None

    # ---- what a failed list read moves (the one place that knows the device's passes) --
    @staticmethod
    def list_reads_before_move(opcode):
        """Reads of a command's list before its move pass: 1 for WRITE_BACK (its check
        pass), 0 for the single-pass LEARN/LOOKUP/GATHER."""
        return 1 if opcode == Opcode.WRITE_BACK else 0

    def list_error_moves(self, keys, list_addr, failed, opcode):
        """``[(index, key)]`` that a command whose list read failed in its move pass still
        processes, in order. ``failed``: the ``(kind, addr, nbytes, resp)`` bursts answered
        with an error. The key stream ends at the first lost word (for every opcode: in
        WRITE_BACK's move pass too), so these are the indices before it."""
        lost = {i for i in range(len(keys)) for kind, addr, nbytes, _ in failed
                if kind == "read" and addr <= list_addr + 8 * i < addr + nbytes}
        first = min(lost, default=len(keys))
        return [(i, keys[i]) for i in range(first)]

    async def start(self):
        await self.bench.start()
        init = self.rng.randbytes(MEM_SIZE)
        self.bench.memory.write(0, init)
        self.mirror = bytearray(init)
        await self.bench.wait_ready()

    # ---- memory ----------------------------------------------------------------------
    def put(self, addr, data):
        """Host writes ``data`` (the test's own setup): to memory and mirror."""
        self.bench.memory.write(addr, bytes(data))
        self.mirror[addr:addr + len(data)] = bytes(data)

    def put_words(self, addr, words):
        self.put(addr, np.asarray(words, dtype=np.uint64).astype("<u8").tobytes())

    def expect(self, addr, data):
        self.mirror[addr:addr + len(data)] = bytes(data)

    def check_memory(self, what):
        got = self.bench.memory.read(0, MEM_SIZE)
        self.report["checks"] += 1
        if got != bytes(self.mirror):
            diff = [i for i in range(MEM_SIZE) if got[i] != self.mirror[i]]
            raise AssertionError(f"{what}: {len(diff)} bytes differ from the expected memory; "
                                 f"first at {diff[0]:#x}: got {got[diff[0]]:#x}, "
                                 f"expected {self.mirror[diff[0]]:#x}")

    async def expect_error(self, coro, cause, engine, address=None, what=""):
        try:
            await coro
        except CommandFailed as err:
            assert err.cause == cause, f"{what}: cause {err.cause.name}, expected {cause.name}"
            assert err.engine == engine, f"{what}: engine {err.engine.name}, expected {engine.name}"
            if address is not None:
                assert err.address == address, f"{what}: address {err.address:#x}, expected {address:#x}"
            self.report["checks"] += 1
            return err
        raise AssertionError(f"{what}: the command did not fail")

    # ---- lookups ---------------------------------------------------------------------
    def expect_cut_short(self, opcode, keys, index, dest):
        """What a single-pass command whose key ``index`` is bad leaves behind: the keys
        before it looked up (LEARN: learned) with their results at ``dest``, or (GATHER)
        their rows in the buffer at ``dest``."""
        if not index:
            return
        keys = [int(k) for k in keys[:index]]
        if opcode == Opcode.GATHER:
            rb = self.row_bytes
            for i, k in enumerate(keys):
                a = self.row_addr(k)
                self.expect(dest + i * rb, self.mirror[a:a + rb])
            return
        assert opcode == Opcode.LEARN, opcode
        exp = self.golden.learn(torch.tensor(keys, dtype=torch.int64))
        words = [(int(s) & 0xFFFF_FFFF) | (int(h) << 32)
                 for h, s in zip(exp.hit.tolist(), exp.slot.tolist())]
        self.expect(dest, np.asarray(words, dtype="<u8").tobytes())

    async def lookups(self, keys, learn, threshold=None, keys_addr=KEYS, res_addr=RESULTS):
        b = self.bench
        keys = [int(k) for k in keys]
        self.put_words(keys_addr, keys)
        if learn:
            exp = self.golden.learn(torch.tensor(keys, dtype=torch.int64))
        else:
            await b.write_ok("POPULAR_MAX_RRPV", threshold)
            exp = self.golden.lookup(torch.tensor(keys, dtype=torch.int64), popular_max_rrpv=threshold)
        words = [(int(s) & 0xFFFF_FFFF) | (int(h) << 32) for h, s in zip(exp.hit.tolist(), exp.slot.tolist())]
        self.expect(res_addr, np.asarray(words, dtype="<u8").tobytes())
        cycles = await b.run(Opcode.LEARN if learn else Opcode.LOOKUP, len(keys), keys_addr, res_addr)
        self.check_memory(f"{'learn' if learn else 'lookup'} of {len(keys)} keys")
        return cycles, int(exp.hit.sum())

    def dump_words(self):
        """The DUMP words of the golden tag store, and how many entries are valid."""
        st = self.golden.state
        valid, rrpv, tag = (st[k].reshape(-1).tolist() for k in ("valid", "rrpv", "tag"))
        words = [(int(t) & ((1 << 60) - 1)) | (int(r) << 60) | (int(v) << 63)
                 for v, r, t in zip(valid, rrpv, tag)]
        return np.asarray(words, dtype=np.uint64).astype("<u8").tobytes(), sum(valid)

    async def dump(self, addr=DUMP):
        e = self.cfg.eal
        data, valid = self.dump_words()
        self.expect(addr, data)
        cycles = await self.bench.run(Opcode.DUMP, e.entries, 0, addr)
        self.check_memory("dump")
        return cycles, valid

    # ---- rows ------------------------------------------------------------------------
    async def tables(self, n_tables, rows, row_bytes, stride_pad=0, near_4k=True):
        """Place ``n_tables`` tables (each ``rows`` rows) at and just before 4 KiB
        boundaries; returns [(base, stride, rows)]."""
        bb = self.cfg.bus_bytes
        stride = row_bytes + stride_pad * bb
        out = []
        addr = TABLES
        for t in range(n_tables):
            base = addr + 4096 - (self.rng.choice([0, 1, 2]) * bb if near_4k else 0)
            out.append((base, stride, rows))
            await self.bench.set_table(t, base, stride, rows)
            addr = (base + rows * stride + 8191) // 4096 * 4096
        await self.bench.write_ok("ROW_BYTES", row_bytes)
        self.layout = out
        self.row_bytes = row_bytes
        return out

    def key(self, t, r):
        return (t << self.cfg.eal.row_bits) | r

    def row_addr(self, key):
        t, r = key >> self.cfg.eal.row_bits, key & ((1 << self.cfg.eal.row_bits) - 1)
        base, stride, _ = self.layout[t]
        return base + r * stride

    async def gather(self, keys, buf, list_addr=KEYS, wait=True):
        rb = self.row_bytes
        self.put_words(list_addr, keys)
        for i, k in enumerate(keys):
            a = self.row_addr(k)
            self.expect(buf + i * rb, self.mirror[a:a + rb])
        if wait:
            cycles = await self.bench.run(Opcode.GATHER, len(keys), list_addr, buf)
            self.check_memory(f"gather of {len(keys)} rows")
            return cycles
        return await self.bench.submit(Opcode.GATHER, len(keys), list_addr, buf)

    async def write_back(self, keys, buf, list_addr=KEYS + 0x8000, wait=True):
        rb = self.row_bytes
        self.put_words(list_addr, keys)
        for i, k in enumerate(keys):
            a = self.row_addr(k)
            self.expect(a, self.mirror[buf + i * rb:buf + (i + 1) * rb])
        if wait:
            cycles = await self.bench.run(Opcode.WRITE_BACK, len(keys), list_addr, buf)
            self.check_memory(f"write-back of {len(keys)} rows")
            return cycles
        return await self.bench.submit(Opcode.WRITE_BACK, len(keys), list_addr, buf)


# ---------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------

async def case_registers(c: Case):
    """ID block, reset values, masks, refused accesses (SLVERR, sticky bits, nothing else
    changes), W1C, interrupt."""
    b, rmap = c.bench, c.bench.rmap
    for name, value in rmap.id_values().items():
        got = await b.read_value(name)
        assert got == value, f"{name} = {got:#x}, expected {value:#x}"
    assert await b.read_value("ID_MAGIC") == MAGIC
    for r in rmap:
        if r.access == "rw":
            assert await b.read_value(r.name) == r.reset, f"{r.name} reset value"
    # Read-write storage keeps exactly its fields' bits.
    for name in ("ROW_BYTES", "POPULAR_MAX_RRPV", "CMD_CTRL", "TABLE1_STRIDE"):
        await b.write_ok(name, 0xFFFF_FFFF)
        assert await b.read_value(name) == rmap[name].mask, name
    snapshot = {r.name: await b.read_value(r.name) for r in rmap if r.access == "rw"}
    # A write to a read-only register: SLVERR, REG_ERROR.read_only, address, no change.
    assert await b.write("ID_MAGIC", 0) == RESP_SLVERR
    assert await b.read_value("ID_MAGIC") == MAGIC
    assert await b.field("REG_ERROR", "read_only") == 1
    assert await b.read_value("REG_ERROR_ADDR") == rmap.offset("ID_MAGIC")
    assert await b.field("STATUS", "reg_error") == 1
    # Unmapped offsets, read and write.
    holes = [o for o in range(0, 1 << c.cfg.csr_addr_bits, 4) if rmap.at(o) is None]
    for hole in (holes[0], holes[len(holes) // 2], holes[-1]):
        value, resp = await b.read(hole)
        assert resp == RESP_SLVERR and value == 0, f"read of unmapped {hole:#x}"
        assert await b.write(hole, 0x1234) == RESP_SLVERR, f"write of unmapped {hole:#x}"
        assert await b.read_value("REG_ERROR_ADDR") == hole
    assert await b.field("REG_ERROR", "unmapped") == 1
    after = {r.name: await b.read_value(r.name) for r in rmap if r.access == "rw"}
    assert after == snapshot, "a refused access changed a register"
    await b.write_ok("REG_ERROR", 0xFFFF_FFFF)
    assert await b.read_value("REG_ERROR") == 0 and await b.field("STATUS", "reg_error") == 0
    # Interrupt: a FENCE with irq sets IRQ_STATUS.done; irq follows CONTROL.irq_enable.
    await b.write_ok("CMD_CTRL", 0)
    await b.write_ok("CMD_COUNT", 0)
    seq, _ = await b.submit(Opcode.FENCE, irq=True)
    await b.wait_completed(seq + 1)
    assert await b.field("IRQ_STATUS", "done") == 1
    assert int(c.bench.dut.irq.value) == 0, "irq without irq_enable"
    await b.write_ok("CONTROL", 1)
    await ClockCycles(b.dut.clk, 2)
    assert int(c.bench.dut.irq.value) == 1, "irq not raised"
    await b.write_ok("IRQ_STATUS", 1)
    await ClockCycles(b.dut.clk, 2)
    assert int(c.bench.dut.irq.value) == 0, "irq not acknowledged"
    # An error raises IRQ_STATUS.error.
    await c.expect_error(b.run(15), ErrorCause.BAD_OPCODE, Engine.DECODER, what="bad opcode")
    assert await b.field("IRQ_STATUS", "error") == 1
    assert await b.read64("ERRORS") == 1
    c.check_memory("register case")


async def case_lookups(c: Case):
    """Learn, frozen lookups at every threshold, dump, clear; key lists not aligned to the
    bus and across 4 KiB; counters."""
    e = c.cfg.eal
    rng = c.rng
    space = 1 << e.key_bits
    hot = [rng.randrange(space) for _ in range(e.entries // 2)]
    draw = lambda n: [rng.choice(hot) if rng.random() < 0.6 else rng.randrange(space) for _ in range(n)]
    n = c.spec.get("n", 1500)
    total_hits = 0
    _, h = await c.lookups(draw(n), True, keys_addr=KEYS + 4096 - 8 * 7)   # crosses 4 KiB
    total_hits += h
    _, h = await c.lookups(draw(n // 2), True, keys_addr=KEYS + 8)         # not bus-aligned
    total_hits += h
    await c.dump()
    probe = draw(n // 2)
    for thr in (0, 1, 3, 2):
        _, h = await c.lookups(probe, False, thr)
        total_hits += h
    _, h = await c.lookups([probe[0]], False, 1)                           # one key
    total_hits += h
    assert await c.bench.read64("LOOKUPS") == n + n // 2 + 4 * (n // 2) + 1
    assert await c.bench.read64("HITS") == total_hits
    await c.bench.run(Opcode.CLEAR)
    c.golden.clear()
    _, valid = await c.dump()
    assert valid == 0
    _, h = await c.lookups(draw(300), True)
    await c.dump()
    c.report["hits"] = total_hits


async def case_rows(c: Case):
    """Gathers and write-backs with guard bytes everywhere, 4 KiB placements, counts 1 to
    more than the read window, duplicates, and rows reused across queued commands."""
    cfg = c.cfg
    rng = c.rng
    bb = cfg.bus_bytes
    sizes = c.spec.get("row_sizes") or [bb, 2 * bb, 3 * bb, 256, cfg.max_row_bytes]
    moved = {"gathered": 0, "written": 0}
    for row_bytes in sizes:
        rows = 40
        await c.tables(3, rows, row_bytes, stride_pad=rng.choice([0, 1]))
        for count in (1, 3, cfg.read_ids + 5):
            keys = [c.key(rng.randrange(3), rng.randrange(rows)) for _ in range(count)]
            buf = BUFFERS + 4096 - rng.choice([0, 1, 2]) * bb
            await c.gather(keys, buf)
            moved["gathered"] += count
            # Write back distinct rows from a buffer the "GPU" changed.
            uniq = list(dict.fromkeys(keys))
            wb_buf = BUFFERS + 0x2_0000 + 4096 - rng.choice([0, 1]) * bb
            c.put(wb_buf, bytes(rng.getrandbits(8) for _ in range(len(uniq) * row_bytes)))
            await c.write_back(uniq, wb_buf)
            moved["written"] += len(uniq)
    # The working-set hazard: write-back k then gather k+1 that reuses its rows, queued
    # back to back; the gather must read the written rows.
    row_bytes = c.spec.get("hazard_row_bytes", 2 * bb)
    await c.tables(2, 64, row_bytes)
    for round_ in range(3):
        a = rng.sample(range(64), 24)
        keys_a = [c.key(0, r) for r in a]
        wb_buf = BUFFERS + 0x4_0000
        c.put(wb_buf, bytes(rng.getrandbits(8) for _ in range(len(keys_a) * row_bytes)))
        keys_b = [c.key(0, r) for r in rng.sample(a, 12)] + [c.key(1, rng.randrange(64)) for _ in range(6)]
        before = c.bench.submitted
        await c.write_back(keys_a, wb_buf, wait=False)
        await c.gather(keys_b, BUFFERS + 0x6_0000, list_addr=KEYS + 0x4000, wait=False)
        await c.bench.wait_completed(before + 2)
        assert await c.bench.error() is None
        c.check_memory(f"hazard round {round_}")
        moved["gathered"] += len(keys_b)
        moved["written"] += len(keys_a)
    assert await c.bench.read64("ROWS_GATHERED") == moved["gathered"]
    assert await c.bench.read64("ROWS_WRITTEN") == moved["written"]
    c.report.update(moved)


async def case_errors(c: Case):
    """Every refused command (cause, engine, address; nothing moves), DMA errors, dropped
    queue, FIFO overflow, and recovery without reset."""
    cfg = c.cfg
    b = c.bench
    rng = c.rng
    bb = cfg.bus_bytes
    rb = 2 * bb
    await c.tables(2, 16, rb)
    keys = [c.key(rng.randrange(2), rng.randrange(16)) for _ in range(20)]
    c.put_words(KEYS, keys)
    E, D = ErrorCause, Engine
    await c.expect_error(b.run(9, 1, KEYS, BUFFERS), E.BAD_OPCODE, D.DECODER, what="opcode 9")
    await c.expect_error(b.run(Opcode.GATHER, 0, KEYS, BUFFERS), E.BAD_COUNT, D.DECODER, what="count 0")
    await c.expect_error(b.run(Opcode.LEARN, cfg.max_count + 1, KEYS, RESULTS), E.BAD_COUNT, D.DECODER,
                         what="count too large")
    await c.expect_error(b.run(Opcode.DUMP, cfg.eal.entries - 1, 0, DUMP), E.BAD_COUNT, D.DECODER,
                         what="dump count")
    await c.expect_error(b.run(Opcode.GATHER, 4, KEYS + 4, BUFFERS), E.MISALIGNED, D.DECODER,
                         KEYS + 4, "list address")
    await c.expect_error(b.run(Opcode.GATHER, 4, KEYS, BUFFERS + 8), E.MISALIGNED, D.DECODER,
                         BUFFERS + 8, "buffer address") if bb > 8 else None
    await c.expect_error(b.run(Opcode.LOOKUP, 4, KEYS, RESULTS + 4), E.MISALIGNED, D.DECODER,
                         RESULTS + 4, "result address")
    for bad in (0, bb + 8 if bb > 8 else bb + 4, cfg.max_row_bytes + bb):
        await b.write_ok("ROW_BYTES", bad)
        await c.expect_error(b.run(Opcode.GATHER, 4, KEYS, BUFFERS), E.BAD_ROW_BYTES, D.DECODER,
                             what=f"row bytes {bad}")
    await b.write_ok("ROW_BYTES", rb)
    # Key checks: the bad key's address; nothing moves, the tag store does not change.
    bad_keys = list(keys)
    bad_keys[5] = 1 << cfg.eal.key_bits
    c.put_words(KEYS, bad_keys)
    await c.expect_error(b.run(Opcode.LEARN, 20, KEYS, RESULTS), E.BAD_KEY, D.LIST_CHECK, KEYS + 40,
                         "key above key_bits")
    c.expect_cut_short(Opcode.LEARN, bad_keys, 5, RESULTS)
    await c.expect_error(b.run(Opcode.GATHER, 20, KEYS, BUFFERS), E.BAD_KEY, D.LIST_CHECK, KEYS + 40,
                         "key above key_bits")
    c.expect_cut_short(Opcode.GATHER, bad_keys, 5, BUFFERS)
    c.check_memory("single-pass commands cut short by a bad key")
    bad_keys = list(keys)
    bad_keys[13] = c.key(1, 16)
    c.put_words(KEYS, bad_keys)
    await c.expect_error(b.run(Opcode.WRITE_BACK, 20, KEYS, BUFFERS), E.ROW_OUT_OF_RANGE, D.LIST_CHECK,
                         KEYS + 13 * 8, "row out of range")
    bad_keys[13] = c.key(3, 0)                                  # table 3 has 0 rows
    c.put_words(KEYS, bad_keys)
    await c.expect_error(b.run(Opcode.GATHER, 20, KEYS, BUFFERS), E.ROW_OUT_OF_RANGE, D.LIST_CHECK,
                         KEYS + 13 * 8, "unused table")
    c.expect_cut_short(Opcode.GATHER, bad_keys, 13, BUFFERS)
    base1, stride1, rows1 = c.layout[1]
    await b.set_table(1, base1 + 4, stride1, rows1) if bb > 4 else None
    c.put_words(KEYS, keys)
    if any(k >> cfg.eal.row_bits == 1 for k in keys):
        first = next(i for i, k in enumerate(keys) if k >> cfg.eal.row_bits == 1)
        await c.expect_error(b.run(Opcode.GATHER, 20, KEYS, BUFFERS), E.BAD_TABLE, D.LIST_CHECK,
                             KEYS + 8 * first, "misaligned table base")
        c.expect_cut_short(Opcode.GATHER, keys, first, BUFFERS)
    await b.set_table(1, base1, stride1, rows1)
    _, valid = await c.dump()          # against the golden model (single pass: 5 learned)
    assert valid > 0, "the LEARN cut short by a bad key learned nothing"
    c.check_memory("refused commands")
    # A failed command drops the commands queued behind it, and FIFO overflow is refused.
    dropped0 = await b.read_value("CMD_DROPPED")
    await b.submit(9)
    for _ in range(cfg.cmd_depth):
        _, resp = await b.submit(Opcode.GATHER, 20, KEYS, BUFFERS)
    await ClockCycles(b.dut.clk, 50)
    _, resp = await b.submit(Opcode.GATHER, 20, KEYS, BUFFERS)
    assert resp == RESP_SLVERR, "CMD_SUBMIT on a full FIFO was accepted"
    assert await b.field("REG_ERROR", "refused") == 1
    assert await b.read_value("CMD_FREE") == 0
    err = await b.error()
    assert err is not None and err.cause == E.BAD_OPCODE
    await b.acknowledge()
    assert await b.read_value("CMD_DROPPED") == dropped0 + cfg.cmd_depth
    assert await b.read_value("CMD_FREE") == cfg.cmd_depth
    await b.write_ok("REG_ERROR", 0xFFFF_FFFF)
    c.check_memory("dropped commands")
    # DMA errors. Rows: a read error in table 0's row 3.
    b.submitted = await b.read_value("CMD_SUBMITTED")
    bad_row = c.row_addr(c.key(0, 3))
    keys = [c.key(0, r) for r in (1, 2, 3, 4, 5, 6, 7, 8)]
    mem = c.bench.memory
    mem.inject_error(bad_row, bad_row + rb, RESP_SLVERR, kind="read")
    c.put_words(KEYS, keys)
    snapshot = bytes(c.mirror)
    err = await c.expect_error(b.run(Opcode.GATHER, len(keys), KEYS, BUFFERS), E.READ_SLVERR,
                               D.ROW_READ, what="row read error")
    assert bad_row <= err.address < bad_row + rb
    got = mem.read(0, MEM_SIZE)
    dest = (BUFFERS, BUFFERS + len(keys) * rb)
    assert got[:dest[0]] == snapshot[:dest[0]] and got[dest[1]:] == snapshot[dest[1]:], \
        "a failed gather wrote outside its destination"
    c.mirror[dest[0]:dest[1]] = got[dest[0]:dest[1]]
    mem.clear_errors()
    await c.gather(keys, BUFFERS)                                  # works again, no reset
    # A write error on the buffer of a gather.
    mem.inject_error(BUFFERS + 2 * rb, BUFFERS + 3 * rb, RESP_DECERR, kind="write")
    snapshot = bytes(c.mirror)
    err = await c.expect_error(b.run(Opcode.GATHER, len(keys), KEYS, BUFFERS), E.WRITE_DECERR,
                               D.ROW_WRITE, what="row write error")
    got = mem.read(0, MEM_SIZE)
    assert got[:dest[0]] == snapshot[:dest[0]] and got[dest[1]:] == snapshot[dest[1]:]
    c.mirror[dest[0]:dest[1]] = got[dest[0]:dest[1]]
    mem.clear_errors()
    # A read error on the key list: refused in the check pass, nothing moves.
    mem.inject_error(KEYS + 16, KEYS + 24, RESP_SLVERR, kind="read")
    await c.expect_error(b.run(Opcode.WRITE_BACK, len(keys), KEYS, BUFFERS), E.READ_SLVERR,
                         D.LIST_READ, what="list read error")
    c.check_memory("list read error")
    mem.clear_errors()
    # A write error on lookup results.
    c.put_words(KEYS, keys)
    # Results are written in bursts: an error names the failing burst's address.
    bad_beat = RESULTS + 2 * bb
    mem.inject_error(bad_beat, bad_beat + bb, RESP_SLVERR, kind="write")
    c.golden.learn(torch.tensor(keys, dtype=torch.int64))
    before = len(mem.injected)
    err = await c.expect_error(b.run(Opcode.LEARN, len(keys), KEYS, RESULTS), E.WRITE_SLVERR,
                               D.WORD_WRITE, what="result write error")
    (_, burst, nbytes, _), = mem.injected[before:before + 1]
    assert err.address == burst and burst <= bad_beat < burst + nbytes, (err.address, burst)
    got = mem.read(0, MEM_SIZE)
    c.mirror[RESULTS:RESULTS + 8 * len(keys)] = got[RESULTS:RESULTS + 8 * len(keys)]
    c.check_memory("result write error")
    mem.clear_errors()
    await c.dump()                                                 # the learn still happened
    await c.gather(keys, BUFFERS)
    c.report["errors_counted"] = await b.read64("ERRORS")


async def case_reset(c: Case):
    """Reset in the middle of a learn: the core clears its tag store (STATUS.init) and its
    registers, and works on."""
    b = c.bench
    rng = c.rng
    keys = [rng.randrange(1 << c.cfg.eal.key_bits) for _ in range(3000)]
    c.put_words(KEYS, keys)
    await b.write_ok("ROW_BYTES", 2 * c.cfg.bus_bytes)
    await b.submit(Opcode.LEARN, len(keys), KEYS, RESULTS)
    await ClockCycles(b.dut.clk, 1500)
    assert await b.field("STATUS", "busy") == 1, "the learn should still run"
    await b.reset()
    assert await b.field("STATUS", "init") == 1, "no clear after reset"
    await b.wait_ready()
    assert await b.read_value("ROW_BYTES") == c.cfg.bus_bytes, "registers not reset"
    assert await b.read_value("CMD_COMPLETED") == 0
    got = b.memory.read(RESULTS, 8 * len(keys))                    # cut short by the reset
    c.mirror[RESULTS:RESULTS + 8 * len(keys)] = got
    _, valid = await c.dump()
    assert valid == 0, "the tag store survived the reset"
    await c.lookups(keys[:500], True)
    await c.dump()


async def case_move_error(c: Case):
    """A list read that fails part-way: the list's last burst fails on its first read for the
    single-pass GATHER and LEARN, and on its second read for WRITE_BACK (a failure in the move
    pass after a clean check pass, by the n-th-access injector). The error names the failed
    burst, and exactly what :meth:`Case.list_error_moves` says moved (the keys before the lost
    word); then the same commands run cleanly."""
    cfg, b, rng, mem = c.cfg, c.bench, c.rng, c.bench.memory
    rb = 2 * cfg.bus_bytes
    await c.tables(2, 32, rb)
    n = 2 * cfg.read_ids + 7
    keys = [c.key(0, 0)] + [c.key(rng.randrange(2), rng.randrange(1, 32)) for _ in range(n - 1)]
    lo, hi = KEYS + 8 * (n - 1), KEYS + 8 * n          # the last word: one burst per pass
    nth = c.list_reads_before_move(Opcode.GATHER) + 1
    E, D = ErrorCause, Engine
    # GATHER
    c.put_words(KEYS, keys)
    mem.inject_error_nth(lo, hi, nth, RESP_SLVERR, kind="read")
    before = len(mem.injected)
    err = await c.expect_error(b.run(Opcode.GATHER, n, KEYS, BUFFERS), E.READ_SLVERR,
                               D.LIST_READ, what="gather list re-read error")
    failed = mem.injected[before:]
    assert len(failed) == 1, f"expected one failed list burst, got {failed}"
    assert failed[0][1] <= err.address < failed[0][1] + failed[0][2], \
        f"ERR_ADDR {err.address:#x} is not in the failed burst {failed[0]}"
    moved = c.list_error_moves(keys, KEYS, failed, Opcode.GATHER)
    assert len(moved) < n or any(k != keys[i] for i, k in moved), "nothing was lost"
    for i, k in moved:
        a = c.row_addr(k)
        c.expect(BUFFERS + i * rb, c.mirror[a:a + rb])
    c.check_memory("gather whose list re-read failed")
    mem.clear_errors()
    await c.gather(keys, BUFFERS)
    # LEARN: the tag store learns the moved keys (in order), their results are written.
    mem.inject_error_nth(lo, hi, nth, RESP_DECERR, kind="read")
    before = len(mem.injected)
    err = await c.expect_error(b.run(Opcode.LEARN, n, KEYS, RESULTS), E.READ_DECERR,
                               D.LIST_READ, what="learn list re-read error")
    failed = mem.injected[before:]
    assert len(failed) == 1 and failed[0][1] <= err.address < failed[0][1] + failed[0][2]
    moved = c.list_error_moves(keys, KEYS, failed, Opcode.LEARN)
    exp = c.golden.learn(torch.tensor([k for _, k in moved], dtype=torch.int64))
    for (i, _), h, s in zip(moved, exp.hit.tolist(), exp.slot.tolist()):
        c.expect(RESULTS + 8 * i, ((int(s) & 0xFFFF_FFFF) | (int(h) << 32)).to_bytes(8, "little"))
    c.check_memory("learn whose list re-read failed")
    mem.clear_errors()
    await c.dump()
    await c.lookups(keys, True)
    c.report["lost_keys"] = n - sum(1 for i, k in moved if k == keys[i])
    # WRITE_BACK: distinct rows (two writes of one row may land in either order), a clean
    # check pass, then the move pass's read of the last burst fails: the rows of the keys
    # before the lost word are written back, nothing else.
    wb_n = min(n, 64)
    wb_keys = rng.sample([c.key(t, r) for t in range(2) for r in range(32)], wb_n)
    src = BUFFERS + 0x1_0000
    c.put(src, bytes(rng.randrange(256) for _ in range(wb_n * rb)))
    c.put_words(KEYS, wb_keys)
    lo = KEYS + 8 * (wb_n - 1)
    mem.inject_error_nth(lo, lo + 8, c.list_reads_before_move(Opcode.WRITE_BACK) + 1,
                         RESP_SLVERR, kind="read")
    before = len(mem.injected)
    err = await c.expect_error(b.run(Opcode.WRITE_BACK, wb_n, KEYS, src), E.READ_SLVERR,
                               D.LIST_READ, what="write-back move-pass list read error")
    failed = mem.injected[before:]
    assert len(failed) == 1 and failed[0][1] <= err.address < failed[0][1] + failed[0][2]
    moved = c.list_error_moves(wb_keys, KEYS, failed, Opcode.WRITE_BACK)
    assert 0 < len(moved) < wb_n, len(moved)
    for i, k in moved:
        a = c.row_addr(k)
        c.expect(a, c.mirror[src + i * rb:src + (i + 1) * rb])
    c.check_memory("write-back whose move-pass list read failed")
    mem.clear_errors()
    await c.write_back(wb_keys, src)


async def case_dump_error(c: Case):
    """A write error on the third DUMP burst: the other words land, the failed burst changes
    nothing, the error names it; a clean DUMP follows."""
    cfg, b, rng, mem = c.cfg, c.bench, c.rng, c.bench.memory
    e = cfg.eal
    await c.lookups([rng.randrange(1 << e.key_bits) for _ in range(e.entries // 2)], True)
    data, _ = c.dump_words()
    old = bytes(c.mirror[DUMP:DUMP + len(data)])
    mem.inject_error_nth(DUMP, DUMP + len(data), 3, RESP_SLVERR, kind="write")
    before = len(mem.injected)
    err = await c.expect_error(b.run(Opcode.DUMP, e.entries, 0, DUMP), ErrorCause.WRITE_SLVERR,
                               Engine.WORD_WRITE, what="dump write error")
    failed = mem.injected[before:]
    assert len(failed) == 1, f"expected one failed dump burst, got {failed}"
    _, addr, nbytes, _ = failed[0]
    assert addr <= err.address < addr + nbytes, f"ERR_ADDR {err.address:#x} not in {failed[0]}"
    # The failed burst's strobed bytes keep their old value (a beat may carry one word).
    (waddr, strobed), = mem.failed_writes[-1:]
    assert waddr == addr
    kept = {waddr + j for j, on in enumerate(strobed) if on}
    assert kept and all(DUMP <= a < DUMP + len(data) for a in kept), "strobes outside DUMP"
    # After the error B no new burst starts, but bursts already issued land: so the dump
    # region holds new words up to some point (the failed burst excepted) and old ones after
    # it. Which point depends on the B latency; nothing lands outside the region.
    got = mem.read(DUMP, len(data))
    landed = [got[j] == data[j] for j in range(len(data))]
    changed = [j for j in range(len(data)) if data[j] != old[j]]
    assert all(got[j] in (data[j], old[j]) for j in range(len(data))), "a dump byte is neither"
    assert all(got[a - DUMP] == old[a - DUMP] for a in kept), "the failed burst landed"
    first_old = next((j for j in changed if not landed[j] and DUMP + j not in kept), len(data))
    late = [j for j in changed if j > first_old and landed[j]]
    assert not late, f"dump words landed after a gap (byte {late[0]:#x} of the dump)"
    c.expect(DUMP, got)
    c.check_memory("dump with a failed write burst")
    mem.clear_errors()
    await c.dump()


async def case_reset_gather(c: Case):
    """Reset in the middle of a GATHER with row reads in flight (long read latency): the
    core and the registers reset, nothing outside the destination changed, and the next
    GATHER, WRITE_BACK and LEARN are exact."""
    cfg, b, rng, mem = c.cfg, c.bench, c.rng, c.bench.memory
    rb = 4 * cfg.bus_bytes
    rows = 64
    await c.tables(2, rows, rb)
    n = 3 * cfg.read_ids
    keys = [c.key(rng.randrange(2), rng.randrange(rows)) for _ in range(n)]
    c.put_words(KEYS, keys)
    latency = mem.read_latency
    mem.read_latency = max(latency, 200)
    list_beats = -(-8 * n // cfg.bus_bytes)
    beats0 = mem.read_beats
    await b.submit(Opcode.GATHER, n, KEYS, BUFFERS)
    # Rows are read once both list passes are in: wait for row reads in flight.
    await b.wait_until(lambda: mem.read_beats - beats0 > 2 * list_beats + 4
                       and mem.reads_in_flight >= 2,
                       b.command_budget(Opcode.GATHER, n), "row reads of the GATHER in flight")
    c.report["reads_in_flight_at_reset"] = mem.reads_in_flight
    await b.reset()
    mem.read_latency = latency
    assert await b.field("STATUS", "init") == 1, "no clear after reset"
    await b.wait_ready()
    assert await b.read_value("ROW_BYTES") == cfg.bus_bytes, "registers not reset"
    assert await b.read_value("TABLE0_ROWS") == 0, "table registers not reset"
    assert await b.read_value("CMD_COMPLETED") == 0 and await b.read_value("CMD_SUBMITTED") == 0
    assert await b.read64("ROWS_GATHERED") == 0
    dest = (BUFFERS, BUFFERS + n * rb)
    got = mem.read(0, MEM_SIZE)
    c.mirror[dest[0]:dest[1]] = got[dest[0]:dest[1]]               # cut short by the reset
    c.check_memory("reset mid-gather: nothing outside the destination")
    await c.tables(2, rows, rb)
    await c.gather(keys, BUFFERS)
    uniq = list(dict.fromkeys(keys))
    wb_buf = BUFFERS + 0x2_0000
    c.put(wb_buf, rng.randbytes(len(uniq) * rb))
    await c.write_back(uniq, wb_buf)
    c.golden.clear()
    await c.lookups(keys, True)
    await c.dump()


async def case_err_ack(c: Case):
    """ERR_ACK while not halted is harmless: idle (nothing changes) and while a LEARN runs
    with a LOOKUP queued behind it (both complete, exact, nothing dropped)."""
    cfg, b, rng = c.cfg, c.bench, c.rng
    e = cfg.eal
    status0 = await b.read_value("STATUS")
    dropped0 = await b.read_value("CMD_DROPPED")
    await b.write_ok("ERR_ACK", 1)
    await ClockCycles(b.dut.clk, 20)
    assert await b.read_value("STATUS") == status0, "ERR_ACK while idle changed STATUS"
    assert await b.read_value("CMD_DROPPED") == dropped0
    assert await b.read_value("ERR_CAUSE") == 0
    keys = [rng.randrange(1 << e.key_bits) for _ in range(600)]
    probe = [rng.choice(keys) if rng.random() < 0.7 else rng.randrange(1 << e.key_bits)
             for _ in range(300)]
    c.put_words(KEYS, keys)
    c.put_words(KEYS + 0x8000, probe)
    await b.write_ok("POPULAR_MAX_RRPV", 3)
    for ks, at, learn in ((keys, RESULTS, True), (probe, RESULTS + 0x8000, False)):
        t = torch.tensor(ks, dtype=torch.int64)
        exp = c.golden.learn(t) if learn else c.golden.lookup(t, popular_max_rrpv=3)
        words = [(int(s) & 0xFFFF_FFFF) | (int(h) << 32)
                 for h, s in zip(exp.hit.tolist(), exp.slot.tolist())]
        c.expect(at, np.asarray(words, dtype="<u8").tobytes())
    before = b.submitted
    await b.submit(Opcode.LEARN, len(keys), KEYS, RESULTS)
    await b.submit(Opcode.LOOKUP, len(probe), KEYS + 0x8000, RESULTS + 0x8000)
    assert await b.field("STATUS", "busy") == 1
    await b.write_ok("ERR_ACK", 1)
    await b.wait_completed(before + 2)
    assert await b.error() is None
    assert await b.read_value("CMD_DROPPED") == dropped0, "ERR_ACK while running dropped commands"
    c.check_memory("learn and lookup with an ERR_ACK while busy")
    await c.dump()


async def case_submit_drop(c: Case):
    """CMD_SUBMIT in the cycles right after ERR_ACK, while the sequencer drops the queue
    behind a failed command: the count adds up (submitted = completed + dropped), the new
    LOOKUP either is dropped (memory unchanged) or runs (exact results), the error clears,
    and the next commands run."""
    cfg, b, rng = c.cfg, c.bench, c.rng
    e = cfg.eal
    keys = [rng.randrange(1 << e.key_bits) for _ in range(300)]
    await c.lookups(keys, True)
    probe = keys[:100] + [rng.randrange(1 << e.key_bits) for _ in range(50)]
    c.put_words(KEYS + 0x8000, probe)
    await b.write_ok("POPULAR_MAX_RRPV", 3)
    dropped0 = await b.read_value("CMD_DROPPED")
    await b.submit(9)                                              # fails: halts
    queued = cfg.cmd_depth - 1
    for _ in range(queued):
        await b.submit(Opcode.LOOKUP, len(keys), KEYS, RESULTS + 0x4000)
    for _ in range(100):
        if await b.field("STATUS", "halted"):
            break
    else:
        raise AssertionError("bad opcode did not halt")
    # Stage the LOOKUP, then ERR_ACK and CMD_SUBMIT back to back on the register bus.
    ctrl = b.rmap["CMD_CTRL"]
    await b.write_ok("CMD_CTRL", int(Opcode.LOOKUP) << ctrl.field("opcode").lsb)
    await b.write_ok("CMD_COUNT", len(probe))
    for reg, v in (("CMD_ADDR0_LO", KEYS + 0x8000), ("CMD_ADDR0_HI", 0),
                   ("CMD_ADDR1_LO", RESULTS + 0x8000), ("CMD_ADDR1_HI", 0)):
        await b.write_ok(reg, v)
    ack = cocotb.start_soon(b.write("ERR_ACK", 1))
    resp = await b.write("CMD_SUBMIT", 1)
    assert await ack == RESP_OKAY
    submitted = await b.read_value("CMD_SUBMITTED")
    b.submitted = submitted
    b.outstanding = [(submitted - 1, int(Opcode.LOOKUP), len(probe),
                      b.command_budget(Opcode.LOOKUP, len(probe)))]
    await b.wait_completed(submitted)
    assert await b.field("STATUS", "halted") == 0, "halted after ERR_ACK"
    assert await b.read_value("ERR_CAUSE") == 0
    dropped = await b.read_value("CMD_DROPPED") - dropped0
    completed = await b.read_value("CMD_COMPLETED")
    assert completed + await b.read_value("CMD_DROPPED") == submitted, "commands lost"
    if resp == RESP_OKAY and dropped == queued:                    # the new one ran
        exp = c.golden.lookup(torch.tensor(probe, dtype=torch.int64), popular_max_rrpv=3)
        words = [(int(s) & 0xFFFF_FFFF) | (int(h) << 32)
                 for h, s in zip(exp.hit.tolist(), exp.slot.tolist())]
        c.expect(RESULTS + 0x8000, np.asarray(words, dtype="<u8").tobytes())
        c.report["new_command"] = "ran"
    else:
        assert dropped == queued + (resp == RESP_OKAY), f"{dropped} dropped, {queued} queued"
        c.report["new_command"] = "dropped" if resp == RESP_OKAY else "refused"
    c.check_memory("submit while dropping")
    await b.write_ok("REG_ERROR", 0xFFFF_FFFF)
    await c.lookups(probe, False, 2)
    await c.lookups(keys[:50], True)


async def case_default_mix(c: Case):
    """A short tour on a wide configuration (e.g. DEFAULT_DEVICE: 4 lanes, 128 read IDs):
    learn (list across 4 KiB), dump, frozen lookup, a gather of more rows than read IDs, a
    write-back, a refused command, a row read error and recovery."""
    cfg, b, rng, mem = c.cfg, c.bench, c.rng, c.bench.memory
    e = cfg.eal
    space = 1 << e.key_bits
    hot = [rng.randrange(space) for _ in range(e.entries // 4)]
    draw = lambda n: [rng.choice(hot) if rng.random() < 0.6 else rng.randrange(space)
                      for _ in range(n)]
    await c.lookups(draw(c.spec.get("n", 800)), True, keys_addr=KEYS + 4096 - 8 * 5)
    await c.dump()
    await c.lookups(draw(400), False, 2)
    rb = 2 * cfg.bus_bytes
    await c.tables(3, 64, rb, stride_pad=1)
    n = cfg.read_ids + 5
    keys = [c.key(rng.randrange(3), rng.randrange(64)) for _ in range(n)]
    await c.gather(keys, BUFFERS + 4096 - cfg.bus_bytes)
    uniq = list(dict.fromkeys(keys))
    c.put(BUFFERS + 0x4_0000, rng.randbytes(len(uniq) * rb))
    await c.write_back(uniq, BUFFERS + 0x4_0000)
    bad = list(keys[:8])
    bad[3] = c.key(2, 64)
    c.put_words(KEYS, bad)
    await c.expect_error(b.run(Opcode.GATHER, 8, KEYS, BUFFERS), ErrorCause.ROW_OUT_OF_RANGE,
                         Engine.LIST_CHECK, KEYS + 24, "row out of range")
    c.expect_cut_short(Opcode.GATHER, bad, 3, BUFFERS)       # the three rows before it
    c.check_memory("gather cut short by a bad key")
    bad_row = c.row_addr(keys[5])
    mem.inject_error(bad_row, bad_row + rb, RESP_SLVERR, kind="read")
    c.put_words(KEYS, keys)
    snapshot = bytes(c.mirror)
    err = await c.expect_error(b.run(Opcode.GATHER, n, KEYS, BUFFERS), ErrorCause.READ_SLVERR,
                               Engine.ROW_READ, what="row read error")
    assert bad_row <= err.address < bad_row + rb
    got = mem.read(0, MEM_SIZE)
    dest = (BUFFERS, BUFFERS + n * rb)
    assert got[:dest[0]] == snapshot[:dest[0]] and got[dest[1]:] == snapshot[dest[1]:], \
        "a failed gather wrote outside its destination"
    c.mirror[dest[0]:dest[1]] = got[dest[0]:dest[1]]
    mem.clear_errors()
    await c.gather(keys, BUFFERS)
    c.report["lanes"] = e.lanes



async def case_workload(dut, spec):
    """``make sim``'s device run on a real workload (no memory mirror: the tables are far
    larger than what is touched): LEARN the sample, DUMP, then per working set LOOKUP its
    keys, build the cold list from the device's own hit flags (checked against the golden
    fragmenter), GATHER those rows, change them as training would, WRITE_BACK. Every result
    word, dump entry, cold list and row byte is compared; the report has per-command cycles
    and bytes."""
    import mmap
    from verif.golden import fragment
    w = np.load(spec["workload"])
    cfg = config_from_dict(spec["config"])
    e = cfg.eal
    dim, rb = spec["dim"], 4 * spec["dim"]
    table_rows = w["table_rows"].tolist()
    learn_keys = w["learn_keys"]
    ws_sparse, ws_offsets = w["ws_sparse"], w["ws_offsets"].tolist()
    n_keys = max(len(learn_keys), max(b - a for a, b in zip(ws_offsets, ws_offsets[1:])) * len(table_rows))
    # Layout: scratch lists first, then the tables, each on a 4 KiB boundary.
    keys_at = 0x1000
    res_at = keys_at + (8 * n_keys + 4095) // 4096 * 4096
    dump_at = res_at + (8 * n_keys + 4095) // 4096 * 4096
    buf_at = dump_at + (8 * e.entries + 4095) // 4096 * 4096
    base = buf_at + (rb * n_keys + 4095) // 4096 * 4096
    bases = []
    for rows in table_rows:
        bases.append(base)
        base += (rows * rb + 4095) // 4096 * 4096
    mem = mmap.mmap(-1, base)                      # pages appear when touched
    bench = DeviceBench(dut, cfg, mem=mem, seed=spec["seed"], read_latency=spec["read_latency"],
                        write_latency=spec["write_latency"])
    await bench.start()
    await bench.wait_ready()
    for t, rows in enumerate(table_rows):
        await bench.set_table(t, bases[t], rb, rows)
    await bench.write_ok("ROW_BYTES", rb)
    golden = AccessLogger(e)
    rng = np.random.default_rng(spec["seed"])
    stats = {op: {"commands": 0, "count": 0, "cycles": 0, "bytes": 0}
             for op in ("LEARN", "DUMP", "LOOKUP", "GATHER", "WRITE_BACK")}
    compared = mismatched = 0

    def put_words(addr, words):
        mem[addr:addr + 8 * len(words)] = np.asarray(words, dtype="<u8").tobytes()

    def words_at(addr, n):
        return np.frombuffer(mem[addr:addr + 8 * n], dtype="<u8")

    async def run(op, count, a0, a1, nbytes=0):
        cycles = await bench.run(op, count, a0, a1)
        st = stats[op.name]
        st["commands"] += 1
        st["count"] += count
        st["cycles"] += cycles
        st["bytes"] += nbytes

    def row_addr(key):
        return bases[key >> e.row_bits] + (key & ((1 << e.row_bits) - 1)) * rb

    # LEARN, results and dump against the golden model.
    put_words(keys_at, learn_keys)
    exp = golden.learn(torch.tensor(learn_keys, dtype=torch.int64))
    await run(Opcode.LEARN, len(learn_keys), keys_at, res_at)
    want = (exp.slot.numpy().astype(np.uint64) & 0xFFFFFFFF) | (exp.hit.numpy().astype(np.uint64) << 32)
    got = words_at(res_at, len(learn_keys))
    compared += len(want)
    mismatched += int((got != want).sum())
    st = golden.state
    want = ((st["tag"].reshape(-1).numpy().astype(np.uint64) & ((1 << 60) - 1))
            | (st["rrpv"].reshape(-1).numpy().astype(np.uint64) << 60)
            | (st["valid"].reshape(-1).numpy().astype(np.uint64) << 63))
    await run(Opcode.DUMP, e.entries, 0, dump_at)
    got = words_at(dump_at, e.entries)
    compared += len(want)
    mismatched += int((got != want).sum())
    await bench.write_ok("POPULAR_MAX_RRPV", e.popular_max_rrpv)
    rows_state = {}
    ws_report = []
    for a, b in zip(ws_offsets, ws_offsets[1:]):
        sparse = torch.tensor(ws_sparse[a:b], dtype=torch.int64)
        keys = ((torch.arange(sparse.shape[1]) << e.row_bits) | sparse).reshape(-1).numpy()
        put_words(keys_at, keys)
        await run(Opcode.LOOKUP, len(keys), keys_at, res_at)
        res = words_at(res_at, len(keys))
        hit = (res >> 32) & 1
        sched = fragment(sparse, golden, 128)
        compared += len(keys)
        mismatched += int((hit.astype(bool) != sched.hit.reshape(-1).numpy()).sum())
        # The cold list from the device's own hit flags, first-seen order.
        cold = list(dict.fromkeys(int(k) for k, h in zip(keys, hit) if not h))
        compared += 1
        mismatched += int(cold != [int(k) for k in
                                   ((sched.cold_tables << e.row_bits) | sched.cold_rows).tolist()])
        for k in cold:
            if k not in rows_state:
                data = rng.bytes(rb)
                rows_state[k] = data
                mem[row_addr(k):row_addr(k) + rb] = data
        put_words(keys_at, cold)
        await run(Opcode.GATHER, len(cold), keys_at, buf_at, len(cold) * rb)
        gathered = mem[buf_at:buf_at + len(cold) * rb]
        want = b"".join(rows_state[k] for k in cold)
        compared += len(cold)
        mismatched += sum(gathered[i * rb:(i + 1) * rb] != want[i * rb:(i + 1) * rb]
                          for i in range(len(cold)))
        # "Training" changes every gathered row; write-back must store the new rows.
        updated = rng.bytes(len(cold) * rb)
        mem[buf_at:buf_at + len(cold) * rb] = updated
        await run(Opcode.WRITE_BACK, len(cold), keys_at, buf_at, len(cold) * rb)
        for i, k in enumerate(cold):
            rows_state[k] = updated[i * rb:(i + 1) * rb]
            compared += 1
            mismatched += mem[row_addr(k):row_addr(k) + rb] != rows_state[k]
        ws_report.append({"inputs": int(b - a), "cold_rows": len(cold),
                          "popular_inputs": int(sched.popular.sum())})
    counters = {name: await bench.read64(name) for name in
                ("LOOKUPS", "HITS", "ROWS_GATHERED", "ROWS_WRITTEN", "BYTES_READ",
                 "BYTES_WRITTEN", "READ_STALL_CYCLES", "CYCLES")}
    return {"stats": stats, "compared": compared, "mismatches": int(mismatched),
            "working_sets": ws_report, "counters": counters, "bus_bytes": cfg.bus_bytes}



async def case_gather_bench(dut, spec):
    """Whole GATHER commands (decode, the list read once with its inline check, rows) for each
    host latency and row size of the spec: cycles from CMD_SUBMIT to completion; every
    gathered byte is checked."""
    cfg = config_from_dict(spec["config"])
    e = cfg.eal
    rows_per_table = 4096
    max_rb = max(spec["row_sizes"])
    n_max = max(spec["beats"] * cfg.bus_bytes // rb for rb in spec["row_sizes"])
    table_at = 1 << 20
    buf_at = table_at + rows_per_table * max_rb + 4096
    mem_size = buf_at + n_max * max_rb + 4096
    bench = DeviceBench(dut, cfg, mem_size=mem_size, seed=spec["seed"])
    await bench.start()
    await bench.wait_ready()
    rng = random.Random(spec["seed"])
    mem = bench.memory
    mem.write(table_at, rng.randbytes(rows_per_table * max_rb))
    out = []
    for latency in spec["latencies"]:
        mem.read_latency = mem.write_latency = latency
        for rb in spec["row_sizes"]:
            n = spec["beats"] * cfg.bus_bytes // rb
            await bench.set_table(0, table_at, rb, rows_per_table)
            await bench.write_ok("ROW_BYTES", rb)
            keys = [rng.randrange(rows_per_table) for _ in range(n)]
            mem.write(0x1000, np.asarray(keys, dtype="<u8").tobytes())
            wall = time.perf_counter()
            cycles = await bench.run(Opcode.GATHER, n, 0x1000, buf_at)
            wall = time.perf_counter() - wall
            got = mem.read(buf_at, n * rb)
            table = mem.read(table_at, rows_per_table * rb)
            bad = sum(got[i * rb:(i + 1) * rb] != table[k * rb:(k + 1) * rb]
                      for i, k in enumerate(keys))
            out.append({"latency": latency, "row_bytes": rb, "rows": n, "cycles": cycles,
                        "bytes": n * rb, "wall": wall, "bad_rows": int(bad)})
    return {"runs": out, "bus_bytes": cfg.bus_bytes}


CASES = {"registers": case_registers, "lookups": case_lookups, "rows": case_rows,
         "errors": case_errors, "reset": case_reset, "move_error": case_move_error,
         "dump_error": case_dump_error, "reset_gather": case_reset_gather,
         "err_ack": case_err_ack, "submit_drop": case_submit_drop,
         "default_mix": case_default_mix}


def finish(bench, report):
    """After every case: no AXI handshake or host-memory protocol violation; the functional
    coverage bins to ``functional_coverage.json`` (the work folder) and the log."""
    bench.check_protocol(f"case {report.get('case')}")
    bench.coverage.write("functional_coverage.json")
    for line in report_bins(bench.coverage.to_json()) + (bench.monitor.summary() if bench.monitor else []):
        bench.dut._log.info(line)
    report["budget_use"] = round(bench.budget_use, 3)


@cocotb.test()
async def run_case(dut):
    """Plays the case named by HOTLINE_CASE and writes its report."""
    with open(os.environ["HOTLINE_CASE"]) as f:
        spec = json.load(f)
    if spec["case"] in ("workload", "gather_bench"):
        report = await (case_workload if spec["case"] == "workload" else case_gather_bench)(dut, spec)
        finish(DeviceBench.last, report)
        with open(spec["report"], "w") as f:
            json.dump(report, f)
        return
    case = Case(dut, spec)
    await case.start()
    started = cocotb.utils.get_sim_time("ns") // 10
    await CASES[spec["case"]](case)
    case.report["cycles"] = cocotb.utils.get_sim_time("ns") // 10 - started
    case.report["case"] = spec["case"]
    finish(case.bench, case.report)
    with open(spec["report"], "w") as f:
        json.dump(case.report, f)



# ---------------------------------------------------------------------------------------
# rate benchmark (issue 21): LEARN / LOOKUP / DUMP throughput, run by verif/bench_device.py
# ---------------------------------------------------------------------------------------

from cocotb.triggers import RisingEdge  # noqa: E402  (only the benchmark samples every edge)

class BusActivity:
    """Watches the ``m_axi`` handshakes once per clock edge and keeps, per window (one
    command), the first and last cycle of each channel's handshakes, their counts, and the
    read beats and write bursts outstanding (requested, not yet answered) over time.

    Only the DUT's ports are visible in the Verilated model, so this is what tells a stalled
    list reader (read beats outstanding pinned at its FIFO credit) from a stalled burst
    writer (write bursts outstanding pinned at ``bursts_in_flight``)."""

    def __init__(self, dut, prefix="m_axi"):
        self.clk = dut.clk
        s = lambda name: getattr(dut, f"{prefix}_{name}")
        self.ar = (s("arvalid"), s("arready"), s("arlen"))
        self.r = (s("rvalid"), s("rready"))
        self.aw = (s("awvalid"), s("awready"))
        self.w = (s("wvalid"), s("wready"))
        self.b = (s("bvalid"), s("bready"))
        self.cycle = 0
        self.read_out = 0          # read beats requested and not yet returned
        self.write_out = 0         # write bursts whose AW was taken and whose B was not
        self.open(0, 0)

    def open(self, read_cap, write_cap):
        """Start a window; ``read_cap`` beats / ``write_cap`` bursts: the limits whose
        cycles at the limit are counted."""
        self.read_cap, self.write_cap = read_cap, write_cap
        self.first, self.last = {}, {}
        self.n = dict.fromkeys(("ar", "r", "aw", "w", "b"), 0)
        self.st = dict.fromkeys(("cycles", "read_out_sum", "write_out_sum", "read_out_max",
                                 "write_out_max", "at_read_cap", "at_write_cap",
                                 "ar_waits", "aw_waits", "w_waits", "w_offered"), 0)

    def _hit(self, ch):
        self.n[ch] += 1
        self.first.setdefault(ch, self.cycle)
        self.last[ch] = self.cycle

    async def run(self):
        edge = RisingEdge(self.clk)
        ar_v, ar_r, ar_len = self.ar
        r_v, r_r = self.r
        aw_v, aw_r = self.aw
        w_v, w_r = self.w
        b_v, b_r = self.b
        while True:
            await edge
            self.cycle += 1
            st = self.st
            if ar_v.value:
                if ar_r.value:
                    self._hit("ar")
                    self.read_out += int(ar_len.value) + 1
                else:
                    st["ar_waits"] += 1
            if r_v.value and r_r.value:
                self._hit("r")
                self.read_out -= 1
            if aw_v.value:
                if aw_r.value:
                    self._hit("aw")
                    self.write_out += 1
                else:
                    st["aw_waits"] += 1
            if w_v.value:
                st["w_offered"] += 1
                if w_r.value:
                    self._hit("w")
                else:
                    st["w_waits"] += 1
            if b_v.value and b_r.value:
                self._hit("b")
                self.write_out -= 1
            st["cycles"] += 1
            st["read_out_sum"] += self.read_out
            st["write_out_sum"] += self.write_out
            st["read_out_max"] = max(st["read_out_max"], self.read_out)
            st["write_out_max"] = max(st["write_out_max"], self.write_out)
            st["at_read_cap"] += self.read_cap and self.read_out > self.read_cap - 8
            st["at_write_cap"] += self.write_cap and self.write_out >= self.write_cap

    def window(self):
        """The window's figures as a plain dict."""
        return {"first": dict(self.first), "last": dict(self.last), "handshakes": dict(self.n),
                **self.st}


async def case_rate_bench(dut, spec):
    """LEARN and LOOKUP of ``n`` keys and a DUMP, at each host latency of the spec (read and
    write latency equal, no pauses): per command the cycles from ``CMD_SUBMIT`` to the
    completion seen by polling (``end_to_end``), from the first list read request to the last
    write response (``bus``), and from the first key beat returned to the last result beat
    written (``stream``: the steady rate, without the fixed latencies), with the bus
    activity of the window. Every result word and dump entry is checked against the golden
    model."""
    from hotline_hw.dma.list_reader import list_fifo_beats
    cfg = config_from_dict(spec["config"])
    e = cfg.eal
    assert e.policy == "srrip", "the dump check below knows the srrip entry word only"
    n = spec["n"]
    keys_at = 0x1000
    res_at = keys_at + (8 * n + 4095) // 4096 * 4096
    dump_at = res_at + (8 * n + 4095) // 4096 * 4096
    mem_size = dump_at + (8 * e.entries + 4095) // 4096 * 4096
    bench = DeviceBench(dut, cfg, mem_size=mem_size, seed=spec["seed"], monitor=False,
                        read_latency=spec["latencies"][0], write_latency=spec["latencies"][0],
                        budget_scale=spec.get("budget_scale", 8.0))
    await bench.start()
    await bench.wait_ready()
    mem = bench.memory
    act = BusActivity(dut)
    cocotb.start_soon(act.run())
    golden = AccessLogger(e)
    rng = random.Random(spec["seed"])
    space = 1 << e.key_bits
    hot = [rng.randrange(space) for _ in range(e.entries // 2)]
    read_cap = list_fifo_beats(cfg)
    write_cap = max(2, cfg.word_writes // cfg.burst_beats)
    threshold = e.popular_max_rrpv
    await bench.write_ok("POPULAR_MAX_RRPV", threshold)
    out = []
    mismatches = 0

    async def command(op, count, a0, a1):
        act.open(read_cap, write_cap)
        started = bench.cycles()
        seq, resp = await bench.submit(op, count, a0, a1)
        assert resp == RESP_OKAY, f"CMD_SUBMIT answered {resp}"
        submitted = bench.cycles()
        await bench.wait_completed(seq + 1, poll=1)
        done = bench.cycles()
        err = await bench.error()
        assert err is None, f"{Opcode(op).name} failed: {err}"
        w = act.window()
        # Window cycles relative to the submit; the sampler's clock and the sim time agree.
        offset = bench.cycles() - act.cycle
        w["submitted"] = submitted - offset
        w["done"] = done - offset
        w["staged"] = started - offset
        return w

    for latency in spec["latencies"]:
        mem.read_latency = mem.write_latency = latency
        for op in (Opcode.LEARN, Opcode.LOOKUP):
            keys = [rng.choice(hot) if rng.random() < 0.6 else rng.randrange(space)
                    for _ in range(n)]
            mem.write(keys_at, np.asarray(keys, dtype="<u8").tobytes())
            t = torch.tensor(keys, dtype=torch.int64)
            exp = golden.learn(t) if op == Opcode.LEARN else golden.lookup(
                t, popular_max_rrpv=threshold)
            w = await command(op, n, keys_at, res_at)
            want = ((exp.slot.numpy().astype(np.uint64) & 0xFFFF_FFFF)
                    | (exp.hit.numpy().astype(np.uint64) << 32))
            got = np.frombuffer(mem.read(res_at, 8 * n), dtype="<u8")
            bad = int((got != want).sum())
            mismatches += bad
            out.append({"command": op.name, "latency": latency, "n": n, "bad": bad,
                        "hits": int(exp.hit.sum()), **w})
        st = golden.state
        want = ((st["tag"].reshape(-1).numpy().astype(np.uint64) & ((1 << 60) - 1))
                | (st["rrpv"].reshape(-1).numpy().astype(np.uint64) << 60)
                | (st["valid"].reshape(-1).numpy().astype(np.uint64) << 63))
        w = await command(Opcode.DUMP, e.entries, 0, dump_at)
        got = np.frombuffer(mem.read(dump_at, 8 * e.entries), dtype="<u8")
        bad = int((got != want).sum())
        mismatches += bad
        out.append({"command": "DUMP", "latency": latency, "n": e.entries, "bad": bad,
                    "beats": e.entries * 8 // cfg.bus_bytes, **w})
    return {"runs": out, "mismatches": mismatches, "bus_bytes": cfg.bus_bytes,
            "lanes": e.lanes, "words_per_beat": cfg.words_per_beat, "read_cap": read_cap,
            "write_cap": write_cap, "burst_beats": cfg.burst_beats}

"""cocotb testbench of the gather / write-back engine (:class:`hotline_hw.dma.RowMover`).

The DUT is :class:`RowMoverTop`: the engine with its AXI4 manager as flat ``m_axi_*`` ports,
served by :class:`verif.tb.host_memory.HostMemory`, and its table read port served by a
small RAM of table entries (one cycle of read latency, as the device's register RAM) that the
bench writes through ``tbl_*`` ports; slots no command uses hold random entries. A spec file (env ``HOTLINE_ROW_MOVER``,
written by :func:`run_row_mover`) names the device configuration and a suite:

``fast`` / ``full``
    Gathers and write-backs with row sizes around the bus width up to ``max_row_bytes``,
    tables and buffers at and just before 4 KiB boundaries, counts of 1, a few and more than
    ``read_ids``, duplicate keys, random idle/back-pressure on every channel, out-of-order
    and interleaved read data, read and write error injection, key streams cut short by ``stop`` (no key, one, part, all
but one) with the last key still offered when ``stop`` rises. After every command every
    byte of memory is compared with the expected image (so guard bytes around every
    destination are checked), and the bursts seen on the bus with the expected chunks.
``bench``
    Gathers without stalls for the given read latencies and row sizes; reports cycles.

The report (JSON) lists every command with its cycles and outcome; any mismatch fails the
cocotb test.
"""

import json
import os
import random
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, ReadOnly, with_timeout
from cocotb.utils import get_sim_time
from cocotbext.axi.stream import define_stream

from hotline_spec.commands import Engine, ErrorCause
from hotline_spec.config import DEVICE_CONFIGS
from verif.tb.host_memory import HostMemory, RESP_SLVERR, RESP_DECERR, random_pauses

TOP = "hotline_row_mover_top"
PAGE = 4096
KeysBus, KeysTransaction, KeysSource, _, _ = define_stream(
    "Keys", signals=["payload", "valid", "ready"])


# ---- the DUT wrapper and its build (used by the pytest side and the benchmark) -----------
#: The error record's fields as ports of the wrapper: ``err_<field>``.
ERROR_FIELDS = ("valid", "cause", "engine", "addr", "index")


def row_mover_top(dcfg):
    """A component around :class:`RowMover` whose AXI port is flat (``m_axi_*``), whose
    table read port is served by a RAM of table entries written through ``tbl_we``,
    ``tbl_table``, ``tbl_base``, ``tbl_stride``, ``tbl_rows``, and whose error record is
    split into ``err_<field>`` ports; the other ports keep their names (``start``,
    ``keys__valid``...)."""
    from amaranth import Module
    from amaranth.lib import wiring, memory
    from amaranth.lib.wiring import In, Out
    from hotline_hw.axi import flat_members, connect_flat
    from hotline_hw.dma import RowMover
    from hotline_hw.job import error_record
    from hotline_hw.tables import table_entry

    class RowMoverTop(wiring.Component):
        def __init__(self):
            self.mover = RowMover(dcfg)
            inner = self.mover.signature.members
            members = flat_members("m_axi", inner["axi"].signature)
            members.update({name: member for name, member in inner.items()
                            if name not in ("axi", "tables", "error")})
            members.update({f"err_{name}": Out(error_record().members[name])
                            for name in ERROR_FIELDS})
            members.update({"tbl_we": In(1),
                            "tbl_table": In(inner["tables"].signature.members["table"].shape)})
            members.update({f"tbl_{name}": In(shape)
                            for name, shape in table_entry(dcfg).members.items()})
            super().__init__(members)

        def elaborate(self, platform):
            m = Module()
            m.submodules.mover = mover = self.mover
            connect_flat(m, self, "m_axi", mover.axi)
            for name, member in mover.signature.members.items():
                if name in ("axi", "keys", "tables", "error"):
                    continue
                if member.flow == In:
                    m.d.comb += getattr(mover, name).eq(getattr(self, name))
                else:
                    m.d.comb += getattr(self, name).eq(getattr(mover, name))
            for name in ERROR_FIELDS:
                m.d.comb += getattr(self, f"err_{name}").eq(getattr(mover.error, name))
            wiring.connect(m, wiring.flipped(self.keys), mover.keys)
            # The table RAM: a synchronous read, as the device's register bank keeps it.
            m.submodules.table_ram = ram = memory.Memory(
                shape=table_entry(dcfg), depth=dcfg.max_tables, init=[])
            wr = ram.write_port()
            rd = ram.read_port(domain="sync")
            m.d.comb += [
                wr.en.eq(self.tbl_we), wr.addr.eq(self.tbl_table),
                wr.data.base.eq(self.tbl_base), wr.data.stride.eq(self.tbl_stride),
                wr.data.rows.eq(self.tbl_rows),
                rd.addr.eq(mover.tables.table), mover.tables.entry.eq(rd.data),
            ]
            return m

    return RowMoverTop()


def build_row_mover(device: str, waves=False):
    """Generate and build the wrapper for ``DEVICE_CONFIGS[device]``: ``(runner, dir)``."""
    from amaranth.back import verilog
    from verif.tb.runner import build_top
    dcfg = DEVICE_CONFIGS[device]
    text = (f"// RowMover test wrapper; DeviceConfig: {dcfg.describe()}\n"
            + verilog.convert(row_mover_top(dcfg), name=TOP, emit_src=False))
    return build_top(TOP, text, f"row_mover_{device}", waves=waves)


def run_row_mover(device: str, suite: str, seed=1, name=None, waves=None, **params):
    """Build (cached) and run ``suite`` on ``device``; returns the report dict."""
    from verif.tb.runner import run_cocotb
    if waves is None:
        waves = os.environ.get("WAVES", "0") not in ("", "0")
    runner, build_dir = build_row_mover(device, waves=waves)
    name = name or f"{suite}_{device}"
    spec_dir = build_dir / "specs"
    spec_dir.mkdir(exist_ok=True)
    spec_path = spec_dir / f"{name}_{os.getpid()}_{time.monotonic_ns()}.json"
    report_path = spec_path.with_suffix(".report.json")
    spec_path.write_text(json.dumps({"device": device, "suite": suite, "seed": seed,
                                     "report": str(report_path), **params}))
    started = time.perf_counter()
    run_cocotb(runner, build_dir, TOP, "verif.tb.test_row_mover", Path(__file__),
               {"HOTLINE_ROW_MOVER": spec_path}, name, waves=waves)
    report = json.loads(report_path.read_text())
    report["wall_seconds"] = time.perf_counter() - started
    report["build_seconds"] = runner.build_seconds
    return report


# ---- reference model ---------------------------------------------------------------------
def chunks(src, dst, nbytes, bus_bytes, burst_beats):
    """The bursts of one row: ``(src, dst, bytes)``, cut at ``burst_beats`` beats and at
    every 4 KiB boundary of source and destination (what the RTL must do)."""
    out = []
    while nbytes:
        n = min(nbytes, burst_beats * bus_bytes, PAGE - src % PAGE, PAGE - dst % PAGE)
        out.append((src, dst, n))
        src, dst, nbytes = src + n, dst + n, nbytes - n
    return out


class Layout:
    """Tables and a row buffer placed in memory, each starting at or just before a 4 KiB
    boundary, with guard gaps between them."""

    def __init__(self, rng, dcfg, row_bytes, count, mem_size, n_tables, rows_per_table,
                 edge=True):
        bb = dcfg.bus_bytes
        self.row_bytes, self.bb = row_bytes, bb
        self.tables = {}  # table id -> (base, stride, rows)
        ids = rng.sample(range(dcfg.max_tables), min(n_tables, dcfg.max_tables))
        if dcfg.max_tables - 1 not in ids:
            ids[-1] = dcfg.max_tables - 1  # the highest table id is always used
        cursor = rng.randrange(1, 4) * PAGE

        def place(nbytes):
            nonlocal cursor
            page = -(-cursor // PAGE) * PAGE + PAGE
            offset = rng.choice([0, bb, 2 * bb, row_bytes // 2 // bb * bb, row_bytes,
                                 rng.randrange(PAGE // bb) * bb]) if edge else 0
            start = max(cursor, page - offset)
            start -= start % bb
            cursor = start + nbytes + rng.randrange(1, 8) * bb  # guard gap
            return start

        for t in ids:
            stride = row_bytes + bb * rng.choice([0, 0, 1, 3])
            rows = rows_per_table
            self.tables[t] = (place(rows * stride), stride, rows)
        self.buf = place(count * row_bytes)
        if cursor > mem_size:
            raise ValueError(f"layout needs {cursor} B of memory, have {mem_size}")

    def row_addr(self, key, row_bits):
        t, r = key >> row_bits, key & ((1 << row_bits) - 1)
        base, stride, _ = self.tables[t]
        return base + r * stride

    def keys(self, rng, count, row_bits, distinct):
        pool = [(t << row_bits) | r for t, (_, _, rows) in self.tables.items()
                for r in range(rows)]
        if distinct:
            return rng.sample(pool, count)
        keys = [rng.choice(pool) for _ in range(count)]
        if count >= 3:  # make sure some rows are gathered twice
            keys[-1] = keys[0]
        return keys


# ---- the bench ---------------------------------------------------------------------------
class RowMoverBench:
    def __init__(self, dut, dcfg, mem_size, seed):
        self.dut, self.dcfg = dut, dcfg
        self.rng = random.Random(seed)
        self.mem = HostMemory(dut, "m_axi", dut.clk, dut.rst, size=mem_size, seed=seed,
                              record=True)
        self.mem.write(0, self.rng.randbytes(mem_size))
        self.keys = KeysSource(KeysBus.from_prefix(dut, "keys_"), dut.clk, dut.rst)
        self.failures = []
        self.report = []
        self.period = None

    async def reset(self):
        dut = self.dut
        for name in ("start", "gather", "count", "buf_addr", "row_bytes", "stop", "tbl_we",
                     "tbl_table", "tbl_base", "tbl_stride", "tbl_rows"):
            getattr(dut, name).value = 0
        dut.rst.value = 1
        for _ in range(4):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        t0 = get_sim_time("step")
        await RisingEdge(dut.clk)
        self.period = get_sim_time("step") - t0
        # Every slot a random entry: a key read with the wrong slot's entry moves the wrong
        # bytes. Commands overwrite the slots they use.
        bb = self.dcfg.bus_bytes
        await self.write_tables({t: (self.rng.randrange(self.mem.size // bb) * bb,
                                     self.rng.randrange(1, 64) * bb, self.rng.getrandbits(32))
                                 for t in range(self.dcfg.max_tables)})

    async def write_tables(self, tables):
        """Write ``{slot: (base, stride, rows)}`` into the table RAM, one slot a cycle."""
        dut = self.dut
        for t, (base, stride, rows) in tables.items():
            dut.tbl_we.value = 1
            dut.tbl_table.value = t
            dut.tbl_base.value = base
            dut.tbl_stride.value = stride
            dut.tbl_rows.value = rows
            await RisingEdge(dut.clk)
        dut.tbl_we.value = 0

    async def raise_stop(self, delay):
        """``stop`` ``delay`` cycles after the last key left the source's queue (it may
        still be offered on ``keys``, not yet taken)."""
        while not self.keys.empty():
            await RisingEdge(self.dut.clk)
        for _ in range(delay):
            await RisingEdge(self.dut.clk)
        self.dut.stop.value = 1

    def fail(self, what):
        self.failures.append(what)
        self.dut._log.error(what)

    async def command(self, gather, layout, keys, *, expect_error=None, label="", sent=None,
                      stop_delay=0):
        """Run one command and check memory, bursts and status; returns its record.

        ``sent``: the key stream is cut short: only the first ``sent`` keys come, then
        ``stop`` rises ``stop_delay`` cycles after the last left the source's queue (the
        command's ``count`` stays ``len(keys)``)."""
        dut, dcfg, mem = self.dut, self.dcfg, self.mem
        rb, bb = layout.row_bytes, dcfg.bus_bytes
        row_bits = dcfg.eal.row_bits
        count = len(keys)
        if sent is not None:
            keys = keys[:sent]
        before = mem.read(0, mem.size)
        expected = bytearray(before)
        row_chunks = []  # per row: its chunks (src, dst, bytes)
        for i, key in enumerate(keys):
            table_row = layout.row_addr(key, row_bits)
            buf_row = layout.buf + i * rb
            src, dst = (table_row, buf_row) if gather else (buf_row, table_row)
            expected[dst:dst + rb] = before[src:src + rb]
            row_chunks.append(chunks(src, dst, rb, bb, dcfg.burst_beats))
        n_bursts = len(mem.bursts)
        await self.write_tables(layout.tables)
        for key in keys:
            self.keys.send_nowait(KeysTransaction(payload=key))
        await RisingEdge(dut.clk)
        dut.gather.value = int(gather)
        dut.count.value = count
        dut.buf_addr.value = layout.buf
        dut.row_bytes.value = rb
        dut.start.value = 1
        await RisingEdge(dut.clk)
        started = get_sim_time("step")
        dut.start.value = 0
        # Scramble the command inputs: the engine must have latched them.
        dut.buf_addr.value = 0
        dut.row_bytes.value = bb
        dut.gather.value = int(not gather)
        dut.count.value = self.rng.getrandbits(32)
        stopper = None
        if sent is not None:
            stopper = cocotb.start_soon(self.raise_stop(stop_delay))
        budget = (sum(len(c) for c in row_chunks) * (dcfg.burst_beats + 8) * 20
                  + 40 * (mem.read_latency + mem.write_latency) + 20000)
        try:
            await with_timeout(RisingEdge(dut.done), budget * self.period, "step")
        except Exception:
            self.fail(f"{label}: no done within {budget} cycles (busy={dut.busy.value})")
            raise
        await ReadOnly()
        cycles = round((get_sim_time("step") - started) / self.period)
        status = {f"err_{k}": int(getattr(dut, f"err_{k}").value) for k in ERROR_FIELDS}
        key_offered = int(dut.keys__valid.value)
        stop_seen = int(dut.stop.value)
        await RisingEdge(dut.clk)
        if stopper is not None:
            dut.stop.value = 0
        after = mem.read(0, mem.size)
        record = {"label": label, "gather": gather, "count": count, "sent": len(keys),
                  "stopped": sent is not None, "row_bytes": rb, "cycles": cycles,
                  "bytes": len(keys) * rb, **status,
                  "read_latency": mem.read_latency, "reorder": mem.reorder}
        self.report.append(record)
        if not self.keys.empty() or key_offered:
            self.fail(f"{label}: done before all keys were consumed")
        if sent is not None and not stop_seen:
            self.fail(f"{label}: done before stop rose, {len(keys)} of {count} keys")
        if mem.writes_pending or not mem.b.empty() or mem.reads_in_flight:
            self.fail(f"{label}: done with bus traffic outstanding (writes "
                      f"{mem.writes_pending}, reads {mem.reads_in_flight})")
        bursts = mem.bursts[n_bursts:]
        for kind, _, addr, _, cache, prot in bursts:
            if cache != 0b0011 or prot != 0:
                self.fail(f"{label}: {kind} at {addr:#x} cache={cache} prot={prot}")
                break
        if expect_error is None:
            self._check_clean(label, status, before, after, expected, row_chunks, bursts)
        else:
            self._check_error(label, status, before, after, expected, row_chunks,
                              expect_error)
        if mem.violations:
            self.fail(f"{label}: AXI violations {mem.violations[:3]}")
            mem.violations.clear()
        return record

    def _first_diff(self, a, b, label):
        for i in range(len(a)):
            if a[i] != b[i]:
                self.fail(f"{label}: memory differs first at {i:#x}: {a[i]:#04x} != "
                          f"expected {b[i]:#04x}")
                return

    def _check_clean(self, label, status, before, after, expected, row_chunks, bursts):
        if status["err_valid"] or status["err_cause"] or status["err_addr"]:
            self.fail(f"{label}: unexpected error {status}")
        if after != bytes(expected):
            self._first_diff(after, expected, label)
        want_reads = sorted((s, n // self.dcfg.bus_bytes) for row in row_chunks
                            for s, _, n in row)
        want_writes = sorted((d, n // self.dcfg.bus_bytes) for row in row_chunks
                             for _, d, n in row)
        got_reads = sorted((a, n) for k, _, a, n, _, _ in bursts if k == "read")
        got_writes = sorted((a, n) for k, _, a, n, _, _ in bursts if k == "write")
        if got_reads != want_reads or got_writes != want_writes:
            self.fail(f"{label}: bursts differ from the expected chunks: reads "
                      f"{len(got_reads)} (want {len(want_reads)}), writes {len(got_writes)} "
                      f"(want {len(want_writes)}); first read bursts {got_reads[:4]} vs "
                      f"{want_reads[:4]}")

    def _check_error(self, label, status, before, after, expected, row_chunks, err):
        """Errors: status fields right; every byte outside the destinations unchanged;
        every destination chunk either untouched or fully written; the failed burst's
        destination untouched."""
        write = err["kind"] == "write"
        cause = ((ErrorCause.WRITE_SLVERR if write else ErrorCause.READ_SLVERR)
                 + (err["resp"] == RESP_DECERR))
        want = {"err_valid": 1, "err_cause": int(cause),
                "err_engine": int(Engine.ROW_WRITE if write else Engine.ROW_READ),
                "err_addr": err["addr"], "err_index": 0}
        if status != want:
            self.fail(f"{label}: status {status}, expected {want}")
        cut = bytearray(after)
        for row in row_chunks:
            for src, dst, n in row:
                got = after[dst:dst + n]
                if got != before[dst:dst + n] and got != bytes(expected[dst:dst + n]):
                    self.fail(f"{label}: destination {dst:#x}+{n} partly written")
                if err["addr"] == (dst if err["kind"] == "write" else src):
                    if got != before[dst:dst + n]:
                        self.fail(f"{label}: the failed burst's data landed at {dst:#x}")
                cut[dst:dst + n] = before[dst:dst + n]
        if bytes(cut) != before:
            self.fail(f"{label}: a write outside the command's destinations")
            self._first_diff(cut, before, label)


def stimulus(bench, rng, style, latency):
    """Apply one of the stimulus styles to the memory model and the key stream."""
    mem = bench.mem
    mem.read_latency = latency
    mem.write_latency = rng.randrange(1, latency + 2)
    mem.reorder = style in ("reorder", "both")
    pause = style in ("pause", "both")
    mem.set_pause(0.3 if pause else 0.0, seed=rng.getrandbits(32))
    if pause:  # gaps in the key stream too
        bench.keys.set_pause_generator(random_pauses(0.3, random.Random(rng.getrandbits(32))))
    else:
        bench.keys.clear_pause_generator()
        bench.keys.pause = False


async def run_suite(bench, spec):
    dcfg, rng = bench.dcfg, bench.rng
    bb, ids = dcfg.bus_bytes, dcfg.read_ids
    full = spec["suite"] == "full"
    burst_bytes = dcfg.burst_beats * bb
    sizes = sorted({s for s in (bb, 2 * bb, 3 * bb, burst_bytes, burst_bytes + bb,
                                dcfg.max_row_bytes // 2 + bb, dcfg.max_row_bytes)
                    if bb <= s <= dcfg.max_row_bytes and s % bb == 0})
    styles = ["plain", "pause", "reorder", "both"]
    n = 0
    for rb in sizes:
        counts = [1, 3, ids + 5] + ([2 * ids + 1, 7] if full else [])
        for count in counts:
            for gather in (True, False):
                style = styles[n % len(styles)]
                latency = rng.choice([1, 5, 30, 120] if full else [1, 8, 40])
                n += 1
                if not full and count == ids + 5 and rb > 2 * burst_bytes and not gather:
                    continue  # the largest rows: one long write-back is enough in fast
                stimulus(bench, rng, style, latency)
                rows = max(8, count // 2 + 2)
                layout = Layout(rng, dcfg, rb, count, bench.mem.size, n_tables=3,
                                rows_per_table=rows)
                keys = layout.keys(rng, count, dcfg.eal.row_bits, distinct=not gather)
                await bench.command(gather, layout, keys,
                                    label=f"{'gather' if gather else 'write-back'} rb={rb} "
                                          f"n={count} {style} lat={latency}")
    # The key stream cut short: `stop` after none, one, part or all but one of the keys,
    # `delay` cycles after the last key was put on the bus. With delay 0 and no key gaps, a
    # single key is offered from before `start` and `stop` is high when it is taken: the
    # mover, idle otherwise, must not finish before taking it.
    count = ids + 5
    stops = [(g, sent, delay) for sent in (0, 1, count // 2, count - 1) for g in (True, False)
             for delay in (0, 2)]
    if not full:
        stops = [(True, 0, 0), (False, 1, 0), (True, 1, 2), (False, count // 2, 1),
                 (True, count - 1, 0)]
    for gather, sent, delay in stops:
        rb = rng.choice(sizes)
        style = "plain" if sent == 1 and delay == 0 else styles[n % len(styles)]
        n += 1
        stimulus(bench, rng, style, rng.choice([1, 8, 40]))
        layout = Layout(rng, dcfg, rb, count, bench.mem.size, n_tables=3,
                        rows_per_table=count)
        keys = layout.keys(rng, count, dcfg.eal.row_bits, distinct=not gather)
        await bench.command(gather, layout, keys, sent=sent, stop_delay=delay,
                            label=f"{'gather' if gather else 'write-back'} rb={rb} stop after "
                                  f"{sent} of {count} (+{delay}) {style}")
    # Errors: one key's row (or buffer row) answers SLVERR/DECERR on the read or the write.
    cases = [(g, kind, resp) for g in (True, False) for kind in ("read", "write")
             for resp in (RESP_SLVERR, RESP_DECERR)]
    if not full:
        cases = cases[::2] + [cases[3]]
    for gather, kind, resp in cases:
        rb = rng.choice([s for s in sizes if s >= 2 * bb])
        count = ids + 3 if full else min(ids + 3, 20)
        style = rng.choice(styles)
        stimulus(bench, rng, style, rng.choice([3, 30]))
        layout = Layout(rng, dcfg, rb, count, bench.mem.size, n_tables=2,
                        rows_per_table=count)
        keys = layout.keys(rng, count, dcfg.eal.row_bits, distinct=True)
        j = rng.randrange(count)
        table_row = layout.row_addr(keys[j], dcfg.eal.row_bits)
        buf_row = layout.buf + j * rb
        src, dst = (table_row, buf_row) if gather else (buf_row, table_row)
        beat = rng.randrange(rb // bb)
        where = (src if kind == "read" else dst) + beat * bb
        bench.mem.inject_error(where, where + bb, resp, kind)
        failing = [c for c in chunks(src, dst, rb, bb, dcfg.burst_beats)
                   if (c[0] if kind == "read" else c[1]) <= where < (c[0] if kind == "read"
                                                                    else c[1]) + c[2]][0]
        addr = failing[0] if kind == "read" else failing[1]
        label = (f"{'gather' if gather else 'write-back'} {kind} error resp={resp} rb={rb} "
                 f"key {j}/{count} {style}")
        await bench.command(gather, layout, keys, label=label,
                            expect_error={"kind": kind, "resp": resp, "addr": addr})
        bench.mem.clear_errors()
        # The next command works normally.
        layout = Layout(rng, dcfg, rb, 5, bench.mem.size, n_tables=2, rows_per_table=8)
        keys = layout.keys(rng, 5, dcfg.eal.row_bits, distinct=not gather)
        await bench.command(gather, layout, keys, label=f"after {label}")


async def run_bench(bench, spec):
    dcfg, rng = bench.dcfg, bench.rng
    bench.mem.set_pause(0.0)
    bench.keys.clear_pause_generator()
    bench.mem.reorder = False
    for latency in spec["latencies"]:
        for rb in spec["row_sizes"]:
            beats = rb // dcfg.bus_bytes
            count = max(64, spec["beats"] // beats)
            bench.mem.read_latency = latency
            bench.mem.write_latency = latency
            layout = Layout(rng, dcfg, rb, count, bench.mem.size, n_tables=1,
                            rows_per_table=spec["table_rows"], edge=False)
            keys = layout.keys(rng, count, dcfg.eal.row_bits, distinct=False)
            wall = time.perf_counter()
            record = await bench.command(True, layout, keys, label=f"bench lat={latency} rb={rb}")
            record["wall"] = time.perf_counter() - wall


@cocotb.test()
async def row_mover(dut):
    """Runs the suite named by the HOTLINE_ROW_MOVER spec and writes its report."""
    with open(os.environ["HOTLINE_ROW_MOVER"]) as f:
        spec = json.load(f)
    dcfg = DEVICE_CONFIGS[spec["device"]]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    bench = RowMoverBench(dut, dcfg, spec.get("mem_size", 1 << 20), spec["seed"])
    await bench.reset()
    wall = time.perf_counter()
    profile = os.environ.get("HOTLINE_PROFILE")  # a file: cProfile of the testbench
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    if spec["suite"] == "bench":
        await run_bench(bench, spec)
    else:
        await run_suite(bench, spec)
    wall = time.perf_counter() - wall
    if profile:
        prof.disable()
        prof.dump_stats(profile)
    cycles = round(get_sim_time("step") / bench.period)
    mem = bench.mem
    report = {"commands": bench.report, "failures": bench.failures, "cycles": cycles,
              "sim_seconds": wall, "violations": mem.violations,
              "max_reads_in_flight": mem.max_reads_in_flight,
              "read_bursts": mem.read_bursts, "write_bursts": mem.write_bursts,
              "read_errors": mem.read_errors, "write_errors": mem.write_errors}
    with open(spec["report"], "w") as f:
        json.dump(report, f)
    assert not bench.failures, f"{len(bench.failures)} failures; first: {bench.failures[:5]}"

"""Driver on the simulated RTL: the same driver calls give the same results on ``model`` and
``sim`` (``docs/driver.md``, "Transports").

One simulator (``SMALL_DEVICE``: one lane, four banks, a 16-byte bus) serves the whole
module (per pytest worker): it is built once (cached under ``sim_build/``) and started once;
each test opens ``HotlineDevice`` objects on it in turn (``close_transport=False``) next to
twins on the ``model`` transport and compares learn/lookup hits and slots, dumps, the hot
rows of ``freeze``, schedules, gathered rows, written-back tables, refused commands and the
device counters.
"""

import os
import shutil
import signal

import pytest
import torch

from hotline_spec.commands import Engine, ErrorCause, Opcode
from hotline_spec.config import SMALL_DEVICE
from verif.golden import make_keys
from sw_driver.driver import HotlineDevice
from sw_driver.errors import (DeviceCommandError, DeviceMismatchError, ScheduleError,
                              TransportError)
from sw_driver.transport import open_transport

pytestmark = pytest.mark.rtl

DCFG = SMALL_DEVICE
EAL = DCFG.eal
DIM = 8                                    # 32-byte rows: two beats of the 16-byte bus
ROWS = [3000, 2000, 4000]                  # more rows than the 1024-entry tag store holds
#: Counters both transports count alike (the cycle counters are the simulator's alone).
SAME_COUNTERS = ("lookups", "hits", "rows_gathered", "rows_written", "bytes_read",
                 "bytes_written", "commands_completed", "errors")


@pytest.fixture(scope="module")
def sim():
    t = open_transport("sim", DCFG, shm_size=32 << 20)
    yield t
    try:
        assert t.bus_violations() == [], "the core broke the AXI rules on m_axi"
    finally:
        t.close()


def _pair(sim, rows=ROWS, dim=DIM):
    """A device on the shared simulator (tag store cleared) and its model twin."""
    s = HotlineDevice(rows, dim, config=DCFG, transport=sim, close_transport=False,
                      gather_threads=1)
    s.clear()
    m = HotlineDevice(rows, dim, config=DCFG, gather_threads=1)
    return s, m


def _skewed(n, rows, seed, power=3.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([(torch.rand(n, generator=gen) ** power * r).long() for r in rows], 1)


def _host_pair(s, m, seed=0, rows=ROWS, dim=DIM):
    gen = torch.Generator().manual_seed(seed)
    ref = torch.randn(sum(rows), dim, generator=gen)
    hs = s.alloc_host((sum(rows), dim))
    hs.copy_(ref)
    return hs, ref.clone()


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(torch.as_tensor(a[k]).to(torch.as_tensor(
        b[k]).dtype), torch.as_tensor(b[k])) for k in a)


def test_id_block(sim):
    sim.check_id()
    for other, name in ((DCFG.replace(read_ids=32), "P_READ_IDS = 16 (expected 32)"),
                        (DCFG.replace(eal=EAL.replace(ways=2)), "P_WAYS = 4 (expected 2)")):
        with pytest.raises(DeviceMismatchError, match=rf"differs from the DeviceConfig: .*"
                                                      rf"{name.replace('(', '.').replace(')', '.')}"):
            sim.check_id(other)
    # the simulator is still fine afterwards
    sim.check_id()


def test_learn_lookup_dump_match_model(sim):
    s, m = _pair(sim)
    try:
        for seed in range(2):
            sparse = _skewed(300, ROWS, seed)
            hs, ss = s.learn(sparse)
            hm, sm = m.learn(sparse)
            assert torch.equal(hs, hm) and torch.equal(ss, sm)
            assert 0 < int(hs.sum()) < hs.numel()
        keys = make_keys(torch.arange(3).expand(500, 3), _skewed(500, ROWS, 7), EAL).reshape(-1)
        for thr in (0, 1, 3, None):
            hs, ss = s.transport.lookup(keys, thr)
            hm, sm = m.transport.lookup(keys, thr)
            assert torch.equal(hs, hm) and torch.equal(ss[hs], sm[hm]), thr
        assert _same(s.transport.dump_tensors(), m.transport.dump_tensors())
        assert s.transport.dump() == m.transport.dump()
        for thr in (1, 2):
            hot_s, hot_m = s.freeze(thr), m.freeze(thr)
            assert hot_s.n > 0
            for a, b in zip(hot_s, hot_m):
                assert torch.equal(a, b)
        s.clear()
        assert not bool(s.transport.dump_tensors()["valid"].any())
    finally:
        s.close()
        m.close()


def test_schedule_gather_write_back_match_model(sim):
    s, m = _pair(sim)
    try:
        hs, hm = _host_pair(s, m, seed=1)
        learn = _skewed(600, ROWS, 3)
        s.learn(learn)
        m.learn(learn)
        s.freeze()
        m.freeze()
        staging_s, staging_m = s.new_staging(400), m.new_staging(400)
        for k in range(3):                 # rows reused across working sets
            ws = _skewed(64, ROWS, 10 + k, power=2.0)
            a, b = s.schedule(ws, 16), m.schedule(ws, 16)
            assert torch.equal(a.cold_global_rows, b.cold_global_rows)
            assert torch.equal(a.remapped, b.remapped) and a.n_cold > 0
            got_s = s.gather(a, hs, staging_s)
            got_m = m.gather(b, hm, staging_m)
            assert torch.equal(got_s, got_m)
            assert torch.equal(got_s, hm[b.cold_global_rows])
            upd = got_m * 0.5 + k
            s.write_back(a, upd, hs)                 # a plain tensor: bounced into shm
            m.write_back(b, upd, hm)
            assert torch.equal(hs, hm)
        # the hot table through the same host table
        assert torch.equal(s.load_hot_table(hs), m.load_hot_table(hm))
    finally:
        s.close()
        m.close()


def _errors_match(call_s, call_m):
    with pytest.raises(DeviceCommandError) as es:
        call_s()
    with pytest.raises(DeviceCommandError) as em:
        call_m()
    a, b = es.value, em.value
    assert (a.cause, a.engine, a.opcode, a.index, a.detail) == \
        (b.cause, b.engine, b.opcode, b.index, b.detail), \
        f"sim: {a}\nmodel: {b}"
    return a


def test_bad_inputs_raise_the_same_errors(sim):
    s, m = _pair(sim)
    ts, tm = s.transport, m.transport
    try:
        hs, hm = _host_pair(s, m, seed=2)
        offsets = s.table_offsets
        for t, h in ((ts, hs), (tm, hm)):
            t.set_tables(h, ROWS, offsets)
        good = make_keys(torch.tensor([0, 1, 2, 0, 2]), torch.tensor([5, 1999, 3999, 0, 7]),
                         EAL)
        out_s, out_m = ts.alloc((5, DIM)), tm.alloc((5, DIM))
        out_s.fill_(-3)
        out_m.fill_(-3)
        cases = []
        bad = good.clone()
        bad[2] = make_keys(torch.tensor([1]), torch.tensor([2000]), EAL)[0]
        cases.append(("row out of range", bad, ErrorCause.ROW_OUT_OF_RANGE, 2))
        bad = good.clone()
        bad[4] = make_keys(torch.tensor([3]), torch.tensor([0]), EAL)[0]
        cases.append(("unused table", bad, ErrorCause.ROW_OUT_OF_RANGE, 4))
        bad = good.clone()
        bad[1] = 1 << EAL.key_bits
        cases.append(("bits above key_bits", bad, ErrorCause.BAD_KEY, 1))
        for what, keys, cause, index in cases:
            for op in ("gather", "write_back"):
                out_s.fill_(-3)
                out_m.fill_(-3)
                e = _errors_match(lambda: getattr(ts, op)(keys, out_s),
                                  lambda: getattr(tm, op)(keys, out_m))
                assert (e.cause, e.index, e.engine) == (cause, index, Engine.LIST_CHECK), what
                # GATHER reads its list once and ends at the bad key: the rows before it are
                # in the buffer; WRITE_BACK checks first and moves nothing (docs/device.md).
                moved = index if op == "gather" else 0
                assert torch.equal(out_s, out_m), what
                assert bool((out_s[moved:] == -3).all()) and torch.equal(hs, hm), what
                assert not bool((out_s[:moved] == -3).any()), what
        # learn: a bad key ends the list; the keys before it are learned, on both transports
        keys = make_keys(torch.zeros(6, dtype=torch.int64), torch.arange(6), EAL)
        keys[4] = -1
        e = _errors_match(lambda: ts.learn(keys), lambda: tm.learn(keys))
        assert (e.cause, e.opcode, e.index) == (ErrorCause.BAD_KEY, Opcode.LEARN, 4)
        ds, dm = ts.dump_tensors(), tm.dump_tensors()
        assert int(ds["valid"].sum()) == 4
        for name in ("valid", "tag"):
            assert torch.equal(torch.as_tensor(ds[name]), torch.as_tensor(dm[name])), name
        ts.clear()
        tm.clear()
        # count 0
        e = _errors_match(lambda: ts.gather(good[:0], ts.alloc((0, DIM))),
                          lambda: tm.gather(good[:0], tm.alloc((0, DIM))))
        assert (e.cause, e.engine) == (ErrorCause.BAD_COUNT, Engine.DECODER)
        # a row buffer off the bus beat
        skew_s = ts.alloc((5 * DIM + 4,))[1:1 + 5 * DIM].view(5, DIM)
        skew_m = tm.alloc((5 * DIM + 4,))[1:1 + 5 * DIM].view(5, DIM)
        e = _errors_match(lambda: ts.gather(good, skew_s), lambda: tm.gather(good, skew_m))
        assert e.cause == ErrorCause.MISALIGNED and e.address == ts.bus_address(skew_s)
        # a table off the bus beat, then rows the DMA cannot move
        for t in (ts, tm):
            flat = t.alloc((sum(ROWS) * DIM + 4,))
            t.set_tables(flat[1:1 + sum(ROWS) * DIM].view(sum(ROWS), DIM), ROWS, offsets)
        e = _errors_match(lambda: ts.gather(good, out_s), lambda: tm.gather(good, out_m))
        assert (e.cause, e.index) == (ErrorCause.BAD_TABLE, 0)
        for t in (ts, tm):
            t.set_tables(t.alloc((sum(ROWS), 2)), ROWS, offsets)     # 8-byte rows
        e = _errors_match(lambda: ts.gather(good, ts.alloc((5, 2))),
                          lambda: tm.gather(good, tm.alloc((5, 2))))
        assert e.cause == ErrorCause.BAD_ROW_BYTES
        # the simulator acknowledged every error and still works
        for t, h in ((ts, hs), (tm, hm)):
            t.set_tables(h, ROWS, offsets)
        assert torch.equal(ts.gather(good, out_s), tm.gather(good, out_m))
        # a host table that is not in the simulated host DRAM
        s.learn(_skewed(100, ROWS, 1))
        s.freeze()
        sched = s.schedule(_skewed(8, ROWS, 2), 4)
        with pytest.raises(ScheduleError, match="host_table is not device-visible for the sim "
                                                "transport: allocate it with HotlineDevice"
                                                r".alloc_host\(\)"):
            s.gather(sched, hm, s.new_staging(24))
        with pytest.raises(ScheduleError, match="staging is not device-visible"):
            s.gather(sched, hs, torch.empty(24, DIM))
        with pytest.raises(ScheduleError, match="not device-visible"):
            ts.bus_address(torch.zeros(4))
    finally:
        s.close()
        m.close()


def test_counters_match_model(sim):
    s, m = _pair(sim)
    try:
        hs, hm = _host_pair(s, m, seed=4)
        for d in (s, m):
            d.transport.reset_device_counters()
        learn = _skewed(200, ROWS, 5)
        ws = _skewed(32, ROWS, 6, power=2.0)
        for d, h in ((s, hs), (m, hm)):
            d.learn(learn)
            d.freeze()
            sched = d.schedule(ws, 8)
            staged = d.gather(sched, h, d.new_staging(96))
            d.write_back(sched, staged.clone(), h)
            with pytest.raises(DeviceCommandError):
                d.transport.learn(torch.tensor([-1]))
        cs, cm = s.device_counters(), m.device_counters()
        assert list(cs) == list(cm)
        assert {k: cs[k] for k in SAME_COUNTERS} == {k: cm[k] for k in SAME_COUNTERS}
        assert cs["errors"] == 1 and cs["rows_gathered"] == sched.n_cold > 0
        assert cs["cycles"] > 0 and cm["cycles"] == 0
        assert s.counters() == m.counters()
    finally:
        s.close()
        m.close()


def test_criteo_rows(sim):
    """Real data: rows of the Criteo sample (synthetic when it is absent), 26 tables of 1000
    rows, 16-byte rows (one bus beat)."""
    from verif.workload import load_criteo_or_synthetic
    rows = [1000] * 26
    data, desc, _ = load_criteo_or_synthetic(max_rows=1200, table_sizes=rows)
    sparse = data.sparse
    s, m = _pair(sim, rows, 4)
    try:
        hs, hm = _host_pair(s, m, seed=5, rows=rows, dim=4)
        hs_, hm_ = s.learn(sparse[:800]), m.learn(sparse[:800])
        assert torch.equal(hs_[0], hm_[0]) and torch.equal(hs_[1], hm_[1]), desc
        hot_s, hot_m = s.freeze(), m.freeze()
        for a, b in zip(hot_s, hot_m):
            assert torch.equal(a, b)
        a, b = s.schedule(sparse[800:1200], 64), m.schedule(sparse[800:1200], 64)
        assert torch.equal(a.cold_global_rows, b.cold_global_rows) and a.n_popular == b.n_popular
        got = s.gather(a, hs, s.new_staging(a.n_cold))
        assert torch.equal(got, m.gather(b, hm, m.new_staging(b.n_cold)))
        s.write_back(a, got + 1, hs)
        m.write_back(b, got + 1, hm)
        assert torch.equal(hs, hm)
    finally:
        s.close()
        m.close()


def test_close_and_crash():
    """A second simulator: a killed simulator gives one clear TransportError line naming
    the log; close stops the process group and removes the shared memory."""
    t = open_transport("sim", DCFG, shm_size=1 << 20)
    session = t._session
    proc, shm = session.proc, session.shm_path
    assert os.path.exists(shm) and proc.poll() is None
    buf = t.alloc((16,), torch.int64)
    used = t.memory_in_use()
    x = t.alloc((1000,))
    view = x[10:]
    assert t.memory_in_use() == used + 4032 and t.bus_address(view) == t.bus_address(x) + 40
    del x
    assert t.memory_in_use() == used + 4032       # the view keeps the memory
    del view
    assert t.memory_in_use() == used
    os.killpg(proc.pid, signal.SIGKILL)        # the group this test's transport started
    proc.wait(timeout=30)
    with pytest.raises(TransportError, match=r"sim: the simulator went away .*\(log: ") as ei:
        t.learn(torch.arange(4))
    assert "\n" not in str(ei.value) and ei.value.log_path
    t.close()
    t.close()
    assert not os.path.exists(shm) and proc.poll() is not None
    buf.fill_(1)                               # tensors from alloc() stay usable memory
    # after a failure the logs are kept for the user to read; this test removes them
    assert os.path.exists(ei.value.log_path)
    for d in (session.work_dir, *session.sim_dirs):
        shutil.rmtree(d, ignore_errors=True)


def test_lfu_device_matches_model():
    """The device top level with the lfu policy (its own build): learn results, the DUMP
    words (count instead of RRPV), frozen lookups and the hot rows of freeze equal the model
    transport's; a srrip threshold is refused on both."""
    dcfg = DCFG.replace(eal=EAL.replace(policy="lfu", popular_min_count=2))
    t = open_transport("sim", dcfg, shm_size=8 << 20)
    s = HotlineDevice(ROWS, DIM, config=dcfg, transport=t, gather_threads=1)
    m = HotlineDevice(ROWS, DIM, config=dcfg, gather_threads=1)
    try:
        for seed in range(2):
            sparse = _skewed(400, ROWS, seed + 20)
            hs, ss = s.learn(sparse)
            hm, sm = m.learn(sparse)
            assert torch.equal(hs, hm) and torch.equal(ss, sm)
        d_s, d_m = s.transport.dump_tensors(), m.transport.dump_tensors()
        d_m.pop("sketch")                      # the sketch stays on the device
        assert _same(d_s, d_m)
        assert 0 < int(d_s["count"].max()) and int(d_s["count"].max()) <= 15
        keys = make_keys(torch.arange(3).expand(500, 3), _skewed(500, ROWS, 27),
                         dcfg.eal).reshape(-1)
        hs, ss = s.transport.lookup(keys)
        hm, sm = m.transport.lookup(keys)
        assert torch.equal(hs, hm) and torch.equal(ss[hs], sm[hm])
        assert 0 < int(hs.sum()) < hs.numel()
        for a, b in zip(s.freeze(), m.freeze()):
            assert torch.equal(a, b)
        with pytest.raises(ValueError, match="srrip policy's threshold"):
            s.transport.lookup(keys, 1)
    finally:
        s.close()
        m.close()

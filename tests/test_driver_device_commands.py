"""Driver: the transport's command set on the ``model`` transport (no RTL needed).

``gather`` / ``write_back`` through ``Transport.set_tables`` + ``GATHER`` / ``WRITE_BACK``
equal plain torch indexing; every refused command raises ``DeviceCommandError`` with the
cause, engine, opcode and key index the RTL reports (``hotline_spec/commands.py``), and moves
nothing; ``HotlineDevice.gather`` / ``write_back`` go through the transport.
"""

import pytest
import torch

from hotline_spec.commands import Engine, ErrorCause, Opcode
from hotline_spec.config import DeviceConfig, EALConfig, SMALL_DEVICE
from hotline_spec.registers import COUNTERS
from verif.golden import make_keys
from sw_driver.device_checks import (check_command, decode_dump, decode_results, encode_dump,
                                     encode_results)
from sw_driver.driver import HotlineDevice
from sw_driver.errors import (DeviceCommandError, DeviceStateError, DriverError,
                              ScheduleError)
from sw_driver.model_transport import ModelTransport
from sw_driver.transport import open_transport

DCFG = SMALL_DEVICE                       # 16-byte bus, 4 tables of up to 2**24 rows
EAL = DCFG.eal
TABLE_ROWS = [50, 30, 70]
DIM = 8                                   # 32-byte rows: two bus beats


def _offsets(rows):
    o = torch.zeros(len(rows), dtype=torch.int64)
    o[1:] = torch.cumsum(torch.tensor(rows), 0)[:-1]
    return o


def _table(rows=TABLE_ROWS, dim=DIM, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(sum(rows), dim, generator=gen)


def _random_keys(n, seed, rows=TABLE_ROWS):
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, len(rows), (n,), generator=gen)
    r = (torch.rand(n, generator=gen) * torch.tensor(rows)[t]).long()
    return t, r, make_keys(t, r, EAL)


@pytest.fixture
def mt():
    t = open_transport("model", DCFG, threads=2)
    yield t
    t.close()


def test_open_with_either_config():
    for cfg in (EAL, DCFG):
        with open_transport("model", cfg) as t:
            assert t.config == EAL and t.device_config == DeviceConfig(eal=EAL) or cfg == DCFG
            assert isinstance(t.device_config, DeviceConfig)
    with open_transport("model", DCFG) as t:
        assert t.device_config == DCFG
    with pytest.raises(NotImplementedError, match="'pcie' is not implemented yet"):
        open_transport("pcie", DCFG)


def test_gather_and_write_back_equal_torch_indexing(mt):
    host = _table()
    offsets = _offsets(TABLE_ROWS)
    mt.set_tables(host, TABLE_ROWS, offsets)
    t, r, keys = _random_keys(500, 1)            # duplicates included
    want = host[offsets[t] + r]
    out = mt.alloc((500, DIM))
    assert mt.gather(keys, out) is out
    assert torch.equal(out, want)
    # write back distinct keys
    uniq = torch.unique(keys)
    tt, rr = uniq >> EAL.row_bits, uniq & ((1 << EAL.row_bits) - 1)
    rows = torch.randn(uniq.numel(), DIM)
    ref = host.clone()
    ref[offsets[tt] + rr] = rows
    mt.write_back(uniq, rows)
    assert torch.equal(host, ref)
    c = mt.device_counters()
    assert list(c) == [n.lower() for n, _ in COUNTERS]
    assert (c["rows_gathered"], c["rows_written"], c["commands_completed"], c["errors"]) == \
        (500, uniq.numel(), 2, 0)
    mt.reset_device_counters()
    assert set(mt.device_counters().values()) == {0}


def test_alloc_and_bus_address(mt):
    buf = mt.alloc((4, 3), torch.float16)
    assert buf.shape == (4, 3) and buf.dtype == torch.float16
    assert mt.bus_address(buf) == buf.data_ptr() and mt.is_device_visible(buf)
    assert mt.bus_address(torch.zeros(3)) > 0          # any host tensor for the model
    meta = torch.empty(3, device="meta")
    with pytest.raises(ScheduleError, match="not device-visible"):
        mt.bus_address(meta)
    assert not mt.is_device_visible(meta)
    with pytest.raises(ScheduleError, match="expected a torch.Tensor"):
        mt.bus_address([1, 2])


def _refused(call, cause, engine, opcode, index=None):
    with pytest.raises(DeviceCommandError) as ei:
        call()
    e = ei.value
    assert (e.cause, e.engine, e.opcode, e.index) == (cause, engine, opcode, index), str(e)
    assert isinstance(e, DriverError) and isinstance(e, RuntimeError)
    msg = str(e)
    assert opcode.name in msg and cause.name in msg and engine.name in msg
    assert f"sequence {e.sequence}" in msg and f"{e.address:#x}" in msg
    if index is not None:
        assert f"key index {index}" in msg
    return e


def test_refused_commands_move_nothing(mt):
    host = _table()
    offsets = _offsets(TABLE_ROWS)
    mt.set_tables(host, TABLE_ROWS, offsets)
    before = host.clone()
    out = mt.alloc((4, DIM))
    out.fill_(-5.0)
    good = make_keys(torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 49]), EAL)
    G, W = Opcode.GATHER, Opcode.WRITE_BACK

    def both(keys, cause, engine, index=None, buf=out):
        out.fill_(-5.0)
        e1 = _refused(lambda: mt.gather(keys, buf), cause, engine, G, index)
        # GATHER reads its list once: the keys before the bad one were gathered; a refusal
        # by the decoder moves nothing (docs/device.md, "Errors").
        expect = torch.full_like(out, -5.0)
        for i in range(index or 0):
            k = int(keys[i])
            expect[i] = host[int(offsets[k >> EAL.row_bits]) + (k & ((1 << EAL.row_bits) - 1))]
        assert torch.equal(out, expect)
        out.fill_(-5.0)
        e2 = _refused(lambda: mt.write_back(keys, buf), cause, engine, W, index)
        assert e2.sequence == e1.sequence + 1
        assert bool((out == -5.0).all()) and torch.equal(host, before)   # checked first
        return e1

    # a row at/after its table's end: ROW_OUT_OF_RANGE, address of the key
    bad = good.clone()
    bad[2] = make_keys(torch.tensor([1]), torch.tensor([30]), EAL)[0]
    e = both(bad, ErrorCause.ROW_OUT_OF_RANGE, Engine.LIST_CHECK, 2)
    assert "table 1 row 30, TABLE_ROWS 30" in str(e)
    # an unused table slot (3 of 4) has 0 rows
    bad = good.clone()
    bad[1] = make_keys(torch.tensor([3]), torch.tensor([0]), EAL)[0]
    both(bad, ErrorCause.ROW_OUT_OF_RANGE, Engine.LIST_CHECK, 1)
    # bits above key_bits, and negative keys (bit 63)
    for k in (1 << EAL.key_bits, -1):
        bad = good.clone()
        bad[3] = k
        e = both(bad, ErrorCause.BAD_KEY, Engine.LIST_CHECK, 3)
        assert f"above key_bits = {EAL.key_bits}" in str(e)
    # the first bad key in list order wins, whatever its cause
    bad = good.clone()
    bad[1], bad[3] = 1 << 62, make_keys(torch.tensor([0]), torch.tensor([50]), EAL)[0]
    both(bad, ErrorCause.BAD_KEY, Engine.LIST_CHECK, 1)
    # count 0 and count > max_count
    empty = mt.alloc((0, DIM))
    _refused(lambda: mt.gather(torch.zeros(0, dtype=torch.int64), empty),
             ErrorCause.BAD_COUNT, Engine.DECODER, G)
    # a row buffer not on a bus beat
    flat = mt.alloc((4 * DIM + 4,))
    skew = flat[1:1 + 4 * DIM].view(4, DIM)
    e = both(good, ErrorCause.MISALIGNED, Engine.DECODER, None, buf=skew)
    assert e.address == skew.data_ptr()
    c = mt.device_counters()
    assert c["errors"] == c["commands_completed"] == 13 and c["rows_gathered"] == 0


def test_table_checks():
    with open_transport("model", DCFG.replace(max_count=3)) as t:
        host = _table()
        t.set_tables(host, TABLE_ROWS, _offsets(TABLE_ROWS))
        keys = make_keys(torch.zeros(4, dtype=torch.int64), torch.arange(4), EAL)
        _refused(lambda: t.gather(keys, t.alloc((4, DIM))), ErrorCause.BAD_COUNT,
                 Engine.DECODER, Opcode.GATHER)
        assert torch.equal(t.gather(keys[:3], t.alloc((3, DIM))), host[:3])
        # a table whose base is not on a bus beat: BAD_TABLE (a key of that table)
        flat = torch.randn(sum(TABLE_ROWS) * DIM + 1)
        skew = flat[1:].view(sum(TABLE_ROWS), DIM)
        t.set_tables(skew, TABLE_ROWS, _offsets(TABLE_ROWS))
        _refused(lambda: t.gather(keys[:2], t.alloc((2, DIM))), ErrorCause.BAD_TABLE,
                 Engine.LIST_CHECK, Opcode.GATHER, 0)
    # ROW_BYTES not a multiple of bus_bytes / above max_row_bytes
    for dim in (2, 6, 264):
        with open_transport("model", DCFG) as t:
            host = torch.zeros(10, dim)
            t.set_tables(host, [10], [0])
            _refused(lambda: t.gather(torch.tensor([1]), t.alloc((1, dim))),
                     ErrorCause.BAD_ROW_BYTES, Engine.DECODER, Opcode.GATHER)


def test_buffer_checks_and_state(mt):
    with pytest.raises(DeviceStateError, match="call set_tables"):
        mt.gather(torch.tensor([0]), mt.alloc((1, DIM)))
    host = _table()
    with pytest.raises(ScheduleError, match="does not fit"):
        mt.set_tables(host, [50, 30, 71], _offsets([50, 30, 70]))
    with pytest.raises(ScheduleError, match="rows must be contiguous"):
        mt.set_tables(host.t(), [4], [0])
    mt.set_tables(host, TABLE_ROWS, _offsets(TABLE_ROWS))
    keys = torch.tensor([0, 1])
    for buf, msg in ((mt.alloc((3, DIM)), r"shape \(3, 8\), expected \[2, dim=8\]"),
                     (mt.alloc((2, DIM), torch.float64), "dtype torch.float64"),
                     (mt.alloc((2, 2 * DIM))[:, :DIM], "rows must be packed"),
                     ("x", "must be a torch.Tensor")):
        with pytest.raises(ScheduleError, match=msg):
            mt.gather(keys, buf)
    assert mt.device_counters()["commands_completed"] == 0    # checked before submitting
    mt.close()
    with pytest.raises(DeviceStateError, match="after close"):
        mt.gather(keys, torch.zeros(2, DIM))


def test_learn_and_lookup_commands(mt):
    _, _, keys = _random_keys(300, 4)
    hit, slot = mt.learn(keys)
    c = mt.device_counters()
    assert (c["lookups"], c["hits"], c["commands_completed"]) == (300, int(hit.sum()), 1)
    bad = keys.clone()
    bad[7] = 1 << EAL.key_bits
    state = mt.logger.state_dict() if hasattr(mt.logger, "state_dict") else None
    _refused(lambda: mt.learn(bad), ErrorCause.BAD_KEY, Engine.LIST_CHECK, Opcode.LEARN, 7)
    _refused(lambda: mt.lookup(bad, 1), ErrorCause.BAD_KEY, Engine.LIST_CHECK, Opcode.LOOKUP, 7)
    if state is not None:     # nothing learned
        after = mt.logger.state_dict()
        assert all(torch.equal(state[k], after[k]) for k in state)
    h0, s0 = mt.learn(torch.zeros(0, dtype=torch.int64))         # no command for no keys
    assert h0.shape == (0,) and s0.shape == (0,)
    assert mt.device_counters()["commands_completed"] == 3


def test_word_formats_round_trip(mt):
    _, _, keys = _random_keys(400, 5)
    hit, slot = mt.learn(keys)
    h, s = decode_results(encode_results(hit, slot))
    assert torch.equal(h, hit) and torch.equal(s, slot)
    lg = mt.logger
    d = decode_dump(encode_dump(lg.valid, lg.rrpv, lg.tag), EAL)
    want = lg.dump_tensors()
    for k in want:
        assert torch.equal(d[k].to(want[k].dtype), want[k]), k
    assert check_command(DCFG, Opcode.DUMP, EAL.entries - 1).cause == ErrorCause.BAD_COUNT
    assert check_command(DCFG, Opcode.DUMP, EAL.entries, 0, 4).cause == ErrorCause.MISALIGNED
    assert check_command(DCFG, Opcode.CLEAR, 0) is None


DEV_ROWS = [3000, 2000, 4000]     # more rows than the 4096-entry tag store holds


def _device_case(dev, host, staging_rows=64):
    gen = torch.Generator().manual_seed(9)
    rows = torch.tensor(dev.table_rows)
    learn = (torch.rand(800, dev.n_tables, generator=gen) ** 3 * rows).long()
    dev.learn(learn)
    dev.freeze()
    ws = (torch.rand(40, dev.n_tables, generator=gen) ** 2 * rows).long()
    sched = dev.schedule(ws, 8)
    staging = dev.new_staging(staging_rows)
    staged = dev.gather(sched, host, staging)
    return sched, staged


def test_device_gather_and_write_back_go_through_the_transport():
    host = _table(DEV_ROWS, seed=3)
    with HotlineDevice(DEV_ROWS, DIM, config=DCFG, gather_threads=2) as dev:
        assert dev.device_config == DCFG and dev.config == EAL
        sched, staged = _device_case(dev, host, 400)
        n = sched.n_cold
        assert n > 0 and torch.equal(staged, host[sched.cold_global_rows])
        updated = staged * 2 + 1
        dev.write_back(sched, updated, host)
        assert torch.equal(host[sched.cold_global_rows], updated)
        c = dev.device_counters()
        assert c["rows_gathered"] == n and c["rows_written"] == n and c["errors"] == 0
        assert dev.counters().bytes_gathered == n * DIM * 4


def test_device_splits_commands_at_max_count():
    host = _table(DEV_ROWS, seed=4)
    with HotlineDevice(DEV_ROWS, DIM, config=DCFG.replace(max_count=5)) as dev:
        before = dev.device_counters()["commands_completed"]
        sched, staged = _device_case(dev, host, 400)
        assert torch.equal(staged, host[sched.cold_global_rows])
        c = dev.device_counters()
        assert c["rows_gathered"] == sched.n_cold
        # learn: 800*3 keys in commands of 5; a dump at freeze; gathers of <= 5 keys
        learn_cmds = -(-800 * 3 // 5)
        assert c["commands_completed"] - before == learn_cmds + 1 + -(-sched.n_cold // 5)


def test_device_host_copy_for_rows_the_dma_cannot_move():
    """dim * 4 = 12 bytes is no multiple of the 16-byte bus: the model copies with CPU
    threads in the driver (the sim refuses with BAD_ROW_BYTES)."""
    host = _table(DEV_ROWS, dim=3, seed=5)
    with HotlineDevice(DEV_ROWS, 3, config=DCFG) as dev:
        sched, staged = _device_case(dev, host, 400)
        assert torch.equal(staged, host[sched.cold_global_rows])
        assert dev.device_counters()["rows_gathered"] == 0
    # a transport without host copies (like sim) sends the command and gets it refused
    t = ModelTransport(DCFG)
    t.host_copy = False
    with HotlineDevice(DEV_ROWS, 3, config=DCFG, transport=t) as dev:
        with pytest.raises(DeviceCommandError) as ei:
            _device_case(dev, host, 400)
        assert ei.value.cause == ErrorCause.BAD_ROW_BYTES


def test_device_errors_from_the_transport():
    host = _table(DEV_ROWS, seed=6)
    with HotlineDevice(DEV_ROWS, DIM, config=DCFG) as dev:
        sched, _ = _device_case(dev, host, 400)
        flat = dev.alloc_host((400 * DIM + 4,))
        skew = flat[1:1 + 400 * DIM].view(400, DIM)
        with pytest.raises(DeviceCommandError) as ei:
            dev.gather(sched, host, skew)
        assert (ei.value.cause, ei.value.opcode) == (ErrorCause.MISALIGNED, Opcode.GATHER)
        # write_back of rows that are not packed: bounced through a device-visible buffer
        wide = torch.randn(sched.n_cold, 2 * DIM)[:, :DIM]
        dev.write_back(sched, wide, host)
        assert torch.equal(host[sched.cold_global_rows], wide)
        # a schedule with no cold rows sends no command
        hot = dev.hot_rows
        s0 = dev.schedule(torch.stack([hot.rows[hot.tables == t][:1] for t in range(3)], 1), 1)
        if s0.n_cold == 0:
            n = dev.device_counters()["commands_completed"]
            assert dev.gather(s0, host, dev.new_staging(0)).shape == (0, DIM)
            dev.write_back(s0, torch.zeros(0, DIM), host)
            assert dev.device_counters()["commands_completed"] == n


def test_device_transport_config_checks():
    t = ModelTransport(DCFG)
    with pytest.raises(ValueError, match="opened for another DeviceConfig"):
        HotlineDevice([4], 2, config=DCFG.replace(read_ids=32), transport=t)
    with HotlineDevice([4], 2, config=DCFG.eal, transport=t) as dev:   # EALConfig: eal only
        assert dev.device_config == DCFG
    with pytest.raises(TypeError, match="config must be an EALConfig or a DeviceConfig"):
        HotlineDevice([4], 2, config="small")
    # an EALConfig no device can have (64-bit keys): no row mover, host copies
    wide = EALConfig(banks=1, sets=1, ways=16, table_bits=4, row_bits=60, hash_rounds=5)
    with HotlineDevice([5], 4, config=wide) as dev:
        assert dev.device_config is None and dev.transport.device_config is None

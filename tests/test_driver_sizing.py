"""Driver sizing (issue 26, part 5): the de-dup table sized from a working-set hint, and the
compact hot-slot layout (hot rows at 0..n_hot-1, a hot table sized by the popular rows).

References: the golden ``AccessLogger`` / ``fragment`` and plain torch indexing; the entry
layout (checked against the golden model in test_driver_schedule.py) for the compact one.
"""

import math

import pytest
import torch

from hotline_spec.config import (DEFAULT_FRAGMENTER, EALConfig, FragmenterConfig,
                                 fragmenter_for_working_set)
from verif.golden import AccessLogger, dedup_bank, fragment, make_keys
from sw_driver.driver import HotlineDevice
from sw_driver.errors import ScheduleError


def skewed(table_rows, n, gen, power=3.0):
    cols = [(torch.rand(n, generator=gen) ** power * r).long().clamp_max(r - 1)
            for r in table_rows]
    return torch.stack(cols, 1)


def offsets_of(table_rows):
    return torch.tensor([sum(table_rows[:t]) for t in range(len(table_rows))])


# --- the de-dup table sized for a working set ------------------------------------------------
def test_fragmenter_for_working_set_rule():
    eal = EALConfig()
    # small working sets keep the RTL default (never smaller)
    assert fragmenter_for_working_set(eal, 4 * 128, 26) == DEFAULT_FRAGMENTER
    # the paper's scale: batch 4096, 4 mini-batches, 26 tables, every lookup cold
    f = fragmenter_for_working_set(eal, 4 * 4096, 26)
    assert (f.dedup_banks, f.dedup_ways) == (DEFAULT_FRAGMENTER.dedup_banks,
                                             DEFAULT_FRAGMENTER.dedup_ways)
    m = 4 * 4096 * 26 / f.dedup_banks
    assert f.bank_capacity - 26 >= m + 6 * math.sqrt(m)
    half = f.replace(dedup_sets=f.dedup_sets // 2)           # the smallest power of two
    assert half.bank_capacity - 26 < m + 6 * math.sqrt(m)
    assert f.cold_capacity >= 4 * 4096 * 26
    # a smaller expected cold share needs less
    g = fragmenter_for_working_set(eal, 4 * 4096, 26, cold_share=0.1)
    assert DEFAULT_FRAGMENTER.cold_capacity <= g.cold_capacity < f.cold_capacity
    # inputs_bits grows with the working set
    big = fragmenter_for_working_set(eal, 2 ** 21 + 5, 1)
    assert 2 ** big.inputs_bits >= 2 ** 21 + 5
    for bad in ((0, 26), (10, 0)):
        with pytest.raises(ValueError):
            fragmenter_for_working_set(eal, *bad)
    with pytest.raises(ValueError):
        fragmenter_for_working_set(eal, 10, 2, cold_share=0.0)


def test_device_default_fragmenter_from_working_set_hint():
    cfg = EALConfig()
    rows = [1000] * 26
    with HotlineDevice(rows, 4, config=cfg) as dev:                    # no hint: RTL default
        assert dev.fragmenter == FragmenterConfig(eal=cfg)
    with HotlineDevice(rows, 4, config=cfg, working_set=4 * 4096) as dev:
        assert dev.fragmenter == fragmenter_for_working_set(cfg, 4 * 4096, 26)
    with HotlineDevice(rows, 4, config=cfg, working_set=(4 * 4096, 40)) as dev:
        assert dev.fragmenter == fragmenter_for_working_set(cfg, 4 * 4096, 40)
    given = FragmenterConfig(eal=cfg, dedup_banks=4, dedup_sets=16, dedup_ways=4)
    with HotlineDevice(rows, 4, config=cfg, working_set=4 * 4096, fragmenter=given) as dev:
        assert dev.fragmenter is given                                 # explicit wins
    for bad in ((1, 2, 3), 0, (5, 0)):
        with pytest.raises(ValueError):
            HotlineDevice(rows, 4, config=cfg, working_set=bad)


def test_sized_device_does_not_end_early_where_the_default_does():
    """A working set of 1,200 inputs x 26 distinct cold rows (31,200 > 24,576): the RTL
    default de-dup table ends it early; the table sized from the hint takes it whole."""
    cfg = EALConfig()
    T, n = 26, 1200
    rows = [n] * T
    ws = torch.arange(n).repeat(T, 1).T.contiguous()                   # every row distinct
    results = {}
    for hint in (None, n):
        with HotlineDevice(rows, 4, config=cfg, working_set=hint) as dev:
            dev.freeze()
            s = dev.schedule(ws, 64)
            results[hint] = (s.ended_early, s.n_inputs, dev.counters().early_ends)
            if hint is not None:
                lg = AccessLogger(cfg)
                f = fragment(ws, lg, 64, fragmenter=dev.fragmenter)
                assert (f.n_inputs, f.ended_early) == (n, False)
                assert torch.equal(s.remapped, f.remapped)
    assert results[None][0] and results[None][1] < n and results[None][2] == 1
    assert results[n] == (False, n, 0)


# --- compact hot slots -----------------------------------------------------------------------
CFG = EALConfig(banks=2, sets=4, ways=4, table_bits=3, row_bits=8)


def _pair(table_rows, learn, capacity=None, **kw):
    a = HotlineDevice(table_rows, 3, config=CFG, gather_threads=1, **kw)
    b = HotlineDevice(table_rows, 3, config=CFG, gather_threads=1, hot_slots="compact", **kw)
    for d in (a, b):
        d.learn(learn)
    return a, b, a.freeze(), b.freeze(hot_capacity=capacity)


@pytest.mark.parametrize("capacity", [None, 0, 3, 100])
def test_compact_layout_equals_entry_layout(capacity):
    gen = torch.Generator().manual_seed(11)
    table_rows = [40, 70, 5, 90]
    learn = skewed(table_rows, 400, gen)
    lg = AccessLogger(CFG)
    lg.learn(make_keys(torch.arange(4).expand(400, 4), learn, CFG))
    a, b, ha, hb = _pair(table_rows, learn, capacity)
    try:
        n = ha.n
        assert n > 3
        # same hot rows in the same order; compact slots 0..n-1; entry slots kept
        slots, tables, prow = lg.popular_rows()
        assert torch.equal(ha.slots, slots) and torch.equal(ha.entry_slots, slots)
        assert torch.equal(hb.entry_slots, slots) and torch.equal(hb.slots, torch.arange(n))
        for f in ("tables", "rows", "global_rows"):
            assert torch.equal(getattr(ha, f), getattr(hb, f))
        cap = max(capacity or 0, n)
        assert b.hot_capacity == cap
        assert a.hot_capacity == a.entries == CFG.entries
        host = torch.randn(sum(table_rows), 3, generator=gen)
        hot_a, hot_b = a.load_hot_table(host), b.load_hot_table(host)
        assert hot_b.shape == (cap, 3)
        assert torch.equal(hot_b[:n], hot_a[ha.slots]) and not hot_b[n:].any()
        compact_of_entry = torch.full((CFG.entries,), -1, dtype=torch.int64)
        compact_of_entry[hb.entry_slots] = torch.arange(n)
        off = offsets_of(table_rows)
        for ws in (skewed(table_rows, 120, gen), learn[:50], learn[:0]):
            sa, sb = a.schedule(ws, 7), b.schedule(ws, 7)
            f = fragment(ws, lg, 7)
            assert torch.equal(sa.remapped, f.remapped)
            for name in ("popular", "hit", "non_popular", "cold_global_rows", "cold_tables",
                         "cold_rows"):
                assert torch.equal(getattr(sa, name), getattr(sb, name)), name
            assert [m.tolist() for m in sa.popular_micro_batches] == \
                [m.tolist() for m in sb.popular_micro_batches]
            for name in ("n_inputs", "n_hits", "n_popular", "n_cold", "n_unique",
                         "ended_early"):
                assert getattr(sa, name) == getattr(sb, name), name
            assert sb.entries == sb.hot_capacity == cap
            # remapped: hits at their compact slot, cold rows at cap + j
            want = torch.where(sa.hit, compact_of_entry[sa.remapped.clamp(max=CFG.entries - 1)],
                               sa.remapped - CFG.entries + cap)
            assert torch.equal(sb.remapped, want)
            # the working-row semantics with plain torch indexing
            working = torch.cat([hot_b, host.index_select(0, sb.cold_global_rows)])
            assert torch.equal(working[sb.remapped], host[off[None, :] + ws])
        assert a.counters() == b.counters()
        # store_hot_table writes the same rows home
        hot_b[:n] += 1.0
        hot_a[ha.slots] += 1.0
        ta, tb = host.clone(), host.clone()
        a.store_hot_table(hot_a, ta)
        b.store_hot_table(hot_b, tb)
        assert torch.equal(ta, tb) and not torch.equal(ta, host)
        # a hot table of the wrong size is refused
        with pytest.raises(ScheduleError):
            b.load_hot_table(host, torch.zeros(cap + 1, 3))
        with pytest.raises(ScheduleError):
            b.store_hot_table(torch.zeros(CFG.entries, 3), tb)
    finally:
        a.close()
        b.close()


def test_compact_capacity_grows_and_relearn():
    gen = torch.Generator().manual_seed(5)
    table_rows = [30, 30]
    with HotlineDevice(table_rows, 2, config=CFG, hot_slots="compact") as dev:
        assert dev.hot_capacity is None                        # nothing frozen yet
        few = torch.tensor([[1, 2], [1, 2]])
        hot = dev.freeze()                                      # nothing learned
        assert hot.n == 0 and dev.hot_capacity == 0
        dev.clear()
        dev.learn(few)
        hot = dev.freeze(hot_capacity=8)
        assert hot.n == 2 and dev.hot_capacity == 8
        s = dev.schedule(torch.tensor([[1, 2], [3, 2]]), 4)
        assert s.remapped.tolist() == [[0, 1], [8, 1]]
        many = skewed(table_rows, 300, gen, power=1.0)
        hot = dev.relearn([many, many], hot_capacity=8)
        assert hot.n > 8 and dev.hot_capacity == hot.n
    with pytest.raises(ValueError, match="compact"):
        with HotlineDevice(table_rows, 2, config=CFG) as dev:
            dev.freeze(hot_capacity=4)
    with pytest.raises(ValueError, match="hot_slots"):
        HotlineDevice(table_rows, 2, config=CFG, hot_slots="dense")


def test_compact_schedule_bags_and_dedup_cut():
    """Bags and the early end of the de-dup rule behave the same in both layouts."""
    gen = torch.Generator().manual_seed(9)
    table_rows = [200, 200, 200]
    learn = skewed(table_rows, 300, gen)
    frag = FragmenterConfig(eal=CFG, dedup_banks=2, dedup_sets=4, dedup_ways=4)
    a, b, ha, hb = _pair(table_rows, learn, None, fragmenter=frag)
    try:
        ws = skewed(table_rows, 80, gen, power=1.0)
        sa, sb = a.schedule(ws, 8), b.schedule(ws, 8)
        assert sa.ended_early and (sb.n_inputs, sb.ended_early) == (sa.n_inputs, True)
        assert torch.equal(sa.cold_global_rows, sb.cold_global_rows)
        T = len(table_rows)
        tables = torch.arange(T).repeat(ws.shape[0])
        offs = torch.arange(0, ws.numel() + 1, T)
        ba = a.schedule_bags(tables, ws.reshape(-1), offs, 8)
        bb = b.schedule_bags(tables, ws.reshape(-1), offs, 8)
        assert torch.equal(ba.remapped.view(-1, T), sa.remapped)
        assert torch.equal(bb.remapped.view(-1, T), sb.remapped)
        # the bank of each cold row is what ended it (both layouts see the same cold list)
        keys = make_keys(sb.cold_tables, sb.cold_rows, CFG)
        assert int(torch.bincount(dedup_bank(keys, frag)).max()) > frag.bank_capacity - T
    finally:
        a.close()
        b.close()

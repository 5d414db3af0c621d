"""Driver: freeze and schedule against the golden model (docs/driver.md, docs/spec.md 4-7).

References: a separate ``verif.golden.AccessLogger`` fed the same learn stream (its
``popular_rows``, ``lookup`` and ``verif.golden.fragment``), and plain torch indexing of the
host table for the working-row semantics. The driver's own code is never the reference.
"""

import pytest
import torch

from hotline_spec.config import EALConfig
from verif.golden import AccessLogger, fragment, make_keys
from sw_driver.driver import HotlineDevice, HotRows, Schedule
from sw_driver.errors import IndexOutOfRangeError

CONFIGS = {
    # heavy evictions: 4 entries
    "tiny": EALConfig(banks=1, sets=2, ways=2, table_bits=2, row_bits=5),
    "small": EALConfig(banks=2, sets=4, ways=4, table_bits=3, row_bits=8),
    "oneway": EALConfig(banks=4, sets=2, ways=1, table_bits=2, row_bits=6),
    "odd_keys": EALConfig(banks=2, sets=2, ways=3, table_bits=1, row_bits=6, hash_rounds=3),
    # 64-bit keys: tags can be >= 2**63 (negative int64 patterns)
    "key64": EALConfig(banks=4, sets=4, ways=2, table_bits=4, row_bits=60, hash_rounds=5),
    # one set: 64-bit tags, negative as int64
    "tag64": EALConfig(banks=1, sets=1, ways=8, table_bits=4, row_bits=60, hash_rounds=2),
}


def make_rows(cfg, n_tables, gen):
    hi = min(2 ** cfg.row_bits, 90)
    return [int(torch.randint(1, hi + 1, (1,), generator=gen)) for _ in range(n_tables)]


def skewed(table_rows, n, gen, power=3.0):
    """[n, T] rows, skewed towards small row ids so that rows repeat."""
    cols = [(torch.rand(n, generator=gen) ** power * r).long().clamp_max(r - 1)
            for r in table_rows]
    return torch.stack(cols, 1) if cols else torch.zeros(n, 0, dtype=torch.int64)


def golden_logger(cfg, batches):
    lg = AccessLogger(cfg)
    for b in batches:
        t = torch.arange(b.shape[1]).expand(b.shape[0], b.shape[1])
        lg.learn(make_keys(t, b, cfg))
    return lg


def offsets_of(table_rows):
    out, acc = [], 0
    for r in table_rows:
        out.append(acc)
        acc += r
    return torch.tensor(out, dtype=torch.int64)


def assert_hot_equal(hot, lg, thr, table_rows):
    slots, tables, rows = lg.popular_rows(thr)
    assert isinstance(hot, HotRows)
    assert torch.equal(hot.slots, slots)
    assert torch.equal(hot.tables, tables)
    assert torch.equal(hot.rows, rows)
    assert torch.equal(hot.global_rows, offsets_of(table_rows)[tables] + rows)
    assert hot.n == slots.numel()


def assert_schedule_equal(s, f, table_rows, cfg):
    assert isinstance(s, Schedule)
    assert torch.equal(s.popular, f.popular)
    assert torch.equal(s.hit, f.hit)
    assert len(s.popular_micro_batches) == len(f.popular_micro_batches)
    for a, b in zip(s.popular_micro_batches, f.popular_micro_batches):
        assert a.dtype == torch.int64 and torch.equal(a, b)
    assert s.non_popular.dtype == torch.int64 and torch.equal(s.non_popular, f.non_popular)
    off = offsets_of(table_rows)
    assert s.cold_global_rows.device.type == "cpu"
    assert s.cold_global_rows.dtype == torch.int64
    assert torch.equal(s.cold_global_rows, off[f.cold_tables] + f.cold_rows)
    assert torch.equal(s.cold_tables, f.cold_tables)
    assert torch.equal(s.cold_rows, f.cold_rows)
    assert s.remapped.dtype == torch.int64 and torch.equal(s.remapped, f.remapped)
    assert (s.n_cold, s.n_hits, s.n_lookups, s.n_inputs, s.n_popular) == \
        (f.n_cold, f.n_hits, f.n_lookups, f.n_inputs, f.n_popular)
    assert s.entries == cfg.entries


def assert_working_rows(s, dev, host_table, ws, hot_table):
    """cat([hot_table, cold rows])[remapped] must be host_table[offsets + ws] (plain torch)."""
    staged = host_table.index_select(0, s.cold_global_rows)
    working = torch.cat([hot_table, staged])
    want = host_table[offsets_of(dev.table_rows)[None, :] + ws]
    assert torch.equal(working[s.remapped], want)
    if s.n_inputs:
        # popular inputs read the hot table only
        assert bool((s.remapped[s.popular] < dev.entries).all())


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("thr", [0, 1, 2, 3])
def test_schedule_matches_golden_fragment(name, thr):
    cfg = CONFIGS[name]
    gen = torch.Generator().manual_seed(hash((name, thr)) % 2 ** 31)
    n_tables = min(cfg.max_tables, 3)
    table_rows = make_rows(cfg, n_tables, gen)
    learn = [skewed(table_rows, 150, gen), skewed(table_rows, 90, gen, power=2.0)]
    lg = golden_logger(cfg, learn)
    with HotlineDevice(table_rows, 4, config=cfg, gather_threads=2) as dev:
        for b in learn:
            dev.learn(b)
        hot = dev.freeze(thr)
        assert_hot_equal(hot, lg, thr, table_rows)
        host = torch.randn(dev.total_rows, 4, generator=gen)
        hot_table = dev.load_hot_table(host)
        # working sets that reuse rows of each other and of the learn stream
        base = skewed(table_rows, 60, gen)
        working_sets = [base, torch.cat([base[20:], skewed(table_rows, 25, gen)]),
                        learn[0][:40], base[:1], base[:0]]
        for ws in working_sets:
            for mbs in (1, 3, 16, 1000):
                s = dev.schedule(ws, mbs)
                f = fragment(ws, lg, mbs, popular_max_rrpv=thr)
                assert_schedule_equal(s, f, table_rows, cfg)
                assert_working_rows(s, dev, host, ws, hot_table)


def test_schedule_default_threshold_and_numpy_input():
    cfg = CONFIGS["small"]
    gen = torch.Generator().manual_seed(7)
    table_rows = [40, 70, 5, 90]
    learn = skewed(table_rows, 400, gen)
    lg = golden_logger(cfg, [learn])
    with HotlineDevice(table_rows, 2, config=cfg, device=torch.device("cpu")) as dev:
        dev.learn(learn.numpy().astype("int32"))
        assert_hot_equal(dev.freeze(), lg, None, table_rows)
        ws = skewed(table_rows, 200, gen)
        s = dev.schedule(ws.to(torch.int32), 32)
        assert_schedule_equal(s, fragment(ws, lg, 32), table_rows, cfg)
        s2 = dev.schedule(ws.numpy(), 32)
        assert_schedule_equal(s2, fragment(ws, lg, 32), table_rows, cfg)


def test_schedule_edge_cases():
    cfg = CONFIGS["small"]
    table_rows = [10, 10]
    with HotlineDevice(table_rows, 2, config=cfg) as dev:
        # nothing learned: no hot row, everything cold
        hot = dev.freeze()
        assert hot.n == 0 and hot.slots.dtype == torch.int64
        lg = AccessLogger(cfg)
        ws = torch.tensor([[1, 2], [1, 3], [0, 2]])
        s = dev.schedule(ws, 2)
        assert_schedule_equal(s, fragment(ws, lg, 2), table_rows, cfg)
        assert s.popular_micro_batches == []
        assert s.cold_global_rows.tolist() == [1, 12, 13, 0]
        assert s.remapped.tolist() == [[cfg.entries + 0, cfg.entries + 1],
                                       [cfg.entries + 0, cfg.entries + 2],
                                       [cfg.entries + 3, cfg.entries + 1]]
        # empty working set
        e = dev.schedule(torch.zeros(0, 2, dtype=torch.int64), 4)
        assert e.n_inputs == 0 and e.n_cold == 0 and e.popular_micro_batches == []
        assert e.remapped.shape == (0, 2) and e.non_popular.numel() == 0
        assert e.cold_global_rows.shape == (0,)
    # all popular: learn every row twice, with ample capacity (no evictions)
    cfg = EALConfig()
    with HotlineDevice(table_rows, 2, config=cfg) as dev:
        every = torch.stack([torch.arange(10), torch.arange(10)], 1)
        dev.learn(every)
        dev.learn(every)
        lg = golden_logger(cfg, [every, every])
        hot = dev.freeze()
        assert_hot_equal(hot, lg, None, table_rows)
        assert hot.n == 20  # ample capacity: seen twice -> popular (spec 5)
        ws = every.flip(0)
        s = dev.schedule(ws, 4)
        assert_schedule_equal(s, fragment(ws, lg, 4), table_rows, cfg)
        assert [m.tolist() for m in s.popular_micro_batches] == \
            [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        assert s.n_cold == 0 and s.non_popular.numel() == 0 and s.n_hits == 20


def test_schedule_is_read_only():
    cfg = CONFIGS["tiny"]
    gen = torch.Generator().manual_seed(3)
    table_rows = [30, 20]
    learn = skewed(table_rows, 100, gen)
    lg = golden_logger(cfg, [learn])
    with HotlineDevice(table_rows, 2, config=cfg) as dev:
        dev.learn(learn)
        dev.freeze()
        ws = skewed(table_rows, 50, gen)
        a = dev.schedule(ws, 5)
        dev.schedule(skewed(table_rows, 50, gen), 5)
        b = dev.schedule(ws, 5)
        for s in (a, b):
            assert_schedule_equal(s, fragment(ws, lg, 5), table_rows, cfg)
        assert torch.equal(dev.transport.logger.valid, lg.valid)
        assert torch.equal(dev.transport.logger.rrpv, lg.rrpv)


@pytest.mark.parametrize("name", ["tiny", "small", "key64"])
def test_slot_map_matches_golden_lookup(name):
    cfg = CONFIGS[name]
    gen = torch.Generator().manual_seed(11)
    table_rows = [25, 32, 9]
    learn = skewed(table_rows, 300, gen)
    lg = golden_logger(cfg, [learn])
    with HotlineDevice(table_rows, 2, config=cfg) as dev:
        dev.learn(learn)
        for thr in (0, 1, 2, 3):
            dev.freeze(thr)
            assert dev.popular_max_rrpv == thr
            sm = dev.slot_map
            assert sm.dtype == torch.int32 and sm.shape == (sum(table_rows),)
            off = offsets_of(table_rows)
            for t, r in enumerate(table_rows):
                keys = make_keys(t, torch.arange(r), cfg)
                res = lg.lookup(keys, thr)
                want = torch.where(res.hit, res.slot, -1)
                assert torch.equal(sm[off[t]:off[t] + r].long(), want)


def test_relearn_clear_unfreeze_match_golden():
    cfg = CONFIGS["small"]
    gen = torch.Generator().manual_seed(5)
    table_rows = [50, 60]
    a, b = skewed(table_rows, 200, gen), skewed(table_rows, 200, gen, power=1.5)
    ws = skewed(table_rows, 80, gen)
    with HotlineDevice(table_rows, 2, config=cfg) as dev:
        dev.learn(a)
        assert_hot_equal(dev.freeze(), golden_logger(cfg, [a]), None, table_rows)
        # periodic re-learn from scratch
        hot = dev.relearn(b)
        lg_b = golden_logger(cfg, [b])
        assert_hot_equal(hot, lg_b, None, table_rows)
        assert_schedule_equal(dev.schedule(ws, 8), fragment(ws, lg_b, 8), table_rows, cfg)
        # relearn from several batches with a threshold
        hot = dev.relearn([a[:100], a[100:]], popular_max_rrpv=2)
        assert_hot_equal(hot, golden_logger(cfg, [a]), 2, table_rows)
        # clear + learn + freeze by hand
        dev.clear()
        assert dev.state == "learning" and dev.hot_rows is None and dev.slot_map is None
        dev.learn(b)
        assert_hot_equal(dev.freeze(), lg_b, None, table_rows)
        # unfreeze: learning continues on the same tag store
        dev.unfreeze()
        dev.learn(a)
        lg_ba = golden_logger(cfg, [b, a])
        assert_hot_equal(dev.freeze(), lg_ba, None, table_rows)
        assert_schedule_equal(dev.schedule(ws, 3), fragment(ws, lg_ba, 3), table_rows, cfg)


def test_learn_returns_transport_results():
    cfg = CONFIGS["tiny"]
    table_rows = [8, 8]
    batch = torch.tensor([[1, 2], [1, 3], [1, 2]])
    lg = AccessLogger(cfg)
    want = lg.learn(make_keys(torch.arange(2).expand(3, 2), batch, cfg))
    with HotlineDevice(table_rows, 1, config=cfg) as dev:
        hit, slot = dev.learn(batch)
    assert hit.shape == (3, 2) and torch.equal(hit, want.hit)
    assert torch.equal(slot, want.slot)


def test_hot_table_load_and_store():
    cfg = CONFIGS["small"]
    gen = torch.Generator().manual_seed(9)
    table_rows = [30, 30]
    learn = skewed(table_rows, 200, gen)
    with HotlineDevice(table_rows, 3, config=cfg) as dev:
        dev.learn(learn)
        hot = dev.freeze()
        host = torch.randn(60, 3, generator=gen)
        ht = dev.load_hot_table(host)
        assert ht.shape == (cfg.entries, 3)
        want = torch.zeros(cfg.entries, 3)
        want[hot.slots] = host[hot.global_rows]
        assert torch.equal(ht, want)
        buf = torch.full((cfg.entries, 3), 7.0)
        assert dev.load_hot_table(host, buf) is buf and torch.equal(buf, want)
        ht += 1.0
        expect = host.clone()
        expect[hot.global_rows] += 1.0
        dev.store_hot_table(ht, host)
        assert torch.equal(host, expect)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_schedule_on_cuda_matches_golden():
    cfg = CONFIGS["small"]
    gen = torch.Generator().manual_seed(21)
    table_rows = [40, 70, 90]
    learn = skewed(table_rows, 500, gen)
    lg = golden_logger(cfg, [learn])
    with HotlineDevice(table_rows, 4, config=cfg, device="cuda") as dev:
        dev.learn(learn)
        assert_hot_equal(dev.freeze(), lg, None, table_rows)
        assert dev.slot_map.is_cuda
        for ws in (skewed(table_rows, 300, gen), learn[:50], learn[:0]):
            s = dev.schedule(ws, 16)
            assert s.remapped.is_cuda and not s.cold_global_rows.is_cuda
            f = fragment(ws, lg, 16)
            cpu = Schedule(**{k: (v.cpu() if isinstance(v, torch.Tensor) else
                                  [m.cpu() for m in v] if isinstance(v, list) else v)
                              for k, v in vars(s).items()})
            assert_schedule_equal(cpu, f, table_rows, cfg)
        with pytest.raises(IndexOutOfRangeError, match="row 90 is out of range for table 2"):
            dev.schedule(torch.tensor([[0, 0, 90]]), 1)


@pytest.mark.parametrize("name", ["small", "key64"])
@pytest.mark.parametrize("dedup_banks", [1, 4])
def test_schedule_ends_early_like_golden(name, dedup_banks):
    """A de-dup table far too small for the working sets: the driver's schedules end where
    the golden bank-capacity rule ends them (spec 7.5), field by field, and taking the rest
    as the next working set covers every input exactly once, as ``fragment_stream`` does."""
    from hotline_spec.config import FragmenterConfig
    from verif.golden import fragment_stream
    cfg = CONFIGS[name]
    fr = FragmenterConfig(eal=cfg, dedup_banks=dedup_banks, dedup_sets=2,
                          dedup_ways=cfg.max_tables)
    gen = torch.Generator().manual_seed(11 + dedup_banks)
    n_tables = min(cfg.max_tables, 3)
    table_rows = [1 << min(cfg.row_bits, 20)] * n_tables
    learn = skewed(table_rows, 300, gen, power=6.0)
    lg = golden_logger(cfg, [learn])
    ws = torch.cat([skewed(table_rows, 150, gen, power=6.0), learn[:30]])
    with HotlineDevice(table_rows, 4, config=cfg, gather_threads=2, fragmenter=fr) as dev:
        dev.learn(learn)
        dev.freeze()
        host = torch.randn(dev.total_rows if dev.total_rows < 1 << 22 else 1, 4, generator=gen) \
            if name == "small" else None
        hot_table = dev.load_hot_table(host) if host is not None else None
        golden = fragment_stream(ws, lg, 7, 64, fr)
        assert sum(s.ended_early for _, s in golden) >= 2
        start, seen = 0, 0
        for g_start, g in golden:
            assert start == g_start
            part = ws[start:start + 64]
            s = dev.schedule(part, 7)
            assert s.ended_early == g.ended_early
            assert s.n_cold <= dedup_banks * fr.bank_capacity
            assert_schedule_equal(s, g, table_rows, cfg)
            if hot_table is not None:
                assert_working_rows(s, dev, host, part[:s.n_inputs], hot_table)
            start += s.n_inputs
            seen += 1
        assert start == len(ws)
        assert dev.counters().early_ends == sum(s.ended_early for _, s in golden)

"""Driver: Counters values on a small example worked out by hand (docs/driver.md)."""

import torch

from hotline_spec.config import EALConfig
from sw_driver.counters import Counters
from sw_driver.driver import HotlineDevice

FIELDS = ["lookups", "unique", "hits", "popular_inputs", "inputs", "cold_rows",
          "bytes_gathered", "bytes_written_back", "working_sets", "early_ends"]


def test_counters_dataclass():
    c = Counters()
    assert list(c.as_dict()) == FIELDS and set(c.as_dict().values()) == {0}
    assert c.hit_rate == 0.0 and c.popular_fraction == 0.0
    c.lookups, c.hits, c.inputs, c.popular_inputs = 10, 4, 5, 1
    d = c.copy()
    c.reset()
    assert c == Counters() and d.lookups == 10
    assert d.hit_rate == 0.4 and d.popular_fraction == 0.2


def test_counters_hand_computed():
    # Ample capacity (4096 entries, 7 keys): no evictions, so with threshold 1 the popular
    # rows are exactly those learned at least twice (spec section 5): (t0, r0) and (t1, r0).
    cfg = EALConfig()
    E = cfg.entries
    table_rows, dim = [4, 3], 2                      # offsets [0, 4]
    learn = torch.tensor([[0, 0], [0, 1], [1, 0], [2, 2]])
    ws = torch.tensor([[0, 0],    # both hot                 -> popular
                       [0, 1],    # t1 r1 cold               -> cold (1,1) = global 5
                       [3, 0],    # t0 r3 cold               -> cold (0,3) = global 3
                       [1, 2],    # t0 r1 (seen once), t1 r2 -> cold global 1, 6
                       [3, 2]])   # both cold, already listed
    with HotlineDevice(table_rows, dim, config=cfg, gather_threads=2) as dev:
        dev.learn(learn)
        hot = dev.freeze()
        assert sorted(zip(hot.tables.tolist(), hot.rows.tolist())) == [(0, 0), (1, 0)]
        slot = {(t, r): s for t, r, s in zip(hot.tables.tolist(), hot.rows.tolist(),
                                             hot.slots.tolist())}
        s = dev.schedule(ws, 1)
        assert s.cold_global_rows.tolist() == [5, 3, 1, 6]
        assert s.remapped.tolist() == [[slot[0, 0], slot[1, 0]],
                                       [slot[0, 0], E + 0],
                                       [E + 1, slot[1, 0]],
                                       [E + 2, E + 3],
                                       [E + 1, E + 3]]
        assert [m.tolist() for m in s.popular_micro_batches] == [[0]]
        assert s.non_popular.tolist() == [1, 2, 3, 4]
        assert (s.n_lookups, s.n_hits, s.n_popular, s.n_cold, s.n_unique) == (10, 4, 1, 4, 6)
        assert dev.counters().as_dict() == dict(
            lookups=10, unique=6, hits=4, popular_inputs=1, inputs=5, cold_rows=4,
            bytes_gathered=0, bytes_written_back=0, working_sets=1, early_ends=0)
        host = torch.arange(7 * dim, dtype=torch.float32).view(7, dim)
        staged = dev.gather(s, host, torch.empty(8, dim))
        assert staged.tolist() == [[10, 11], [6, 7], [2, 3], [12, 13]]
        dev.write_back(s, staged + 100, host)
        assert host[[5, 3, 1, 6]].tolist() == [[110, 111], [106, 107], [102, 103],
                                               [112, 113]]
        # a second working set: all hot, one input
        s2 = dev.schedule(torch.tensor([[0, 0], [0, 0]]), 1)
        assert (s2.n_hits, s2.n_unique, s2.n_cold) == (4, 2, 0)
        c = dev.counters()
        assert c.as_dict() == dict(
            lookups=14, unique=8, hits=8, popular_inputs=3, inputs=7, cold_rows=4,
            bytes_gathered=4 * dim * 4, bytes_written_back=4 * dim * 4, working_sets=2,
            early_ends=0)
        assert abs(c.hit_rate - 8 / 14) < 1e-12
        # counters() is a snapshot; reset_counters() zeroes the device's counters
        c.lookups = -1
        assert dev.counters().lookups == 14
        dev.reset_counters()
        assert dev.counters() == Counters()
        # learning, freezing and clearing do not count
        dev.clear()
        dev.learn(learn)
        dev.freeze()
        assert dev.counters() == Counters()

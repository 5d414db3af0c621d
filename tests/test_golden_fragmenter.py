"""Golden model: input classifier and fragmenter (docs/spec.md sections 6 and 7).

The reference is a plain-Python fragmenter written from the spec text. Its frozen-mode hits
come from the logger's tag-store tensors read as plain lists and a private copy of the spec's
hash formula, not from ``AccessLogger.lookup``.
"""

import random

import pytest
import torch

from hotline_spec.config import EALConfig
from verif.golden import AccessLogger, classify_inputs, fragment, iter_working_sets, make_keys
from spec_reference import ref_hash




def ref_frozen(logger, thr):
    """key -> (hit, slot) from the tag store as plain lists (spec sections 4, 5)."""
    cfg = logger.cfg
    valid, rrpv, tag = logger.valid.tolist(), logger.rrpv.tolist(), logger.tag.tolist()

    def frozen(table, row):
        h = ref_hash((table << cfg.row_bits) | row, cfg)
        b, s, t = h % cfg.banks, (h // cfg.banks) % cfg.sets, h // (cfg.banks * cfg.sets)
        for w in range(cfg.ways):
            if valid[b][s][w] and tag[b][s][w] == t and rrpv[b][s][w] <= thr:
                return True, (b * cfg.sets + s) * cfg.ways + w
        return False, None
    return frozen


def ref_fragment(sparse, frozen, micro_batch_size, entries):
    """Spec sections 6 and 7, one input and one table at a time."""
    hits = [[frozen(t, r) for t, r in enumerate(inp)] for inp in sparse]
    popular = [all(h for h, _ in row) for row in hits]
    pop = [i for i, p in enumerate(popular) if p]
    micro = [pop[i:i + micro_batch_size] for i in range(0, len(pop), micro_batch_size)]
    non_popular = [i for i, p in enumerate(popular) if not p]
    cold, where = [], {}
    for i in non_popular:
        for t, r in enumerate(sparse[i]):
            if not hits[i][t][0] and (t, r) not in where:
                where[(t, r)] = len(cold)
                cold.append((t, r))
    remapped = [[slot if hit else entries + where[(t, r)]
                 for t, (r, (hit, slot)) in enumerate(zip(inp, row))]
                for inp, row in zip(sparse, hits)]
    return dict(micro=micro, non_popular=non_popular, cold=cold, remapped=remapped,
                popular=popular, hits=[[h for h, _ in row] for row in hits])


CFG = EALConfig(banks=4, sets=16, ways=4, table_bits=3, row_bits=10)   # 256 entries


def skewed_inputs(n, n_tables, seed, rows=200):
    fixed = random.Random(1234)                   # the same hot rows for every seed
    perms = [fixed.sample(range(rows), rows) for _ in range(n_tables)]  # ... per table
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) ** 1.6 for i in range(rows)]
    cols = [[perms[t][i] for i in rng.choices(range(rows), weights=weights, k=n)]
            for t in range(n_tables)]
    return torch.tensor(cols, dtype=torch.int64).T.contiguous()


def learned_logger(sparse, cfg=CFG):
    eal = AccessLogger(cfg)
    tables = torch.arange(sparse.shape[1]).expand_as(sparse)
    eal.learn(make_keys(tables, sparse, cfg))   # input order, then table order
    return eal


def check_against_ref(ws, eal, mbs, thr):
    sched = fragment(ws, eal, mbs, popular_max_rrpv=thr)
    want = ref_fragment(ws.tolist(), ref_frozen(eal, eal.cfg.popular_max_rrpv if thr is None
                                                 else thr), mbs, eal.cfg.entries)
    assert [m.tolist() for m in sched.popular_micro_batches] == want["micro"]
    assert all(m.numel() > 0 and m.dtype == torch.int64 for m in sched.popular_micro_batches)
    assert sched.non_popular.tolist() == want["non_popular"]
    assert sched.non_popular.dtype == torch.int64
    assert list(zip(sched.cold_tables.tolist(), sched.cold_rows.tolist())) == want["cold"]
    assert sched.cold_keys.tolist() == [(t << CFG.row_bits) | r for t, r in want["cold"]]
    assert sched.remapped.dtype == torch.int64
    assert sched.remapped.tolist() == want["remapped"]
    assert sched.popular.tolist() == want["popular"]
    assert sched.hit.tolist() == want["hits"]
    assert sched.n_lookups == ws.numel()
    assert sched.n_hits == sum(map(sum, want["hits"]))
    assert sched.n_cold == len(want["cold"])
    if sched.popular.any():
        assert int(sched.remapped[sched.popular].max()) < eal.cfg.entries
    return sched


@pytest.mark.parametrize("mbs", [1, 5, 7, 16, 1000])
@pytest.mark.parametrize("thr", [None, 0, 2])
def test_fragment_matches_reference(mbs, thr):
    n_tables = 5
    train = skewed_inputs(300, n_tables, seed=1)
    eal = learned_logger(train)
    data = skewed_inputs(200, n_tables, seed=2)          # 200 = 4 * 48 + 8
    n_ws = 0
    kinds = set()
    for ws in iter_working_sets(data, mini_batch_size=16, working_set=3):
        sched = check_against_ref(ws, eal, mbs, thr)
        n_ws += 1
        kinds.add((bool(sched.popular.any()), bool((~sched.popular).any())))
    assert n_ws == 5
    assert (True, True) in kinds          # both kinds of input occur


def test_fragment_all_cold_and_all_popular():
    data = skewed_inputs(37, 4, seed=3)
    # Nothing learned: no popular micro-batch, every lookup cold.
    sched = check_against_ref(data, AccessLogger(CFG), 8, None)
    assert sched.popular_micro_batches == [] and sched.non_popular.numel() == 37
    assert sched.n_hits == 0 and int(sched.remapped.min()) == CFG.entries
    # Learned twice on ample capacity: everything hits, no cold rows, no non-popular input.
    big = EALConfig(banks=16, sets=64, ways=8, table_bits=3, row_bits=10)
    keys = make_keys(torch.arange(4).expand_as(data), data, big)
    eal = AccessLogger(big)
    eal.learn(torch.cat([keys.reshape(-1), keys.reshape(-1)]))
    sched = fragment(data, eal, 10)
    assert sched.popular.all() and sched.non_popular.numel() == 0
    assert [m.numel() for m in sched.popular_micro_batches] == [10, 10, 10, 7]
    assert sched.n_cold == 0 and sched.cold_keys.numel() == 0
    # empty working set
    sched = fragment(torch.zeros(0, 4, dtype=torch.int64), eal, 10)
    assert sched.popular_micro_batches == [] and sched.remapped.shape == (0, 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_remapped_gathers_the_right_rows(seed):
    # Lay out the hot table from popular_rows, gather the cold rows, concatenate and index
    # with `remapped`: every input must see exactly the rows a plain per-table lookup gives.
    torch.manual_seed(seed)
    n_tables, rows, dim = 6, 300, 8
    emb = [torch.randn(rows, dim) for _ in range(n_tables)]
    train = skewed_inputs(400, n_tables, seed=10 + seed)
    eal = learned_logger(train)
    data = skewed_inputs(150, n_tables, seed=20 + seed)
    for thr in (0, 1, 3):
        slots, tables, prow = eal.popular_rows(thr)
        hot = torch.full((CFG.entries, dim), float("nan"))   # unused slots poison the result
        for s, t, r in zip(slots.tolist(), tables.tolist(), prow.tolist()):
            hot[s] = emb[t][r]
        for ws in iter_working_sets(data, mini_batch_size=20, working_set=2):
            sched = fragment(ws, eal, 7, popular_max_rrpv=thr)
            cold = torch.stack([emb[t][r] for t, r in zip(sched.cold_tables.tolist(),
                                                          sched.cold_rows.tolist())]) \
                if sched.n_cold else torch.zeros(0, dim)
            assert cold.shape[0] == sched.n_cold
            gathered = torch.cat([hot, cold])[sched.remapped]          # [n, tables, dim]
            plain = torch.stack([emb[t][ws[:, t]] for t in range(n_tables)], dim=1)
            assert torch.equal(gathered, plain)
            # the popular micro-batches read the hot table only
            for mb in sched.popular_micro_batches:
                assert torch.equal(torch.cat([hot, cold])[sched.remapped[mb]], plain[mb])
            assert sched.popular.any() and (~sched.popular).any()


def test_classify_inputs():
    hits = torch.tensor([[True, True], [True, False], [False, False], [True, True]])
    assert classify_inputs(hits).tolist() == [True, False, False, True]
    assert classify_inputs(torch.zeros(0, 3, dtype=torch.bool)).numel() == 0
    with pytest.raises(ValueError):
        classify_inputs(torch.ones(3, dtype=torch.bool))


def test_iter_working_sets():
    data = torch.arange(2 * 103).reshape(103, 2)
    parts = list(iter_working_sets(data, mini_batch_size=10, working_set=4))
    assert [p.shape[0] for p in parts] == [40, 40, 23]
    assert torch.equal(torch.cat(parts), data)
    assert list(iter_working_sets(data[:0], 10, 4)) == []
    for bad in ((0, 4), (10, 0), (10, -1)):
        with pytest.raises(ValueError):
            list(iter_working_sets(data, *bad))


def test_fragment_rejects_bad_input():
    eal = AccessLogger(CFG)
    with pytest.raises(ValueError, match="table 8"):          # 9 tables, table_bits = 3
        fragment(torch.zeros(2, 9, dtype=torch.int64), eal, 4)
    with pytest.raises(ValueError, match="row -1"):
        fragment(torch.tensor([[0, -1]]), eal, 4)
    with pytest.raises(ValueError, match="row 1024"):
        fragment(torch.tensor([[0, 1024]]), eal, 4)
    with pytest.raises(ValueError):
        fragment(torch.zeros(2, 2, dtype=torch.int64), eal, 0)

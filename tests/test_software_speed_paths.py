"""The host software's compiled fast paths give exactly what their references give.

Not timed (``python -m sw_driver.bench_software`` times them): the compiled Feistel hash
against the torch version and the plain-Python spec transcription, the fused hash + learn
against the reference learner, the compiled key-list checks against the torch checks (same
cause and index on every kind of bad key), the compiled row copies against ``index_select`` /
``index_copy_``, and the parallel ``init_table`` against the serial loop it replaced.
"""

import math
import random

import pytest
import torch

from hotline_spec.commands import Opcode
from hotline_spec.config import CONFIGS, DEFAULT_DEVICE, EALConfig
from sw_driver.device_checks import (_check_keys_compiled, _check_keys_reference, check_command,
                                     check_command_rows, first_bad_lookup, slot_arrays,
                                     table_layout)
from sw_driver.gather import checked_copy, gather_keys, gather_rows, scatter_keys, scatter_rows
from sw_driver.training import mt_skip
from sw_driver.training.modes import init_table
from verif.golden import AccessLogger, feistel_hash, hash_fields, make_keys, sparse_keys
from verif.golden.feistel import _compilable

from spec_reference import ref_fields, ref_hash

U64 = (1 << 64) - 1

CFGS = {**CONFIGS,
        "key64": EALConfig(table_bits=32, row_bits=32),
        "key64_rows_only": EALConfig(table_bits=0, row_bits=64, banks=1, sets=1),
        "key63_r5": EALConfig(table_bits=31, row_bits=32, hash_rounds=5),
        "key2": EALConfig(table_bits=1, row_bits=1, banks=2, sets=1, ways=1),
        "key33_r8": EALConfig(table_bits=5, row_bits=28, hash_rounds=8),
        "r2": EALConfig(hash_rounds=2), "r3": EALConfig(hash_rounds=3)}


def _i64(u):
    return u - (1 << 64) if u >= 1 << 63 else u


def _keys(cfg, n, seed):
    rng = random.Random(seed)
    kb = cfg.key_bits
    ks = [rng.getrandbits(kb) for _ in range(n)]
    ks += [0, 1, (1 << kb) - 1, (1 << kb) - 2, 1 << (kb - 1), (1 << (kb - 1)) - 1]
    ks += [((1 << cfg.table_bits) - 1) << cfg.row_bits if cfg.table_bits else 0]
    return ks


@pytest.mark.parametrize("name", sorted(CFGS))
def test_compiled_hash_is_the_reference(name):
    cfg = CFGS[name]
    ks = _keys(cfg, 4000, sorted(CFGS).index(name))
    t = torch.tensor([_i64(k) for k in ks])
    assert _compilable(t)
    fast = feistel_hash(t, cfg)
    assert torch.equal(fast, feistel_hash(t, cfg, reference=True))
    assert [x & U64 for x in fast.tolist()] == [ref_hash(k, cfg) for k in ks]
    fb, fs, ft = hash_fields(t, cfg)
    rb, rs, rt = hash_fields(t, cfg, reference=True)
    assert torch.equal(fb, rb) and torch.equal(fs, rs) and torch.equal(ft, rt)
    want = [ref_fields(ref_hash(k, cfg), cfg) for k in ks[:500]]
    got = list(zip(fb[:500].tolist(), fs[:500].tolist(), [x & U64 for x in ft[:500].tolist()]))
    assert got == want
    # shapes survive
    assert feistel_hash(t[:4000].reshape(40, 100), cfg).shape == (40, 100)


def test_compiled_paths_raise_the_same_range_errors():
    cfg = EALConfig()
    keys = torch.arange(1000, dtype=torch.int64)
    keys[700] = 1 << cfg.key_bits
    with pytest.raises(ValueError, match=r"key 536870912 at position \(700,\) is out of range"):
        feistel_hash(keys, cfg)
    keys[700] = -3
    with pytest.raises(ValueError, match=r"key -3 at position \(700,\)"):
        AccessLogger(cfg).learn(keys)
    rows = torch.zeros(100, 26, dtype=torch.int64)
    rows[40, 3] = 1 << cfg.row_bits
    with pytest.raises(ValueError, match=r"row 16777216 at position \(40, 3\)"):
        sparse_keys(rows, cfg)
    t = torch.zeros(500, dtype=torch.int64)
    r = torch.arange(500, dtype=torch.int64)
    t[17] = 1 << cfg.table_bits
    with pytest.raises(ValueError, match=r"table 32 at position \(17,\)"):
        make_keys(t, r, cfg)


@pytest.mark.parametrize("name", ["default", "key33_r8", "key63_r5", "key64"])
def test_make_and_sparse_keys_compiled(name):
    cfg = CFGS[name]
    g = torch.Generator().manual_seed(3)
    n_t = min(26, 1 << cfg.table_bits)
    sparse = torch.randint(0, 1 << min(cfg.row_bits, 40), (300, n_t), generator=g)
    want = make_keys(torch.arange(n_t).expand(300, n_t).clone(), sparse, cfg)
    ref = (torch.arange(n_t) << cfg.row_bits) | sparse
    assert torch.equal(sparse_keys(sparse, cfg), ref) and torch.equal(want, ref)


@pytest.mark.parametrize("policy", ["srrip", "lfu"])
@pytest.mark.parametrize("cfg_kw", [{}, {"banks": 1, "sets": 2, "ways": 2},
                                    {"table_bits": 31, "row_bits": 32, "hash_rounds": 5}])
def test_fused_hash_and_learn_is_the_reference_learner(policy, cfg_kw):
    cfg = EALConfig(policy=policy, **cfg_kw)
    gen = torch.Generator().manual_seed(5)
    hot = torch.randint(0, 1 << min(cfg.key_bits, 62), (300,), generator=gen)
    fast, ref = AccessLogger(cfg), AccessLogger(cfg)
    for step in range(3):
        keys = hot[torch.randint(0, 300, (3000,), generator=gen)]
        a = fast.learn(keys)
        b = ref.learn(keys, reference=True)
        for f in ("hit", "way", "slot", "bank", "set", "tag"):
            assert torch.equal(getattr(a, f), getattr(b, f)), (step, f)
        for k, v in fast.state_dict().items():
            assert torch.equal(v, ref.state_dict()[k]), (step, k)


def _layout(table_rows, dim=64, bad_slot=None):
    host = torch.zeros(sum(table_rows), dim)
    offs = torch.tensor([0] + list(torch.tensor(table_rows).cumsum(0)[:-1].tolist()))
    lay = table_layout(DEFAULT_DEVICE, host, table_rows, offs, lambda t: t.data_ptr())
    if bad_slot is not None:   # a table whose stride is below ROW_BYTES: BAD_TABLE
        stride = list(lay.stride)
        stride[bad_slot] = 8
        lay = type(lay)(lay.row_bytes, lay.base, tuple(stride), lay.rows, lay.dtype, lay.dim)
    return host, offs, lay


@pytest.mark.parametrize("opcode", [Opcode.GATHER, Opcode.WRITE_BACK, Opcode.LEARN,
                                    Opcode.LOOKUP])
def test_compiled_key_checks_are_the_torch_checks(opcode):
    dcfg = DEFAULT_DEVICE
    cfg = dcfg.eal
    rows = [50, 1000, 7, 300]
    _, offs, lay = _layout(rows, bad_slot=2)
    gen = torch.Generator().manual_seed(int(opcode))
    base = torch.zeros(dcfg.max_tables, dtype=torch.int64)
    base[:4] = offs
    good_t = torch.tensor([0, 1, 3])
    for trial in range(60):
        n = int(torch.randint(1, 400, (1,), generator=gen))
        t = good_t[torch.randint(0, 3, (n,), generator=gen)]
        r = torch.randint(0, 7, (n,), generator=gen)
        keys = (t << cfg.row_bits) | r
        kinds = ["none", "bad_key", "neg", "row", "unused_slot", "bad_table", "top"]
        kind = kinds[trial % len(kinds)]
        i = int(torch.randint(0, n, (1,), generator=gen))
        if kind == "bad_key":
            keys[i] = 1 << cfg.key_bits
        elif kind == "neg":
            keys[i] = -1
        elif kind == "row":
            keys[i] = (0 << cfg.row_bits) | 50          # table 0 has 50 rows: out of range
        elif kind == "unused_slot":
            keys[i] = (9 << cfg.row_bits) | 1
        elif kind == "bad_table":
            keys[i] = (2 << cfg.row_bits) | 3
        elif kind == "top":
            keys[i] = (1 << cfg.key_bits) - 1
        if trial % 3 == 0 and n > 2:      # a second fault later: the first one is reported
            keys[-1] = -5
        want = _check_keys_reference(dcfg, opcode, 0x1000, lay.row_bytes, keys, lay)
        got, _ = _check_keys_compiled(dcfg, opcode, 0x1000, lay.row_bytes, keys, lay, None)
        assert got == want, (trial, kind)
        assert check_command(dcfg, opcode, n, 0x1000, 0x2000, lay.row_bytes, keys, lay) == want
        if opcode in (Opcode.GATHER, Opcode.WRITE_BACK):
            fault, mapped = check_command_rows(dcfg, opcode, n, 0x1000, 0x2000, lay.row_bytes,
                                               keys, lay, base)
            assert fault == want
            if want is None:
                assert torch.equal(mapped, base[keys >> cfg.row_bits]
                                   + (keys & ((1 << cfg.row_bits) - 1)))
            sr, sb = slot_arrays(dcfg, lay)
            host = torch.randn(sum(rows), 64, generator=gen)
            buf = torch.full((n, 64), -1.0)
            res = checked_copy(opcode == Opcode.WRITE_BACK, host, keys, cfg.key_bits,
                               cfg.row_bits, sr, sb, base, buf)
            if want is None:
                assert res == (-1, 0)
            else:
                assert res == (want.index, int(want.cause))
                assert bool((buf == -1.0).all())          # refused: nothing moved


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_row_copies(threads, dtype):
    from sw_driver.gather import make_pool
    pool = make_pool(threads)
    try:
        gen = torch.Generator().manual_seed(9)
        table = torch.randn(20_000, 12, generator=gen, dtype=dtype)
        idx = torch.randperm(20_000, generator=gen)[:15_000]
        out = torch.empty(15_003, 12, dtype=dtype)
        gather_rows(table, idx, out, pool, min_chunk=1000)
        assert torch.equal(out[:15_000], table.index_select(0, idx))
        upd = torch.randn(15_000, 12, generator=gen, dtype=dtype)
        want = table.clone().index_copy_(0, idx, upd)
        scatter_rows(table, idx, upd, pool, min_chunk=1000)
        assert torch.equal(table, want)
        # keyed copies: keys (t << 24) | r over 3 tables of 5,000, 10,000 and 5,000 rows
        offs = torch.tensor([0, 5000, 15000] + [0] * 29)
        t = torch.randint(0, 3, (4000,), generator=gen)
        r = torch.randint(0, 5000, (4000,), generator=gen)
        keys = (t << 24) | r
        g = offs[t] + r
        buf = torch.empty(4000, 12, dtype=dtype)
        assert gather_keys(table, keys, 24, offs, buf, pool, min_chunk=500)
        assert torch.equal(buf, table[g])
        uniq = torch.unique(g)
        keys_u = torch.searchsorted(offs[:3], uniq, right=True) - 1
        keys_u = (keys_u << 24) | (uniq - offs[keys_u])
        rows = torch.randn(uniq.numel(), 12, generator=gen, dtype=dtype)
        want = table.clone()
        want[uniq] = rows
        assert scatter_keys(table, keys_u, 24, offs, rows, pool, min_chunk=500)
        assert torch.equal(table, want)
        # an index outside the table: IndexError, not a stray write
        bad = idx.clone()
        bad[100] = 20_000
        with pytest.raises(IndexError):
            gather_rows(table, bad, out, pool)
        # float16 and strided rows take the torch path and still agree
        half = table.to(torch.float16)
        hout = torch.empty(15_000, 12, dtype=torch.float16)
        gather_rows(half, idx, hout, pool)
        assert torch.equal(hout, half.index_select(0, idx))
        assert not gather_keys(half, keys, 24, offs, hout[:4000], pool)
    finally:
        if pool is not None:
            pool.shutdown()


def test_first_bad_lookup():
    limits = torch.tensor([10, 1, 300])
    s = torch.zeros(200, 3, dtype=torch.int64)
    assert first_bad_lookup(s, limits) == -1
    for (i, t, v) in ((150, 2, 300), (3, 1, 1), (77, 0, -1)):
        s2 = s.clone()
        s2[i, t] = v
        s2[199, 2] = 999          # a later one
        bad = (s2 < 0) | (s2 >= limits)
        assert first_bad_lookup(s2, limits) == int(torch.nonzero(bad.reshape(-1))[0])
    assert first_bad_lookup(s[:, :2].t(), torch.tensor([5] * 200)) == -1     # strided


# --- init_table: the serial loop it replaced ------------------------------------------------

def init_table_before(table_rows, dim, seed, out=None, pin=False):
    """``sw_driver.training.modes.init_table`` as it was before the parallel fill (verbatim)."""
    total = sum(int(r) for r in table_rows)
    if out is None:
        out = torch.empty(total, dim, dtype=torch.float32, pin_memory=pin)
    g = torch.Generator().manual_seed(int(seed))
    start = 0
    for n in table_rows:
        n = int(n)
        bound = math.sqrt(1.0 / n)
        out[start:start + n].uniform_(-bound, bound, generator=g)
        start += n
    return out


def test_skip_ahead_matches_torch_generator():
    assert mt_skip.skip_ahead_works()
    for seed, draws in ((0, 0), (1, 1), (5, 623), (5, 624), (5, 625), (11, 10_000)):
        g = torch.Generator().manual_seed(seed)
        if draws:
            torch.empty(draws).uniform_(generator=g)
        assert torch.equal(g.get_state(), mt_skip.state_after(seed, draws)), (seed, draws)


@pytest.mark.parametrize("dim", [1, 5, 64])
@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_init_table_is_identical(dim, threads):
    sizes = [1000, 7, 33_333, 2500, 1]
    want = init_table_before(sizes, dim, seed=3)
    got = torch.full((sum(sizes), dim), -9.0)
    assert mt_skip.parallel_uniform_tables(got, sizes, 3, threads, chunk_elements=999)
    assert torch.equal(got, want)
    # a view with the optimizer's extra column, as the trainer fills it
    wide_want = torch.zeros(sum(sizes), dim + 1)
    init_table_before(sizes, dim, 3, out=wide_want[:, :dim])
    wide = torch.zeros(sum(sizes), dim + 1)
    assert mt_skip.parallel_uniform_tables(wide[:, :dim], sizes, 3, threads,
                                           chunk_elements=4096)
    assert torch.equal(wide, wide_want)


def test_init_table_threads_default_and_serial_agree():
    sizes = [70_000, 3, 90_001]        # 10 M elements: above the parallel threshold
    want = init_table_before(sizes, 64, seed=12)
    assert torch.equal(init_table(sizes, 64, 12), want)
    assert torch.equal(init_table(sizes, 64, 12, threads=4), want)
    assert torch.equal(init_table(sizes, 64, 12, threads=1), want)
    small = [10, 20]
    assert torch.equal(init_table(small, 3, 1, threads=2), init_table_before(small, 3, 1))
    # float64 or strided-column outputs fall back to the serial loop, same values
    out = torch.empty(sum(sizes), 64, dtype=torch.float64)
    ref = torch.empty(sum(sizes), 64, dtype=torch.float64)
    assert torch.equal(init_table(sizes, 64, 12, out=out, threads=2),
                       init_table_before(sizes, 64, 12, out=ref))

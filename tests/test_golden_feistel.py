"""Golden model: keys and the Feistel hash (docs/spec.md sections 2 and 3).

The reference here is a plain-Python, one-key-at-a-time transcription of the spec formula,
written independently of ``verif.golden.feistel``.
"""

import math
import random

import pytest
import torch

from hotline_spec.config import CONFIGS, EALConfig
from verif.golden import (feistel_hash, feistel_hash_int, feistel_unhash, feistel_unhash_int,
                          hash_fields, key_from_fields, make_keys, split_keys)

from spec_reference import ref_fields, ref_hash

U64 = (1 << 64) - 1


def to_i64(u):
    """Unsigned 64-bit Python int -> the int64 bit pattern torch holds."""
    return u - (1 << 64) if u >= 1 << 63 else u


EXTRA = {
    "key64": EALConfig(table_bits=32, row_bits=32),
    "key64_rows_only": EALConfig(table_bits=0, row_bits=64, banks=1, sets=1),
    "key63_r5": EALConfig(table_bits=31, row_bits=32, hash_rounds=5),
    "key2": EALConfig(table_bits=1, row_bits=1, banks=2, sets=1, ways=1),
    "r2": EALConfig(hash_rounds=2),
    "r3": EALConfig(hash_rounds=3),
    "r7": EALConfig(hash_rounds=7, table_bits=4),
    "r8": EALConfig(hash_rounds=8),
}
ALL = {**CONFIGS, **EXTRA}


def random_keys(cfg, n, seed):
    rng = random.Random(seed)
    ks = [rng.getrandbits(cfg.key_bits) for _ in range(n)]
    ks += [0, (1 << cfg.key_bits) - 1]  # the extremes
    return ks


@pytest.mark.parametrize("name", sorted(ALL))
def test_matches_plain_python_reference(name):
    cfg = ALL[name]
    ks = random_keys(cfg, 3000, seed=sorted(ALL).index(name))
    got = feistel_hash(torch.tensor([to_i64(k) for k in ks]), cfg).tolist()
    want = [ref_hash(k, cfg) for k in ks]
    assert [g & U64 for g in got] == want
    assert all(0 <= w < 1 << cfg.key_bits for w in want)
    # scalar API agrees too
    assert [feistel_hash_int(k, cfg) for k in ks[:200]] == want[:200]
    # hash fields
    b, s, t = hash_fields(torch.tensor([to_i64(k) for k in ks]), cfg)
    got_fields = list(zip(b.tolist(), s.tolist(), [x & U64 for x in t.tolist()]))
    assert got_fields == [ref_fields(w, cfg) for w in want]


@pytest.mark.parametrize("name", sorted(ALL))
def test_unhash_inverts_hash(name):
    cfg = ALL[name]
    ks = torch.tensor([to_i64(k) for k in random_keys(cfg, 5000, seed=7)])
    h = feistel_hash(ks, cfg)
    assert torch.equal(feistel_unhash(h, cfg), ks)
    b, s, t = hash_fields(ks, cfg)
    assert torch.equal(key_from_fields(b, s, t, cfg), ks)
    for k, hh in zip(ks[:100].tolist(), h[:100].tolist()):
        assert feistel_unhash_int(hh & U64, cfg) == k & U64


@pytest.mark.parametrize("rounds", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("tb,rb", [(2, 8), (3, 8)])  # key_bits 10 (balanced), 11 (unbalanced)
def test_bijection_exhaustive(tb, rb, rounds):
    cfg = EALConfig(table_bits=tb, row_bits=rb, banks=2, sets=4, ways=2, hash_rounds=rounds)
    n = 1 << cfg.key_bits
    ks = torch.arange(n)
    h = feistel_hash(ks, cfg)
    assert int(h.min()) >= 0 and int(h.max()) < n
    assert torch.unique(h).numel() == n                    # all outputs distinct
    assert torch.equal(feistel_unhash(h, cfg), ks)
    assert h.tolist() == [ref_hash(k, cfg) for k in range(n)]
    assert not torch.equal(h, ks)                          # and it does scramble


@pytest.mark.parametrize("name", ["default", "lanes1", "lanes16", "asic"])
@pytest.mark.parametrize("table", [0, 3])
def test_sequential_rows_spread_uniformly(name, table):
    # Sequential rows of one table: the (bank, set) counts should look like uniform random
    # placement. For a multinomial, chi2 has mean dof and sd sqrt(2 dof); the bound of
    # dof + 8 sd is loose enough never to flake for a good hash and far below what a bad
    # one gives (e.g. bank = row mod banks on row-major strides gives chi2 ~ n).
    cfg = CONFIGS[name]
    nb = cfg.banks * cfg.sets
    n = min(32 * nb, 1 << 20)
    b, s, _ = hash_fields(make_keys(table, torch.arange(n), cfg), cfg)

    def chi2_ok(counts, buckets):
        e = n / buckets
        chi2 = float(((counts.double() - e) ** 2 / e).sum())
        dof = buckets - 1
        return chi2 < dof + 8 * math.sqrt(2 * dof), chi2

    for counts, buckets in ((torch.bincount(b, minlength=cfg.banks), cfg.banks),
                            (torch.bincount(s, minlength=cfg.sets), cfg.sets),
                            (torch.bincount(b * cfg.sets + s, minlength=nb), nb)):
        ok, chi2 = chi2_ok(counts, buckets)
        assert ok, f"chi2 {chi2:.1f} over {buckets} buckets"


def test_make_and_split_keys():
    cfg = CONFIGS["default"]
    t = torch.tensor([0, 1, 31, 5])
    r = torch.tensor([0, 7, (1 << 24) - 1, 12345])
    k = make_keys(t, r, cfg)
    assert k.dtype == torch.int64
    assert k.tolist() == [(tt << 24) | rr for tt, rr in zip(t.tolist(), r.tolist())]
    tt, rr = split_keys(k, cfg)
    assert torch.equal(tt, t) and torch.equal(rr, r)
    # ints and broadcasting
    assert make_keys(2, 3, cfg).item() == (2 << 24) | 3
    assert make_keys(1, [1, 2], cfg).tolist() == [(1 << 24) | 1, (1 << 24) | 2]
    # 64-bit keys: the top table sets bit 63 (carried as the int64 bit pattern)
    c64 = EXTRA["key64"]
    k = make_keys([(1 << 32) - 1, 1], [(1 << 32) - 1, 2], c64)
    assert [x & U64 for x in k.tolist()] == [U64, (1 << 32) | 2]
    tt, rr = split_keys(k, c64)
    assert tt.tolist() == [(1 << 32) - 1, 1] and rr.tolist() == [(1 << 32) - 1, 2]


@pytest.mark.parametrize("call,value,limit", [
    (lambda c: make_keys(torch.tensor([0, 32]), torch.tensor([0, 0]), c), "32", "32"),
    (lambda c: make_keys(-1, 0, c), "-1", "32"),
    (lambda c: make_keys(0, torch.tensor([[1, 2], [3, 1 << 24]]), c), str(1 << 24), str(1 << 24)),
    (lambda c: make_keys(0, -5, c), "-5", str(1 << 24)),
    (lambda c: make_keys(0, [1 << 70], c), str(1 << 70), str(1 << 24)),
    (lambda c: feistel_hash(torch.tensor([1 << 29]), c), str(1 << 29), str(1 << 29)),
    (lambda c: feistel_unhash(torch.tensor([-3]), c), "-3", str(1 << 29)),
    (lambda c: split_keys([5, 1 << 30], c), str(1 << 30), str(1 << 29)),
    (lambda c: key_from_fields(16, 0, 0, c), "16", "16"),
    (lambda c: key_from_fields(0, 64, 0, c), "64", "64"),
    (lambda c: key_from_fields(0, 0, 1 << 19, c), str(1 << 19), str(1 << 19)),
])
def test_range_errors_name_value_and_limit(call, value, limit):
    cfg = CONFIGS["default"]
    with pytest.raises(ValueError) as e:
        call(cfg)
    msg = str(e.value)
    assert value in msg and limit in msg, msg


def test_range_error_names_position():
    cfg = CONFIGS["default"]
    with pytest.raises(ValueError, match=r"row 99999999 at position \(1, 0\)"):
        make_keys(0, torch.tensor([[1, 2], [99999999, 3]]), cfg)
    with pytest.raises(TypeError):
        make_keys(0, torch.tensor([1.5]), cfg)

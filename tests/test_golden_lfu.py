"""Golden model: the lfu policy (docs/spec.md section 4.2) and the compiled learner.

The reference here is a plain-Python lfu tag store written from the spec text, with the spec's
hash from ``spec_reference`` (independent of ``verif.golden``). The golden model's compiled
learner and its key-by-key Python learner are both compared with it, and with each other for
SRRIP, on random, adversarial (every key in one set, one hot set) and real inputs.
"""

import random
from collections import Counter

import pytest
import torch

from hotline_spec.config import SKETCH_MULTIPLIER, EALConfig
from sw_driver.data import find_shared_data, read_criteo
from verif.golden import AccessLogger, key_from_fields, make_keys, sparse_keys
from spec_reference import ref_fields, ref_hash


class RefLfu:
    """lfu tag store from spec section 4.2: per set ``ways`` x [valid, count, tag] and a
    two-row sketch of ``sketch_counters`` saturating counts."""

    def __init__(self, cfg):
        self.cfg = cfg
        c = cfg
        self.store = {(b, s): [[0, 0, 0] for _ in range(c.ways)]
                      for b in range(c.banks) for s in range(c.sets)}
        self.sketch = {(b, s): [[0] * c.sketch_counters for _ in range(2)]
                       for b in range(c.banks) for s in range(c.sets)}
        self.rejected = 0
        self.saturated = 0

    def learn(self, key):
        c = self.cfg
        top = 2 ** c.count_bits - 1
        b, s, t = ref_fields(ref_hash(key, c), c)
        entries, sk = self.store[(b, s)], self.sketch[(b, s)]
        for w, e in enumerate(entries):
            if e[0] and e[2] == t:
                self.saturated += e[1] == top
                e[1] = min(top, e[1] + 1)
                return True, w
        i0 = t % c.sketch_counters
        i1 = ((t % 2 ** 32) * SKETCH_MULTIPLIER % 2 ** 32) >> (32 - c.sketch_bits)
        est = min(sk[0][i0], sk[1][i1])
        new = min(top, est + 1)
        if sk[0][i0] == est:
            sk[0][i0] = new
        if sk[1][i1] == est:
            sk[1][i1] = new
        free = [w for w, e in enumerate(entries) if not e[0]]
        if free:
            entries[free[0]] = [1, new, t]
            return False, free[0]
        least = min(e[1] for e in entries)
        w = [w for w, e in enumerate(entries) if e[1] == least][0]
        if new > least:
            entries[w] = [1, new, t]
        else:
            self.rejected += 1
        return False, w

    def tensors(self):
        c = self.cfg
        grid = lambda i: [[[self.store[(b, s)][w][i] for w in range(c.ways)]
                           for s in range(c.sets)] for b in range(c.banks)]
        sketch = [[self.sketch[(b, s)] for s in range(c.sets)] for b in range(c.banks)]
        return (torch.tensor(grid(0), dtype=torch.bool), torch.tensor(grid(1)),
                torch.tensor(grid(2)), torch.tensor(sketch))


def assert_same(eal, ref):
    v, n, t, sk = ref.tensors()
    assert torch.equal(eal.valid, v)
    assert torch.equal(eal.count, n)
    assert torch.equal(eal.tag, t)
    assert torch.equal(eal.sketch, sk)


CONFIGS = {
    "b2s4w3c8": EALConfig(banks=2, sets=4, ways=3, table_bits=2, row_bits=6, policy="lfu",
                          sketch_counters=8),
    "b1s2w4c2": EALConfig(banks=1, sets=2, ways=4, table_bits=1, row_bits=8, policy="lfu",
                          sketch_counters=2, count_bits=2),
    "b4s1w1": EALConfig(banks=4, sets=1, ways=1, table_bits=0, row_bits=9, policy="lfu"),
    "b2s2w2k64": EALConfig(banks=2, sets=2, ways=2, table_bits=30, row_bits=34, policy="lfu",
                           sketch_counters=64, count_bits=8),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("reference", [False, True])
def test_lfu_learn_matches_spec_reference(name, reference):
    cfg = CONFIGS[name]
    rng = random.Random(sorted(CONFIGS).index(name))
    pool = rng.sample(range(1 << min(cfg.key_bits, 62)), 60)
    if cfg.key_bits == 64:          # keys with the top bit set: negative int64 patterns
        pool = [k | (1 << 63) if i % 2 else k for i, k in enumerate(pool)]
    eal, ref = AccessLogger(cfg), RefLfu(cfg)
    for batch in range(4):
        keys = rng.choices(pool, weights=[1 / (i + 1) for i in range(60)], k=700)
        as_int64 = [k - (1 << 64) if k >= 1 << 63 else k for k in keys]
        res = eal.learn(torch.tensor(as_int64, dtype=torch.int64), reference=reference)
        want = [ref.learn(k) for k in keys]
        assert res.hit.tolist() == [h for h, _ in want], f"batch {batch}"
        assert res.way.tolist() == [w for _, w in want], f"batch {batch}"
        assert_same(eal, ref)
    # The trace exercised the policy's cases.
    assert ref.rejected > 0 and ref.saturated > 0


def test_lfu_hand_trace_admission():
    """Spec 4.2 by hand: one set of two ways; tags 1, 2, 3 use distinct row-0 counters, so the
    sketch counts misses exactly. C's first miss is not admitted (estimate 1 is not above the
    least count 1); its second is, replacing way 0; A then returns with estimate 2 and
    replaces B; a hit on A raises it to 3."""
    cfg = EALConfig(banks=1, sets=1, ways=2, table_bits=2, row_bits=8, policy="lfu",
                    sketch_counters=256, popular_min_count=3)
    a, b, c = (key_from_fields(torch.tensor(0), torch.tensor(0), torch.tensor(t), cfg)
               for t in (1, 2, 3))
    eal = AccessLogger(cfg)
    res = eal.learn(torch.stack([a, b, c, c, a, a]))
    assert res.hit.tolist() == [False, False, False, False, False, True]
    assert res.way.tolist() == [0, 1, 0, 0, 1, 1]
    assert eal.tag[0, 0].tolist() == [3, 1] and eal.count[0, 0].tolist() == [2, 3]
    frozen = eal.lookup(torch.stack([a, b, c]))
    assert frozen.hit.tolist() == [True, False, False]       # only A reaches count 3
    assert eal.lookup(torch.stack([c]), popular_min_count=2).hit.tolist() == [True]


def test_lfu_ample_capacity_tracks_every_key_with_counts_at_least_true():
    cfg = EALConfig(banks=4, sets=64, ways=8, table_bits=2, row_bits=10, policy="lfu",
                    count_bits=8)
    rng = random.Random(5)
    keys = [rng.randrange(300) for _ in range(2000)]
    eal = AccessLogger(cfg)
    eal.learn(torch.tensor(keys))
    assert int(eal.valid.sum()) == len(set(keys))       # no set overflowed: all tracked
    _, tables, rows = eal.popular_rows()
    counts = Counter(keys)
    got = {int(t) << cfg.row_bits | int(r) for t, r in zip(tables, rows)}
    assert got == set(counts)
    # The sketch only over-estimates: every count is at least the key's true count.
    res = eal.lookup(torch.tensor(sorted(counts)))
    stored = eal.count.reshape(-1)[res.slot]
    assert all(int(s) >= min(counts[k], 255) for s, k in zip(stored, sorted(counts)))


def _one_set_keys(cfg, n, distinct, seed):
    """``n`` lookups of ``distinct`` keys that all hash to bank 0, set 0."""
    g = torch.Generator().manual_seed(seed)
    tags = torch.randperm(1 << min(cfg.tag_bits, 16), generator=g)[:distinct]
    pick = tags[torch.randint(0, distinct, (n,), generator=g)]
    return key_from_fields(torch.zeros_like(pick), torch.zeros_like(pick), pick, cfg)


@pytest.mark.parametrize("policy", ["srrip", "lfu"])
def test_compiled_equals_reference_adversarial(policy):
    cfg = EALConfig(policy=policy)
    g = torch.Generator().manual_seed(9)
    cases = {
        "all keys in one set": _one_set_keys(cfg, 5000, 40, 1),
        "one hot set among random keys": torch.cat([
            _one_set_keys(cfg, 3000, 8, 2),
            make_keys(torch.randint(0, 26, (3000,), generator=g),
                      torch.randint(0, 1 << 20, (3000,), generator=g), cfg)])[
            torch.randperm(6000, generator=g)],
        "random skewed": make_keys(torch.randint(0, 26, (20000,), generator=g),
                                   (torch.rand(20000, generator=g) ** 4 * 5000).long(), cfg),
    }
    fast, slow = AccessLogger(cfg), AccessLogger(cfg)
    for what, keys in cases.items():
        a, b = fast.learn(keys), slow.learn(keys, reference=True)
        assert torch.equal(a.hit, b.hit) and torch.equal(a.way, b.way), what
        for name, t in slow.state_dict().items():
            assert torch.equal(fast.state_dict()[name], t), (what, name)


@pytest.mark.parametrize("policy", ["srrip", "lfu"])
def test_compiled_equals_reference_on_criteo_sample(policy):
    root = find_shared_data("criteo_kaggle_8k")
    if root is None:
        pytest.skip("the Criteo sample (../shared/data) is not here")
    data = read_criteo(root, max_rows=3000)
    cfg = EALConfig(policy=policy)
    fast, slow = AccessLogger(cfg), AccessLogger(cfg)
    for start in range(0, 3000, 1000):
        keys = sparse_keys(data.sparse[start:start + 1000], cfg)
        a, b = fast.learn(keys), slow.learn(keys, reference=True)
        assert torch.equal(a.hit, b.hit) and torch.equal(a.way, b.way)
    for name, t in slow.state_dict().items():
        assert torch.equal(fast.state_dict()[name], t), name


def test_lfu_state_round_trips_and_thresholds_are_policy_specific():
    cfg = CONFIGS["b2s4w3c8"]
    eal = AccessLogger(cfg)
    eal.learn(torch.tensor([1, 2, 2, 3, 3, 3, 9, 17]))
    beats = eal.dump()
    assert all(len(b.sketch) == 2 and len(b.sketch[0]) == 8 for b in beats)
    other = AccessLogger(cfg)
    other.load_dump(beats)
    for name, t in eal.state_dict().items():
        assert torch.equal(other.state_dict()[name], t), name
    with pytest.raises(ValueError, match="popular_max_rrpv is a threshold of the srrip"):
        eal.lookup(torch.tensor([1]), popular_max_rrpv=1)
    with pytest.raises(ValueError, match=r"popular_min_count must be an int in 1\.\.15"):
        eal.popular_mask(popular_min_count=0)
    with pytest.raises(AttributeError, match="lfu policy"):
        eal.rrpv
    with pytest.raises(ValueError, match="popular_min_count is a threshold of the lfu"):
        AccessLogger(EALConfig()).lookup(torch.tensor([1]), popular_min_count=2)
    with pytest.raises(ValueError, match="policy must be one of srrip, lfu, not 'lru'"):
        EALConfig(policy="lru")
    with pytest.raises(ValueError, match="sketch_counters must be a power of two"):
        EALConfig(policy="lfu", sketch_counters=6)

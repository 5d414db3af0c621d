"""cocotb + Verilator tests: the lookup-engine RTL against the golden model, every output.

Each scenario runs random idle cycles on ``lookups``, random back-pressure on ``results`` and
``dump``, and random holes (invalid lanes carrying random keys that must be ignored); the
testbench compares every result beat, the whole dumped tag store, and the mode sequence with
:class:`verif.golden.AccessLogger` (see verif/tb/test_lookup_engine.py).
"""

import random

import pytest

from hotline_hw.config import CONFIGS, DEFAULT_CONFIG, EALConfig
from verif.tb.runner import run_scenario
from verif.workload import LookupWorkload, load_criteo_or_synthetic

pytestmark = pytest.mark.rtl

# Two banks of four 3-way sets: constant bank conflicts, evictions with ageing, back-to-back
# read-modify-writes of one set; 3 ways and a 3-beat window are not powers of two.
TINY = EALConfig(lanes=4, banks=2, sets=4, ways=3, table_bits=2, row_bits=10, window=3)


def skewed_keys(rng, n, hot, space):
    """Half the lookups from a small hot set, half from a large space: hits, misses, reuse."""
    return [rng.choice(hot) if rng.random() < 0.5 else rng.randrange(space) for _ in range(n)]


def test_default_config_random_trace_all_modes():
    rng = random.Random(11)
    space = 1 << DEFAULT_CONFIG.key_bits
    hot = [rng.randrange(space) for _ in range(2000)]
    learn = skewed_keys(rng, 6000, hot, space)
    probe = skewed_keys(rng, 3000, hot, space)
    report = run_scenario(DEFAULT_CONFIG, [
        {"op": "learn", "keys": learn},
        {"op": "dump"},
        {"op": "frozen", "keys": probe, "popular_max_rrpv": 1},
        {"op": "frozen", "keys": probe, "popular_max_rrpv": 0},
        {"op": "frozen", "keys": probe, "popular_max_rrpv": 3},
        {"op": "clear"},
        {"op": "dump"},
        {"op": "learn", "keys": learn[:1500]},
        {"op": "frozen", "keys": probe[:1500], "popular_max_rrpv": 2},
        {"op": "dump"},
    ], seed=5, idle_prob=0.2, stall_prob=0.3, hole_prob=0.1, name="default_random")
    phases = report["phases"]
    assert report["mismatches"] == 0
    # The scenario exercised what it claims: hits and misses in both modes, a full dump.
    assert 0 < phases[0]["golden_hits"] < len(learn)
    assert 0 < phases[2]["golden_hits"] < phases[4]["golden_hits"] <= len(probe)
    assert phases[6]["valid_entries"] == 0 and phases[1]["valid_entries"] > 0
    assert phases[1]["beats"] == DEFAULT_CONFIG.banks * DEFAULT_CONFIG.sets


def test_tiny_config_conflicts_evictions_backpressure():
    rng = random.Random(12)
    keys = [rng.randrange(150) for _ in range(3000)]  # 150 keys into 24 entries: evictions
    report = run_scenario(TINY, [
        {"op": "learn", "keys": keys},
        {"op": "dump"},
        {"op": "frozen", "keys": keys[:800], "popular_max_rrpv": 2},
    ], seed=6, idle_prob=0.1, stall_prob=0.5, hole_prob=0.25, name="tiny_conflicts")
    assert report["mismatches"] == 0
    assert report["phases"][1]["valid_entries"] == TINY.entries  # the store filled up


def test_single_lane_config():
    cfg = CONFIGS["lanes1"]
    rng = random.Random(13)
    keys = skewed_keys(rng, 3000, [rng.randrange(5000) for _ in range(300)], 1 << cfg.key_bits)
    report = run_scenario(cfg, [{"op": "learn", "keys": keys}, {"op": "dump"},
                                {"op": "frozen", "keys": keys}],
                          seed=7, idle_prob=0.3, stall_prob=0.3, name="lanes1")
    assert report["mismatches"] == 0


def test_criteo_sample_learn_then_classify():
    """The real Criteo sample (synthetic when ../shared/data is absent): learn on a 5 %
    sample of mini-batches, freeze, classify the rest, with idle and back-pressure cycles."""
    data, description, _ = load_criteo_or_synthetic(max_rows=2400)
    work = LookupWorkload.from_sparse(data.sparse, DEFAULT_CONFIG, batch_size=128,
                                      sample_rate=0.05, seed=3)
    report = run_scenario(DEFAULT_CONFIG, [
        {"op": "learn", "keys": work.learn_keys},
        {"op": "dump"},
        {"op": "frozen", "keys": work.frozen_keys},
    ], seed=8, idle_prob=0.1, stall_prob=0.2, hole_prob=0.05, name="criteo_sample")
    assert report["mismatches"] == 0, description
    assert report["phases"][2]["lookups"] == work.frozen_inputs * work.tables


# The lfu policy (spec section 4.2). Three-bit counters saturate within a few lookups, a
# 4-counter sketch collides constantly and 150 keys compete for 24 entries: admissions,
# rejections, saturation of entries and sketch, and ties for the victim all occur.
TINY_LFU = TINY.replace(policy="lfu", count_bits=3, sketch_counters=4, popular_min_count=4)
# Two lanes over eight banks of 16-way sets (the geometry the trainer gives lfu): the
# engine's reorder window and bank conflicts with lfu banks.
LFU_LANES2 = EALConfig(lanes=2, banks=8, sets=16, ways=16, policy="lfu")


def test_lfu_tiny_config_admission_saturation_backpressure():
    rng = random.Random(21)
    keys = skewed_keys(rng, 3000, list(range(12)), 150)
    report = run_scenario(TINY_LFU, [
        {"op": "learn", "keys": keys[:300]},
        {"op": "dump"},
        {"op": "frozen", "keys": keys[:800]},
        {"op": "learn", "keys": keys[300:]},        # saturates counts and sketches
        {"op": "dump"},
        {"op": "frozen", "keys": keys[:800]},
        {"op": "clear"},
        {"op": "dump"},
    ], seed=22, idle_prob=0.1, stall_prob=0.5, hole_prob=0.25, name="lfu_tiny")
    phases = report["phases"]
    assert report["mismatches"] == 0
    assert phases[1]["valid_entries"] == TINY_LFU.entries
    # After 300 lookups popular_min_count 4 makes some but not all entries popular, so frozen
    # lookups of present keys both hit and miss.
    assert 0 < phases[1]["popular_entries_at_default_threshold"] < TINY_LFU.entries
    assert 0 < phases[2]["golden_hits"] < 800
    assert phases[7]["valid_entries"] == 0


def test_lfu_criteo_sample_learn_then_classify():
    """lfu on the real Criteo sample (synthetic without ../shared/data), two lanes, 16 ways."""
    data, description, _ = load_criteo_or_synthetic(max_rows=2400)
    work = LookupWorkload.from_sparse(data.sparse, LFU_LANES2, batch_size=128,
                                      sample_rate=0.1, seed=3)
    report = run_scenario(LFU_LANES2, [
        {"op": "learn", "keys": work.learn_keys},
        {"op": "dump"},
        {"op": "frozen", "keys": work.frozen_keys},
    ], seed=23, idle_prob=0.1, stall_prob=0.2, hole_prob=0.05, name="lfu_criteo")
    assert report["mismatches"] == 0, description
    assert report["phases"][2]["golden_hits"] > 0

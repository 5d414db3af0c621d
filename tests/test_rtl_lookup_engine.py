"""cocotb + Verilator tests: the lookup-engine RTL against the golden model, every output.

Each scenario runs random idle cycles on ``lookups``, random back-pressure on ``results`` and
``dump``, and random holes (invalid lanes carrying random keys that must be ignored); the
testbench compares every result beat, the whole dumped tag store, and the mode sequence with
:class:`verif.golden.AccessLogger` (see verif/tb/test_lookup_engine.py).
"""

import random

import numpy as np
import pytest
import torch

from hotline_spec.config import CONFIGS, DEFAULT_CONFIG, EALConfig
from verif.golden import hash_fields
from verif.tb.runner import ScenarioFailed, run_scenario, scenario_keys
from verif.workload import LookupWorkload, load_criteo_or_synthetic

pytestmark = pytest.mark.rtl

# Two banks of four 3-way sets: constant bank conflicts, evictions with ageing, back-to-back
# read-modify-writes of one set; 3 ways and 3 beats in flight are not powers of two; 2-entry queues and a 2-beat
# switch fill quickly (back-pressure inside the engine).
TINY = EALConfig(lanes=4, banks=2, sets=4, ways=3, table_bits=2, row_bits=10,
                 dispatch_beats=2, queue_depth=2, beats_in_flight=3, release_beats=2)


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
    # One dump record every cycle that dump.ready is high (bank-major order: checked beat
    # by beat against the golden store).
    assert phases[1]["dump_gaps"] == phases[6]["dump_gaps"] == phases[9]["dump_gaps"] == 0


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
    assert report["phases"][1]["dump_gaps"] == 0


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
# engine's switch, queues and bank conflicts with lfu banks.
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


# ---- the control side: commands, maintenance, reset, mode changes, conflicts ---------------
# Every scenario below still compares every result beat and every dumped tag store with the
# golden model, under random idle and back-pressure cycles, and the bench's protocol monitor
# and cycle budgets watch every stream (verif/tb/test_lookup_engine.py, docs/verification.md).
# They use TINY, whose Verilator build the tests above already made.


def keys_hashing_to(cfg, n, rng, bank=0, set_=None, distinct=None):
    """``n`` keys (drawn with repeats from ``distinct`` different ones) whose hash falls in
    ``bank`` (and ``set_``): adversarial conflicts for the arbiter and the bank pipeline."""
    space = torch.arange(min(1 << cfg.key_bits, 1 << 16), dtype=torch.int64)
    b, s, _ = hash_fields(space, cfg)
    keep = b == bank
    if set_ is not None:
        keep &= s == set_
    pool = space[keep].tolist()
    rng.shuffle(pool)
    pool = pool[:distinct] if distinct else pool
    return [rng.choice(pool) for _ in range(n)]


def test_commands_pulsed_while_busy_are_ignored():
    """clear / start_dump pulsed in random busy cycles -- lookups in flight, during a dump,
    during a clear -- change nothing: results and dumps equal the golden model that ignores
    them, and no dump beat appears that was not asked for (spec 8: commands are taken only
    while busy is low)."""
    rng = random.Random(31)
    keys = skewed_keys(rng, 1200, list(range(20)), 150)
    report = run_scenario(TINY, [
        {"op": "learn", "keys": keys[:500], "commands_while_busy": 0.3},
        {"op": "dump", "commands_while_busy": 0.5},
        {"op": "frozen", "keys": keys[:300], "popular_max_rrpv": 2, "commands_while_busy": 0.3},
        {"op": "clear", "commands_while_busy": 0.5},
        {"op": "dump"},
        {"op": "learn", "keys": keys[500:], "commands_while_busy": 0.2},
        {"op": "dump", "commands_while_busy": 0.3},
    ], seed=32, idle_prob=0.2, stall_prob=0.3, hole_prob=0.1, name="commands_while_busy")
    phases = report["phases"]
    for i in (0, 1, 2, 3, 5, 6):
        assert phases[i]["ignored_commands"] > 0, phases[i]
    assert phases[4]["valid_entries"] == 0 and phases[6]["valid_entries"] > 0


def test_lone_beats_keep_busy_high_through_every_stage():
    """Phases of a single beat, each starting with the engine idle: the beat is alone in
    the hash, the repeat marker, the switch, the beat-record FIFO, the banks and the
    release in turn, so ``busy`` must come from each stage (the monitor fails a cycle
    with the beat in flight and ``busy`` low); then a dump of what they learned."""
    rng = random.Random(45)
    phases = []
    for i in range(24):
        keys = [rng.randrange(12) for _ in range(rng.randrange(1, TINY.lanes + 1))]
        phases.append({"op": "learn" if i % 3 else "frozen", "keys": keys})
    phases.append({"op": "dump"})
    report = run_scenario(TINY, phases, seed=46, idle_prob=0.0, stall_prob=0.2,
                          name="lone_beats")
    assert all(p["beats"] == 1 for p in report["phases"][:24])
    assert report["phases"][24]["valid_entries"] > 0


def test_lookups_offered_during_clear_and_dump_wait_and_are_not_lost():
    """A lookup phase that starts with a clear or a dump offers its first beat while the
    command runs: lookups.ready stays low all along (the monitor checks it), the beat is
    taken afterwards and its results equal the golden model's after the command."""
    rng = random.Random(33)
    keys = skewed_keys(rng, 900, list(range(16)), 150)
    report = run_scenario(TINY, [
        {"op": "learn", "keys": keys[:300]},
        {"op": "frozen", "keys": keys[300:500], "offer_during": "dump", "popular_max_rrpv": 2},
        {"op": "learn", "keys": keys[500:700], "offer_during": "clear"},
        {"op": "dump"},
        {"op": "learn", "keys": keys[700:], "offer_during": "dump", "commands_while_busy": 0.3},
        {"op": "frozen", "keys": keys[:200], "offer_during": "clear"},
    ], seed=34, idle_prob=0.1, stall_prob=0.4, hole_prob=0.1, name="offer_during")
    phases = report["phases"]
    dump_beats = TINY.banks * TINY.sets
    assert phases[1]["dump_beats"] == phases[4]["dump_beats"] == dump_beats
    assert phases[1]["held_during_maintenance"] >= dump_beats
    assert phases[2]["held_during_maintenance"] >= TINY.sets
    assert phases[5]["held_during_maintenance"] >= TINY.sets
    assert phases[5]["golden_hits"] == 0          # frozen right after a clear: all misses


def test_reset_with_lookups_in_flight_then_dump_reads_all_zero():
    """Reset asserted while lookup beats are in flight: the engine clears itself, the dump
    reads an all-zero store, and learning and classifying work afterwards."""
    rng = random.Random(35)
    keys = skewed_keys(rng, 1000, list(range(16)), 150)
    report = run_scenario(TINY, [
        {"op": "learn", "keys": keys[:300]},
        {"op": "learn", "keys": keys[300:600], "reset_after_beats": 20},
        {"op": "dump"},
        {"op": "learn", "keys": keys[600:]},
        {"op": "frozen", "keys": keys[:200], "reset_after_beats": 7},
        {"op": "dump"},
        {"op": "learn", "keys": keys[600:], "commands_while_busy": 0.2},
        {"op": "dump"},
        {"op": "frozen", "keys": keys[600:], "popular_max_rrpv": 3},
    ], seed=36, idle_prob=0.1, stall_prob=0.3, hole_prob=0.1, name="reset_mid_stream")
    phases = report["phases"]
    for i in (1, 4):
        assert phases[i]["reset_after_beats_sent"] > phases[i]["results_before_reset"]
    assert phases[2]["valid_entries"] == phases[5]["valid_entries"] == 0
    assert phases[7]["valid_entries"] > 0
    assert phases[8]["golden_hits"] > 0


def test_mode_and_threshold_change_in_the_first_idle_cycle():
    """Short phases that switch learn <-> frozen and the threshold in the first cycle after
    busy falls (every phase starts there, with its first beat offered at once), with clears
    and dumps in between."""
    rng = random.Random(37)
    keys = skewed_keys(rng, 2000, list(range(24)), 200)
    phases, at = [], 0
    for step in range(18):
        n = rng.randrange(1, 60)
        chunk, at = keys[at:at + n], at + n
        if step % 3 == 2:
            phases.append({"op": "frozen", "keys": chunk, "popular_max_rrpv": step % 4})
        else:
            phases.append({"op": "learn", "keys": chunk})
        if step % 5 == 4:
            phases.append({"op": rng.choice(["dump", "clear"])})
    phases.append({"op": "dump"})
    report = run_scenario(TINY, phases, seed=38, idle_prob=0.0, stall_prob=0.2,
                          hole_prob=0.1, name="mode_changes")
    assert report["compared"] > 0


def test_every_lane_to_one_bank_and_every_lookup_to_one_set():
    """Adversarial conflicts: every lane of every beat to one bank (its queue fills and
    the switch serialises every beat), then every lookup to one set (back-to-back read-modify-writes of one
    set through the bank pipeline's forwarding, with evictions)."""
    rng = random.Random(39)
    one_bank = keys_hashing_to(TINY, 800, rng, bank=1, distinct=40)
    one_set = keys_hashing_to(TINY, 800, rng, bank=0, set_=2, distinct=6)
    report = run_scenario(TINY, [
        {"op": "learn", "keys": one_bank},
        {"op": "dump"},
        {"op": "frozen", "keys": one_bank[:400], "popular_max_rrpv": 2},
        {"op": "clear"},
        {"op": "learn", "keys": one_set},
        {"op": "dump"},
        {"op": "frozen", "keys": one_set[:400], "popular_max_rrpv": 1},
    ], seed=40, idle_prob=0.05, stall_prob=0.2, name="conflicts")
    phases = report["phases"]
    assert 0 < phases[0]["golden_hits"] < len(one_bank)
    assert phases[5]["valid_entries"] == TINY.ways
    assert 0 < phases[4]["golden_hits"] < len(one_set)      # hits and evictions


# A sweep of small geometries (banks, sets and ways each in 1..4): one Verilator build each
# (about a minute on 2 cores), so a handful. 64-bit keys (spec 2 allows key_bits up to 64)
# in two of them, with keys that use the top bit; with one bank of one set the tag is all
# 64 bits of the hash.
SWEEP = {
    "b1s1w1_key64": EALConfig(lanes=2, banks=1, sets=1, ways=1, table_bits=8, row_bits=56,
                              dispatch_beats=1, queue_depth=2, beats_in_flight=2,
                              release_beats=1, hash_rounds=2),
    "b4s2w3_key64": EALConfig(lanes=3, banks=4, sets=2, ways=3, table_bits=4, row_bits=60,
                              dispatch_beats=3, queue_depth=3, beats_in_flight=5,
                              release_beats=3, hash_rounds=3),
    "b2s4w4_lane1": EALConfig(lanes=1, banks=2, sets=4, ways=4, table_bits=3, row_bits=9,
                              dispatch_beats=1, beats_in_flight=2, release_beats=1),
    "b4s4w2_lfu": EALConfig(lanes=4, banks=4, sets=4, ways=2, table_bits=2, row_bits=12,
                            dispatch_beats=2, queue_depth=2, beats_in_flight=4, release_beats=2,
                            policy="lfu", count_bits=2, sketch_counters=2,
                            popular_min_count=2),
}


@pytest.mark.parametrize("name", sorted(SWEEP))
def test_small_configuration_sweep(name):
    """Each geometry: learn, dump, frozen, a clear with commands pulsed while busy, lookups
    offered during a dump, a reset with lookups in flight, under idle, back-pressure and
    holes; every result and dump beat against the golden model."""
    cfg = SWEEP[name]
    rng = random.Random(41)
    space = [rng.getrandbits(cfg.key_bits) for _ in range(4 * cfg.entries + 20)]
    hot = space[:max(2, cfg.entries)]
    if cfg.key_bits == 64:
        assert any(k >> 63 for k in hot) and any(not k >> 63 for k in hot)
    keys = [rng.choice(hot) if rng.random() < 0.6 else rng.choice(space) for _ in range(900)]
    report = run_scenario(cfg, [
        {"op": "learn", "keys": keys[:300], "commands_while_busy": 0.1},
        {"op": "dump"},
        {"op": "frozen", "keys": keys[:200]},
        {"op": "clear", "commands_while_busy": 0.3},
        {"op": "learn", "keys": keys[300:600], "offer_during": "dump"},
        {"op": "learn", "keys": keys[600:], "reset_after_beats": 9},
        {"op": "learn", "keys": keys[:300], "offer_during": "clear"},
        {"op": "dump"},
        {"op": "frozen", "keys": keys[300:600], "popular_max_rrpv": 2},
    ], seed=42, idle_prob=0.15, stall_prob=0.3, hole_prob=0.15, name=f"sweep_{name}")
    phases = report["phases"]
    assert phases[1]["beats"] == cfg.banks * cfg.sets
    assert 0 < phases[0]["golden_hits"] < 300
    assert phases[7]["valid_entries"] > 0


# ---- the bench's own failure paths ---------------------------------------------------------

def test_deadlock_fails_with_a_message_naming_the_wait():
    """results.ready held low forever (the bench's own deadlock): the scenario fails within
    its cycle budget, and the pytest failure names the wait and the log."""
    with pytest.raises(ScenarioFailed) as failure:
        run_scenario(TINY, [{"op": "learn", "keys": [1, 2, 3, 4, 5]}], seed=43,
                     stall_prob=1.0, name="deadlock", budget_scale=0.1)
    message = str(failure.value)
    assert "cycles for result beat 0 of 2" in message, message
    assert "sim.log" in message and "the scenario stopped at" in message


def test_mismatches_reach_the_pytest_failure():
    """A negative control (the golden model classifies with another threshold than the RTL):
    the AssertionError carries the first mismatching result beats and the log's path."""
    rng = random.Random(44)
    keys = skewed_keys(rng, 400, list(range(10)), 40)
    with pytest.raises(AssertionError) as failure:
        run_scenario(TINY, [{"op": "learn", "keys": keys},
                            {"op": "frozen", "keys": keys, "popular_max_rrpv": 0,
                             "golden_popular_max_rrpv": 3}], seed=45, name="negative_control")
    message = str(failure.value)
    assert "frozen phase 1: result beat" in message and "!= golden" in message, message
    assert "log: " in message and message.count("  - cycle ") == 5


def test_default_configuration_is_simulated_from_generated_verilog(tmp_path, monkeypatch):
    """The runner writes the Verilog generated from the current source for every
    configuration (not the committed rtl/ for the default one), and rewrites it only when the
    text changed, so that Verilator's cache follows the generated text."""
    import verif.tb.runner as runner
    monkeypatch.setattr(runner, "verilog_text", lambda cfg: f"// engine {cfg.lanes} lanes\n")
    source = runner.engine_source(DEFAULT_CONFIG, tmp_path)
    assert source.parent == tmp_path and source.read_text() == "// engine 4 lanes\n"
    stamp = source.stat().st_mtime_ns
    assert runner.engine_source(DEFAULT_CONFIG, tmp_path).stat().st_mtime_ns == stamp
    monkeypatch.setattr(runner, "verilog_text", lambda cfg: "// edited engine\n")
    assert runner.engine_source(DEFAULT_CONFIG, tmp_path).read_text() == "// edited engine\n"


def test_scenario_keys_accept_64_bit_keys():
    """Keys with the top bit set, as Python ints or int64 patterns, become int64 patterns;
    a key wider than key_bits is refused."""
    cfg = SWEEP["b4s2w3_key64"]
    assert scenario_keys([2**64 - 1, 2**63, 5], cfg).tolist() == [-1, -2**63, 5]
    assert scenario_keys(np.array([-1, 7], dtype=np.int64), cfg).tolist() == [-1, 7]
    with pytest.raises(ValueError, match="does not fit key_bits = 12"):
        scenario_keys([1 << 12], TINY)

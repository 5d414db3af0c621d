"""cocotb + Verilator tests of the fragment chain (lookup engine -> input classifier ->
fragmenter): every element of every output stream equals the golden model's
``fragment_stream`` (verif/tb/test_fragment_chain.py), under random idle cycles, holes and
back-pressure on every stream, unless a test says otherwise."""

import pytest
import torch

from hotline_spec.config import DEFAULT_FRAGMENTER, FRAGMENTER_CONFIGS
from sw_driver.data import read_avazu, read_criteo
from sw_driver.data.locate import find_shared_data
from verif.fragment_workload import calibrated_criteo_like, colliding_rows
from verif.golden import AccessLogger, fragment, sparse_keys
from verif.tb.runner import run_fragment_case

pytestmark = pytest.mark.rtl

SMALL = FRAGMENTER_CONFIGS["small"]            # one lane
LANES4 = FRAGMENTER_CONFIGS["lanes4_small"]    # four lanes, a small de-dup table
KNOBS = dict(idle_prob=0.1, stall_prob=0.3, hole_prob=0.1)


def skewed(n, n_tables, rows, seed, p_hot=0.6, head=16):
    """Inputs that are, with probability ``p_hot``, all from the first ``head`` rows of
    each table, else rows with a heavy head (``floor(rows ** u)``, uniform ``u``)."""
    g = torch.Generator().manual_seed(seed)
    tail = (rows ** torch.rand(n, n_tables, generator=g)).to(torch.int64)
    hot = torch.randint(0, head, (n, n_tables), generator=g)
    return torch.where(torch.rand(n, 1, generator=g) < p_hot, hot, tail)


def golden_schedule(fcfg, learn, job):
    logger = AccessLogger(fcfg.eal)
    if learn is not None:
        logger.learn(sparse_keys(learn, fcfg.eal))
    return fragment(job, logger, 1)


@pytest.mark.parametrize("fcfg", [SMALL, LANES4], ids=["lanes1", "lanes4"])
def test_random_working_sets(fcfg):
    """Skewed random inputs with 26 and with 5 tables, several working-set sizes; threshold
    changes between jobs."""
    learn = skewed(600, 26, 5000, seed=1)
    jobs = [{"sparse": skewed(300, 26, 5000, seed=2), "ws_inputs": 64},
            {"sparse": skewed(97, 26, 5000, seed=3), "ws_inputs": 1000, "popular_max_rrpv": 2},
            {"sparse": skewed(200, 26, 300, seed=4)[:, :5], "ws_inputs": 33}]
    report = run_fragment_case(fcfg, learn, jobs, seed=5, **KNOBS, name="random")
    assert report["mismatches"] == 0 and report["compared"] > 10_000
    assert any(p > 0 for p in report["jobs"][0]["golden_popular"])


def test_all_popular_none_popular_same_row_shared_rows():
    """Edge working sets on four lanes: every input popular (learned twice); none popular
    (nothing learned for them); every input the same row; one row index shared by all
    tables of an input (distinct keys, since the table differs)."""
    g = torch.Generator().manual_seed(7)
    hot = torch.randint(0, 8, (150, 26), generator=g)
    assert golden_schedule(LANES4, torch.cat([hot, hot]), hot).n_popular == 150
    cold = torch.randint(10_000, 1 << 20, (120, 26), generator=g)
    same = torch.full((90, 26), 12345)
    shared = torch.randint(0, 400, (100, 1), generator=g).expand(100, 26).contiguous()
    jobs = [{"sparse": hot, "ws_inputs": 64}, {"sparse": cold, "ws_inputs": 40},
            {"sparse": same, "ws_inputs": 50}, {"sparse": shared, "ws_inputs": 64}]
    report = run_fragment_case(LANES4, torch.cat([hot, hot]), jobs, seed=8, **KNOBS,
                               name="edges")
    r_hot, r_cold, r_same, r_shared = report["jobs"]
    assert r_hot["golden_popular"] == [64, 64, 22] and sum(r_hot["golden_cold"]) == 0
    assert sum(r_cold["golden_popular"]) == 0
    assert r_same["golden_cold"] == [26, 26]
    assert report["mismatches"] == 0


@pytest.mark.parametrize("fcfg", [SMALL, LANES4], ids=["lanes1", "lanes4"])
def test_colliding_keys_probe_and_overflow(fcfg):
    """Cold rows crafted to share a home bucket (linear probing over several buckets) and,
    on four lanes, to meet in one bank in a beat; then enough rows in one bank to overflow
    it: the working sets end early exactly where the golden rule says."""
    n_tables = 8
    probe_rows = colliding_rows(fcfg, n_tables, 3, bank=1, bucket=5)       # 24 keys, 1 bucket
    repeats = probe_rows[torch.arange(30) % 3]
    overflow = colliding_rows(fcfg, n_tables, 40, bank=2)                  # 320 keys, 1 bank
    # Two tables: table 0's rows spread over bank 3, table 1's share one bucket of bank 1,
    # so a lane that must probe further is not the first lane of its cycle.
    spread = colliding_rows(fcfg, 1, 40, bank=3)[:, 0]
    crowded = colliding_rows(fcfg, 2, 11, bank=1, bucket=5)[:, 1]   # odd: lanes alternate
    mixed = torch.stack([spread, crowded[torch.arange(40) % 11]], dim=1)
    jobs = [{"sparse": repeats, "ws_inputs": 30},
            {"sparse": overflow, "ws_inputs": 40},
            {"sparse": mixed, "ws_inputs": 40}]
    report = run_fragment_case(fcfg, None, jobs, seed=9, **KNOBS, name="collide")
    probe_job, over_job, mixed_job = report["jobs"]
    assert mixed_job["counters"]["stall_probe"] > 0
    assert probe_job["counters"]["stall_probe"] > 0
    if fcfg.eal.lanes > 1:
        assert probe_job["counters"]["stall_bank"] > 0
    assert over_job["early_ends"] > 0
    assert over_job["counters"]["early_ends"] == over_job["early_ends"]
    assert max(over_job["golden_cold"]) <= fcfg.bank_capacity
    assert report["mismatches"] == 0


def test_bad_starts_are_refused_and_epochs_wrap():
    """start with 0 or too many tables, 0 inputs per working set or 0 inputs is refused
    (``error``, not busy); then many small working sets wrap the 2-bit epoch several times
    (the de-dup table is cleared in between) and still agree."""
    job = skewed(120, 4, 200, seed=11)
    bad = [(0, 8, 8), (SMALL.eal.max_tables + 1, 8, 8), (4, 0, 8), (4, 8, 0),
           (4, (1 << SMALL.inputs_bits) + 1, 8)]
    report = run_fragment_case(SMALL, skewed(200, 4, 200, seed=12), [
        {"sparse": job, "ws_inputs": 3}], seed=13, bad_starts=bad, **KNOBS, name="bad")
    assert report["jobs"][0]["working_sets"] == 40 and report["mismatches"] == 0


def _real(name, reader, n_learn, n_job):
    folder = find_shared_data(name)
    if folder is None:
        pytest.fail(f"the real sample {name} is missing (../shared/data or $HOTLINE_DATA)")
    data = reader(folder, split="train", max_rows=n_learn + n_job)
    return data.sparse[:n_learn], data.sparse[n_learn:n_learn + n_job]


@pytest.mark.parametrize("name,reader", [("criteo_kaggle_8k", read_criteo),
                                         ("avazu_9k", read_avazu)], ids=["criteo", "avazu"])
def test_real_samples_on_the_default_configuration(name, reader):
    """The committed default RTL (rtl/hotline_fragment_chain.v) on the real click logs:
    learn on 3000 inputs, fragment 1500 in working sets of 4 x 128."""
    learn, job = _real(name, reader, 3000, 1500)
    report = run_fragment_case(DEFAULT_FRAGMENTER, learn, [{"sparse": job, "ws_inputs": 512}],
                               seed=14, **KNOBS, name=name)
    assert report["mismatches"] == 0 and sum(report["jobs"][0]["golden_popular"]) > 0


def test_calibrated_synthetic_about_75_percent_popular():
    """The calibrated Criteo-like generator on the default RTL; no stalls, so the job's
    cycle count is the chain's own (the benchmark's figure comes from the same setup)."""
    learn, job = calibrated_criteo_like(4096, 2048)
    share = golden_schedule(DEFAULT_FRAGMENTER, learn, job).n_popular / len(job)
    assert 0.65 < share < 0.85
    report = run_fragment_case(DEFAULT_FRAGMENTER, learn, [{"sparse": job, "ws_inputs": 1024}],
                               seed=15, name="calibrated")
    r = report["jobs"][0]
    assert report["mismatches"] == 0
    assert r["lookups"] / r["cycles"] > 0.5 * DEFAULT_FRAGMENTER.eal.lanes  # sanity, not the goal

"""Tests of the synthetic click generator, the popular-share measure and calibration."""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
import pytest
import torch

from sw_driver.data import (
    CRITEO_KAGGLE_SMALL_TABLE_SIZES,
    CRITEO_KAGGLE_TABLE_SIZES,
    CalibrationError,
    SyntheticClickGenerator,
    calibrate,
    criteo_kaggle_generator,
    measure_share,
    popular_share,
    scale_table_sizes,
)
from sw_driver.data.permutation import TablePermutations
from sw_driver.data.zipf import ZipfTables


def test_same_seed_same_samples_other_seed_or_stream_differs():
    sizes = (10, 1000, 100_000)
    a = SyntheticClickGenerator(sizes, p_hot=0.3, seed=5).batch(500)
    b = SyntheticClickGenerator(sizes, p_hot=0.3, seed=5).batch(500)
    for x, y in ((a.labels, b.labels), (a.dense, b.dense), (a.sparse, b.sparse)):
        assert torch.equal(x, y)
    c = SyntheticClickGenerator(sizes, p_hot=0.3, seed=6).batch(500)
    assert not torch.equal(a.sparse, c.sparse)
    # Another stream: different samples over the same structure (same popular rows).
    g0 = SyntheticClickGenerator(sizes, seed=5)
    g1 = g0.replace(stream=1)
    assert not torch.equal(g0.batch(500).sparse, g1.batch(500).sparse)
    top = np.ones((1, 3), dtype=np.int64)
    assert (g0.rows_of_ranks(top) == g1.rows_of_ranks(top)).all()


def test_stream_continues_and_sparse_matches_batch():
    g = SyntheticClickGenerator((50, 5000), seed=1)
    first, second = g.batch(100), g.batch(100)
    assert not torch.equal(first.sparse, second.sparse)
    h = SyntheticClickGenerator((50, 5000), seed=1)
    both = h.sparse(200)  # the sparse stream does not depend on dense/label draws
    assert (both[:100] == first.sparse.numpy()).all()
    assert (both[100:] == second.sparse.numpy()).all()
    batches = list(SyntheticClickGenerator((50, 5000), seed=1).mini_batches(100, 2))
    whole = SyntheticClickGenerator((50, 5000), seed=1).batch(200)
    for field in ("labels", "dense", "sparse"):  # batch boundaries do not change samples
        cat = torch.cat([getattr(b, field) for b in batches])
        assert torch.equal(cat, getattr(whole, field)), field
        assert torch.equal(getattr(batches[1], field), getattr(second, field)), field


def test_permutation_is_a_seeded_bijection():
    sizes = (1, 2, 3, 5, 16, 17, 1000, 1025)
    perm = TablePermutations(sizes, seed=3)
    values = np.stack([np.arange(1025) % n for n in sizes], axis=1)
    out = perm(values)
    for t, n in enumerate(sizes):
        assert sorted(out[:n, t].tolist()) == list(range(n)), f"table {t}"
    assert (perm.inverse(out) == values).all()
    assert not (out[:1000, 6] == np.arange(1000)).all()  # not the identity
    assert not (TablePermutations(sizes, seed=4)(values) == out).all()


def test_zipf_skew_matches_theory():
    n, s, draws = 100_000, 1.05, 200_000
    g = SyntheticClickGenerator((n,), zipf_exponent=s, seed=2)
    rows = g.sparse(draws)[:, 0]
    ranks = g.ranks_of_rows(rows[:, None])[:, 0]
    weights = np.arange(1, n + 1, dtype=np.float64) ** -s
    p = weights / weights.sum()  # the exact discrete Zipf law
    top_row = int(g.rows_of_ranks(np.array([[1]]))[0, 0])
    counts = Counter(rows.tolist())
    assert counts.most_common(1)[0][0] == top_row
    # Most frequent row's share vs 1 / H(n, s); 4 sigma is about 3 % relative here.
    assert counts[top_row] / draws == pytest.approx(p[0], rel=0.04)
    assert g.rank_probability(0, 1) == pytest.approx(p[0], rel=1e-6)
    # The tail (beyond the exact head, sampled by the closed-form inverse) has the right mass.
    for k in (10, 1000, 30_000):
        assert (ranks > k).mean() == pytest.approx(p[k:].sum(), rel=0.03, abs=2e-3)
    # Popular rows are scattered, not rows 0..9.
    top10 = g.rows_of_ranks(np.arange(1, 11)[:, None])[:, 0]
    assert sorted(top10.tolist()) != list(range(10))


def test_zipf_sampler_probabilities_sum_to_one():
    z = ZipfTables((7, 300, 5000), 0.9, exact_head=64)
    for t, n in enumerate((7, 300, 5000)):
        total = sum(z.probability(t, k) for k in range(1, n + 1))
        assert total == pytest.approx(1.0, abs=1e-9)
        # The midpoint rule beyond the exact head stays close to the discrete law.
        exact = np.arange(1, n + 1, dtype=np.float64) ** -0.9
        exact /= exact.sum()
        assert z.probability(t, n) == pytest.approx(exact[-1], rel=1e-3)


def test_hot_samples_stay_in_the_heads():
    sizes = (3, 100, 10_000, 1_000_000)
    g = SyntheticClickGenerator(sizes, p_hot=1.0, head_rows=50, seed=9)
    ranks = g.ranks_of_rows(g.sparse(5000))
    assert (ranks <= np.minimum(sizes, 50)).all()
    cold = SyntheticClickGenerator(sizes, p_hot=0.0, head_rows=50, seed=9)
    assert (cold.ranks_of_rows(cold.sparse(5000))[:, 3] > 50).mean() > 0.3


def test_criteo_sized_batch_is_fast_and_valid():
    g = criteo_kaggle_generator(p_hot=0.7, seed=1)
    assert sum(g.table_sizes) == 33_762_577
    g.batch(4096)  # warm-up
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        b = g.batch(4096)
        best = min(best, time.perf_counter() - t)
    assert best < 0.1, f"a 4096 x 26 batch took {best * 1e3:.1f} ms"
    assert b.sparse.shape == (4096, 26) and b.dense.shape == (4096, 13)
    assert b.table_sizes == CRITEO_KAGGLE_TABLE_SIZES  # ClickDataset checked the row range
    assert int(b.sparse[:, 2].max()) > 1_000_000  # the big tables' tails are used


def test_labels_are_learnable():
    g = criteo_kaggle_generator(seed=4)
    b = g.batch(40_000)
    y = b.labels.numpy()
    assert set(np.unique(y).tolist()) == {0.0, 1.0}
    assert 0.15 < y.mean() < 0.35
    z = g.label_logits(b.dense.numpy(), b.sparse.numpy())
    # AUC of the noise-free logit: what a perfect model could reach; well above chance.
    order = np.argsort(z, kind="stable")
    rank = np.empty(len(z))
    rank[order] = np.arange(1, len(z) + 1)
    pos = y == 1
    auc = (rank[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum())
    assert auc > 0.75


def _brute_force_share(learn, budget, measure, min_count=1):
    counts = Counter((t, int(r)) for row in learn for t, r in enumerate(row))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:budget]
    hot = {k for k, c in ranked if c >= min_count}
    popular = sum(all((t, int(r)) in hot for t, r in enumerate(row)) for row in measure)
    return popular / len(measure), len(hot)


def test_popular_share_against_brute_force():
    rng = np.random.default_rng(0)
    learn = rng.integers(0, 6, size=(40, 3)) ** 2 % 7  # skewed small values with ties
    measure = rng.integers(0, 6, size=(25, 3)) ** 2 % 7
    for budget in (0, 1, 2, 3, 5, 8, 12, 100):
        for min_count in (1, 2):
            want = _brute_force_share(learn, budget, learn, min_count)
            got = popular_share(learn, budget, min_count=min_count)
            assert (got.share, got.hot_set_size) == pytest.approx(want), (budget, min_count)
            want = _brute_force_share(learn, budget, measure, min_count)
            got = popular_share(torch.from_numpy(learn), budget, measure_on=measure,
                                min_count=min_count)
            assert (got.share, got.hot_set_size) == pytest.approx(want), (budget, min_count)


def test_popular_share_tie_break_by_key():
    # Keys (0,1), (0,2), (1,0) each appear once: a budget of 2 takes the two smallest keys.
    learn = np.array([[1, 0], [2, 5]])
    assert popular_share(learn, 2, measure_on=np.array([[1, 5]])).share == 0.0
    assert popular_share(learn, 3, measure_on=np.array([[1, 0]])).share == 1.0
    assert popular_share(learn, 3, measure_on=np.array([[1, 5]])).share == 0.0


def test_popular_share_is_fast():
    sparse = criteo_kaggle_generator(p_hot=0.5).sparse(100_000)
    t = time.perf_counter()
    share, size = popular_share(sparse, 50_000)
    elapsed = time.perf_counter() - t
    assert elapsed < 1.5, f"popular_share on 100k x 26 took {elapsed:.2f} s"
    assert 0.5 < share < 1.0 and size == 50_000


def test_independent_draws_make_almost_no_input_popular():
    # Criteo Kaggle sizes, hot budget 10 % of all rows, hot set learned on 20k samples.
    g = criteo_kaggle_generator(p_hot=0.0, seed=3)
    budget = sum(CRITEO_KAGGLE_TABLE_SIZES) // 10
    cold = measure_share(g, budget, 20_000, 10_000)
    assert cold.share < 0.05
    hot = measure_share(g.replace(p_hot=0.5), budget, 20_000, 10_000)
    assert hot.share > 0.4  # the correlation, not the Zipf skew, makes inputs popular


# At 10 % of the rows the budget exceeds the distinct keys of 20k learning samples (the hot
# set is every key seen); at 2 % it binds. Both must calibrate.
@pytest.mark.parametrize("budget_fraction", [0.10, 0.02])
def test_calibration_hits_target(budget_fraction):
    sizes = CRITEO_KAGGLE_SMALL_TABLE_SIZES
    budget = int(sum(sizes) * budget_fraction)
    result = calibrate(0.76, budget, sizes, n_learn=20_000, n_measure=10_000, seed=7)
    assert abs(result.share - 0.76) <= 0.02
    assert 0.0 < result.p_hot < 1.0 and result.generator.config.p_hot == result.p_hot
    assert result.hot_set_size <= budget
    if budget_fraction == 0.02:
        assert result.hot_set_size == budget
    # The returned generator replays the calibration run from the start of its stream ...
    replay = measure_share(result.generator, budget, 20_000, 10_000)
    assert replay == (result.share, result.hot_set_size)
    # ... and fresh streams (held-out, as the accelerator learns) give the same share.
    for stream in (1, 2):
        again = measure_share(result.generator.replace(stream=stream), budget, 20_000, 10_000)
        assert abs(again.share - 0.76) <= 0.02, (stream, again)
    # Without the correlation the same budget makes far fewer inputs popular.
    assert measure_share(result.generator.replace(p_hot=0.0), budget, 20_000, 10_000).share < 0.3


def test_calibration_refuses_unreachable_targets():
    sizes = scale_table_sizes(CRITEO_KAGGLE_TABLE_SIZES, 1e-3)
    budget = sum(sizes) // 10
    # On tiny tables independent draws are already often popular: 1 % is out of reach.
    with pytest.raises(CalibrationError, match="independent draws"):
        calibrate(0.01, budget, sizes, n_learn=5_000, n_measure=2_000)
    # A fixed large head cannot be learned from few samples: 99 % is out of reach.
    with pytest.raises(CalibrationError, match="p_hot = 1"):
        calibrate(0.99, budget, CRITEO_KAGGLE_TABLE_SIZES, head_rows=4096,
                  n_learn=2_000, n_measure=1_000)


def test_drift_shifts_the_ranking_by_period():
    from sw_driver.data.synthetic import SyntheticClickGenerator
    sizes = (50, 1000, 7)
    plain = SyntheticClickGenerator(sizes, p_hot=0.5, head_rows=8, seed=2)
    drifting = SyntheticClickGenerator(sizes, p_hot=0.5, head_rows=8, seed=2,
                                       drift_every=300, drift_shift=5)
    base = plain.ranks_of_rows(plain.sparse(1000))
    # Drawn in uneven chunks: the drift follows the sample's position, not the call.
    moved = drifting.ranks_of_rows(np.concatenate([drifting.sparse(n) for n in (1, 450, 549)]))
    period = np.arange(1000) // 300
    want = (base - 1 + (period * 5)[:, None]) % np.asarray(sizes) + 1
    assert np.array_equal(moved, want)
    assert np.array_equal(moved[:300], base[:300])
    with pytest.raises(ValueError, match="drift needs both drift_every"):
        SyntheticClickGenerator(sizes, drift_every=10)

"""Seeded synthetic click logs with power-law row popularity and correlated lookups.

Model (docs/data.md has the full description):

* Table ``t`` has ``n_t`` rows. Popularity rank ``k`` (1-based) is drawn from Zipf(s),
  ``P(k) ~ k**-s`` (`ZipfTables`, inverse CDF: no per-row arrays), then mapped to a row by a
  seeded pseudo-random permutation of ``0..n_t-1`` (`TablePermutations`), so popular rows are
  scattered over the table instead of being rows 0..k.
* Correlation: each sample is *hot* with probability ``p_hot``. A hot sample draws every table
  from the Zipf distribution truncated to that table's head (ranks ``1..min(n_t, head_rows)``);
  a cold sample draws every table independently from the full distribution. Both keep each
  table's marginal decreasing in rank. Hot samples are popular once the heads are in the hot
  set; cold samples almost never are (26 independent draws must all be hot), so the popular
  share grows ~linearly in ``p_hot``, which `calibrate` exploits.
* Dense: ``n_dense`` features ``log1p(floor(exp(N(1, 1.25**2))))``, i.e. log-normal counts
  under DLRM's log transform, like the Criteo reader's output.
* Labels: ``[z + 1.7 N(0, 1) > 0]`` (``P(click) = Phi(z / 1.7)``, close to
  ``sigmoid(z)``) with ``z = -1.5 + 0.8 (d0 - 1.2) - 0.5 (d1 - 1.2) + 0.7 sum_{t<3} e_t(row_t)``
  and ``e_t(row) = +-1`` a fixed pseudo-random sign per row (from `splitmix64`). A model can
  learn the dense slopes and the per-row signs of the first three tables; the rest is noise.
  Click rate about 25 %.
* Drift (off by default): with ``drift_every = P`` and ``drift_shift = d``, sample ``i`` of the
  stream uses the popularity ranking shifted by ``d * (i // P)`` ranks: after each period the
  ``d`` most popular rows of every table become its least popular ones and every other row
  moves ``d`` ranks up, so a hot set learned once decays as the stream goes on, like a real
  log's popularity from day to day.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np
import torch

from .dataset import ClickDataset
from .hashing import splitmix64
from .permutation import TablePermutations
from .popularity import PopularShare, hot_set, lookup_keys, popular_share
from .presets import CRITEO_KAGGLE_TABLE_SIZES
from .zipf import ZipfTables

__all__ = [
    "SyntheticConfig", "SyntheticClickGenerator", "CalibrationResult", "CalibrationError",
    "calibrate", "criteo_kaggle_generator", "measure_share", "popular_share", "hot_set",
    "lookup_keys", "PopularShare",
]

#: Default Zipf exponent: a heavy head with a long tail, as per-table counts of Criteo show.
DEFAULT_ZIPF_EXPONENT = 1.05
_LABEL_TABLES = 3
# Normal noise of this scale turns the score z into P(click) = Phi(z / 1.7) ~ sigmoid(z).
_LABEL_NOISE = 1.7


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that defines a synthetic stream; equal configs give equal samples.

    ``seed`` fixes the structure (row permutations, label signs) and the sample stream;
    ``stream`` selects another, independent sample stream over the same structure.
    """

    table_sizes: tuple[int, ...] = CRITEO_KAGGLE_TABLE_SIZES
    zipf_exponent: float = DEFAULT_ZIPF_EXPONENT
    p_hot: float = 0.0
    head_rows: int = 1024
    n_dense: int = 13
    seed: int = 0
    stream: int = 0
    drift_every: int = 0
    drift_shift: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "table_sizes", tuple(int(s) for s in self.table_sizes))
        if not self.table_sizes or min(self.table_sizes) < 1:
            raise ValueError(f"table_sizes must be >= 1 each, got {self.table_sizes}")
        if not 0.0 <= self.p_hot <= 1.0:
            raise ValueError(f"p_hot must lie in [0, 1], got {self.p_hot}")
        if self.head_rows < 1:
            raise ValueError(f"head_rows must be >= 1, got {self.head_rows}")
        if self.zipf_exponent < 0:
            raise ValueError(f"zipf_exponent must be >= 0, got {self.zipf_exponent}")
        if self.n_dense < 0:
            raise ValueError(f"n_dense must be >= 0, got {self.n_dense}")
        if self.drift_every < 0 or self.drift_shift < 0:
            raise ValueError(f"drift_every and drift_shift must be >= 0, got "
                             f"{self.drift_every} and {self.drift_shift}")
        if (self.drift_every == 0) != (self.drift_shift == 0):
            raise ValueError("drift needs both drift_every (samples per period) and "
                             "drift_shift (ranks moved per period), or neither")


class SyntheticClickGenerator:
    """A seeded stream of synthetic samples (see the module docstring for the model).

    Sparse draws and dense/label draws use separate random streams, so `sparse` and `batch`
    yield the same lookups for the same position in the stream.
    """

    def __init__(
        self,
        table_sizes: tuple[int, ...] = CRITEO_KAGGLE_TABLE_SIZES,
        *,
        zipf_exponent: float = DEFAULT_ZIPF_EXPONENT,
        p_hot: float = 0.0,
        head_rows: int = 1024,
        n_dense: int = 13,
        seed: int = 0,
        stream: int = 0,
        drift_every: int = 0,
        drift_shift: int = 0,
    ):
        self.config = SyntheticConfig(
            tuple(table_sizes), zipf_exponent, p_hot, head_rows, n_dense, seed, stream,
            drift_every, drift_shift,
        )
        self._position = 0  # samples drawn so far: the drift period of the next one
        c = self.config
        self._zipf = ZipfTables(c.table_sizes, c.zipf_exponent)
        self._perm = TablePermutations(c.table_sizes, c.seed)
        self.head_sizes = tuple(min(n, c.head_rows) for n in c.table_sizes)
        self._head_mass = np.array(
            [self._zipf.mass_upto(t, h) for t, h in enumerate(self.head_sizes)]
        )
        salts = np.random.default_rng([c.seed, 0x1AB]).integers(
            0, 2**63, size=len(c.table_sizes), dtype=np.uint64
        )
        self._label_salts = salts
        self._rng_sparse = np.random.default_rng([c.seed, c.stream, 1])
        self._rng_dense = np.random.default_rng([c.seed, c.stream, 2])

    @property
    def table_sizes(self) -> tuple[int, ...]:
        """Rows per table."""
        return self.config.table_sizes

    def replace(self, **changes) -> SyntheticClickGenerator:
        """A new generator (at the start of its stream) with some settings changed."""
        return SyntheticClickGenerator(**dataclasses.asdict(
            dataclasses.replace(self.config, **changes)
        ))

    def rows_of_ranks(self, ranks: np.ndarray) -> np.ndarray:
        """Rows ``[n, n_tables]`` holding popularity ranks ``[n, n_tables]`` (1 = most popular)."""
        return self._perm(np.asarray(ranks, dtype=np.int64) - 1)

    def ranks_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Popularity ranks (1-based) of rows ``[n, n_tables]``; inverse of `rows_of_ranks`."""
        return self._perm.inverse(rows) + 1

    def rank_probability(self, table: int, rank: int) -> float:
        """Probability that a cold sample looks up the row of ``rank`` in ``table``."""
        return self._zipf.probability(table, rank)

    def sparse(self, n: int) -> np.ndarray:
        """The next ``n`` samples' lookups, int64 ``[n, n_tables]`` (advances the sparse stream)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        # One row of uniforms per sample (column 0 picks hot/cold): the samples do not depend
        # on how the stream is cut into batches, nor on p_hot's value (runs that differ only
        # in p_hot share their random numbers, which keeps calibration monotone).
        draws = self._rng_sparse.random((n, len(self.table_sizes) + 1))
        hot, u = draws[:, 0] < self.config.p_hot, draws[:, 1:]
        scale = np.where(hot[:, None], self._head_mass, self._zipf.total_mass)
        ranks = self._zipf.ranks(u * scale)
        c = self.config
        if c.drift_every:
            period = (self._position + np.arange(n, dtype=np.int64)) // c.drift_every
            sizes = np.asarray(c.table_sizes, dtype=np.int64)
            ranks = (ranks - 1 + (period * c.drift_shift)[:, None]) % sizes + 1
        self._position += n
        return self.rows_of_ranks(ranks)

    def skip(self, n: int) -> None:
        """Advance the stream by ``n`` samples without building them: the next `batch` is
        what it would have been after ``batch(n)`` (how a streaming worker passes over the
        other workers' batches)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        # One uniform (one 64-bit draw of PCG64) per table plus one per sample: jump the
        # sparse stream. The dense normals come from a rejection sampler whose number of
        # draws varies, so those are drawn and dropped, in blocks to bound the memory.
        self._rng_sparse.bit_generator.advance(n * (len(self.table_sizes) + 1))
        for start in range(0, n, 65536):
            self._rng_dense.standard_normal((min(65536, n - start), self.config.n_dense + 1))
        self._position += n

    def batch(self, n: int) -> ClickDataset:
        """The next ``n`` samples as a `ClickDataset` (labels, dense and sparse)."""
        sparse = self.sparse(n)
        # One row of normals per sample: n_dense features, then the label noise.
        normals = self._rng_dense.standard_normal((n, self.config.n_dense + 1))
        dense = np.log1p(np.floor(np.exp(1.0 + 1.25 * normals[:, :-1]))).astype(np.float32)
        z = self.label_logits(dense, sparse)
        labels = (z + _LABEL_NOISE * normals[:, -1] > 0).astype(np.float32)
        return ClickDataset(
            labels=torch.from_numpy(labels),
            dense=torch.from_numpy(dense),
            sparse=torch.from_numpy(sparse),
            table_sizes=self.table_sizes,
            name=f"synthetic(seed={self.config.seed}, p_hot={self.config.p_hot:.4g})",
        )

    def label_logits(self, dense: np.ndarray, sparse: np.ndarray) -> np.ndarray:
        """The noise-free click score ``z`` of samples: ``label = [z + 1.7 N(0, 1) > 0]``,
        so ``P(click) = Phi(z / 1.7)``, within 0.01 of ``sigmoid(z)`` (a probit model)."""
        dense = np.asarray(dense, dtype=np.float64)
        sparse = np.asarray(sparse, dtype=np.int64)
        z = np.full(sparse.shape[0], -1.5)
        if dense.shape[1] >= 1:
            z += 0.8 * (dense[:, 0] - 1.2)
        if dense.shape[1] >= 2:
            z -= 0.5 * (dense[:, 1] - 1.2)
        k = min(_LABEL_TABLES, sparse.shape[1])
        mixed = splitmix64(sparse[:, :k].astype(np.uint64) ^ self._label_salts[:k])
        signs = 2.0 * (mixed >> np.uint64(63)).astype(np.float64) - 1.0
        return z + 0.7 * signs.sum(axis=1)

    def mini_batches(self, batch_size: int, n_batches: int) -> Iterator[ClickDataset]:
        """``n_batches`` consecutive batches of ``batch_size`` samples."""
        for _ in range(n_batches):
            yield self.batch(batch_size)


def criteo_kaggle_generator(**settings) -> SyntheticClickGenerator:
    """A generator with the Criteo Kaggle table sizes (26 tables, 33.8 M rows, 13 dense)."""
    return SyntheticClickGenerator(CRITEO_KAGGLE_TABLE_SIZES, **settings)


class CalibrationError(ValueError):
    """The target share cannot be reached with the given budget and sample sizes."""


class CalibrationResult(NamedTuple):
    """Outcome of `calibrate`."""

    generator: SyntheticClickGenerator  #: at the start of its stream, calibrated settings
    share: float                        #: held-out popular share measured at those settings
    p_hot: float
    head_rows: int
    hot_set_size: int
    evaluations: int                    #: generator settings tried


def measure_share(
    generator: SyntheticClickGenerator, hot_budget: int, n_learn: int, n_measure: int,
    min_count: int = 1,
) -> PopularShare:
    """Held-out popular share: hot set from the first ``n_learn`` samples, share on the next
    ``n_measure`` (as the accelerator learns on early mini-batches). Advances ``generator``."""
    learn = generator.sparse(n_learn)
    return popular_share(learn, hot_budget, measure_on=generator.sparse(n_measure),
                         min_count=min_count)


def calibrate(
    target_share: float,
    hot_budget: int,
    table_sizes: tuple[int, ...] = CRITEO_KAGGLE_TABLE_SIZES,
    *,
    zipf_exponent: float = DEFAULT_ZIPF_EXPONENT,
    head_rows: int | None = None,
    n_learn: int = 65536,
    n_measure: int = 32768,
    tolerance: float = 0.02,
    min_count: int = 1,
    seed: int = 0,
    max_evaluations: int = 40,
) -> CalibrationResult:
    """Find ``p_hot`` (and if needed ``head_rows``) giving ``target_share`` popular inputs.

    The share is measured held-out (`measure_share`: hot set of at most ``hot_budget`` keys
    chosen on ``n_learn`` samples, share on the next ``n_measure``). ``head_rows``, unless
    given, starts at `_default_head_rows` and is halved while even ``p_hot = 1`` stays below
    the target (heads too large to be learned from ``n_learn`` samples). ``p_hot`` is then
    found by a safeguarded secant search on [0, 1] that stops within ``tolerance / 4``, so that
    a fresh stream (whose share differs by a few tenths of a point) stays within
    ``tolerance``. Every run uses the same seed: the runs share their random numbers and the
    share is monotone in ``p_hot``. The returned generator, at the start of its stream,
    replays the winning run; ``generator.replace(stream=k)`` gives fresh samples.

    Raises:
        CalibrationError: the target is below the share of cold (independent) samples, or not
            reached within ``tolerance`` after ``max_evaluations`` runs.
    """
    if not 0.0 <= target_share <= 1.0:
        raise ValueError(f"target_share must lie in [0, 1], got {target_share}")
    sizes = tuple(int(s) for s in table_sizes)
    evaluations = 0

    def run(p: float, h: int) -> tuple[SyntheticClickGenerator, PopularShare]:
        nonlocal evaluations
        evaluations += 1
        gen = SyntheticClickGenerator(sizes, zipf_exponent=zipf_exponent, p_hot=p,
                                      head_rows=h, seed=seed)
        return gen, measure_share(gen, hot_budget, n_learn, n_measure, min_count)

    def result(gen, measured: PopularShare) -> CalibrationResult:
        c = gen.config
        return CalibrationResult(gen.replace(), measured.share, c.p_hot, c.head_rows,
                                 measured.hot_set_size, evaluations)

    h = head_rows or _default_head_rows(sizes, hot_budget, n_learn)
    gen0, s0 = run(0.0, h)
    if abs(s0.share - target_share) <= tolerance / 4:
        return result(gen0, s0)
    if s0.share > target_share:
        raise CalibrationError(
            f"independent draws already give a popular share of {s0.share:.3f} > target "
            f"{target_share:.3f}: lower the hot budget or the Zipf exponent"
        )
    while True:
        gen1, s1 = run(1.0, h)
        if s1.share >= target_share - tolerance / 4 or h == 1 or head_rows is not None:
            break
        h //= 2
    if s1.share < target_share - tolerance:
        raise CalibrationError(
            f"p_hot = 1 gives only {s1.share:.3f} < target {target_share:.3f} "
            f"(head_rows {h}): raise the hot budget or n_learn"
        )
    lo, hi = (0.0, s0.share), (1.0, s1.share)
    best = min([(gen0, s0), (gen1, s1)], key=lambda r: abs(r[1].share - target_share))
    while evaluations < max_evaluations and abs(best[1].share - target_share) > tolerance / 4:
        span = hi[0] - lo[0]
        guess = lo[0] + (target_share - lo[1]) * span / max(hi[1] - lo[1], 1e-12)
        p = min(max(guess, lo[0] + 0.05 * span), hi[0] - 0.05 * span)  # always shrink
        gen, s = run(p, h)
        if abs(s.share - target_share) < abs(best[1].share - target_share):
            best = (gen, s)
        if s.share < target_share:
            lo = (p, s.share)
        else:
            hi = (p, s.share)
    if abs(best[1].share - target_share) > tolerance:
        raise CalibrationError(
            f"best share {best[1].share:.3f} after {evaluations} runs is not within "
            f"{tolerance} of {target_share:.3f}"
        )
    return result(*best)


def _default_head_rows(sizes: tuple[int, ...], hot_budget: int, n_learn: int) -> int:
    """Largest power of two h with sum(min(n_t, h)) <= hot_budget / 2 and h <= n_learn / 16.

    Half the budget leaves room for the cold samples' most frequent rows; n_learn / 16 keeps
    the heads small enough for their rows to be seen while learning (Zipf-weighted, the rarest
    head row of a head of h rows is drawn about n_learn / (h ln h) times). At least 1.
    """
    h = 1
    while (2 * h <= max(sizes) and 2 * h <= n_learn // 16
           and sum(min(n, 2 * h) for n in sizes) <= hot_budget // 2):
        h *= 2
    return h

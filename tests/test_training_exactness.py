"""Exactness of the training modes (docs/training.md, architecture decision 3).

* The pipelined ``hotline`` run (background cold path, hot table + cold rows in one working
  buffer, write-back before the next gather) equals, bit for bit on the CPU in float32, the
  plain sequential execution of the same micro-batch schedule written here: one full table,
  the learning mini-batches in order, then per working set the popular micro-batches and the
  non-popular one (in the trainer's near-equal SGD chunks), working set after working set.
  The schedule comes from the golden model (``verif.golden.fragment``), not from the driver,
  with the de-dup table's rule (a working set ends early when a de-dup bank fills; a tiny
  table forces it in one test).
* The data reuse cold rows across consecutive working sets, and a deliberately stale variant
  (each working set's gather runs *before* the previous write-back) must differ: the hazard
  handling is what makes the result exact.
* ``hybrid`` equals ``gpu-only`` bit for bit, and both equal the baseline order.
"""

import math

import pytest
import torch

from sw_driver.data import SyntheticClickGenerator
from sw_driver.training import Trainer, eal_config_for_budget, init_table
from hotline_spec.config import FragmenterConfig
from verif.golden import AccessLogger, fragment
from verif.golden.feistel import make_keys
from training_setup import SIZES, HOT_BUDGET, KW, SequentialReference, small_click_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def data():
    # Small tables and a skewed law: popular inputs (hot heads) and many cold rows that recur
    # in consecutive working sets.
    return small_click_data(1200)


def reference(ds, order, epochs=1, fragmenter=None, policy="srrip", adagrad_eps=None, **kw):
    """The plain sequential execution: returns (model, table, cold lists per working set).
    ``fragmenter``: a FragmenterConfig of the same EAL geometry (default: the default one);
    ``adagrad_eps``: row-wise Adagrad instead of SGD on the rows (the reference's own)."""
    kw = {**KW, **kw}
    sizes, T = ds.table_sizes, ds.n_tables
    N, W = kw["batch_size"], kw["working_set"]
    ref = SequentialReference(ds, kw, adagrad_eps)
    reference.last = ref
    model, table, off, step = ref.model, ref.table, ref.offsets, ref.step

    n = len(ds)
    colds = []
    if order == "baseline":
        for _ in range(epochs):
            for a in range(0, n, N):
                step(torch.arange(a, min(a + N, n)))
        return model, table, colds
    cfg = eal_config_for_budget(HOT_BUDGET, sizes, policy=policy)
    fragmenter = (FragmenterConfig(eal=cfg) if fragmenter is None
                  else fragmenter.replace(eal=cfg))
    logger = AccessLogger(cfg)
    n_batches = math.ceil(n / N)
    learn = min(n_batches, max(1, math.ceil(kw["sample_rate"] * n_batches)))
    for i in range(learn):
        a, b = i * N, min((i + 1) * N, n)
        s = ds.sparse[a:b]
        logger.learn(make_keys(torch.arange(T).expand_as(s), s, cfg))
        step(torch.arange(a, b))
    start = learn * N
    for _ in range(epochs):
        a = start
        while a < n:
            b = min(a + W * N, n)
            sch = fragment(ds.sparse[a:b], logger, N, fragmenter=fragmenter)
            colds.append(set((off[sch.cold_tables] + sch.cold_rows).tolist()))
            ref.working_set(sch, a)
            a += sch.n_inputs
        start = 0
    return model, table, colds


def same(trainer, model, table):
    params = list(trainer.model.state_dict().values())
    ref = list(model.state_dict().values())
    return (torch.equal(trainer.embedding_table(), table)
            and all(torch.equal(p, q) for p, q in zip(params, ref)))


def hotline(ds, epochs=1, patch=None, fragmenter=None, policy=None, **kw):
    policy = policy or "srrip"     # the reference's default (the trainer's is lfu)
    if fragmenter is not None:
        fragmenter = fragmenter.replace(eal=eal_config_for_budget(HOT_BUDGET, SIZES,
                                                                  policy=policy))
    tr = Trainer(SIZES, ds.n_dense, "hotline", hot_budget=HOT_BUDGET, fragmenter=fragmenter,
                 policy=policy, **{**KW, **kw})
    if patch:
        patch(tr)
    for _ in range(epochs):
        tr.train_epoch(ds)
    return tr


def test_reference_schedule_exercises_the_hazard(data):
    _, _, colds = reference(data, "hotline")
    overlaps = [len(a & b) for a, b in zip(colds, colds[1:])]
    assert len(colds) >= 8
    # Rows reused by consecutive working sets, in (almost) every pair.
    assert sum(o > 0 for o in overlaps) >= len(overlaps) - 1, overlaps
    assert sum(overlaps) >= 50, overlaps


def test_hotline_equals_sequential_schedule_bit_for_bit(data):
    model, table, _ = reference(data, "hotline", epochs=2)
    tr = hotline(data, epochs=2)
    try:
        c = tr.counters()
        # Epoch 1 learns on ceil(0.1 * 38) = 4 mini-batches; epoch 2 is all working sets.
        n_ws = math.ceil((len(data) - 4 * 32) / (3 * 32)) + math.ceil(len(data) / (3 * 32))
        assert c["working_sets"] == n_ws
        assert 0.2 < c["popular_inputs"] / c["inputs"] < 0.9    # both kinds of micro-batch
        assert c["cold_rows"] > 0 and c["bytes_written_back"] == c["bytes_gathered"]
        assert tr.store.hot_rows > 0
        assert same(tr, model, table)
        # Not vacuous: training moved the table away from its initial values.
        assert not torch.equal(table, init_table(SIZES, KW["dim"], KW["seed"]))
    finally:
        tr.close()


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "sequential"])
def test_hotline_with_rowwise_adagrad_equals_sequential_schedule(data, pipelined):
    """Row-wise Adagrad on the rows: the accumulator of a row travels with it (gathered,
    kept in the hot table, written back), so the pipelined run, and the module's sequential
    order, equal the plain reference with its own accumulator table bit for bit."""
    model, table, _ = reference(data, "hotline", epochs=2, adagrad_eps=1e-8, lr=0.1)
    state = reference.last.state
    tr = hotline(data, patch=lambda t: setattr(t.store.ebc, "pipelined", pipelined),
                 embedding_optimizer="rowwise_adagrad")
    try:
        tr.train_epoch(data)
        assert tr.store.hot_rows > 0 and tr.counters()["cold_rows"] > 0
        assert same(tr, model, table)
        assert torch.equal(tr.store.optimizer_state()[:, 0], state)
        assert float(state.max()) > 0              # not vacuous: accumulators moved
    finally:
        tr.close()


def test_hotline_with_lfu_policy_equals_sequential_schedule(data):
    """The lfu EAL (docs/spec.md 4.2) in the trainer: still bit-exact, and it classifies more
    inputs as popular than srrip on the same data and budget."""
    model, table, _ = reference(data, "hotline", policy="lfu")
    tr, base = hotline(data, policy="lfu"), hotline(data)
    try:
        assert tr.eal_config.policy == "lfu" and same(tr, model, table)
        lfu, srrip = tr.counters(), base.counters()
        assert lfu["popular_inputs"] > srrip["popular_inputs"]
    finally:
        tr.close()
        base.close()
    with pytest.raises(ValueError, match="contradicts eal_config.policy"):
        Trainer(SIZES, data.n_dense, "hotline", eal_config=eal_config_for_budget(
            HOT_BUDGET, SIZES, policy="srrip"), policy="lfu", **KW)


def test_hotline_equals_sequential_schedule_when_working_sets_end_early(data):
    """A de-dup table of 1 bank x 2 buckets x 32 ways (48 cold rows): most working
    sets end early, the next starts at the first input left, in the trainer and in the
    reference alike, and the result is still bit for bit the sequential one."""
    tiny = FragmenterConfig(dedup_banks=1, dedup_sets=2, dedup_ways=32)
    model, table, colds = reference(data, "hotline", fragmenter=tiny)
    tr = hotline(data, fragmenter=tiny)
    try:
        c = tr.counters()
        assert c["early_ends"] >= 5 and c["working_sets"] == len(colds)
        assert max(len(x) for x in colds) <= tiny.bank_capacity
        assert same(tr, model, table)
    finally:
        tr.close()


class _StaleWriteBack:
    """Fault injection: each write-back is held back until after the next gather, i.e. the
    next working set gathers rows that the previous one has not written home yet."""

    def __init__(self, dev):
        self.dev, self.pending = dev, None
        self.real_gather, self.real_write_back = dev.gather, dev.write_back

    def apply(self):
        if self.pending is not None:
            sched, rows, host = self.pending
            self.pending = None
            self.real_write_back(sched, rows, host)

    def write_back(self, sched, rows, host_table):
        self.apply()
        self.pending = (sched, rows.clone(), host_table)

    def gather(self, sched, host_table, staging):
        out = self.real_gather(sched, host_table, staging)
        self.apply()
        return out


def test_stale_gather_breaks_exactness(data):
    model, table, _ = reference(data, "hotline")
    holder = {}

    def patch(tr):
        stale = holder["stale"] = _StaleWriteBack(tr.store.dev)
        tr.store.dev.gather = stale.gather
        tr.store.dev.write_back = stale.write_back

    tr = hotline(data, patch=patch)
    try:
        holder["stale"].apply()            # the last write-back, so only staleness differs
        assert not torch.equal(tr.embedding_table(), table)
    finally:
        tr.close()


@pytest.mark.parametrize("opt", ["sgd", "rowwise_adagrad"])
def test_hybrid_equals_gpu_only_and_baseline_order(data, opt):
    model, table, _ = reference(data, "baseline",
                                adagrad_eps=1e-8 if opt == "rowwise_adagrad" else None)
    trainers = [Trainer(SIZES, data.n_dense, mode, embedding_optimizer=opt, **KW)
                for mode in ("gpu-only", "hybrid")]
    try:
        for tr in trainers:
            tr.train_epoch(data)
        g, h = trainers
        assert torch.equal(g.embedding_table(), h.embedding_table())
        assert same(g, model, table)
        assert same(h, model, table)
        assert g.evaluate(data) == h.evaluate(data)
    finally:
        for tr in trainers:
            tr.close()


def test_hotline_learn_freeze_then_train_range(data):
    """The benchmark path: learn without training, freeze, train working sets."""
    tr = Trainer(SIZES, data.n_dense, "hotline", hot_budget=HOT_BUDGET, **KW)
    try:
        with pytest.raises(RuntimeError, match="freeze"):
            tr.train_range(data, 0, 96)
        tr.learn(data.sparse[:256])
        tr.freeze()
        assert tr.frozen and tr.store.hot_rows > 0
        tr.train_range(data, 256, 256 + 4 * 96)
        t = tr.step_timings()
        ws = t["working_set"]
        assert ws["count"] == 4
        for phase in ("schedule", "popular", "gather", "h2d", "non_popular", "d2h",
                      "write_back"):
            assert ws["phases"][phase]["total_ms"] >= 0.0, phase
        assert t["drain"]["count"] == 1
        tl = tr.timeline()
        assert tl is not None and "popular" in tl
        with pytest.raises(RuntimeError):
            tr.learn(data.sparse[:10])
    finally:
        tr.close()


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        Trainer(SIZES, 4, "cpu-only")
    with pytest.raises(ValueError, match="sample_rate"):
        Trainer(SIZES, 4, "hotline", sample_rate=0.0)
    tr = Trainer(SIZES, 4, "gpu-only", dim=4, bottom=(8,), top=(8,))
    with pytest.raises(RuntimeError, match="hotline"):
        tr.freeze()
    other = SyntheticClickGenerator((7, 7), n_dense=4).batch(10)
    with pytest.raises(ValueError, match="table sizes"):
        tr.train_epoch(other)


def test_eal_config_for_budget_rule():
    for budget, entries in ((1, 4), (4, 4), (5, 8), (4096, 4096), (4097, 8192),
                            (2**21, 2**21), (3_000_000, 2**22)):
        cfg = eal_config_for_budget(budget, SIZES, policy="srrip")
        assert cfg.entries == entries and cfg.entries >= budget
        assert cfg.ways == 4 and cfg.banks == min(16, entries // 4)
    assert eal_config_for_budget(64, (2**25,)).row_bits == 25
    for budget, entries in ((1, 16), (100, 128), (4096, 4096)):
        cfg = eal_config_for_budget(budget, SIZES, policy="lfu")
        assert cfg.policy == "lfu" and cfg.entries == entries
        assert cfg.ways == 16 and cfg.banks == min(16, entries // 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_modes_track_the_cpu_reference(data):
    """On a GPU the modes run their CUDA paths (streams, events, pinned copies); atomics make
    them inexact, so they are compared with the CPU reference within a tolerance."""
    model, table, _ = reference(data, "hotline")
    tr = Trainer(SIZES, data.n_dense, "hotline", "cuda", hot_budget=HOT_BUDGET, **KW)
    try:
        tr.train_epoch(data)
        torch.testing.assert_close(tr.embedding_table(), table, atol=1e-4, rtol=1e-3)
        assert tr.step_timings()["working_set"]["count"] > 0
    finally:
        tr.close()
    model, table, _ = reference(data, "baseline")
    for mode in ("gpu-only", "hybrid"):
        tr = Trainer(SIZES, data.n_dense, mode, "cuda", **KW)
        try:
            tr.train_epoch(data)
            torch.testing.assert_close(tr.embedding_table().cpu(), table, atol=1e-4, rtol=1e-3)
        finally:
            tr.close()

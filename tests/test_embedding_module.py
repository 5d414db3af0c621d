"""The drop-in module (sw_driver/embedding, docs/training.md "Your own loop"): against plain
nn.EmbeddingBag + the same optimizer, pipelined vs sequential bit for bit, bounds modes,
checkpoints, the multi-hot schedule of the driver, and the two-tower example."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from sw_driver.embedding import (EmbeddingBagConfig, HotlineEmbeddingBagCollection,
                                 RowWiseAdagrad, SparseFeatures)
from sw_driver.errors import IndexOutOfRangeError

SIZES = (50, 300, 7, 1000)
POOL = ("sum", "mean", "sum", "mean")
KEYS = ("a", "b", "c", "d")
DIM = 6


def random_batch(g, B, max_len=4, sizes=SIZES, skew=True):
    """Random multi-hot features (empty bags included), rows skewed to small ids."""
    lengths = torch.randint(0, max_len + 1, (len(sizes) * B,), generator=g)
    values = []
    for t, n in enumerate(sizes):
        k = int(lengths[t * B:(t + 1) * B].sum())
        u = torch.rand(k, generator=g)
        values.append(torch.clamp((n ** u - 1).long(), 0, n - 1) if skew
                      else torch.randint(n, (k,), generator=g))
    return SparseFeatures(KEYS, torch.cat(values), lengths)


def make(opt, **kw):
    tables = [EmbeddingBagConfig(k, n, p) for k, n, p in zip(KEYS, SIZES, POOL)]
    kw.setdefault("batch_size", 16)
    kw.setdefault("hot_budget", 64)
    kw.setdefault("working_set", 3)
    return HotlineEmbeddingBagCollection(tables, DIM, optimizer=opt, seed=1, **kw)


class PlainReference:
    """nn.EmbeddingBag per table with a dense gradient, then the optimizer by its textbook
    formula (torch.optim.SGD; row-wise Adagrad written out)."""

    def __init__(self, ebc, opt):
        self.bags = [torch.nn.EmbeddingBag(n, DIM, mode=p) for n, p in zip(SIZES, POOL)]
        for t, bag in enumerate(self.bags):
            bag.weight.data.copy_(ebc.embedding_table(KEYS[t]))
        self.opt = opt
        self.state = [torch.zeros(n) for n in SIZES]
        self.sgd = (torch.optim.SGD([b.weight for b in self.bags], lr=opt.lr)
                    if opt.name == "sgd" else None)

    def forward(self, feats):
        out = []
        d = feats.to_dict()
        for t, k in enumerate(KEYS):
            values, lengths = d[k]
            offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)[:-1]])
            out.append(self.bags[t](values, offsets))
        return torch.stack(out, 1)

    def step(self, feats, grad_out):
        for b in self.bags:
            b.weight.grad = None
        self.forward(feats).backward(grad_out)
        if self.sgd is not None:
            self.sgd.step()
            return
        with torch.no_grad():
            for t, b in enumerate(self.bags):
                G = b.weight.grad
                self.state[t] += (G * G).mean(1)
                b.weight -= self.opt.lr * G / (self.state[t].sqrt() + self.opt.eps).unsqueeze(1)


@pytest.mark.parametrize("mode", ["hotline", "hybrid", "gpu-only"])
@pytest.mark.parametrize("opt", [RowWiseAdagrad(lr=0.3), "sgd"], ids=["adagrad", "sgd"])
def test_forward_and_updates_match_plain_embedding_bag(opt, mode):
    """Every placement (hotline before its freeze reads and updates host rows) against
    nn.EmbeddingBag + the optimizer, one step and then many."""
    ebc = make(opt, mode=mode)
    ref = PlainReference(ebc, ebc.optimizer)
    g = torch.Generator().manual_seed(0)
    for step in range(6):                              # one step, then many
        feats = random_batch(g, 16)
        out = ebc(feats)
        want = ref.forward(feats)
        torch.testing.assert_close(out, want.detach(), rtol=1e-6, atol=1e-6)
        grad = torch.randn(out.shape, generator=g)
        out.backward(grad)
        ref.step(feats, grad)
        for t, k in enumerate(KEYS):
            torch.testing.assert_close(ebc.embedding_table(k), ref.bags[t].weight.detach(),
                                       rtol=1e-5, atol=1e-6)
    if ebc.optimizer.name == "rowwise_adagrad":
        for t in range(len(KEYS)):
            a = int(ebc.offsets[t])
            torch.testing.assert_close(ebc.optimizer_state()[a:a + SIZES[t], 0], ref.state[t],
                                       rtol=1e-5, atol=1e-7)
    ebc.close()


def _run_hotline(pipelined, batches, opt, grads_seed=5, **kw):
    """Learn on 2 batches, freeze, train the rest as working sets with a fixed gradient per
    micro-batch (a function of its features only); returns the collection and the order."""
    ebc = make(opt, pipelined=pipelined, **kw)
    for feats, _ in batches[:2]:
        ebc.learn(feats)
    ebc.freeze()
    seen = []
    for mb in ebc.working_sets(batches[2:]):
        out = ebc(mb.features)
        gen = torch.Generator().manual_seed(grads_seed + int(mb.payload.sum()))
        out.backward(torch.randn(out.shape, generator=gen))
        seen.append((mb.kind, mb.payload.tolist()))
    return ebc, seen


def _batches(n=12, B=16, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [(random_batch(g, B), torch.arange(i * B, (i + 1) * B)) for i in range(n)]


def test_working_sets_pipelined_equal_sequential_bit_for_bit_with_adagrad():
    from hotline_spec.config import FragmenterConfig

    batches = _batches()
    a, order_a = _run_hotline(True, batches, RowWiseAdagrad(lr=0.2))
    b, order_b = _run_hotline(False, batches, RowWiseAdagrad(lr=0.2))
    assert order_a == order_b
    kinds = {k for k, _ in order_a}
    assert kinds == {"popular", "non_popular"} and a.hot_rows > 0
    assert torch.equal(a.embedding_table(), b.embedding_table())
    assert torch.equal(a.optimizer_state(), b.optimizer_state())
    # Every sample trained exactly once, in the schedule's order.
    samples = sorted(s for _, p in order_a for s in p)
    assert samples == list(range(32, 12 * 16))
    a.close(), b.close()


def test_working_sets_equal_plain_training_in_the_same_order():
    """The hotline path (hot table, gathered cold rows, write-backs) gives the tables that
    plain nn.EmbeddingBag training in the schedule's micro-batch order gives."""
    batches = _batches()
    opt = RowWiseAdagrad(lr=0.2)
    ebc, order = _run_hotline(True, batches, opt)
    plain = make(opt)
    ref = PlainReference(plain, plain.optimizer)
    _replay(ref, batches, order)
    for t, k in enumerate(KEYS):
        torch.testing.assert_close(ebc.embedding_table(k), ref.bags[t].weight.detach(),
                                   rtol=1e-5, atol=1e-6)
    ebc.close(), plain.close()


def _replay(ref, batches, order, grads_seed=5):
    """Train ``ref`` on the micro-batches ``order`` (kind, sample ids) with the gradients
    `_run_hotline` used."""
    feats_of = {}
    for f, ids in batches:
        for j, s in enumerate(ids.tolist()):
            feats_of[s] = (f, j)
    for kind, ids in order:
        f = _cat_features([_sample_features(*feats_of[s]) for s in ids])
        gen = torch.Generator().manual_seed(grads_seed + sum(ids))
        ref.step(f, torch.randn((len(ids), len(KEYS), DIM), generator=gen))


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "sequential"])
@pytest.mark.parametrize("stop_at", ["popular", "non_popular"])
def test_leaving_working_sets_early_loses_no_update(stop_at, pipelined):
    """A loop that breaks out of working_sets() (at the first micro-batch of that kind after
    the first working set: while the cold path of its working set may still run, or after
    its non-popular step updated cold rows) still gets every trained row home: the tables
    equal plain training on exactly the micro-batches that ran."""
    batches = _batches()
    opt = RowWiseAdagrad(lr=0.2)
    ebc = make(opt, pipelined=pipelined, hot_budget=1024)
    for feats, _ in batches[:2]:
        ebc.learn(feats)
    ebc.freeze()
    done, seen_kind = [], 0
    for mb in ebc.working_sets(batches[2:]):
        out = ebc(mb.features)
        gen = torch.Generator().manual_seed(5 + int(mb.payload.sum()))
        out.backward(torch.randn(out.shape, generator=gen))
        done.append((mb.kind, mb.payload.tolist()))
        if mb.working_set >= 1 and mb.kind == stop_at:
            seen_kind += 1
            break
    assert seen_kind == 1 and len(done) < 11
    plain = make(opt)
    ref = PlainReference(plain, plain.optimizer)
    _replay(ref, batches, done)
    for t, k in enumerate(KEYS):
        torch.testing.assert_close(ebc.embedding_table(k), ref.bags[t].weight.detach(),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="working set is over"):
        ebc.lookup(mb.features)
    ebc.close(), plain.close()


def _sample_features(f, j):
    d = f.to_dict()
    out = {}
    for k in KEYS:
        values, lengths = d[k]
        off = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
        out[k] = [values[off[j]:off[j + 1]].tolist()]
    return out


def _cat_features(parts):
    return SparseFeatures.from_bags({k: [p[k][0] for p in parts] for k in KEYS})


def test_bags_schedule_equals_one_hot_schedule_and_a_loop_reference():
    from sw_driver.driver import HotlineDevice
    from hotline_spec.config import EALConfig

    g = torch.Generator().manual_seed(4)
    dev = HotlineDevice(SIZES, 4, config=EALConfig(banks=2, sets=4, ways=4))
    dense = torch.stack([torch.randint(n, (200,), generator=g) for n in SIZES], 1)
    dev.learn(dense[:100])
    dev.freeze()
    one = dev.schedule(dense, 16)
    T = len(SIZES)
    bags = dev.schedule_bags(torch.arange(T).repeat(200), dense.reshape(-1),
                             torch.arange(0, 200 * T + 1, T), 16)
    assert torch.equal(one.remapped.reshape(-1), bags.remapped)
    assert torch.equal(one.cold_global_rows, bags.cold_global_rows)
    assert torch.equal(one.non_popular, bags.non_popular)
    assert one.n_hits == bags.n_hits and one.n_popular == bags.n_popular
    # Multi-hot: a loop over the definition (popular iff every lookup hits; cold rows by
    # first use in stream order; remapped = slot or entries + cold rank).
    im = random_batch(g, 60).input_major()
    s = dev.schedule_bags(im.tables, im.rows, im.offsets, 8)
    slot = dev.slot_map
    off = dev.table_offsets
    cold, pop, remapped = [], [], []
    for i in range(im.n):
        hit_all = True
        for j in range(int(im.offsets[i]), int(im.offsets[i + 1])):
            gr = int(off[im.tables[j]] + im.rows[j])
            if int(slot[gr]) >= 0:
                remapped.append(int(slot[gr]))
            else:
                hit_all = False
                if gr not in cold:
                    cold.append(gr)
                remapped.append(dev.entries + cold.index(gr))
        pop.append(hit_all)
    assert s.n_inputs == im.n and not s.ended_early
    assert s.cold_global_rows.tolist() == cold and s.remapped.tolist() == remapped
    assert s.popular.tolist() == pop
    assert s.non_popular.tolist() == [i for i in range(im.n) if not pop[i]]
    dev.close()


def test_bounds_modes():
    bad = SparseFeatures(KEYS, torch.tensor([3, 299, 7, 999, 5]),
                         torch.tensor([1, 0, 1, 0, 1, 0, 1, 1]))    # c: row 7 of a 7-row table
    ebc = make("sgd", bounds_check="error")
    with pytest.raises(IndexOutOfRangeError, match="table 'c': row 7 of sample 0"):
        ebc(bad)
    assert ebc.bounds_violations == 1
    ok = SparseFeatures(KEYS, torch.tensor([3, 299, 6, 999, 5]), bad.lengths)
    drop = SparseFeatures(KEYS, torch.tensor([3, 299, 999, 5]),
                          torch.tensor([1, 0, 1, 0, 0, 0, 1, 1]))
    with torch.no_grad():
        want_clamp, want_drop = ebc(ok), ebc(drop)
    ebc.bounds_check = "warn"
    with pytest.warns(UserWarning, match="1 out-of-range lookups clamped"):
        with torch.no_grad():
            got = ebc(bad)
    assert torch.equal(got, want_clamp)
    ebc.bounds_check = "ignore"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            got = ebc(bad)
    assert torch.equal(got, want_drop) and ebc.bounds_violations == 3
    with pytest.raises(ValueError, match="bounds_check must be one of"):
        make("sgd", bounds_check="clamp")
    ebc.bounds_check = "none"                  # trusted indices: neither checked nor counted
    with torch.no_grad():
        assert torch.equal(ebc(ok), want_clamp)
    assert ebc.bounds_violations == 3
    ebc.close()


def test_state_dict_resumes_bit_identically():
    batches = _batches(n=14)
    opt = RowWiseAdagrad(lr=0.2)
    a = make(opt)
    for feats, _ in batches[:2]:
        a.learn(feats)
    a.freeze()

    def train(ebc, part):
        for mb in ebc.working_sets(part):
            out = ebc(mb.features)
            gen = torch.Generator().manual_seed(int(mb.payload.sum()))
            out.backward(torch.randn(out.shape, generator=gen))

    train(a, batches[2:8])
    sd = copy.deepcopy(a.state_dict())
    b = make(opt)
    b.load_state_dict(sd)
    assert b.frozen and b.hot_rows == a.hot_rows
    train(a, batches[8:])
    train(b, batches[8:])
    assert torch.equal(a.embedding_table(), b.embedding_table())
    assert torch.equal(a.optimizer_state(), b.optimizer_state())
    wrong = make("sgd")
    with pytest.raises(RuntimeError, match="rows: shape"):
        wrong.load_state_dict(sd)
    a.close(), b.close(), wrong.close()


def test_frozen_forward_reads_hot_rows_from_the_hot_table():
    """Evaluation after training working sets, before any flush (the host copies of hot rows
    are stale then): the forward equals nn.EmbeddingBag over the complete, flushed tables."""
    batches = _batches()
    ebc, _ = _run_hotline(True, batches, RowWiseAdagrad(lr=0.2), hot_budget=1024)
    feats = batches[3][0]
    stale = ebc.host_table[:, :DIM].clone()
    with torch.no_grad():
        out = ebc(feats)
    ref = PlainReference(ebc, ebc.optimizer)          # reads the flushed tables
    assert not torch.equal(stale, ebc.host_table[:, :DIM])   # hot rows were stale before
    torch.testing.assert_close(out, ref.forward(feats).detach(), rtol=1e-6, atol=1e-6)
    ebc.close()


def test_frozen_collection_refuses_unscheduled_training_and_checks_keys():
    ebc = make("sgd")
    g = torch.Generator().manual_seed(0)
    ebc.learn(random_batch(g, 16))
    ebc.freeze()
    with pytest.raises(RuntimeError, match="train through working_sets"):
        ebc(random_batch(g, 4))
    with pytest.raises(ValueError, match="keys"):
        ebc(SparseFeatures(("x",), torch.tensor([1]), torch.tensor([1])))
    ebc.close()


def test_two_tower_example_trains_and_its_loss_falls():
    from sw_driver.examples.two_tower import train

    losses = train(n_batches=40, epochs=3)
    assert losses[2] < 0.85 * losses[0], losses

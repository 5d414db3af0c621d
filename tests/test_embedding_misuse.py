"""The drop-in module used the way a TorchRec user would, including the ways that used to train
silently wrong (issue 26, part 4): each pattern either gives what plain PyTorch gives
(nn.EmbeddingBag + the optimizer written out, in the same order) or raises a one-line error
that says what to do.

* one backward for losses summed over several micro-batches (across working sets);
* a second working_sets() loop while one is open; an abandoned one;
* a payload longer or shorter than its batch;
* state_dict() / embedding_table() / evaluation inside the loop;
* float or bool row indices;
* bounds_check='none' with an out-of-range row;
* calls after close(), device='cuda' without CUDA, bad sizes, list items.
"""

import gc

import pytest
import torch

from sw_driver.embedding import (EmbeddingBagConfig, HotlineEmbeddingBagCollection,
                                 RowWiseAdagrad, SparseFeatures)
from sw_driver.errors import IndexOutOfRangeError

SIZES = (40, 120, 9)
KEYS = ("a", "b", "c")
POOL = ("sum", "mean", "sum")
DIM = 4
B = 8
LR = 0.25


def random_batch(g, n=B, max_len=3):
    """Multi-hot features skewed to small rows (so some inputs are popular)."""
    lengths = torch.randint(0, max_len + 1, (len(SIZES) * n,), generator=g)
    values = []
    for t, size in enumerate(SIZES):
        k = int(lengths[t * n:(t + 1) * n].sum())
        u = torch.rand(k, generator=g)
        values.append(torch.clamp((size ** u - 1).long(), 0, size - 1))
    return SparseFeatures(KEYS, torch.cat(values), lengths)


def make_batches(n=10, seed=3):
    """``(features, sample ids)`` pairs; sample ``s`` has the fixed loss weights ``C[s]``."""
    g = torch.Generator().manual_seed(seed)
    return [(random_batch(g), torch.arange(i * B, (i + 1) * B)) for i in range(n)]


C = torch.randn(200, len(KEYS), DIM, generator=torch.Generator().manual_seed(11))


def make(opt="sgd", **kw):
    tables = [EmbeddingBagConfig(k, n, p) for k, n, p in zip(KEYS, SIZES, POOL)]
    kw.setdefault("batch_size", B)
    kw.setdefault("hot_budget", 32)
    kw.setdefault("working_set", 2)
    kw.setdefault("np_micro_batch_size", 3)
    if opt == "sgd":
        from sw_driver.embedding import EmbeddingSGD
        opt = EmbeddingSGD(LR)
    return HotlineEmbeddingBagCollection(tables, DIM, optimizer=opt, seed=1, **kw)


def frozen(opt="sgd", batches=None, **kw):
    ebc = make(opt, **kw)
    for feats, _ in (batches or make_batches())[:2]:
        ebc.learn(feats)
    ebc.freeze()
    return ebc


def loss_of(out, ids):
    return (out * C[ids]).sum()


class Plain:
    """nn.EmbeddingBag per table, dense gradients, the optimizer written out."""

    def __init__(self, table, opt):
        self.bags = []
        a = 0
        for n, p in zip(SIZES, POOL):
            bag = torch.nn.EmbeddingBag(n, DIM, mode=p)
            bag.weight.data.copy_(table[a:a + n, :DIM])
            self.bags.append(bag)
            a += n
        self.opt = opt
        self.state = [torch.zeros(n) for n in SIZES]

    def forward(self, feats):
        d = feats.to_dict()
        out = []
        for t, k in enumerate(KEYS):
            values, lengths = d[k]
            offsets = torch.cat([torch.zeros(1, dtype=torch.int64),
                                 torch.cumsum(lengths, 0)[:-1]])
            out.append(self.bags[t](values, offsets))
        return torch.stack(out, 1)

    def backward(self, feats, ids):
        """Accumulate the gradient of ``loss_of`` for these samples."""
        loss_of(self.forward(feats), ids).backward()

    def step(self):
        with torch.no_grad():
            for t, b in enumerate(self.bags):
                G = b.weight.grad
                if G is None:
                    continue
                if getattr(self.opt, "name", "sgd") == "sgd":
                    b.weight -= LR * G
                else:
                    self.state[t] += (G * G).mean(1)
                    b.weight -= self.opt.lr * G / (self.state[t].sqrt()
                                                   + self.opt.eps).unsqueeze(1)
                b.weight.grad = None

    def table(self):
        return torch.cat([b.weight.detach() for b in self.bags])


def samples_of(batches, ids):
    """The features of the samples ``ids`` (global sample numbers) as one batch."""
    parts = {k: [] for k in KEYS}
    for s in ids:
        f = batches[s // B][0].to_dict()
        j = s % B
        for k in KEYS:
            values, lengths = f[k]
            off = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)])
            parts[k].append(values[off[j]:off[j + 1]].tolist())
    return SparseFeatures.from_bags(parts)


def start_table(batches):
    """The host table a module starts from (same seed), rows only."""
    m = make()
    t = m.embedding_table().clone()
    m.close()
    return t


# --- 1. late backward --------------------------------------------------------------------
def assert_one_sgd_step(ebc, batches, ids):
    """The collection's rows equal plain PyTorch's after one SGD step on the summed gradient
    of the samples ``ids`` (in that order); closes the collection."""
    ref = Plain(start_table(batches), "sgd")
    ref.backward(samples_of(batches, ids), torch.tensor(ids))
    ref.step()
    torch.testing.assert_close(ebc.embedding_table(), ref.table(), rtol=1e-5, atol=1e-6)
    ebc.close()


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "sequential"])
def test_one_backward_for_the_whole_loop_equals_plain_accumulation(pipelined):
    """The loss summed over every micro-batch of several working sets, one backward() after
    the loop: every forward read the starting rows, every update lands on the row where it
    lives now (hot table, host table). Plain PyTorch: one big batch, one SGD step."""
    batches = make_batches()
    ebc = frozen(pipelined=pipelined, batches=batches)
    total, kinds, ids = 0, set(), []
    for mb in ebc.working_sets(batches[2:]):
        total = total + loss_of(ebc(mb.features), mb.payload)
        kinds.add(mb.kind)
        ids += mb.payload.tolist()
    assert kinds == {"popular", "non_popular"} and ebc.hot_rows > 0
    total.backward()
    assert_one_sgd_step(ebc, batches, ids)


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "sequential"])
@pytest.mark.parametrize("every", [4, 5])
def test_gradient_accumulation_across_working_sets(every, pipelined):
    """backward() every ``every`` micro-batches, whichever working set they belong to: equal
    to plain training that accumulates the same groups of micro-batches."""
    batches = make_batches()
    ebc = frozen(pipelined=pipelined, batches=batches)
    order, acc, pending = [], 0, 0
    for mb in ebc.working_sets(batches[2:]):
        acc = acc + loss_of(ebc(mb.features), mb.payload)
        order.append(mb.payload.tolist())
        pending += 1
        if pending == every:
            acc.backward()
            acc, pending = 0, 0
    if pending:
        acc.backward()
    ref = Plain(start_table(batches), "sgd")
    for a in range(0, len(order), every):
        for ids in order[a:a + every]:
            ref.backward(samples_of(batches, ids), torch.tensor(ids))
        ref.step()
    torch.testing.assert_close(ebc.embedding_table(), ref.table(), rtol=1e-5, atol=1e-6)
    ebc.close()


def test_late_backward_of_a_working_set_without_cold_rows():
    """A working set whose inputs are all popular has an empty cold list; a late backward
    of its micro-batches (one backward after the loop) still updates the hot rows (it used
    to index the empty list and raise IndexError)."""
    pop = torch.tensor([[1, 2, 3], [4, 5, 6], [1, 5, 3], [4, 2, 6]] * 2)
    cold = pop + torch.tensor([20, 60, 0])
    batches = [(SparseFeatures.from_dense(x, KEYS), torch.arange(i * B, (i + 1) * B))
               for i, x in enumerate((pop, pop, cold, pop))]
    ebc = make()
    for _ in range(3):
        ebc.learn(batches[0][0])
    ebc.freeze()
    total, ids, kinds = 0, [], {}
    for mb in ebc.working_sets(batches):
        total = total + loss_of(ebc(mb.features), mb.payload)
        ids += mb.payload.tolist()
        kinds.setdefault(mb.working_set, set()).add(mb.kind)
    assert kinds == {0: {"popular"}, 1: {"popular", "non_popular"}}
    total.backward()
    assert_one_sgd_step(ebc, batches, ids)


def test_late_backward_after_relearn_or_close_is_refused():
    batches = make_batches()
    ebc = frozen(batches=batches)
    held = []
    for mb in ebc.working_sets(batches[2:4]):
        held.append(loss_of(ebc(mb.features), mb.payload))
    ebc.relearn()
    with pytest.raises(RuntimeError, match=r"working set 0.*relearn"):
        held[0].backward()
    ebc.close()
    with pytest.raises(RuntimeError, match="closed"):
        held[-1].backward()


# --- 2. a second loop, an abandoned loop --------------------------------------------------
def test_a_second_loop_while_one_is_open_is_refused_and_changes_no_row():
    batches = make_batches()
    ebc = frozen(batches=batches)
    before = ebc.embedding_table().clone()
    g1 = ebc.working_sets(batches[2:])
    for mb in g1:                                   # into the non-popular phase, untrained
        if mb.kind == "non_popular":
            break_at = mb.working_set
            break
    g2 = None
    with pytest.raises(RuntimeError, match=r"another working_sets\(\) loop is still open"):
        g2 = ebc.working_sets(batches[2:])
        next(g2), next(g2), next(g2)
    if g2 is not None:
        g2.close()
    g1.close()
    assert break_at == 0
    assert torch.equal(ebc.embedding_table(), before)
    ebc.close()


def test_two_unstarted_loops_the_second_refused_when_it_starts():
    batches = make_batches()
    ebc = frozen(batches=batches)
    before = ebc.embedding_table().clone()
    g1 = ebc.working_sets(batches[2:])
    g2 = ebc.working_sets(batches[2:])              # neither has started: both allowed
    next(g1)
    with pytest.raises(RuntimeError, match="still open"):
        next(g2)
    g1.close()
    assert torch.equal(ebc.embedding_table(), before)
    ebc.close()


@pytest.mark.parametrize("how", ["del", "cycle", "close"])
def test_an_abandoned_loop_writes_its_rows_home_and_frees_the_module(how):
    """A loop left in its non-popular phase after training part of it (dropped, dropped
    inside a reference cycle, or closed): the rows trained so far are home, and a new loop
    then trains as if the first had stopped there."""
    batches = make_batches()
    opt = RowWiseAdagrad(lr=0.2)
    ebc = frozen(opt, batches=batches)
    done = []
    g = ebc.working_sets(batches[2:6])
    for mb in g:
        loss_of(ebc(mb.features), mb.payload).backward()
        done.append(mb.payload.tolist())
        if mb.working_set == 1 and mb.kind == "non_popular":
            break
    if how == "cycle":
        holder = {"g": g}
        holder["self"] = holder
        del holder
    if how == "close":
        g.close()
    del g
    if how == "cycle":
        # still referenced from the cycle: a new loop says what holds it
        try:
            ebc.working_sets(batches[6:]).close()
        except RuntimeError as e:
            assert "still open" in str(e)
        gc.collect()
    for mb in ebc.working_sets(batches[6:]):
        loss_of(ebc(mb.features), mb.payload).backward()
        done.append(mb.payload.tolist())
    ref = Plain(start_table(batches), opt)
    for ids in done:
        ref.backward(samples_of(batches, ids), torch.tensor(ids))
        ref.step()
    torch.testing.assert_close(ebc.embedding_table(), ref.table(), rtol=1e-5, atol=1e-6)
    ebc.close()


# --- 3. payloads --------------------------------------------------------------------------
@pytest.mark.parametrize("extra", [3, -2])
def test_a_payload_whose_length_differs_from_its_batch_is_refused(extra):
    batches = make_batches()
    ebc = frozen(batches=batches)
    bad = list(batches[2:6])
    f, ids = bad[1]
    bad[1] = (f, torch.arange(ids[0], ids[0] + B + extra))
    with pytest.raises(ValueError, match=r"batch 1.*payload.*" + str(B + extra)):
        for mb in ebc.working_sets(bad):
            loss_of(ebc(mb.features), mb.payload.clamp(max=199)).backward()
    ebc.close()


def test_a_payload_inside_a_dict_or_tuple_is_checked_too():
    batches = make_batches()
    ebc = frozen(batches=batches)
    bad = [(f, {"ids": ids, "w": torch.ones(B + (i == 2))}) for i, (f, ids) in
           enumerate(batches[2:6])]
    with pytest.raises(ValueError, match=r"batch 2.*payload\['w'\].*9 .*8"):
        for _ in ebc.working_sets(bad):
            pass
    bad = [(f, (ids, 3.0)) for f, ids in batches[2:4]]
    with pytest.raises(TypeError, match=r"batch 0.*payload\[1\].*float"):
        for _ in ebc.working_sets(bad):
            pass
    ebc.close()


# --- 4. checkpoints, tables and evaluation inside the loop --------------------------------
@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "sequential"])
@pytest.mark.parametrize("at", ["popular", "non_popular"])
@pytest.mark.parametrize("what", ["state_dict", "embedding_table", "evaluate"])
def test_tables_inside_the_loop_equal_sequential_training(what, at, pipelined):
    """In the middle of working set 2 (popular phase: working set 1's cold rows are on their
    way home; non-popular phase, after its first step: working set 2's cold rows are being
    trained on the device)
    the checkpoint / table / evaluation see every update so far; the loop then goes on and
    ends as if nothing had been read."""
    batches = make_batches()
    opt = RowWiseAdagrad(lr=0.2)
    ebc = frozen(opt, batches=batches, pipelined=pipelined)
    ref = Plain(start_table(batches), opt)
    probe = batches[5][0]
    checked, seen = 0, 0
    for mb in ebc.working_sets(batches[2:]):
        seen += mb.working_set == 2 and mb.kind == at
        # popular: the first one; non-popular: the second (the first updated cold rows)
        if seen == (1 if at == "popular" else 2) and not checked:
            checked += 1
            if what == "state_dict":
                got = ebc.state_dict()["rows"][:, :DIM]
            elif what == "embedding_table":
                got = ebc.embedding_table().clone()
            if what == "evaluate":
                with torch.no_grad():
                    torch.testing.assert_close(ebc(probe), ref.forward(probe).detach(),
                                               rtol=1e-5, atol=1e-6)
            else:
                torch.testing.assert_close(got, ref.table(), rtol=1e-5, atol=1e-6)
        loss_of(ebc(mb.features), mb.payload).backward()
        ids = mb.payload.tolist()
        ref.backward(samples_of(batches, ids), torch.tensor(ids))
        ref.step()
    assert checked == 1
    torch.testing.assert_close(ebc.embedding_table(), ref.table(), rtol=1e-5, atol=1e-6)
    ebc.close()


def test_a_checkpoint_inside_the_loop_resumes():
    """state_dict() in the non-popular phase of a working set, loaded into a new module that
    trains the following batches: the same tables as the first module's whole run would
    give if its loop had stopped at the checkpoint (plain reference)."""
    batches = make_batches()
    opt = RowWiseAdagrad(lr=0.2)
    ebc = frozen(opt, batches=batches)
    ref = Plain(start_table(batches), opt)
    sd = None
    for mb in ebc.working_sets(batches[2:6]):
        loss_of(ebc(mb.features), mb.payload).backward()
        ids = mb.payload.tolist()
        ref.backward(samples_of(batches, ids), torch.tensor(ids))
        ref.step()
        if mb.working_set == 1 and mb.kind == "non_popular":
            sd = {k: v.clone() for k, v in ebc.state_dict().items()}
            break
    other = make(opt)
    other.load_state_dict(sd)
    torch.testing.assert_close(other.embedding_table(), ref.table(), rtol=1e-5, atol=1e-6)
    assert torch.equal(other.embedding_table(), ebc.embedding_table())
    ebc.close(), other.close()


def test_relearn_freeze_or_load_inside_the_loop_is_refused():
    batches = make_batches()
    ebc = frozen(batches=batches)
    sd = ebc.state_dict()
    g = ebc.working_sets(batches[2:])
    next(g)
    for call in (ebc.relearn, ebc.freeze, lambda: ebc.load_state_dict(sd)):
        with pytest.raises(RuntimeError, match="inside a working_sets"):
            call()
    g.close()
    ebc.relearn()
    ebc.close()


# --- 5. row-index dtypes ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_float_and_bool_row_indices_are_refused(dtype):
    ebc = make(mode="hybrid")
    dense = torch.tensor([[1.9, 0, 1], [0.2, 1, 0]]).to(dtype)
    for call in (ebc, ebc.lookup):
        with pytest.raises(TypeError, match=str(dtype).replace("torch.", "")):
            call(dense)
    hot = make()
    with pytest.raises(TypeError, match=str(dtype).replace("torch.", "")):
        hot.learn(dense)
    with pytest.raises(TypeError, match="lengths"):
        SparseFeatures(KEYS, torch.tensor([1, 2]), torch.tensor([1.5, 0.5, 0, 0, 0, 0]))
    with pytest.raises(TypeError, match="offsets"):
        SparseFeatures(KEYS, torch.tensor([1, 2]), offsets=torch.tensor([0., 1, 2, 2]))
    # integers of any width are rows: the same as int64
    want = ebc(torch.tensor([[1, 0, 1], [0, 1, 0]]))
    assert torch.equal(ebc(torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.int32)), want)
    ebc.close(), hot.close()


# --- 6. bounds_check='none' ---------------------------------------------------------------
@pytest.mark.parametrize("mode", ["hotline", "hybrid", "gpu-only"])
def test_bounds_none_never_reads_a_neighbouring_tables_row(mode):
    """Row 40 of the 40-row table 'a' would be row 0 of table 'b'; -1 of table 'b' the last
    row of 'a'. 'none' still refuses them (the check costs no host synchronisation where the
    indices are on the host)."""
    ebc = make(mode=mode, bounds_check="none")
    before = ebc.table.clone()
    for dense in ([[40, 0, 0]], [[0, -1, 0]], [[0, 0, 9]]):
        with pytest.raises(IndexOutOfRangeError, match="bounds_check='none'"):
            out = ebc(torch.tensor(dense))
            out.sum().backward()
    assert torch.equal(ebc.table, before)
    ebc.close()


# --- 7. one-line errors -------------------------------------------------------------------
def test_bounds_warn_keeps_the_host_offsets(monkeypatch):
    """'warn' clamps rows but keeps the bags: the host copy of the offsets that device
    features carry survives it (else the working-set loop copies them back to the host)."""
    orig = SparseFeatures.input_major

    def with_host_offsets(self):
        im = orig(self)
        im.offsets_host = im.offsets.clone()      # as device features built on the host
        return im

    monkeypatch.setattr(SparseFeatures, "input_major", with_host_offsets)
    ebc = make(bounds_check="warn")
    feats = SparseFeatures(KEYS, torch.tensor([1, 500, 2, 3]), torch.tensor([1, 0, 2, 0, 1, 0]))
    with pytest.warns(UserWarning, match="clamped"):
        im = ebc._prepare(feats)
    assert im.offsets_host is not None and torch.equal(im.offsets_host, im.offsets)
    assert int(im.rows.max()) == SIZES[1] - 1
    ebc.close()


def test_every_call_after_close_says_closed():
    batches = make_batches()
    ebc = frozen(batches=batches)
    ebc.close()
    ebc.close()                                     # idempotent
    f = batches[3][0]
    calls = [lambda: ebc(f), lambda: ebc.lookup(f), lambda: ebc.learn(f), ebc.freeze,
             ebc.flush, ebc.embedding_table, ebc.optimizer_state, ebc.state_dict,
             ebc.relearn, ebc.tag_store, lambda: next(iter(ebc.working_sets(batches[2:])))]
    for call in calls:
        with pytest.raises(RuntimeError, match="closed"):
            call()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_without_cuda_is_one_error():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        make(device="cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        make(device="cuda:1", mode="gpu-only")


def test_sizes_must_be_whole_numbers():
    for kw, err in ((dict(batch_size=2.5), TypeError), (dict(batch_size=0), ValueError),
                    (dict(working_set=1.5), TypeError),
                    (dict(np_micro_batch_size=-1), ValueError),
                    (dict(np_micro_batch_size=2.5), TypeError),
                    (dict(np_micro_batch_size=True), TypeError),
                    (dict(max_cold_rows=-3), ValueError)):
        with pytest.raises(err, match=next(iter(kw))):
            make(**kw)
    tables = [EmbeddingBagConfig(k, n) for k, n in zip(KEYS, SIZES)]
    with pytest.raises(TypeError, match="dim"):
        HotlineEmbeddingBagCollection(tables, 2.5, batch_size=B)
    make(batch_size=torch.tensor(8), working_set=2).close()     # a torch integer is fine


def test_np_micro_batch_size_zero_means_one_step():
    batches = make_batches()
    ebc = frozen(batches=batches, np_micro_batch_size=0)
    per_ws = {}
    for mb in ebc.working_sets(batches[2:]):
        if mb.kind == "non_popular":
            per_ws[mb.working_set] = per_ws.get(mb.working_set, 0) + 1
    assert per_ws and set(per_ws.values()) == {1}
    ebc.close()


def test_list_items_are_pairs_and_other_items_are_refused():
    batches = make_batches()
    runs = []
    for wrap in (tuple, list):
        ebc = frozen(batches=batches)
        for mb in ebc.working_sets([wrap(p) for p in batches[2:]]):
            loss_of(ebc(mb.features), mb.payload).backward()
        runs.append(ebc.embedding_table().clone())
        ebc.close()
    assert torch.equal(runs[0], runs[1])
    ebc = frozen(batches=batches)
    items = [(f, ids, ids) for f, ids in batches[2:4]]
    with pytest.raises(TypeError, match=r"item 0.*\(features, payload\)"):
        next(iter(ebc.working_sets(items)))
    with pytest.raises(TypeError, match=r"item 0.*features"):
        next(iter(ebc.working_sets([("x", ids) for _, ids in batches[2:4]])))
    ebc.close()


# --- part 3: no host synchronisation in the loop (checked on the CPU as far as it can be) ---
def _rowwise_adagrad_with_unique(opt, weight, idx, grad, dim):
    """The textbook form (FBGEMM's exact row-wise Adagrad) with torch.unique."""
    uniq, inv = torch.unique(idx, return_inverse=True)
    g = torch.zeros(uniq.numel(), dim).index_add_(0, inv, grad)
    state = weight[uniq, dim] + g.mul(g).mean(1)
    rows = weight[uniq, :dim] - (opt.lr * g) / (state.sqrt() + opt.eps).unsqueeze(1)
    weight[uniq, dim] = state
    weight[uniq, :dim] = rows


def test_rowwise_adagrad_without_unique_is_bit_identical_with_duplicates():
    opt = RowWiseAdagrad(lr=0.3)
    gen = torch.Generator().manual_seed(0)
    for trial in range(60):
        rows, dim = 40, 5
        w = torch.randn(rows, dim + 1, generator=gen)
        w[:, dim] = torch.rand(rows, generator=gen)
        m = int(torch.randint(1, 200, (1,), generator=gen))
        idx = torch.randint(0, 4 if trial % 2 else rows, (m,), generator=gen)   # duplicates
        grad = torch.randn(m, dim, generator=gen)
        want, got = w.clone(), w.clone()
        _rowwise_adagrad_with_unique(opt, want, idx, grad, dim)
        opt.update(got, idx, grad, dim)
        assert torch.equal(got, want), trial
    empty = w.clone()
    opt.update(empty, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 5), 5)
    assert torch.equal(empty, w)


#: functions that run per micro-batch inside the working-set loop
LOOP_FUNCTIONS = {
    "sw_driver/embedding/collection.py": {"_lookup_scheduled", "_pool_rows", "_scale",
                                          "_micro", "_cached", "forward"},
    "sw_driver/embedding/optim.py": {"update"},
    "sw_driver/embedding/pipeline.py": {"run", "_next", "schedule", "plan_lookups",
                                        "to_main", "write_back", "gather", "h2d", "d2h",
                                        "cold_path", "non_popular_chunks"},
    "sw_driver/embedding/features.py": {"slice", "cat", "to_device", "from_dense"},
}
#: (InputMajor.host_offsets reads the device only without a host copy, which _next makes
#: inside deliberate_sync before slicing)
SYNCING = {"item", "tolist", "cpu", "nonzero", "unique", "bincount", "synchronize",
           "masked_select"}


def _syncs_outside_deliberate(tree, names):
    import ast

    found = []

    def visit(node, fn, allowed):
        if isinstance(node, ast.With) and any(
                isinstance(i.context_expr, ast.Call)
                and ast.unparse(i.context_expr.func) == "deliberate_sync" for i in node.items):
            allowed = True
        if isinstance(node, ast.Call) and fn and not allowed:
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in SYNCING:
                found.append(f"{fn}:{node.lineno}: {ast.unparse(f)}()")
        for child in ast.iter_child_nodes(node):
            inner = fn
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = child.name if child.name in names else (fn and f"{fn}.{child.name}")
            visit(child, inner, allowed)

    visit(tree, None, False)
    return found


def test_no_host_sync_call_in_the_loop_outside_deliberate_sync():
    """A source check: in the functions of the working-set loop, every call that reads device
    memory on the host sits in a `with deliberate_sync(...)` block (docs/training.md, "Host
    synchronisations"); a GPU run checks the rest under set_sync_debug_mode("error")."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    found = []
    for rel, names in LOOP_FUNCTIONS.items():
        found += [f"{rel}:{x}" for x in
                  _syncs_outside_deliberate(ast.parse((root / rel).read_text()), names)]
    assert not found, "host synchronisations in the loop:\n" + "\n".join(found)
    bad = ast.parse("def run():\n    x.cpu()\n    with deliberate_sync(c):\n        y.item()\n")
    assert _syncs_outside_deliberate(bad, {"run"}) == ["run:2: x.cpu()"]

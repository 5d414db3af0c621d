"""Model quality: Hotline's micro-batch order keeps AUC and log loss at parity with the
baseline order (architecture decision 3), plus the metrics and the DLRM interaction.

The parity test trains one epoch on the Criteo sample (synthetic Criteo-shaped data when the
sample is absent; 16,000 samples then) in ``gpu-only`` mode (the baseline order) and in
``hotline`` mode, with the same seed, for seeds 0-2, and evaluates on the held-out dev + test
rows (800). Two table caps:

* 256 rows per table: 38 % of the inputs are popular, so Hotline's order differs a lot from
  the baseline (popular inputs first in each working set);
* 4096 rows per table: 2 % are popular, so the popular micro-batches are tiny (a few inputs),
  which is where the loss normalisation matters.

Tolerance, measured on these settings: over seeds 0-5 (cap 256) and 0-3 (cap 4096) the largest
same-seed gap was 0.0012 in AUC and 0.005 in log loss, while the baseline itself spreads over
0.635-0.671 in AUC (0.036) and 0.504-0.516 in log loss across seeds. A gap of 0.02 is thus far
outside what the reordering causes, yet inside the seed-to-seed noise. It flags a real
regression: normalising each micro-batch's loss by its own size instead of the mini-batch size
(a 3-input popular micro-batch then weighs its samples 40x more) gave AUC gaps of 0.100 and
0.035 for seeds 0 and 1 at cap 4096.
"""

import itertools
import math

import pytest
import torch

from sw_driver.data import (CRITEO_KAGGLE_TABLE_SIZES, ClickDataset, SyntheticClickGenerator,
                            find_shared_data, read_criteo)
from sw_driver.training import DLRM, Trainer, log_loss, roc_auc

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = dict(dim=16, bottom=(64,), top=(64, 32), lr=0.1, batch_size=128, working_set=4,
                hot_budget=8192, sample_rate=0.25, gather_threads=1)
#: table cap -> smallest popular share that makes the comparison meaningful
CAPS = {256: 0.15, 4096: 0.005}


def sizes(cap):
    return tuple(min(s, cap) for s in CRITEO_KAGGLE_TABLE_SIZES)


_DATA = {}


def criteo(cap):
    """(train, eval, source) with tables capped at ``cap`` rows (cached per cap)."""
    if cap in _DATA:
        return _DATA[cap]
    path = find_shared_data("criteo_kaggle_8k")
    sz = sizes(cap)
    if path is None:
        # One epoch of 7,200 synthetic samples learns too little (AUC about 0.62-0.65);
        # 16,000 give 0.65-0.69.
        gen = SyntheticClickGenerator(sz, p_hot=0.4, head_rows=32, seed=0)
        ds = gen.batch(16800)
        out = ds.subset(0, 16000), ds.subset(16000, 16800), "synthetic"
    else:
        train = read_criteo(path, table_sizes=sz)
        dev = read_criteo(path, split="dev", table_sizes=sz)
        test = read_criteo(path, split="test", table_sizes=sz)
        ev = ClickDataset(torch.cat([dev.labels, test.labels]),
                          torch.cat([dev.dense, test.dense]),
                          torch.cat([dev.sparse, test.sparse]), sz, "dev+test")
        out = train, ev, "criteo_kaggle_8k"
    _DATA[cap] = out
    return out


def train_eval(mode, train, ev, seed):
    tr = Trainer(train.table_sizes, train.n_dense, mode, seed=seed, **SETTINGS)
    try:
        st = tr.train_epoch(train)
        auc, ll = tr.evaluate(ev)
        c = tr.counters()
        share = c["popular_inputs"] / c["inputs"] if c else None
        return auc, ll, st, share
    finally:
        tr.close()


@pytest.mark.parametrize("cap", sorted(CAPS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hotline_quality_at_parity_with_baseline_order(cap, seed):
    train, ev, source = criteo(cap)
    auc_b, ll_b, st_b, _ = train_eval("gpu-only", train, ev, seed)
    auc_h, ll_h, st_h, share = train_eval("hotline", train, ev, seed)
    msg = (f"{source} cap {cap} seed {seed}: baseline auc {auc_b:.4f} logloss {ll_b:.4f}; "
           f"hotline auc {auc_h:.4f} logloss {ll_h:.4f}; popular share {share:.3f}")
    assert auc_b > 0.6 and auc_h > 0.6, msg
    assert abs(auc_h - auc_b) <= 0.02, msg
    assert abs(ll_h - ll_b) <= 0.02, msg
    # The comparison is meaningful only if Hotline reordered inputs.
    assert share > CAPS[cap], msg
    assert st_h.learn_batches == math.ceil(0.25 * math.ceil(len(train) / 128))
    assert st_b.learn_batches == 0
    assert abs(st_h.train_loss - st_b.train_loss) < 0.02, msg


def test_roc_auc_matches_pair_count_with_ties():
    g = torch.Generator().manual_seed(0)
    for n in (2, 7, 50, 300):
        scores = torch.randint(0, 6, (n,), generator=g).float()     # many ties
        labels = (torch.rand(n, generator=g) < 0.4).float()
        labels[0], labels[-1] = 0.0, 1.0
        pos = scores[labels == 1].tolist()
        neg = scores[labels == 0].tolist()
        wins = sum(1.0 if p > q else 0.5 if p == q else 0.0
                   for p, q in itertools.product(pos, neg))
        assert roc_auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)), abs=1e-12)
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([0.0, 1.0])) == 1.0
    assert roc_auc(torch.tensor([0.9, 0.1]), torch.tensor([0.0, 1.0])) == 0.0
    assert math.isnan(roc_auc(torch.tensor([0.3, 0.4]), torch.tensor([1.0, 1.0])))
    with pytest.raises(ValueError):
        roc_auc(torch.zeros(3), torch.zeros(2))


def test_log_loss_formula():
    z = torch.tensor([-20.0, -1.0, 0.0, 2.5, 20.0])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    p = torch.sigmoid(z.double())
    manual = -(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean()
    assert log_loss(z, y) == pytest.approx(float(manual), rel=1e-9)


def test_dlrm_interaction_is_the_strict_lower_triangle():
    torch.manual_seed(0)
    m = DLRM(5, 3, 4, bottom=(8,), top=(8,))
    assert m.n_pairs == 6                              # (T + 1) T / 2 with T = 3
    x = torch.randn(2, 4)
    emb = torch.randn(2, 3, 4)
    out = m.interact(x, emb)
    z = torch.cat([x[:, None], emb], 1)
    pairs = [(z[:, i] * z[:, j]).sum(1) for i in range(4) for j in range(i)]
    torch.testing.assert_close(out, torch.cat([x, torch.stack(pairs, 1)], 1))
    logits = m(torch.randn(2, 5), emb)
    assert logits.shape == (2,)
    with pytest.raises(ValueError, match="emb"):
        m(torch.randn(2, 5), torch.randn(2, 2, 4))

"""Checkpoint and resume (docs/training.md, "Checkpoints").

A run interrupted -- at the end of an epoch, or inside one at a working-set / mini-batch
boundary -- saved with ``save_checkpoint``, closed, and continued by a *new* trainer
(``resume=``) ends bit-identical (CPU, float32, one torch thread) to the uninterrupted run:
MLP parameters, optimizer state, the complete embedding table, the driver counters and the
epoch's loss. For hotline the checkpoint carries the EAL tag store, so the resumed run
schedules identically, including a checkpoint taken while the EAL is still learning and runs
with periodic re-learning. Negative controls show that the comparison can fail: a checkpoint
whose hot rows were not flushed, and a resume that learns popularity afresh instead of
restoring the tag store, both end elsewhere.
"""

import pytest
import torch

from sw_driver.training import Trainer, init_table
from sw_driver.training.trainer import CHECKPOINT_FORMAT
from training_setup import SIZES, KW as BASE_KW, small_click_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KW = {**BASE_KW, "hot_budget": 256}
N, W = KW["batch_size"], KW["working_set"]
LEARN_END = 4 * N           # ceil(0.1 * 38 mini-batches) = 4 learning mini-batches


@pytest.fixture(scope="module")
def data():
    return small_click_data(1200)


def make(mode, **kw):
    return Trainer(SIZES, 4, mode, **{"policy": "srrip", **KW, **kw})


def snapshot(tr, stats):
    """Everything that must match: parameters, optimizer, table, counters, epoch losses."""
    return {"model": {k: v.clone() for k, v in tr.model.state_dict().items()},
            "opt": tr.opt.state_dict()["param_groups"], "table": tr.embedding_table().clone(),
            "row_state": tr.store.optimizer_state(),
            "counters": tr.counters(), "epoch": tr.epoch,
            "loss": [s.train_loss for s in stats if s.complete],
            "freezes": [(f["position"], f["hot_rows"], f["moved_in"]) for f in tr.freeze_log]}


def assert_same(a, b):
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["table"], b["table"])
    assert (a["row_state"] is None) == (b["row_state"] is None)
    assert a["row_state"] is None or torch.equal(a["row_state"], b["row_state"])
    for k in ("opt", "counters", "epoch", "loss", "freezes"):
        assert a[k] == b[k], k


def uninterrupted(ds, mode, epochs=2, **kw):
    tr = make(mode, **kw)
    try:
        stats = [tr.train_epoch(ds) for _ in range(epochs)]
        return snapshot(tr, stats)
    finally:
        tr.close()


def interrupted(ds, mode, stops, path, epochs=2, states=None, **kw):
    """Train ``epochs`` epochs, but leave the trainer after each ``(epoch, stop)`` (stop
    ``None``: after the epoch), save, close and resume in a new trainer. ``states`` collects
    ``(frozen, relearn_due)`` at each mid-epoch save."""
    tr = make(mode, **kw)
    stats = []
    try:
        for epoch in range(epochs):
            for e, stop in stops:
                if e == epoch and stop is not None:
                    st = tr.train_epoch(ds, stop=stop)
                    assert not st.complete and st.position == tr.position >= stop
                    stats.append(st)
                    if states is not None:
                        states.append((tr.frozen, tr._relearn_due))
                    tr.save_checkpoint(path)
                    tr.close()
                    tr = make(mode, resume=path, **kw)
            stats.append(tr.train_epoch(ds))
            if (epoch, None) in stops:
                tr.save_checkpoint(path)
                tr.close()
                tr = make(mode, resume=path, **kw)
                assert tr.epoch == epoch + 1 and tr.position == 0
        return snapshot(tr, stats)
    finally:
        tr.close()


# (mode, extra settings, interruption points): the hotline points fall inside the first
# learning phase (EAL not frozen), on working-set boundaries, at a re-learn that is due but
# not started, and inside a re-learn's learning mini-batches.
CASES = {
    "gpu-only": ("gpu-only", {}, [(0, None), (1, 300)]),
    "hybrid": ("hybrid", {}, [(0, 500)]),
    "hotline": ("hotline", {}, [(0, 2 * N), (0, LEARN_END + 2 * W * N + 1), (0, None),
                                (1, 3 * W * N)]),
    # Re-learns learn on 2 mini-batches after every 2 working sets: learning 0-128, working
    # sets 128-320, re-learn due at 320, learning 320-384, working sets 384-576, learning
    # 576-640 (608 is inside it), ...
    "hotline-relearn": ("hotline", {"relearn_every": 2, "relearn_batches": 2},
                        [(0, 320), (0, 608), (0, None), (1, 5 * W * N)]),
    # Row-wise Adagrad: the accumulators are saved (hot ones flushed) and restored too.
    "hotline-adagrad": ("hotline", {"relearn_every": 2, "relearn_batches": 2,
                                    "embedding_optimizer": "rowwise_adagrad"},
                        [(0, 320), (0, 608), (0, None), (1, 5 * W * N)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_resume_is_bit_identical(data, tmp_path, case):
    mode, kw, stops = CASES[case]
    ref = uninterrupted(data, mode, **kw)
    states = []
    got = interrupted(data, mode, stops, tmp_path / "ckpt.pt", states=states, **kw)
    assert_same(got, ref)
    assert not torch.equal(ref["table"], init_table(SIZES, KW["dim"], KW["seed"]))
    if mode == "hotline":
        assert ref["counters"]["working_sets"] > 10 and ref["counters"]["popular_inputs"] > 0
        assert (False, False) in states and (True, False) in states    # learning / frozen
    if "relearn_every" in kw:
        assert len(ref["freezes"]) >= 5 and (True, True) in states      # re-learn due
    if "embedding_optimizer" in kw:
        assert float(ref["row_state"].max()) > 0


def test_checkpoint_contents(data, tmp_path):
    tr = make("hotline", relearn_every=3)
    try:
        tr.train_epoch(data, stop=LEARN_END + W * N)
        assert tr.position == LEARN_END + W * N and tr.frozen
        path = tr.save_checkpoint(tmp_path / "c.pt")
        sd = torch.load(path, weights_only=True)
        assert sd["format"] == CHECKPOINT_FORMAT and sd["epoch"] == 0
        assert sd["position"] == LEARN_END + W * N
        assert sd["progress"]["ws_since_freeze"] == 1
        # The saved table is the complete one: hot rows flushed into it.
        assert torch.equal(sd["table"], tr.embedding_table())
        hot = tr.store.hot
        assert torch.equal(sd["table"][hot.global_rows],
                           tr.store.working[hot.slots])
        hl = sd["hotline"]
        assert hl["frozen"] and hl["popular_max_rrpv"] == tr.eal_config.popular_max_rrpv
        assert set(hl["tag_store"]) == {"bank", "set", "valid", "rrpv", "tag"}
        assert int(hl["tag_store"]["valid"].sum()) >= hot.n > 0
        assert hl["counters"] == tr.counters()
        assert sd["optimizer"]["param_groups"][0]["lr"] == KW["lr"]
        # A gpu-only trainer can start from a hotline checkpoint (drops the EAL) ...
        g = make("gpu-only", resume=path)
        assert torch.equal(g.embedding_table(), sd["table"]) and g.position == sd["position"]
        g.close()
        # ... and a hotline trainer from a gpu-only one (learns afresh).
        g = make("gpu-only")
        g.save_checkpoint(tmp_path / "g.pt")
        g.close()
        h = make("hotline", resume=tmp_path / "g.pt")
        assert not h.frozen
        h.close()
        with pytest.raises(ValueError, match="table_sizes"):
            Trainer(SIZES[:-1], 4, "gpu-only", **KW).load_checkpoint(path)
        with pytest.raises(ValueError, match="EAL geometry"):
            make("hotline", hot_budget=1024).load_checkpoint(path)
        with pytest.raises(ValueError, match="cannot continue"):
            t2 = make("hotline", resume=path)
            t2.train_epoch(data.subset(0, 600))
    finally:
        tr.close()


def test_negative_controls_differ(data, tmp_path):
    """The comparison is sharp: (1) a checkpoint whose hot rows were not flushed (stale host
    copies of the hot rows), (2) a resume that re-learns popularity instead of restoring the
    tag store, each end elsewhere than the uninterrupted run."""
    ref = uninterrupted(data, "hotline", epochs=1)
    stop = LEARN_END + 2 * W * N

    tr = make("hotline")
    tr.train_epoch(data, stop=stop)
    tr.store.flush = lambda: None                    # (1) no flush before saving
    tr.save_checkpoint(tmp_path / "stale.pt")
    tr.close()
    tr = make("hotline", resume=tmp_path / "stale.pt")
    tr.train_epoch(data)
    stale = tr.embedding_table().clone()
    tr.close()
    assert not torch.equal(stale, ref["table"])

    tr = make("hotline")
    tr.train_epoch(data, stop=stop)
    tr.save_checkpoint(tmp_path / "ok.pt")
    tr.close()
    sd = torch.load(tmp_path / "ok.pt", weights_only=True)
    sd["hotline"] = None                             # (2) no EAL state: learns afresh
    tr = make("hotline")
    tr.load_state_dict(sd)
    tr.train_epoch(data)
    fresh = tr.embedding_table().clone()
    tr.close()
    assert not torch.equal(fresh, ref["table"])


def test_cli_checkpoint_and_resume(tmp_path, capsys):
    """``--checkpoint`` after every epoch, ``--resume`` continues: epoch 2 of a resumed run
    prints the same metrics as epoch 2 of an uninterrupted one."""
    from sw_driver import train

    base = ["--mode", "hotline", "--batch-size", "64", "--dim", "8", "--bottom", "32",
            "--top", "32", "--table-size-cap", "512", "--hot-budget", "512",
            "--synthetic-samples", "1500", "--gather-threads", "1", "--threads", "1",
            "--no-progress", "--relearn-every", "3"]
    n = torch.get_num_threads()
    try:
        full = train.main(base + ["--epochs", "2", "--out", str(tmp_path / "a")])
        ckpt = tmp_path / "c.pt"
        train.main(base + ["--epochs", "1", "--out", str(tmp_path / "b"),
                           "--checkpoint", str(ckpt)])
        assert torch.load(ckpt, weights_only=True)["epoch"] == 1
        capsys.readouterr()
        resumed = train.main(base + ["--epochs", "2", "--out", str(tmp_path / "c"),
                                     "--resume", str(ckpt)])
        out = capsys.readouterr().out
    finally:
        torch.set_num_threads(n)
    assert "resumed from" in out and "1 epochs done" in out
    a, r = full["results"]["hotline"], resumed["results"]["hotline"]
    assert [e["epoch"] for e in r["epochs"]] == [2]
    for k in ("auc", "logloss", "train_loss"):
        assert r["epochs"][0][k] == a["epochs"][1][k], k
    assert r["counters"] == a["counters"] and r["freeze_log"] == a["freeze_log"]
    with pytest.raises(SystemExit):
        train.parse_args(["--mode", "all", "--checkpoint", str(ckpt)])
    with pytest.raises(SystemExit):
        train.parse_args(["--resume", str(tmp_path / "missing.pt")])

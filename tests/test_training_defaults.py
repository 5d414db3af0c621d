"""Defaults that measure best (issue 26, parts 5 and 7): lfu as the EAL policy, the de-dup table
sized from the working set, the memory budget against the trainer's allocations, layout
recognition for ``--data`` without ``--format``, the hot budget lowered for a log with few
distinct rows, and epoch-1 Hotline throughput without the learning mini-batches."""

import json
import time

import pytest
import torch

from hotline_spec.config import FragmenterConfig, fragmenter_for_working_set
from sw_driver import train
from sw_driver.data import SyntheticClickGenerator, find_shared_data
from sw_driver.data.detect import detect_layout
from sw_driver.training import Trainer
from sw_driver.training.modes import (DEFAULT_POLICY, eal_config_for_budget, fragmenter_for,
                                      memory_budget)

ERROR = "python -m sw_driver.train: error: "
TINY = dict(dim=4, bottom=(8,), top=(8,), gather_threads=1)
SMALL = ["--epochs", "1", "--batch-size", "64", "--dim", "4", "--bottom", "8", "--top", "8",
         "--table-size-cap", "1024", "--gather-threads", "1", "--threads", "1",
         "--no-progress", "--mode", "hotline"]


@pytest.fixture(autouse=True)
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# --- the EAL policy ------------------------------------------------------------------------
def test_lfu_is_the_default_policy_and_srrip_stays_available():
    assert DEFAULT_POLICY == "lfu"
    assert eal_config_for_budget(1000, (100, 100)).policy == "lfu"
    assert train.parse_args([]).policy == "lfu"
    with Trainer((50, 60), 2, "hotline", hot_budget=32, batch_size=8, **TINY) as tr:
        assert tr.eal_config.policy == "lfu"
        assert tr.store.dev.config.policy == "lfu"
    with Trainer((50, 60), 2, "hotline", hot_budget=32, batch_size=8, policy="srrip",
                 **TINY) as tr:
        assert tr.eal_config.policy == "srrip" and tr.eal_config.ways == 4
    assert train.parse_args(["--policy", "srrip"]).policy == "srrip"


# --- the de-dup table and the memory budget -----------------------------------------------
def test_trainer_sizes_the_dedup_table_from_the_working_set():
    sizes = (5000,) * 26
    with Trainer(sizes, 2, "hotline", hot_budget=64, batch_size=512, working_set=4,
                 **TINY) as tr:
        frag = tr.store.dev.fragmenter
        assert frag == fragmenter_for_working_set(tr.eal_config, 4 * 512, 26)
        assert frag.cold_capacity >= 4 * 512 * 26 > FragmenterConfig().cold_capacity
        assert tr.store.ebc.cap == 4 * 512 * 26          # every lookup cold fits
    given = FragmenterConfig(dedup_banks=4, dedup_sets=16, dedup_ways=8)
    with Trainer(sizes, 2, "hotline", hot_budget=64, batch_size=512, fragmenter=given.replace(
            eal=eal_config_for_budget(64, sizes)), **TINY) as tr:
        assert tr.store.dev.fragmenter.dedup_banks == 4              # explicit wins


def test_no_early_ends_where_the_rtl_default_table_ends_them():
    """Uniform rows over large tables (almost every lookup cold): 2 x 4 x 512 inputs x 26
    tables. With the RTL's default de-dup table (24,576 cold rows) every full working set
    ends early; with the trainer's default none does."""
    sizes = (200_000,) * 26
    ds = SyntheticClickGenerator(sizes, p_hot=0.0, zipf_exponent=0.01, n_dense=2,
                                 seed=1).batch(2 * 4 * 512 + 512)
    kw = dict(hot_budget=64, batch_size=512, working_set=4, sample_rate=0.1, **TINY)
    eal = eal_config_for_budget(64, sizes)
    ends = {}
    for name, frag in (("rtl", FragmenterConfig(eal=eal)), ("default", None)):
        with Trainer(sizes, 2, "hotline", fragmenter=frag, **kw) as tr:
            tr.train_epoch(ds)
            c = tr.counters()
            ends[name] = (c["early_ends"], c["working_sets"])
    assert ends["rtl"][0] >= 2
    assert ends["default"] == (0, 2)


def test_memory_budget_matches_the_trainer_allocations():
    sizes = (300, 2000, 17)
    for opt, state in (("sgd", 0), ("rowwise_adagrad", 1)):
        with Trainer(sizes, 2, "hotline", hot_budget=100, batch_size=16, working_set=3,
                     embedding_optimizer=opt, **TINY) as tr:
            g = torch.Generator().manual_seed(1)
            for _ in range(4):                       # a few rows seen often enough to be hot
                tr.learn(torch.stack([torch.randint(0, 8, (16,), generator=g)] * 3, 1))
            tr.freeze()                                  # allocates the working buffer
            ebc, dev = tr.store.ebc, tr.store.dev
            b = tr.memory_budget()
            width = 4 + state
            assert b == memory_budget(sizes, 4, "hotline", batch_size=16, working_set=3,
                                      hot_budget=100, state_width=state, cuda=False,
                                      hot_rows=dev.hot_capacity)
            assert b["host_table"] == ebc.table.numel() * 4 == sum(sizes) * width * 4
            assert b["hot_table"] + b["cold_buffer"] == ebc.working.numel() * 4
            # compact hot slots: the hot table holds the popular rows, not every EAL entry
            assert b["hot_table"] == dev.hot_capacity * width * 4 == len(ebc.hot.slots) \
                * width * 4
            assert 0 < dev.hot_capacity < tr.eal_config.entries
            assert b["cold_buffer"] == ebc.cap * width * 4 == 3 * 16 * 3 * width * 4
            assert b["slot_map"] == dev.slot_map.numel() * dev.slot_map.element_size()
            assert b["staging_in"] == ebc.pipeline.staging_in.numel() * 4
            assert b["staging_out"] == ebc.pipeline.staging_out.numel() * 4
            assert b["device_total"] == (b["hot_table"] + b["cold_buffer"] + b["slot_map"])
            assert b["pinned_total"] == 0 and b["host_total"] == (
                b["host_table"] + b["staging_in"] + b["staging_out"] + b["hybrid_rows"]
                + b["hybrid_grad"])
    # the paper's scale: compact hot rows and the sized cold buffer, on CUDA
    paper = memory_budget((1_000_000,) * 26, 64, "hotline", batch_size=4096, working_set=4,
                          hot_budget=2**21, hot_rows=26_907)
    assert paper["hot_table"] == 26_907 * 256
    assert paper["cold_buffer"] == 4 * 4096 * 26 * 256 == paper["staging_in"]
    assert paper["pinned_total"] == (2 * paper["cold_buffer"] + paper["hybrid_rows"]
                                     + paper["hybrid_grad"])
    entry = memory_budget((1_000_000,) * 26, 64, "hotline", batch_size=4096, hot_budget=2**21)
    assert entry["hot_table"] == 2**21 * 256                       # 512 MiB
    gpu = memory_budget(sizes, 8, "gpu-only", batch_size=16)
    assert gpu["device_table"] == sum(sizes) * 32 == gpu["device_total"]
    with pytest.raises(ValueError):
        memory_budget(sizes, 8, "fpga", batch_size=16)


# --- --data without --format ----------------------------------------------------------------
def criteo_lines(n):
    lines = []
    for i in range(n):
        ints = [str((i * 7 + j) % 50) if (i + j) % 5 else "" for j in range(13)]
        cats = [f"{(i * 2654435761 + j * 97) % 2**32:08x}" for j in range(26)]
        lines.append("\t".join([str(i % 2)] + ints + cats))
    return "".join(line + "\n" for line in lines)


AVAZU_HEADER = ("id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,"
                "app_domain,app_category,device_id,device_ip,device_model,device_type,"
                "device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21")


def avazu_lines(n, header=True):
    lines = [AVAZU_HEADER] if header else []
    for i in range(n):
        cats = [f"{(i * 31 + j) % 7:x}{j}" for j in range(21)]
        lines.append(",".join([str(10**19 + i), str(i % 2), f"141021{i % 24:02d}"] + cats))
    return "".join(line + "\n" for line in lines)


def refused(capsys, argv):
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    cap = capsys.readouterr()
    assert e.value.code == 2, cap.err
    lines = cap.err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith(ERROR), cap.err
    return lines[0][len(ERROR):]


def test_detect_layout(tmp_path):
    files = {"c.csv": criteo_lines(3), "a.txt": avazu_lines(3), "a_noheader.log":
             avazu_lines(3, header=False), "empty.tsv": "", "blank.tsv": "\n\n",
             "other.csv": "ts,clicked,user\n1,0,u1\n", "short.tsv": "1\t2\t3\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    got = {name: detect_layout(tmp_path / name) for name in files}
    assert got == {"c.csv": "criteo", "a.txt": "avazu", "a_noheader.log": "avazu",
                   "empty.tsv": "empty", "blank.tsv": "empty", "other.csv": None,
                   "short.tsv": None}
    for name, kind in (("criteo_kaggle_8k", "criteo"), ("avazu_9k", "avazu")):
        folder = find_shared_data(name)
        if folder is None:
            continue
        for f in sorted(folder.iterdir()):
            assert detect_layout(f) == kind, f


def test_data_layout_recognised_without_format(tmp_path, capsys):
    """A Criteo log named .csv and an Avazu log named .txt train without --format (the file
    name used to decide: .csv was Avazu, anything else Criteo)."""
    (tmp_path / "criteo.csv").write_text(criteo_lines(300))
    (tmp_path / "avazu.txt").write_text(avazu_lines(300))
    for name, kind, tables in (("criteo.csv", "criteo", 26), ("avazu.txt", "avazu", 21)):
        out = tmp_path / f"out_{kind}"
        summary = train.main(SMALL + ["--data", str(tmp_path / name), "--out", str(out),
                                      "--hot-budget", "512"])
        text = capsys.readouterr().out
        assert f"data: {kind} {tmp_path / name}" in text
        assert len(summary["tables"]) == tables
        assert summary["results"]["hotline"]["epochs"]


def test_data_of_unknown_layout_needs_format(tmp_path, capsys):
    log = "ts,clicked,price,user\n" + "".join(f"t{i},{i % 2},{i / 3:.2f},u{i % 9}\n"
                                              for i in range(300))
    (tmp_path / "log.csv").write_text(log)
    (tmp_path / "log.tsv").write_text(log.replace(",", "\t"))
    for name in ("log.csv", "log.tsv"):
        msg = refused(capsys, SMALL + ["--data", str(tmp_path / name), "--out",
                                       str(tmp_path / "out")])
        assert msg.startswith(f"--data {tmp_path / name}: not a Criteo")
        assert "give --format" in msg
    # a folder whose train file does not hold the layout its name says
    d = tmp_path / "folder"
    d.mkdir()
    (d / "train.csv").write_text(criteo_lines(300))
    msg = refused(capsys, SMALL + ["--data", str(d), "--out", str(tmp_path / "out")])
    assert "train.csv" in msg and "looks like criteo, not avazu" in msg and "--format" in msg
    # with --format it reads
    summary = train.main(SMALL + ["--data", str(tmp_path / "log.csv"), "--format",
                                  "sep=, header=yes label=clicked dense=price cat=user "
                                  "ignore=rest", "--out", str(tmp_path / "out2")])
    assert summary["results"]["hotline"]["epochs"]


# --- the hot budget of a small log ------------------------------------------------------------
def test_default_hot_budget_shrinks_to_the_distinct_rows(tmp_path, capsys):
    (tmp_path / "small.tsv").write_text(criteo_lines(300))
    summary = train.main(SMALL + ["--data", str(tmp_path / "small.tsv"), "--out",
                                  str(tmp_path / "o1")])
    cap = capsys.readouterr()
    warnings = [x for x in cap.err.splitlines() if "hot budget" in x]
    ds = train.load_data(str(tmp_path / "small.tsv"), 1024)[0]
    distinct = sum(int(torch.unique(ds.sparse[:, t]).numel()) for t in range(ds.n_tables))
    assert distinct < train.DEFAULT_HOT_BUDGET
    assert len(warnings) == 1 and warnings[0].startswith("warning: the training data use "
                                                         f"{distinct:,} distinct rows")
    assert f"the hot budget is {distinct:,}" in warnings[0]
    assert summary["args"]["hot_budget"] == distinct
    assert f"for a hot budget of {distinct} rows" in cap.out
    metrics = json.loads((tmp_path / "o1" / "metrics.json").read_text())
    assert metrics["args"]["hot_budget"] == distinct
    # tables smaller than the default budget: no longer refused
    summary = train.main(SMALL + ["--data", str(tmp_path / "small.tsv"), "--out",
                                  str(tmp_path / "o2"), "--table-size-cap", "64"])
    assert "hot budget" in capsys.readouterr().err
    assert summary["args"]["hot_budget"] <= 26 * 64
    # a given budget is kept (no warning), and one above all tables is still refused
    summary = train.main(SMALL + ["--data", str(tmp_path / "small.tsv"), "--out",
                                  str(tmp_path / "o3"), "--hot-budget", "9000"])
    assert "hot budget" not in capsys.readouterr().err
    assert summary["args"]["hot_budget"] == 9000
    msg = refused(capsys, SMALL + ["--data", str(tmp_path / "small.tsv"), "--out",
                                   str(tmp_path / "o4"), "--table-size-cap", "64",
                                   "--hot-budget", "5000"])
    assert msg.startswith("--hot-budget 5000 is larger than all tables together")


def test_default_hot_budget_kept_for_large_logs():
    class A:
        hot_budget, mode = None, "hotline"
    ds = SyntheticClickGenerator((10**6,) * 4, p_hot=0.0, zipf_exponent=0.01,
                                 seed=0).batch(6000)
    a = A()
    assert train._resolve_hot_budget(a, ds) == train.DEFAULT_HOT_BUDGET


# --- epoch-1 throughput -----------------------------------------------------------------------
def test_epoch1_hotline_throughput_excludes_the_learning_batches():
    ds = SyntheticClickGenerator((40, 300, 2000), p_hot=0.7, head_rows=8, n_dense=2,
                                 seed=2).batch(64 * 16)
    with Trainer((40, 300, 2000), 2, "hotline", hot_budget=64, batch_size=64, working_set=2,
                 sample_rate=0.25, **TINY) as tr:
        step = tr.store.step

        def slow_learning_step(data, a, b, kind="step", index=0):
            if kind == "learn_step":
                time.sleep(0.25)                 # learning mini-batches: hybrid speed
            return step(data, a, b, kind, index)

        tr.store.step = slow_learning_step
        st = tr.train_epoch(ds)
        assert st.learn_batches == 4 and st.learn_samples == 4 * 64
        assert st.learn_seconds >= 4 * 0.25
        ws_seconds = st.seconds - st.learn_seconds - st.freeze_seconds
        assert st.samples_per_s == pytest.approx((st.samples - st.learn_samples) / ws_seconds)
        assert st.end_to_end_samples_per_s == pytest.approx(st.samples / st.seconds)
        assert st.samples_per_s > 2 * st.end_to_end_samples_per_s
        # epoch 2 has no learning: both figures are the same
        tr.store.step = step
        st2 = tr.train_epoch(ds)
        assert st2.learn_samples == 0 and st2.learn_batches == 0
        assert st2.samples_per_s == pytest.approx(st2.end_to_end_samples_per_s, rel=1e-3)
    with Trainer((40, 300, 2000), 2, "hybrid", batch_size=64, **TINY) as tr:
        st = tr.train_epoch(ds)
        assert st.learn_samples == 0 and st.samples_per_s == st.end_to_end_samples_per_s


def test_cli_learning_line_labels_the_learning_batches(tmp_path, capsys):
    (tmp_path / "small.tsv").write_text(criteo_lines(300))
    summary = train.main(SMALL + ["--data", str(tmp_path / "small.tsv"), "--out",
                                  str(tmp_path / "o"), "--hot-budget", "512"])
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if x.startswith("learning mode=hotline")][0]
    e = summary["results"]["hotline"]["epochs"][0]
    assert f"learn_samples={e['learn_samples']} " in line
    assert "end_to_end_samples_per_s=" in line and "not in samples_per_s" in line
    assert e["learn_samples"] == e["learn_batches"] * 64
    assert e["end_to_end_samples_per_s"] > 0

"""Smoke tests of ``python -m sw_driver.train`` (sw_driver/train.py): it trains, prints
parseable metrics and counters, and writes metrics.json and the plots; --mode all warms up,
rotates the order and names the device; user errors are refused with one line."""

import hashlib
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from sw_driver import train
from sw_driver.data import find_shared_data

SMALL = ["--epochs", "1", "--batch-size", "128", "--dim", "8", "--bottom", "32",
         "--top", "32", "--table-size-cap", "1024", "--hot-budget", "4096",
         "--gather-threads", "1", "--threads", "1", "--no-progress"]
EPOCH = re.compile(r"^epoch=(\d+) mode=(\S+) auc=(\S+) logloss=(\S+) samples_per_s=(\S+) "
                   r"train_loss=(\S+) seconds=(\S+)$", re.M)
COUNTERS = re.compile(r"^counters mode=hotline (.*)$", re.M)
LEARNING = re.compile(r"^learning mode=hotline epoch=(\d+) learn_batches=(\d+) of=(\d+) "
                      r"trained=hybrid seconds=(\S+) eal_seconds=(\S+) freeze_seconds=(\S+) ",
                      re.M)
ORDER = re.compile(r"^order modes=(\S+) rule=(\S+)", re.M)
WARMUP = re.compile(r"^warmup batches=(\d+) samples=(\d+) order=(\S+) seconds=(\S+) "
                    r"\(untimed", re.M)
SPEEDUP = re.compile(r"^speedup hotline/hybrid=(\S+) hotline/gpu-only=(\S+) device=(\S+) "
                     r"order=(\S+) warmup_batches=(\d+)", re.M)
CPU_NOTE = re.compile(r"^note: device=cpu: these figures say nothing about a GPU\.", re.M)
ERROR = "python -m sw_driver.train: error: "
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def run(capsys, argv):
    summary = train.main(argv)
    return summary, capsys.readouterr().out


def check_png(path):
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 2000, path


def test_cli_all_modes_on_criteo_sample(tmp_path, capsys):
    data = find_shared_data("criteo_kaggle_8k")
    argv = SMALL + ["--mode", "all", "--out", str(tmp_path), "--max-rows", "3000"]
    if data is not None:
        argv += ["--data", str(data)]
    summary, out = run(capsys, argv)
    rows = EPOCH.findall(out)
    # --seed 0: the rotation that starts with gpu-only.
    assert [r[1] for r in rows] == ["gpu-only", "hybrid", "hotline"], out
    for _, mode, auc, ll, sps, loss, sec in rows:
        auc, ll, sps, loss = float(auc), float(ll), float(sps), float(loss)
        assert 0.0 <= auc <= 1.0 and 0.0 < ll < 5.0 and math.isfinite(loss), out
        assert sps > 0.0 and float(sec) > 0.0
    # gpu-only and hybrid train the same order: identical metrics on the CPU.
    assert rows[0][2:4] == rows[1][2:4]
    assert rows[0][5] == rows[1][5]
    m = COUNTERS.search(out)
    assert m, out
    fields = dict(kv.split("=") for kv in m.group(1).split())
    c = {k: float(v) for k, v in fields.items()}
    assert c["lookups"] > 0 and 0 <= c["hits"] <= c["lookups"]
    assert 0.0 <= c["popular_pct"] <= 100.0 and c["cold_rows"] > 0
    assert c["bytes_moved"] == c["bytes_gathered"] + c["bytes_written_back"] > 0
    assert re.search(r"working_set \(n=\d+, mean ms\): schedule=", out)
    check_png(tmp_path / "throughput.png")
    check_png(tmp_path / "timeline_hotline.png")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["results"]) == {"gpu-only", "hybrid", "hotline"}
    assert metrics["results"]["hotline"]["epochs"][0]["auc"] == pytest.approx(float(rows[2][2]),
                                                                             abs=1e-4)
    assert "speedup hotline/hybrid=" in out and SPEEDUP.search(out).group(3) == "cpu"
    assert summary["results"]["hotline"]["timeline"]


def test_cli_avazu_file_hotline(tmp_path, capsys):
    data = find_shared_data("avazu_9k")
    if data is None:
        pytest.skip("avazu_9k not found")
    argv = SMALL + ["--mode", "hotline", "--data", str(data / "train.csv"), "--max-rows",
                    "2000", "--out", str(tmp_path)]
    summary, out = run(capsys, argv)
    assert "held-out tail (200 samples)" in out
    assert len(EPOCH.findall(out)) == 1
    assert summary["results"]["hotline"]["epochs"][0]["learn_batches"] == 4   # ceil(.25 * 15)
    check_png(tmp_path / "timeline_hotline.png")


def test_cli_synthetic_two_epochs(tmp_path, capsys):
    argv = SMALL + ["--mode", "gpu-only", "--epochs", "2", "--synthetic-samples", "2000",
                    "--out", str(tmp_path)]
    summary, out = run(capsys, argv)
    assert "synthetic" in out
    assert [r[0] for r in EPOCH.findall(out)] == ["1", "2"]
    check_png(tmp_path / "throughput.png")
    assert not (tmp_path / "timeline_hotline.png").exists()


def test_cli_lfu_policy(tmp_path, capsys):
    argv = SMALL + ["--mode", "hotline", "--policy", "lfu", "--synthetic-samples", "2000",
                    "--out", str(tmp_path)]
    _, out = run(capsys, argv)
    assert "ways, policy lfu) for a hot budget" in out


def test_cli_rowwise_adagrad(tmp_path, capsys):
    """--embedding-optimizer rowwise_adagrad trains every mode; gpu-only and hybrid agree
    exactly, and the embedding optimizer changes the result (it is really used)."""
    argv = SMALL + ["--mode", "all", "--synthetic-samples", "2000", "--warmup-batches", "0"]
    _, sgd = run(capsys, argv + ["--out", str(tmp_path / "sgd")])
    _, ada = run(capsys, argv + ["--out", str(tmp_path / "ada"), "--embedding-optimizer",
                                 "rowwise_adagrad", "--embedding-lr", "0.05"])
    rows = {r[1]: r for r in EPOCH.findall(ada)}
    assert set(rows) == {"gpu-only", "hybrid", "hotline"}, ada
    assert rows["gpu-only"][2:4] == rows["hybrid"][2:4]
    assert {r[1]: r[2:4] for r in EPOCH.findall(sgd)}["gpu-only"] != rows["gpu-only"][2:4]
    args = json.loads((tmp_path / "ada" / "metrics.json").read_text())["args"]
    assert args["embedding_optimizer"] == "rowwise_adagrad" and args["embedding_lr"] == 0.05


@pytest.mark.parametrize("bad", [["--sample-rate", "0"], ["--epochs", "0"],
                                 ["--mode", "fpga"], ["--threads", "0"],
                                 ["--policy", "lru"]])
def test_cli_rejects_bad_arguments(bad, tmp_path):
    with pytest.raises(SystemExit):
        train.parse_args(bad + ["--out", str(tmp_path)])


def test_cli_missing_data_path(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        train.main(SMALL + ["--data", str(tmp_path / "nope.tsv"), "--out", str(tmp_path)])


# --- --mode all: warm-up, order, device ---------------------------------------------------
ALL_SYNTH = SMALL + ["--mode", "all", "--synthetic-samples", "2000", "--hot-budget", "1024"]


def _metrics(out):
    return {r[1]: (r[2], r[3], r[5]) for r in EPOCH.findall(out)}


def test_cli_all_modes_warmup_order_and_device(tmp_path, capsys):
    """--seed 1: the rotation starting at the second mode; a warm-up line (2 working sets of
    mini-batches per mode by default); the speed-up names the device, the CPU note follows;
    the warm-up changes none of the timed runs' numbers (same metrics with --warmup-batches
    0), and gpu-only and hybrid still agree exactly."""
    summary, out = run(capsys, ALL_SYNTH + ["--seed", "1", "--out", str(tmp_path / "w")])
    order = ["hybrid", "hotline", "gpu-only"]
    m = ORDER.search(out)
    assert m and m.group(1) == ",".join(order) and m.group(2) == "rotation-by-seed", out
    assert [r[1] for r in EPOCH.findall(out)] == order
    w = WARMUP.search(out)
    assert w and w.group(1) == "8" and w.group(2) == str(8 * 128) and w.group(3) == ",".join(order)
    # The warm-up comes before the first timed epoch, the speed-up and the note after the last.
    assert out.index(w.group(0)) < out.index("epoch=1 mode=hybrid")
    sp = SPEEDUP.search(out)
    assert sp and sp.group(3) == "cpu" and sp.group(4) == ",".join(order) and sp.group(5) == "8"
    sps = {r[1]: float(r[4]) for r in EPOCH.findall(out)}
    assert float(sp.group(1)) == pytest.approx(sps["hotline"] / sps["hybrid"], abs=0.006)
    assert float(sp.group(2)) == pytest.approx(sps["hotline"] / sps["gpu-only"], abs=0.006)
    note = CPU_NOTE.search(out)
    assert note and out.index(sp.group(0)) < note.start()
    metrics = json.loads((tmp_path / "w" / "metrics.json").read_text())
    assert metrics["order"] == order and metrics["warmup"]["batches"] == 8
    assert metrics["device"] == "cpu" and set(metrics["speedup"]) == {"hotline/hybrid",
                                                                     "hotline/gpu-only"}
    assert list(metrics["results"]) == ["gpu-only", "hybrid", "hotline"]
    warmed = _metrics(out)
    assert warmed["gpu-only"] == warmed["hybrid"]

    summary, out = run(capsys, ALL_SYNTH + ["--seed", "1", "--warmup-batches", "0",
                                            "--out", str(tmp_path / "c")])
    assert "warmup batches=0 (none" in out and not WARMUP.search(out)
    assert SPEEDUP.search(out).group(5) == "0"
    assert _metrics(out) == warmed


def test_cli_all_modes_order_option(tmp_path, capsys):
    _, out = run(capsys, ALL_SYNTH + ["--order", "hotline,gpu-only,hybrid", "--warmup-batches",
                                      "1", "--synthetic-samples", "800", "--out", str(tmp_path)])
    assert ORDER.search(out).group(2) == "--order"
    assert [r[1] for r in EPOCH.findall(out)] == ["hotline", "gpu-only", "hybrid"]
    assert WARMUP.search(out).group(1) == "1"


# --- the learning line --------------------------------------------------------------------
@pytest.mark.parametrize("rate, learned", [("0.25", 4), ("0.5", 8)])
def test_cli_learning_line(rate, learned, tmp_path, capsys):
    """1800 training samples = 15 mini-batches of 128; ceil(rate * 15) are learned."""
    summary, out = run(capsys, SMALL + ["--mode", "hotline", "--synthetic-samples", "2000",
                                        "--hot-budget", "1024", "--sample-rate", rate,
                                        "--out", str(tmp_path)])
    m = LEARNING.findall(out)
    assert [r[:3] for r in m] == [("1", str(learned), "15")], out
    learn_s, eal_s, freeze_s = map(float, m[0][3:])
    e = summary["results"]["hotline"]["epochs"][0]
    assert e["learn_batches"] == learned and e["batches"] == 15
    assert 0 < e["learn_seconds"] <= e["seconds"] and learn_s == pytest.approx(
        e["learn_seconds"], abs=0.006)
    assert 0 <= eal_s <= learn_s + 0.01 and freeze_s >= 0


def test_cli_no_learning_line_outside_hotline(tmp_path, capsys):
    _, out = run(capsys, SMALL + ["--mode", "hybrid", "--synthetic-samples", "400",
                                  "--out", str(tmp_path)])
    assert EPOCH.search(out) and not re.search(r"^learning ", out, re.M)


# --- refusals -----------------------------------------------------------------------------
def criteo_lines(n, bad_line=None):
    """``n`` valid Criteo rows; row ``bad_line`` (1-based) gets 'x' in column 3 (I2)."""
    lines = []
    for i in range(n):
        ints = [str((i * 7 + j) % 50) for j in range(13)]
        cats = [f"{(i * 2654435761 + j * 97) % 2**32:08x}" for j in range(26)]
        if i + 1 == bad_line:
            ints[1] = "x"
        lines.append("\t".join([str(i % 2)] + ints + cats))
    return "".join(line + "\n" for line in lines)


LOG_FORMAT = ("sep=, header=yes label=clicked dense=price,views:log cat=user,item,site "
              "ignore=ts,note")


def click_log(n=400, bad_line=None):
    """A CSV click log with a header: ``user`` takes 40 values, ``item`` 300, ``site`` one;
    line ``bad_line`` (1-based, the header is line 1) gets price 'cheap'."""
    lines = ["ts,clicked,price,views,user,item,site,note"]
    for i in range(n):
        price = "cheap" if i + 2 == bad_line else f"{(i * 37) % 100 / 4}"
        views = "" if i % 4 == 0 else str(i % 50)
        lines.append(f"t{i},{int(i % 3 == 0)},{price},{views},u{i % 40},i{(i * 7) % 300},s0,"
                     f"note {i}")
    return "".join(line + "\n" for line in lines)


@pytest.fixture
def data_files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "empty.tsv").write_text("")
    (d / "nodata").mkdir()
    (d / "emptytrain").mkdir()
    (d / "emptytrain" / "train.tsv").write_text("")
    (d / "header.csv").write_text("id,click,hour," + ",".join(
        ["C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
         "app_category", "device_id", "device_ip", "device_model", "device_type",
         "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]) + "\n")
    (d / "tiny.tsv").write_text(criteo_lines(50))
    (d / "few.tsv").write_text(criteo_lines(135))
    (d / "good.tsv").write_text(criteo_lines(200))
    (d / "bad.tsv").write_text(criteo_lines(200, bad_line=3))
    (d / "noise.pt").write_bytes(b"\x80\x02not a checkpoint at all" * 3)
    (d / "log.csv").write_text(click_log())
    (d / "badlog.csv").write_text(click_log(bad_line=5))
    (d / "bad.json").write_text("{sep: ','}")
    return d


def refused(capsys, argv):
    """Run main(argv) in process; it must exit with status 2 and exactly one line on stderr,
    the error, with no traceback anywhere; returns that line."""
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    cap = capsys.readouterr()
    assert e.value.code == 2, (e.value.code, cap.err)
    assert "Traceback" not in cap.err and "Traceback" not in cap.out
    lines = cap.err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith(ERROR), cap.err
    assert str(e.value) == lines[0]
    return lines[0][len(ERROR):]


REFUSALS = [
    # (id, extra argv; {d} is the data folder, expected fragments of the message)
    ("empty-file", ["--data", "{d}/empty.tsv"], ["--data", "empty.tsv", "no data rows"]),
    ("avazu-header-only", ["--data", "{d}/header.csv"], ["header.csv", "no data rows"]),
    ("folder-without-data", ["--data", "{d}/nodata"], ["--data", "nodata", "no train.tsv"]),
    ("folder-empty-train", ["--data", "{d}/emptytrain"], ["emptytrain/train.tsv",
                                                          "no data rows"]),
    ("missing-file", ["--data", "{d}/nope.tsv"], ["--data", "nope.tsv", "no such file"]),
    ("too-few-rows", ["--data", "{d}/few.tsv"],
     ["--data", "few.tsv", "135 rows", "one mini-batch of 128", "held-out", "at least 142"]),
    ("too-few-after-max-rows", ["--data", "{d}/good.tsv", "--max-rows", "140"],
     ["good.tsv", "140 rows (read with --max-rows 140)", "at least 142"]),
    ("batch-larger-than-data", ["--data", "{d}/tiny.tsv"],
     ["--batch-size 128 is larger than the data", "50 rows", "tiny.tsv"]),
    ("batch-larger-than-synthetic", ["--synthetic-samples", "100"],
     ["--batch-size 128 is larger than the data", "--synthetic-samples 100"]),
    ("too-few-synthetic", ["--synthetic-samples", "135"], ["--synthetic-samples 135",
                                                           "at least 142"]),
    ("malformed-row", ["--data", "{d}/bad.tsv"],
     ["bad.tsv: line 3, column 3 (I2): not an integer: 'x'"]),
    ("max-rows-0", ["--max-rows", "0"], ["--max-rows must be >= 1"]),
    ("max-rows-negative", ["--max-rows", "-5"], ["--max-rows must be >= 1", "-5"]),
    ("lr-nan", ["--lr", "nan"], ["--lr", "finite", "nan"]),
    ("lr-inf", ["--lr", "inf"], ["--lr", "finite", "inf"]),
    ("lr-minus-inf", ["--lr=-inf"], ["--lr", "finite", "-inf"]),
    ("lr-zero", ["--lr", "0"], ["--lr", "> 0"]),
    ("lr-negative", ["--lr", "-0.1"], ["--lr", "-0.1"]),
    ("lr-not-a-number", ["--lr", "fast"], ["--lr", "invalid float value: 'fast'"]),
    ("embedding-lr-zero", ["--embedding-lr", "0"], ["--embedding-lr", "> 0", "got 0.0"]),
    ("embedding-lr-nan", ["--embedding-lr", "nan"], ["--embedding-lr", "finite"]),
    ("embedding-optimizer", ["--embedding-optimizer", "adam"],
     ["--embedding-optimizer", "invalid choice: 'adam'"]),
    ("hot-budget-over-rows", ["--mode", "hotline", "--hot-budget", "20000"],
     ["--hot-budget 20000", "larger than all tables", "17,087 rows"]),
    ("hot-budget-over-rows-all", ["--mode", "all", "--hot-budget", "17088"],
     ["--hot-budget 17088", "17,087 rows"]),
    ("relearn-every-gpu-only", ["--mode", "gpu-only", "--relearn-every", "2"],
     ["--relearn-every", "--mode gpu-only"]),
    ("relearn-every-hybrid", ["--mode", "hybrid", "--relearn-every", "2"],
     ["--relearn-every", "--mode hybrid"]),
    ("relearn-batches-alone", ["--mode", "hotline", "--relearn-batches", "3"],
     ["--relearn-batches needs --relearn-every"]),
    ("relearn-batches-alone-all", ["--mode", "all", "--relearn-batches", "3"],
     ["--relearn-batches needs --relearn-every"]),
    ("order-outside-all", ["--mode", "hotline", "--order", "hybrid,hotline,gpu-only"],
     ["--order is for --mode all"]),
    ("warmup-outside-all", ["--mode", "hybrid", "--warmup-batches", "2"],
     ["--warmup-batches is for --mode all"]),
    ("order-incomplete", ["--mode", "all", "--order", "hybrid,hotline"], ["--order"]),
    ("warmup-negative", ["--mode", "all", "--warmup-batches", "-1"], ["--warmup-batches"]),
    ("bottom-empty-item", ["--bottom", "64,,32"], ["--bottom '64,,32'", "item 2 is empty"]),
    ("bottom-trailing-comma", ["--bottom", "32,"], ["--bottom '32,'", "item 2 is empty"]),
    ("bottom-not-integer", ["--bottom", "a"], ["--bottom 'a'", "not an integer"]),
    ("bottom-float", ["--bottom", "32,1.5"], ["--bottom", "item 2", "not an integer"]),
    ("bottom-zero", ["--bottom", "0"], ["--bottom '0'", "must be >= 1"]),
    ("top-negative", ["--top", "32,-8"], ["--top '32,-8'", "item 2 (-8) must be >= 1"]),
    ("top-empty", ["--top", ""], ["--top is empty"]),
    ("host-table-too-big", ["--dim", str(2**28)],
     ["--dim 268435456", "host table", "does not fit"]),
    ("resume-not-a-checkpoint", ["--mode", "hotline", "--synthetic-samples", "400",
                                 "--resume", "{d}/noise.pt"],
     ["--resume", "noise.pt", "not a readable checkpoint"]),
    ("resume-missing", ["--mode", "hotline", "--resume", "{d}/gone.pt"],
     ["--resume", "gone.pt", "no such file"]),
    ("mode-unknown", ["--mode", "fpga"], ["--mode", "invalid choice: 'fpga'"]),
    # --format, --table-sizes, --mapping
    ("format-with-synthetic", ["--format", "criteo"], ["--format is for --data"]),
    ("mapping-with-synthetic", ["--mapping", "hash"], ["--mapping is for --data"]),
    ("table-sizes-auto-synthetic", ["--table-sizes", "auto"],
     ["--table-sizes auto needs --data"]),
    ("table-sizes-not-integer", ["--table-sizes", "10,x"],
     ["--table-sizes '10,x': item 2 ('x') is not an integer"]),
    ("table-sizes-zero", ["--table-sizes", "0"], ["--table-sizes '0': item 1 (0) must be >= 1"]),
    ("table-sizes-empty", ["--table-sizes", ""], ["--table-sizes is empty: give table sizes"]),
    ("table-sizes-count", ["--data", "{d}/good.tsv", "--table-sizes", "10,20"],
     ["--table-sizes '10,20': 2 sizes for 26 tables: give one size for every table"]),
    ("table-sizes-over-cap", ["--data", "{d}/good.tsv", "--table-sizes", "5000"],
     ["--table-sizes '5000': table 0 (C1) has 5,000 rows, more than --table-size-cap 1024"]),
    ("table-sizes-count-format", ["--data", "{d}/log.csv", "--format", LOG_FORMAT,
                                  "--table-sizes", "1,2,3,4"], ["4 sizes for 3 tables"]),
    ("mapping-bad", ["--data", "{d}/good.tsv", "--mapping", "hash,fold"],
     ["--mapping 'hash,fold': item 2 ('fold') must be modulo or hash"]),
    ("mapping-count", ["--data", "{d}/good.tsv", "--mapping", "hash,modulo"],
     ["--mapping 'hash,modulo': 2 mappings for 26 tables"]),
    ("format-bad-key", ["--data", "{d}/log.csv", "--format", "label=1 cat=2 colour=red"],
     ["--format 'label=1 cat=2 colour=red': unknown key 'colour'"]),
    ("format-unused-columns", ["--data", "{d}/log.csv", "--format", "header label=clicked "
                               "cat=user"], ["--format 'header label=clicked cat=user': columns "
                                             "1 (ts), 3 (price)", "are not used"]),
    ("format-unknown-name", ["--data", "{d}/log.csv", "--format", "header label=click "
                             "cat=user ignore=rest"], ["unknown column name 'click' (names: ts"]),
    ("format-no-names", ["--data", "{d}/log.csv", "--format", "label=clicked cat=5 "
                         "ignore=rest"], ["'clicked': the columns have no names"]),
    ("format-json-missing", ["--data", "{d}/log.csv", "--format", "{d}/nope.json"],
     ["--format", "nope.json: no such file"]),
    ("format-json-invalid", ["--data", "{d}/log.csv", "--format", "{d}/bad.json"],
     ["bad.json: not valid JSON"]),
    ("format-folder-without-train", ["--data", "{d}/nodata", "--format", LOG_FORMAT],
     ["nodata: the folder has no train.csv / train.tsv / train.txt"]),
    ("format-empty-file", ["--data", "{d}/empty.tsv", "--format", LOG_FORMAT],
     ["--data", "empty.tsv: the file has no data rows"]),
    ("format-malformed-row", ["--data", "{d}/badlog.csv", "--format", LOG_FORMAT, "--mode",
                              "hybrid"],
     ["badlog.csv: line 5, column 3 (price): not a number: 'cheap'"]),
    ("format-criteo-preset-on-csv", ["--data", "{d}/log.csv", "--format", "criteo"],
     ["log.csv: line 1", "expected 40 tab-separated columns, found 1"]),
    ("auto-sizes-hot-budget", ["--data", "{d}/log.csv", "--format", LOG_FORMAT, "--mode",
                               "hotline", "--table-sizes", "auto", "--hot-budget", "500"],
     ["--hot-budget 500 is larger than all tables together (341 rows with --table-sizes "
      "auto, --table-size-cap 1024)"]),
]


@pytest.mark.parametrize("extra, expect", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_cli_refuses_with_one_line(extra, expect, data_files, tmp_path, capsys):
    argv = SMALL + [x.replace("{d}", str(data_files)) for x in extra] + ["--out",
                                                                          str(tmp_path / "o")]
    msg = refused(capsys, argv)
    for fragment in expect:
        assert fragment in msg, msg
    assert not (tmp_path / "o" / "metrics.json").exists()


# Host memory: 17,087 rows (cap 1024) x dim 512 x 4 B = 33.4 MiB of host table; the hot table
# of a 17,000-row budget is 32,768 entries x 512 x 4 B = 64 MiB.
MEMORY = [
    ("host-table", 16, ["--mode", "hybrid"], ["--table-size-cap 1024 / --dim 512",
                                              "host table (17,087 rows x dim 512",
                                              "16.0 MiB"]),
    ("hot-table", 64, ["--mode", "hotline", "--hot-budget", "17000"],
     ["--hot-budget 17000", "hot table (32,768 entries x dim 512 x 4 B = 64.0 MiB)",
      "next to the host table"]),
    ("hot-table-all", 64, ["--mode", "all", "--hot-budget", "17000"], ["--hot-budget 17000"]),
    ("gpu-only-copy", 64, ["--mode", "gpu-only"], ["--mode gpu-only", "copy of the table"]),
]


@pytest.mark.parametrize("mib, extra, expect", [m[1:] for m in MEMORY], ids=[m[0] for m in MEMORY])
def test_cli_refuses_tables_that_do_not_fit(mib, extra, expect, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(train, "_host_available", lambda: mib * 2**20)
    msg = refused(capsys, SMALL + ["--dim", "512"] + extra + ["--out", str(tmp_path)])
    for fragment in expect:
        assert fragment in msg, msg


def test_memory_check_passes_what_fits():
    """The same tables with enough memory (a control for the refusals above): hybrid needs
    the host table only (33.4 MiB < 64 MiB); every mode fits in 160 MiB."""
    a = train.parse_args(SMALL + ["--dim", "512", "--hot-budget", "17000"])
    sizes = train._Source(None, a.table_size_cap).table_sizes
    avail = {"v": 64 * 2**20}
    orig = train._host_available
    try:
        train._host_available = lambda: avail["v"]
        train._check_resources(a, sizes, ("hybrid",), "cpu")
        avail["v"] = 160 * 2**20
        train._check_resources(a, sizes, train.MODES, "cpu")
    finally:
        train._host_available = orig


@pytest.mark.parametrize("mode, expect", [
    ("hotline", "--hot-budget 17000: the hot table (32,768 entries x dim 512 x 4 B = 64.0 MiB) "
                "does not fit in the free memory of cuda:0 (32.0 MiB)"),
    ("gpu-only", "--mode gpu-only: gpu-only's copy of the table (33.4 MiB) does not fit in the "
                 "free memory of cuda:0 (32.0 MiB)"),
])
def test_memory_check_on_cuda_uses_device_memory(mode, expect, monkeypatch):
    """On a CUDA device the hot table / gpu-only table is compared with the device's free
    memory (faked here: 32 MiB), the host table with host memory (1 GiB)."""
    monkeypatch.setattr(train, "_host_available", lambda: 2**30)
    monkeypatch.setattr(train, "_device_free", lambda device: 32 * 2**20)
    a = train.parse_args(SMALL + ["--dim", "512", "--hot-budget", "17000"])
    sizes = train._Source(None, a.table_size_cap).table_sizes
    a.mode = mode
    with pytest.raises(train.CliError) as e:
        train._check_resources(a, sizes, (mode,), "cuda:0")
    assert str(e.value).startswith(expect + "; lower "), str(e.value)
    train._check_resources(a, sizes, ("hybrid",), "cuda:0")      # host table only: fits


def test_cli_unwritable_out(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    msg = refused(capsys, SMALL + ["--synthetic-samples", "400", "--out",
                                   str(tmp_path / "file" / "sub")])
    assert msg.startswith(f"--out {tmp_path / 'file' / 'sub'}: cannot create the folder")


def test_cli_debug_shows_the_exception(data_files, tmp_path):
    """--debug: the refusal's exception is raised (a traceback) instead of the one line."""
    with pytest.raises(train.CliError, match="--lr must be a finite number"):
        train.main(SMALL + ["--lr", "nan", "--debug", "--out", str(tmp_path)])
    with pytest.raises(train.DataFormatError) as e:
        train.main(SMALL + ["--data", str(data_files / "bad.tsv"), "--debug",
                            "--out", str(tmp_path)])
    assert (e.value.line, e.value.column, e.value.column_name) == (3, 3, "I2")


def test_cli_exit_status_and_traceback_as_a_program(data_files, tmp_path):
    """As a program: a refusal is one line on stderr, exit status 2; with --debug a
    traceback, exit status 1."""
    cmd = [sys.executable, "-m", "sw_driver.train", "--data", str(data_files / "bad.tsv"),
           "--out", str(tmp_path)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    plain = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=120)
    assert plain.returncode == 2, plain.stderr
    assert plain.stderr.splitlines() == [f"{ERROR}{data_files / 'bad.tsv'}: line 3, column 3 "
                                         f"(I2): not an integer: 'x'"]
    debug = subprocess.run(cmd + ["--debug"], capture_output=True, text=True, cwd=root,
                           timeout=120)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "DataFormatError" in debug.stderr


# --- any click log: --format, --table-sizes, --mapping, warnings ---------------------------
def _blake(v):
    return int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little")


def _splitmix64(x):
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_cli_any_click_log_auto_sizes_and_warnings(tmp_path, capsys):
    """A CSV log described by --format trains; auto sizes are the distinct values of the
    file (user 40, site 1) capped (item: 300 values, cap 100); the constant table and the
    crowded one get one warning line each on stderr."""
    path = tmp_path / "log.csv"
    path.write_text(click_log())
    summary = train.main(SMALL + ["--mode", "hybrid", "--data", str(path), "--format",
                                  LOG_FORMAT, "--table-sizes", "auto", "--table-size-cap",
                                  "100", "--out", str(tmp_path / "o")])
    cap = capsys.readouterr()
    assert f"data: click log {path}, held-out tail (40 samples); format: " in cap.out
    assert "; 3 tables, 141 rows" in cap.out
    assert len(EPOCH.findall(cap.out)) == 1
    used = len({_blake(f"i{k}") % 100 for k in range(300)})     # modulo, the default
    assert cap.err.splitlines() == [
        f"warning: table 1 (item): 300 distinct values share 100 rows (3.0 per row, {used} "
        f"rows used)",
        "warning: table 2 (site) is constant: all 400 samples look up one row (1 distinct "
        "value, 1 row)",
    ]
    tables = json.loads((tmp_path / "o" / "metrics.json").read_text())["tables"]
    assert [(t["name"], t["rows"], t["distinct_values"], t["constant"]) for t in tables] == [
        ("user", 40, 40, False), ("item", 100, 300, False), ("site", 1, 1, True)]
    assert summary["tables"] == tables


def test_cli_json_format_explicit_sizes_and_mapping(tmp_path, capsys):
    """--format spec.json, --table-sizes per table, --mapping per table: the rows used match
    a plain-Python mapping of the values (modulo for user, hash for item and site)."""
    path = tmp_path / "log.csv"
    path.write_text(click_log())
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"sep": ",", "header": True, "label": "clicked",
                                "dense": ["price", {"column": "views", "transform": "log"}],
                                "cat": ["user", "item", "site"], "ignore": ["ts", "note"]}))
    train.main(SMALL + ["--mode", "gpu-only", "--data", str(path), "--format", str(spec),
                        "--table-sizes", "64,128,2", "--mapping", "modulo,hash,hash",
                        "--out", str(tmp_path / "o")])
    cap = capsys.readouterr()
    tables = json.loads((tmp_path / "o" / "metrics.json").read_text())["tables"]
    users = {_blake(f"u{k}") % 64 for k in range(40)}
    items = {_splitmix64(_blake(f"i{k}") ^ 1 << 32) % 128 for k in range(300)}   # table 1
    assert [(t["rows"], t["distinct_rows"]) for t in tables] == [
        (64, len(users)), (128, len(items)), (2, 1)]
    assert "warning: table 1 (item): 300 distinct values share 128 rows" in cap.err
    assert "warning: table 2 (site) is constant" in cap.err


def test_cli_table_sizes_for_synthetic_data(tmp_path, capsys):
    """--table-sizes also sizes the synthetic tables (one size for all 26)."""
    summary, out = run(capsys, SMALL + ["--mode", "hybrid", "--synthetic-samples", "400",
                                        "--table-sizes", "100", "--out", str(tmp_path)])
    assert "26 tables, 2,600 rows" in out and summary["tables"] == []

"""Smoke tests of ``python -m sw_driver.train`` (sw_driver/train.py): it trains, prints
parseable metrics and counters, and writes metrics.json and the plots."""

import json
import math
import re

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
    assert [r[1] for r in rows] == ["gpu-only", "hybrid", "hotline"], out
    for _, mode, auc, ll, sps, loss, sec in rows:
        auc, ll, sps, loss = float(auc), float(ll), float(sps), float(loss)
        assert 0.0 <= auc <= 1.0 and 0.0 < ll < 5.0 and math.isfinite(loss), out
        assert sps > 0.0 and float(sec) > 0.0
    # gpu-only and hybrid train the same order: identical metrics on the CPU.
    assert rows[0][2:4] == rows[1][2:4]
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
    assert "speedup hotline/hybrid=" in out
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


@pytest.mark.parametrize("bad", [["--sample-rate", "0"], ["--epochs", "0"],
                                 ["--mode", "fpga"], ["--threads", "0"]])
def test_cli_rejects_bad_arguments(bad, tmp_path):
    with pytest.raises(SystemExit):
        train.parse_args(bad + ["--out", str(tmp_path)])


def test_cli_missing_data_path(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        train.main(SMALL + ["--data", str(tmp_path / "nope.tsv"), "--out", str(tmp_path)])

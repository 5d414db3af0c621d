"""The headline training benchmark runs end to end (here on the CPU, scaled down): the same
command is what a GPU machine runs (docs/benchmarks.md)."""

import json

import pytest

from sw_driver.bench_training import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_benchmark_times_three_modes_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--device", "cpu", "--table-scale", "0.001", "--batch-size", "128",
                 "--hot-budget", "2048", "--pool", "8", "--dim", "8", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["modes"]) == {"gpu-only", "hybrid", "hotline"}
    for mode in res["modes"].values():
        assert mode["ms_per_step"] > 0 and mode["steps"] == 8
    hotline = res["modes"]["hotline"]
    c = hotline["counters"]
    assert 0 < c["popular_inputs"] <= c["inputs"] and c["working_sets"] == 2
    assert set(hotline["timings"]["working_set"]["phases"]) >= {"schedule", "popular", "gather",
                                                                "non_popular", "write_back"}
    assert res["hotline_vs_hybrid"] == pytest.approx(
        res["modes"]["hybrid"]["ms_per_step"] / hotline["ms_per_step"])
    assert "| hotline |" in capsys.readouterr().out


def test_hot_budget_above_ten_percent_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--table-scale", "0.001", "--hot-budget", "100000"])
    assert "exceeds 10 %" in capsys.readouterr().err

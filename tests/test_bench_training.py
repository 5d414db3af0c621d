"""The headline training benchmark runs end to end (here on the CPU, scaled down): the same
command is what a GPU machine runs (docs/benchmarks.md)."""

import json

import pytest
import torch

from sw_driver.bench_training import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_benchmark_times_three_modes_and_writes_json(tmp_path, capsys):
    trace = tmp_path / "ws.json"
    assert main(["--device", "cpu", "--table-scale", "0.001", "--batch-size", "128",
                 "--hot-budget", "2048", "--pool", "8", "--dim", "8", "--results-dir",
                 str(tmp_path / "results"), "--profile", str(trace)]) == 0
    (out,) = (tmp_path / "results").iterdir()
    assert out.name.endswith("-cpu.json")
    res = json.loads(out.read_text())
    assert set(res["modes"]) == {"gpu-only", "hybrid", "hotline"}
    assert res["command"].startswith("python -m sw_driver.bench_training --device cpu")
    assert res["environment"]["torch"] == torch.__version__ and res["warm_up_seconds"] > 0
    for mode in res["modes"].values():
        assert mode["ms_per_step"] > 0 and mode["steps"] == 8
        assert mode["epoch1"]["ms_per_step"] > 0
    # Epoch 1 of hotline learns on ceil(0.125 * 8) = 1 mini-batch; the others learn nothing.
    e1 = res["modes"]["hotline"]["epoch1"]
    assert e1["learn_batches"] == 1 and 0 < e1["eal_learn_seconds"] <= e1["learn_seconds"]
    assert e1["learn_seconds"] + e1["freeze_seconds"] < e1["seconds"]
    assert e1["timings"]["learn_step"]["count"] == 1
    assert res["modes"]["hybrid"]["epoch1"]["learn_batches"] == 0
    assert res["epoch1_hotline_vs_hybrid"] == pytest.approx(
        res["modes"]["hybrid"]["epoch1"]["ms_per_step"] / e1["ms_per_step"])
    # Epoch 1 after learning: hotline's 7 mini-batches after the freeze, without the learning
    # mini-batch and the freeze; the modes that do not learn have one figure.
    al = e1["after_learning"]
    assert al["steps"] == 7
    assert al["seconds"] == pytest.approx(e1["seconds"] - e1["learn_seconds"]
                                          - e1["freeze_seconds"])
    assert al["ms_per_step"] == pytest.approx(1000 * al["seconds"] / 7)
    for other in ("gpu-only", "hybrid"):
        o = res["modes"][other]["epoch1"]
        assert o["after_learning"]["steps"] == 8
        assert o["after_learning"]["ms_per_step"] == pytest.approx(o["ms_per_step"])
        assert res[f"epoch1_after_learning_hotline_vs_{other}"] == pytest.approx(
            o["ms_per_step"] / al["ms_per_step"])
    assert 0 < res["popular_share"] <= 1 and 0 < res["hot_rows_share"] <= 0.1
    # The profile is a Chrome trace holding the trainer's named phases.
    names = {e.get("name") for e in json.loads(trace.read_text())["traceEvents"]}
    assert {"schedule", "popular", "non_popular"} <= names
    hotline = res["modes"]["hotline"]
    c = hotline["counters"]
    assert 0 < c["popular_inputs"] <= c["inputs"] and c["working_sets"] == 2
    assert set(hotline["timings"]["working_set"]["phases"]) >= {"schedule", "popular", "gather",
                                                                "non_popular", "write_back"}
    assert res["hotline_vs_hybrid"] == pytest.approx(
        res["modes"]["hybrid"]["ms_per_step"] / hotline["ms_per_step"])
    printed = capsys.readouterr().out
    assert "| hotline |" in printed and "hotline learning: " in printed
    assert "epoch 1 after learning" in printed
    assert "epoch1_after_learning_hotline_vs_hybrid: " in printed
    assert "say nothing about a GPU" in printed


def test_hot_budget_above_ten_percent_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--table-scale", "0.001", "--hot-budget", "100000"])
    assert "exceeds 10 %" in capsys.readouterr().err


def test_unknown_mode_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--table-scale", "0.001", "--modes", "hotline,fpga"])
    assert "--modes hotline,fpga" in capsys.readouterr().err

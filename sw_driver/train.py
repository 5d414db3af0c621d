"""Train the DLRM example with Hotline, the hybrid CPU-GPU baseline or GPU-only storage.

``python -m sw_driver.train --help``; docs/training.md describes the modes and the output.
Prints one parseable line per epoch and mode::

    epoch=1 mode=hotline auc=0.6712 logloss=0.5031 samples_per_s=4321.0 train_loss=0.5104 seconds=1.67

then the driver counters (hotline) and the per-phase timings, and writes to ``--out``:
``metrics.json``, ``timeline_hotline.png`` (one working set's phases as horizontal bars) and
``throughput.png`` (samples/s per mode; the comparison of all three with ``--mode all``).

``--checkpoint PATH`` saves a checkpoint after every epoch, ``--resume PATH`` continues from
one; ``--relearn-every K`` re-learns popularity every K working sets (hotline);
``--world-size N`` trains data-parallel in N local processes (torch.distributed), or launch
with torchrun (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from sw_driver.data import (AVAZU_DEFAULT_TABLE_SIZE, CRITEO_KAGGLE_TABLE_SIZES, ClickDataset,
                            SyntheticClickGenerator, read_avazu, read_criteo)
from sw_driver.training import MODES, Trainer
from sw_driver.training.distributed import default_backend, free_port, init_from_env

__all__ = ["main", "load_data", "parse_args"]

_AVAZU_TABLES = 21
_PHASE_ORDER = ("schedule", "popular", "gather", "h2d", "non_popular", "d2h", "write_back",
                "compute", "update")
_PHASE_COLORS = {"schedule": "#7f7f7f", "popular": "#2ca02c", "gather": "#1f77b4",
                 "h2d": "#17becf", "non_popular": "#d62728", "d2h": "#9467bd",
                 "write_back": "#ff7f0e", "compute": "#2ca02c", "update": "#ff7f0e"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m sw_driver.train",
        description="Train DLRM with Hotline / hybrid CPU-GPU / GPU-only embedding storage.")
    p.add_argument("--data", default=None,
                   help="Criteo .tsv/.txt or Avazu .csv file, or a folder holding "
                        "train/dev splits (default: synthetic Criteo-shaped data)")
    p.add_argument("--mode", default="hotline", choices=(*MODES, "all"),
                   help="embedding storage; 'all' runs the three and compares them")
    p.add_argument("--backend", default="cpu", choices=("cpu", "cuda"),
                   help="training device")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128, help="mini-batch size N")
    p.add_argument("--working-set", type=int, default=4, help="mini-batches per working set W")
    p.add_argument("--hot-budget", type=int, default=16384,
                   help="hot-table rows; the EAL gets entries = next power of two >= budget")
    p.add_argument("--sample-rate", type=float, default=0.25,
                   help="share of the first epoch's mini-batches the EAL learns from")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--dim", type=int, default=16, help="embedding dimension")
    p.add_argument("--bottom", default="512,256", help="bottom MLP hidden sizes")
    p.add_argument("--top", default="512,256", help="top MLP hidden sizes")
    p.add_argument("--max-rows", type=int, default=None,
                   help="read at most this many training rows")
    p.add_argument("--table-size-cap", type=int, default=2**16,
                   help="rows per table at most (categorical values modulo the size)")
    p.add_argument("--synthetic-samples", type=int, default=8000,
                   help="samples of synthetic data (without --data), 10%% held out")
    p.add_argument("--gather-threads", type=int, default=2,
                   help="CPU threads of the driver's cold-row gather / write-back")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (default: 1 with --backend cpu, torch's "
                        "choice with cuda). On a busy 2-core machine 2 threads made each "
                        "step ~50x slower (OpenMP barriers), hence 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="train_out", help="folder for metrics.json and plots")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="save a checkpoint (MLPs, optimizer, complete table, EAL state, "
                        "position) to PATH after every epoch")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="continue from a checkpoint; --epochs counts the epochs in total")
    p.add_argument("--relearn-every", type=int, default=0, metavar="K",
                   help="hotline: re-learn popularity every K working sets (0: learn once)")
    p.add_argument("--relearn-batches", type=int, default=None, metavar="M",
                   help="mini-batches each re-learn learns from (default "
                        "ceil(sample_rate * K * working_set))")
    p.add_argument("--world-size", type=int, default=None,
                   help="data-parallel processes (torch.distributed) started here; under "
                        "torchrun the WORLD_SIZE variable is used instead")
    p.add_argument("--dist-backend", default=None, choices=("gloo", "nccl"),
                   help="torch.distributed backend (default: nccl with cuda, gloo with cpu)")
    a = p.parse_args(argv)
    for name in ("epochs", "batch_size", "working_set", "hot_budget", "dim",
                 "table_size_cap", "gather_threads", "synthetic_samples"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < a.sample_rate <= 1:
        p.error("--sample-rate must be in (0, 1]")
    if a.threads is not None and a.threads < 1:
        p.error("--threads must be >= 1")
    if a.relearn_every < 0:
        p.error("--relearn-every must be >= 0")
    if a.relearn_batches is not None and a.relearn_batches < 1:
        p.error("--relearn-batches must be >= 1")
    if a.world_size is not None and a.world_size < 1:
        p.error("--world-size must be >= 1")
    if a.mode == "all" and (a.checkpoint or a.resume):
        p.error("--checkpoint / --resume need one --mode, not all")
    if a.resume and not Path(a.resume).is_file():
        p.error(f"--resume {a.resume}: no such file")
    if a.backend == "cuda" and not torch.cuda.is_available():
        p.error("--backend cuda: no CUDA device is available")
    return a


def _sizes(a):
    return tuple(int(s) for s in a.split(",") if s.strip())


def _cat(parts, name):
    return ClickDataset(torch.cat([d.labels for d in parts]), torch.cat([d.dense for d in parts]),
                        torch.cat([d.sparse for d in parts]), parts[0].table_sizes, name)


def _split_tail(ds, share=0.1):
    n_eval = max(1, int(len(ds) * share))
    cut = len(ds) - n_eval
    return ds.subset(0, cut), ds.subset(cut, len(ds)), f"held-out tail ({n_eval} samples)"


def load_data(data, cap, max_rows=None, synthetic_samples=8000, seed=0):
    """``(train, eval, description)``. ``data``: a Criteo (.tsv/.txt) or Avazu (.csv) file, a
    folder with ``train``/``dev`` files, or ``None`` for synthetic Criteo-shaped data. Table
    sizes are the data set's, capped at ``cap`` rows (values modulo the size). The eval split
    is ``dev`` (+ ``test``) when the folder has them, else the last 10 % of the training rows."""
    if data is None:
        sizes = tuple(min(s, cap) for s in CRITEO_KAGGLE_TABLE_SIZES)
        gen = SyntheticClickGenerator(sizes, p_hot=0.75, head_rows=64, seed=seed)
        ds = gen.batch(synthetic_samples)
        train, ev, what = _split_tail(ds)
        return train, ev, f"synthetic Criteo-shaped data ({synthetic_samples} samples), {what}"
    path = Path(data)
    if path.is_dir():
        names = {f.name for f in path.iterdir()}
        kind = "criteo" if names & {"train.tsv", "train.txt"} else \
            "avazu" if "train.csv" in names else None
        if kind is None:
            raise SystemExit(f"{path}: no train.tsv / train.txt (Criteo) or train.csv (Avazu)")
    else:
        if not path.exists():
            raise SystemExit(f"{path}: no such file")
        kind = "avazu" if path.suffix == ".csv" else "criteo"
    if kind == "criteo":
        sizes = tuple(min(s, cap) for s in CRITEO_KAGGLE_TABLE_SIZES)

        def read(split=None, rows=None):
            return read_criteo(path, split=split, table_sizes=sizes, max_rows=rows)
    else:
        sizes = (min(AVAZU_DEFAULT_TABLE_SIZE, cap),) * _AVAZU_TABLES

        def read(split=None, rows=None):
            return read_avazu(path, split=split, table_sizes=sizes, max_rows=rows)
    if path.is_dir():
        train = read("train", max_rows)
        evals = [read(s) for s in ("dev", "test")
                 if any(n.startswith(s + ".") for n in names)]
        if evals:
            ev = evals[0] if len(evals) == 1 else _cat(evals, f"{path.name}/dev+test")
            return train, ev, f"{kind} {path} ({len(train)} train, {len(ev)} dev+test)"
        train, ev, what = _split_tail(train)
        return train, ev, f"{kind} {path}, {what}"
    train, ev, what = _split_tail(read(None, max_rows))
    return train, ev, f"{kind} {path}, {what}"


def _fmt_timings(t):
    lines = []
    for kind, v in t.items():
        phases = " ".join(f"{p}={v['phases'][p]['mean_ms']:.3f}" for p in _PHASE_ORDER
                          if p in v["phases"])
        lines.append(f"  {kind} (n={v['count']}, mean ms): {phases}")
    return lines


def plot_timeline(intervals, path, title):
    """Horizontal bars, one row per phase, of one working set's intervals (ms)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"schedule": "schedule (k+1)", "write_back": "write-back (k-1)",
              "non_popular": "non-popular", "h2d": "H2D copy", "d2h": "D2H copy",
              "gather": "cold gather"}
    phases = [p for p in _PHASE_ORDER if p in intervals]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(phases) + 1.5))
    for y, p in enumerate(phases):
        spans = [(s, max(e - s, 1e-3)) for s, e in intervals[p]]
        ax.broken_barh(spans, (y - 0.35, 0.7), color=_PHASE_COLORS.get(p, "#444444"))
    ax.set_yticks(range(len(phases)), [labels.get(p, p) for p in phases])
    ax.invert_yaxis()
    ax.set_xlabel("ms since the start of the working set")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_throughput(results, path, title):
    """Bars of samples/s per mode (last epoch)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(results)
    vals = [results[m]["epochs"][-1]["samples_per_s"] for m in modes]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(modes, vals, color=["#1f77b4", "#ff7f0e", "#2ca02c"][:len(modes)])
    for b, v in zip(bars, vals):
        ax.annotate(f"{v:,.0f}", (b.get_x() + b.get_width() / 2, v), ha="center",
                    va="bottom", fontsize=9)
    ax.set_ylabel("training samples / s (last epoch)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _quiet(*args, **kwargs):
    pass


def run_mode(mode, a, train, ev, out, say=print, device=None, distributed=False):
    """Train in ``mode`` until ``a.epochs`` epochs are complete; prints (through ``say``)
    and returns the results dict."""
    from tqdm import tqdm

    relearn = a.relearn_every if mode == "hotline" else 0
    tr = Trainer(train.table_sizes, train.n_dense, mode, device or a.backend, dim=a.dim,
                 bottom=_sizes(a.bottom), top=_sizes(a.top), lr=a.lr, batch_size=a.batch_size,
                 working_set=a.working_set, hot_budget=a.hot_budget, sample_rate=a.sample_rate,
                 seed=a.seed, gather_threads=a.gather_threads, relearn_every=relearn,
                 relearn_batches=a.relearn_batches if relearn else None,
                 distributed=distributed)
    res = {"mode": mode, "epochs": []}
    try:
        if a.resume:
            tr.load_checkpoint(a.resume)
            say(f"[{mode}] resumed from {a.resume}: {tr.epoch} epochs done, position "
                f"{tr.position}")
        if mode == "hotline":
            cfg = tr.eal_config
            say(f"[{mode}] EAL: {cfg.entries} entries ({cfg.banks} banks x {cfg.sets} sets x "
                f"{cfg.ways} ways) for a hot budget of {a.hot_budget} rows")
        if tr.world_size > 1:
            say(f"[{mode}] data parallel: {tr.world_size} ranks")
        while tr.epoch < a.epochs:
            bar = tqdm(total=len(train), initial=tr.position, desc=f"{mode} epoch {tr.epoch + 1}",
                       unit="sample", file=sys.stderr, disable=a.no_progress or tr.rank != 0,
                       dynamic_ncols=True)
            st = tr.train_epoch(train, progress=bar.update)
            bar.close()
            auc, ll = tr.evaluate(ev)
            e = {"epoch": st.epoch, "auc": auc, "logloss": ll, "samples_per_s": st.samples_per_s,
                 "train_loss": st.train_loss, "seconds": st.seconds,
                 "learn_batches": st.learn_batches}
            res["epochs"].append(e)
            say(f"epoch={st.epoch} mode={mode} auc={auc:.4f} logloss={ll:.4f} "
                f"samples_per_s={st.samples_per_s:.1f} train_loss={st.train_loss:.4f} "
                f"seconds={st.seconds:.2f}", flush=True)
            if a.checkpoint:
                tr.save_checkpoint(a.checkpoint)
                say(f"checkpoint: {a.checkpoint} (epoch {tr.epoch})")
        timings = tr.step_timings()
        res["timings"] = timings
        if mode == "hotline":
            c = tr.counters()
            res["counters"] = c
            res["hot_rows"] = tr.store.hot_rows
            res["freeze_log"] = tr.freeze_log
            pop = 100.0 * c["popular_inputs"] / c["inputs"] if c["inputs"] else 0.0
            hit = 100.0 * c["hits"] / c["lookups"] if c["lookups"] else 0.0
            moved = c["bytes_gathered"] + c["bytes_written_back"]
            say(f"counters mode={mode} hot_rows={res['hot_rows']} lookups={c['lookups']} "
                f"hits={c['hits']} hit_pct={hit:.2f} inputs={c['inputs']} "
                f"popular_inputs={c['popular_inputs']} popular_pct={pop:.2f} "
                f"cold_rows={c['cold_rows']} bytes_gathered={c['bytes_gathered']} "
                f"bytes_written_back={c['bytes_written_back']} bytes_moved={moved} "
                f"working_sets={c['working_sets']}")
            if relearn:
                n_re = sum(1 for f in tr.freeze_log if f["relearn"])
                moved_in = sum(f["moved_in"] for f in tr.freeze_log if f["relearn"])
                say(f"relearn mode={mode} relearns={n_re} rows_moved_in={moved_in}")
            tl = tr.timeline()
            if tl:
                res["timeline"] = tl
                if tr.rank == 0:
                    png = out / "timeline_hotline.png"
                    plot_timeline(tl, png, f"one Hotline working set (W={a.working_set}, "
                                  f"N={a.batch_size}, {a.backend})")
                    say(f"timeline plot: {png}")
        say(f"timings mode={mode}:")
        for line in _fmt_timings(timings):
            say(line)
    finally:
        tr.close()
    return res


def _spawned(rank, argv, world, port):
    """One process of ``--world-size N``: torchrun's variables, then :func:`main`."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    main(argv)


def _spawn(a, argv):
    """Start ``a.world_size`` local processes (spawn) and wait; returns rank 0's summary."""
    import torch.multiprocessing as mp

    argv = list(sys.argv[1:] if argv is None else argv)
    print(f"starting {a.world_size} processes (torch.distributed, "
          f"{a.dist_backend or default_backend(a.backend)})", flush=True)
    mp.start_processes(_spawned, args=(argv, a.world_size, free_port()), nprocs=a.world_size,
                       join=True, start_method="spawn")
    return json.loads((Path(a.out) / "metrics.json").read_text())


def main(argv=None):
    """Command line entry point; returns the results dict (also written to metrics.json)."""
    a = parse_args(argv)
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if a.world_size and a.world_size > 1 and "WORLD_SIZE" not in os.environ:
        return _spawn(a, argv)
    if a.world_size and "WORLD_SIZE" in os.environ and a.world_size != env_world:
        raise SystemExit(f"--world-size {a.world_size} but WORLD_SIZE={env_world}")
    backend = a.dist_backend or default_backend(a.backend)
    rank, world, local = init_from_env(backend)
    device = a.backend
    if a.backend == "cuda" and world > 1:
        device = f"cuda:{local % torch.cuda.device_count()}"
        torch.cuda.set_device(device)
    say = print if rank == 0 else _quiet
    try:
        return _main(a, say, device, world, rank)
    finally:
        if world > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def _main(a, say, device, world, rank):
    torch.manual_seed(a.seed)
    threads = a.threads or (1 if a.backend == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if a.data is None:
        say("no --data given: using synthetic Criteo-shaped data")
    train, ev, desc = load_data(a.data, a.table_size_cap, a.max_rows, a.synthetic_samples,
                                a.seed)
    say(f"data: {desc}; {train.n_tables} tables, {sum(train.table_sizes):,} rows, "
        f"dim {a.dim}, batch {a.batch_size}, backend {a.backend}"
        + (f", {world} ranks" if world > 1 else ""))
    modes = MODES if a.mode == "all" else (a.mode,)
    results = {}
    for mode in modes:
        results[mode] = run_mode(mode, a, train, ev, out, say, device, world > 1)
    summary = {"args": vars(a), "data": desc, "results": results, "world_size": world,
               "wall_seconds": time.perf_counter() - t0}
    if rank != 0:
        return summary
    if all(r["epochs"] for r in results.values()):
        png = out / "throughput.png"
        plot_throughput(results, png, f"DLRM training throughput ({a.backend})")
        say(f"throughput plot: {png}")
    else:
        say(f"nothing to train: the checkpoint has {a.epochs} epochs already")
    if len(modes) > 1:
        base = {m: results[m]["epochs"][-1]["samples_per_s"] for m in modes}
        if base.get("hotline") and base.get("hybrid"):
            say(f"speedup hotline/hybrid={base['hotline'] / base['hybrid']:.2f} "
                f"hotline/gpu-only={base['hotline'] / base['gpu-only']:.2f}")
    summary["wall_seconds"] = time.perf_counter() - t0
    (out / "metrics.json").write_text(json.dumps(_finite(summary), indent=1, allow_nan=False,
                                                 default=_json_default))
    say(f"metrics: {out / 'metrics.json'}")
    return summary


def _finite(o):
    """``o`` with NaN and infinite floats replaced by None: strict JSON has no NaN (an AUC is
    NaN when the evaluation set holds one class only)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return _finite(o.tolist())
    return str(o)


if __name__ == "__main__":
    main()

"""Headline benchmark: gpu-only vs hybrid vs hotline DLRM training on the same data.

``python -m sw_driver.bench_training --json results.json`` on any CUDA machine: synthetic
Criteo-Kaggle-sized tables (26 tables, 33.8 M rows, dim 64), batch 4096, working set 4, the
generator calibrated so that about 75 % of inputs are popular at a hot budget of at most 10 %
of the rows. For each mode it trains one epoch over a pool of mini-batches (hotline learns its
popular rows on the first ``--sample-rate`` of them), then times a second epoch; it prints a
table of ms per mini-batch, the ratios, hotline's time split and driver counters, and writes
everything to the JSON file. Epoch 1 is reported two ways: end to end (``epoch1.ms_per_step``:
hotline's includes its learning mini-batches, trained the hybrid way, and the freeze) and
after learning (``epoch1.after_learning``: the mini-batches after the freeze only), with the
ratios ``epoch1_hotline_vs_<mode>`` and ``epoch1_after_learning_hotline_vs_<mode>``. ``--capacity`` then trains hotline on a table larger than the
GPU's memory and shows that gpu-only cannot allocate it. On a CPU-only machine use the scaled
options (``--table-scale``, ``--batch-size``) and the same code runs on the CPU.
"""

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from sw_driver.data import SyntheticClickGenerator
from sw_driver.data.presets import CRITEO_KAGGLE_TABLE_SIZES
from sw_driver.data.synthetic import calibrate
from sw_driver.training.modes import MODES
from sw_driver.training.resources import host_memory_bytes
from sw_driver.training.trainer import Trainer

_T0 = time.perf_counter()


def log(msg):
    print(f"[{time.perf_counter() - _T0:7.1f} s] {msg}", flush=True)


def scaled_sizes(scale):
    return tuple(max(2, int(round(n * scale))) for n in CRITEO_KAGGLE_TABLE_SIZES)


#: elements per independently seeded chunk of :func:`fill_uniform_` (256 MB of float32)
FILL_CHUNK = 1 << 26


def fill_uniform_(table, lo, hi, seed=0, threads=None):
    """``table.uniform_(lo, hi)`` in parallel, in place (no second copy): torch's CPU
    ``uniform_`` is one serial loop (about 4-6 ns per element, so 2 minutes for an 86 GB
    table), so fixed chunks of :data:`FILL_CHUNK` elements, each with its own generator
    seeded ``(seed, chunk)``, are filled by a thread pool (torch releases the GIL). The
    values depend on ``seed`` only, not on ``threads``."""
    flat = table.view(-1)
    n = flat.numel()
    threads = max(1, int(threads or os.cpu_count() or 1))

    def fill(i):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)
        flat[i * FILL_CHUNK:(i + 1) * FILL_CHUNK].uniform_(lo, hi, generator=g)

    chunks = range(-(-n // FILL_CHUNK))
    if threads == 1 or len(chunks) <= 1:
        for i in chunks:
            fill(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fill, chunks))
    return table


def release_memory(device):
    """Free what closed trainers left: the trainer and its store refer to each other, so
    without a collection a gpu-only table (8.6 GB on the device) or a host table could stay
    alive into the next mode; then return the cached device blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def host_memory_gib(field="MemTotal"):
    """``/proc/meminfo``'s ``field`` in GiB, or ``None``."""
    n = host_memory_bytes(field)
    return None if n is None else round(n / 2**30, 1)


def environment(device):
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "host_cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "device": str(device),
           "device_name": platform.processor() or platform.machine()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=torch.cuda.get_device_name(device), gpu=props.name,
                   gpu_memory_gib=round(props.total_memory / 2**30, 1))
    mem = host_memory_gib("MemTotal")
    if mem is not None:
        env["host_memory_gib"] = mem
    return env


def calibrated(args, sizes):
    """Calibrate like the EAL learns: on as many samples as the learning phase sees, and
    counting a row hot only when seen at least twice (the default RRPV <= 1 threshold)."""
    learn_batches = max(1, math.ceil(args.sample_rate * args.pool))
    n_learn = learn_batches * args.batch_size
    return calibrate(args.target_popular, args.hot_budget, sizes, n_learn=n_learn,
                     n_measure=max(4096, n_learn // 2), min_count=2, seed=args.seed)


def build_data(args, sizes):
    """Calibrated synthetic samples: ``pool`` mini-batches of ``batch_size``."""
    budget = args.hot_budget
    t = time.perf_counter()
    cal = calibrated(args, sizes)
    log(f"calibrated: p_hot {cal.p_hot:.3f}, head_rows {cal.head_rows}, held-out oracle share "
        f"{cal.share:.3f} at budget {budget} ({time.perf_counter() - t:.1f} s)")
    gen = cal.generator.replace(stream=1)
    data = gen.batch(args.pool * args.batch_size)
    return data, cal


def warm_up(args, device, modes):
    """Untimed: a few mini-batches of every mode on small tables with the benchmark's MLPs,
    batch size and working set, so that the CUDA context, cuBLAS handles, kernel caches and
    the caching allocators exist before the first timed epoch (a user's job pays that once,
    not per mode)."""
    t = time.perf_counter()
    sizes = scaled_sizes(1e-4)
    n = 2 * args.working_set * args.batch_size
    # Skewed but not calibrated: the warm-up's numbers are thrown away.
    data = SyntheticClickGenerator(sizes, p_hot=0.75, head_rows=4, seed=args.seed).batch(n)
    for mode in modes:
        tr = Trainer(sizes, data.dense.shape[1], mode, device, dim=args.dim,
                     batch_size=args.batch_size, working_set=args.working_set,
                     hot_budget=min(args.hot_budget, max(4, sum(sizes) // 10)),
                     sample_rate=0.5, lr=args.lr, seed=args.seed, gather_threads=1,
                     record_timings=False, trace_working_set=None)
        try:
            tr.train_epoch(data)
        finally:
            tr.close()
    release_memory(device)
    return time.perf_counter() - t


def run_mode(mode, args, sizes, data, host_table, device, profile=None):
    """One mode, two epochs over the same pool of mini-batches, both timed: epoch 1 end to end
    as a user runs it (hotline: popularity learning on the first ``sample_rate`` of the
    mini-batches, trained the hybrid way meanwhile, then the freeze, then working sets), and
    epoch 2, the steady state. ``profile``: a path for a ``torch.profiler`` trace of one
    hotline working set after the steady state (Chrome/Perfetto JSON)."""
    tr = Trainer(sizes, data.dense.shape[1], mode, device, dim=args.dim,
                 batch_size=args.batch_size, working_set=args.working_set,
                 hot_budget=args.hot_budget, sample_rate=args.sample_rate, lr=args.lr,
                 seed=args.seed, gather_threads=args.gather_threads, host_table=host_table,
                 record_timings=True, trace_working_set=None,
                 annotate=bool(profile) and mode == "hotline",
                 policy=args.policy if mode == "hotline" else None)
    steps = math.ceil(len(data) / args.batch_size)
    try:
        first = tr.train_epoch(data)
        epoch1 = {"ms_per_step": 1000.0 * first.seconds / steps, "seconds": first.seconds,
                  "learn_batches": first.learn_batches, "learn_seconds": first.learn_seconds,
                  "eal_learn_seconds": first.eal_learn_seconds,
                  "freeze_seconds": first.freeze_seconds, "timings": tr.step_timings(),
                  "after_learning": after_learning(first, steps)}
        log(f"{mode}: epoch 1 {epoch1['ms_per_step']:.2f} ms per mini-batch end to end "
            f"({first.seconds:.2f} s; learning {first.learn_seconds:.2f} s over "
            f"{first.learn_batches} mini-batches, EAL {first.eal_learn_seconds:.2f} s, freeze "
            f"{first.freeze_seconds:.2f} s); after learning "
            f"{epoch1['after_learning']['ms_per_step']:.2f} ms per mini-batch over "
            f"{epoch1['after_learning']['steps']}")
        tr.reset_timings()
        if mode == "hotline":
            tr.store.dev.reset_counters()
        timed = tr.train_epoch(data)
        result = {"mode": mode, "ms_per_step": 1000.0 * timed.seconds / steps,
                  "steps": steps, "samples_per_s": timed.samples_per_s,
                  "train_loss": timed.train_loss, "timings": tr.step_timings(),
                  "epoch1": epoch1}
        if mode == "hotline":
            result["counters"] = tr.counters()
            result["eal"] = tr.eal_config.describe()
            result["hot_rows"] = tr.store.hot_rows
            if profile:
                result["profile"] = profile_working_set(tr, data, args, profile)
        log(f"{mode}: steady state {result['ms_per_step']:.2f} ms per mini-batch")
        return result
    finally:
        tr.close()           # frees the device table / hot table and pinned buffers


def after_learning(stats, steps):
    """Epoch 1 without its learning phase: the seconds and mini-batches after the freeze.

    ``epoch1.ms_per_step`` is end to end, as a user's first epoch runs: for hotline it counts
    the learning mini-batches (trained the hybrid way, at hybrid speed, while the EAL learns)
    and the freeze. This is the other figure: ``(seconds - learn_seconds - freeze_seconds) /
    (steps - learn_batches)``, the working sets' own rate in the first epoch (cold caches
    and allocators included). For gpu-only and hybrid, which do not learn, both are the
    same."""
    n = steps - stats.learn_batches
    secs = stats.seconds - stats.learn_seconds - stats.freeze_seconds
    return {"steps": n, "seconds": secs,
            "ms_per_step": 1000.0 * secs / n if n > 0 else float("nan")}


def profile_working_set(tr, data, args, path):
    """A ``torch.profiler`` trace (CPU, and CUDA when training there) of one hotline working
    set and its drain, the phases named by the trainer's ``record_function``/NVTX ranges;
    written as Chrome-trace JSON (open it in https://ui.perfetto.dev). Returns the path."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU]
    if tr.cuda:
        acts.append(ProfilerActivity.CUDA)
    n = min(len(data), args.working_set * args.batch_size)
    tr.train_range(data, 0, n)                    # once untraced: the trace shows no warm-up
    tr.timer.synchronize()
    with profile(activities=acts) as prof:
        tr.train_range(data, 0, n)
        tr.timer.synchronize()
    prof.export_chrome_trace(str(path))
    log(f"profile of one working set: {path}")
    return str(path)


def capacity(args, device):
    """Hotline on a table larger than GPU memory; gpu-only must fail to allocate it."""
    if device.type != "cuda":
        return {"skipped": "no CUDA device"}
    release_memory(device)
    gpu_bytes = torch.cuda.get_device_properties(device).total_memory
    want = int(gpu_bytes * 1.08)
    # The table is the one big allocation (not pinned, filled in place); keep 8 GiB for the
    # rest (data, staging buffers, the hot table's host copy while it loads, the process).
    avail_gib = host_memory_gib("MemAvailable") or 0.0
    if want + 8 * 2**30 > avail_gib * 2**30:
        return {"skipped": f"available host memory {avail_gib} GiB cannot hold a table "
                           f"larger than the GPU's {gpu_bytes / 2**30:.0f} GiB "
                           f"({want / 2**30:.0f} GiB + 8 GiB)"}
    rows = want // (args.dim * 4)
    scale = rows / sum(CRITEO_KAGGLE_TABLE_SIZES)
    sizes = scaled_sizes(scale)
    total = sum(sizes)
    log(f"capacity: {total / 1e6:.0f} M rows x {args.dim} = {total * args.dim * 4 / 2**30:.1f} "
        f"GiB vs {gpu_bytes / 2**30:.1f} GiB of GPU memory")
    out = {"rows": total, "table_gib": total * args.dim * 4 / 2**30,
           "gpu_gib": gpu_bytes / 2**30}
    try:
        torch.empty(total, args.dim, dtype=torch.float32, device=device)
        out["gpu_only"] = "allocated (unexpected)"
    except torch.OutOfMemoryError as exc:
        out["gpu_only"] = f"cannot allocate: {str(exc).splitlines()[0][:160]}"
    torch.cuda.empty_cache()
    t = time.perf_counter()
    # Not pinned (the pinned allocator would round 86 GB up to 128 GiB) and filled in place.
    host_table = fill_uniform_(torch.empty(total, args.dim, dtype=torch.float32),
                               -0.01, 0.01, seed=args.seed)
    log(f"capacity: host table initialised in {time.perf_counter() - t:.1f} s")
    cal = calibrated(args, sizes)
    data = cal.generator.replace(stream=1).batch(args.capacity_batches * args.batch_size)
    try:
        res = run_mode("hotline", args, sizes, data, host_table, device)
    finally:
        del host_table
        release_memory(device)
    out.update(hotline_ms_per_step=res["ms_per_step"], counters=res.get("counters"),
               timings=res.get("timings"))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--table-scale", type=float, default=1.0,
                   help="multiply the Criteo Kaggle table sizes (1.0 = 33.8 M rows)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--working-set", type=int, default=4)
    p.add_argument("--hot-budget", type=int, default=2**21,
                   help="hot-table rows (EAL entries); default 2 M = 6.2 %% of 33.8 M rows")
    p.add_argument("--policy", default="srrip", choices=("srrip", "lfu"),
                   help="EAL policy of the hotline mode (docs/spec.md section 4)")
    p.add_argument("--target-popular", type=float, default=0.75)
    p.add_argument("--pool", type=int, default=64, help="mini-batches per epoch")
    p.add_argument("--sample-rate", type=float, default=0.125,
                   help="share of the first epoch's mini-batches the EAL learns from")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--gather-threads", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--capacity", action="store_true",
                   help="also train hotline on a table larger than GPU memory")
    p.add_argument("--capacity-batches", type=int, default=16)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 is faster on a busy 2-core VM)")
    p.add_argument("--results-dir", default=None, metavar="DIR",
                   help="also write the results to DIR/<date>-<device>.json (docs/results)")
    p.add_argument("--profile", default=None, metavar="PATH",
                   help="write a torch.profiler trace of one hotline working set (Perfetto)")
    p.add_argument("--no-warm-up", action="store_true",
                   help="skip the untimed warm-up of every mode on small tables")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: no CUDA device is available")
    modes_run = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes_run if m not in MODES]
    if bad or not modes_run:
        p.error(f"--modes {args.modes}: each must be one of {', '.join(MODES)}")
    sizes = scaled_sizes(args.table_scale)
    total = sum(sizes)
    if args.hot_budget > 0.10 * total:
        p.error(f"--hot-budget {args.hot_budget} exceeds 10 % of the {total} rows")
    env = environment(device)
    log(f"environment: {env}")
    log(f"tables: 26, {total / 1e6:.2f} M rows x {args.dim} ({total * args.dim * 4 / 2**30:.2f} "
        f"GiB); batch {args.batch_size}, working set {args.working_set}, hot budget "
        f"{args.hot_budget} ({100 * args.hot_budget / total:.1f} % of rows)")
    results = {"environment": env, "command": command_line(argv), "args": vars(args),
               "date": time.strftime("%Y-%m-%d"), "rows": total, "modes": {}}
    if not args.no_warm_up:
        results["warm_up_seconds"] = warm_up(args, device, modes_run)
        log(f"warm-up of {', '.join(modes_run)} on small tables: "
            f"{results['warm_up_seconds']:.1f} s (untimed)")
    data, cal = build_data(args, sizes)
    results["calibration"] = {"p_hot": cal.p_hot, "head_rows": cal.head_rows,
                              "oracle_share": cal.share}
    t = time.perf_counter()
    # One host table for all modes (gpu-only copies it to the device; hybrid and hotline
    # train it in place, so each mode starts where the previous one stopped -- same shapes
    # and access pattern, which is what the timings depend on). Not pinned: nothing DMAs
    # from it (copies go through the trainers' pinned staging buffers), and pinning would
    # lock a power-of-two-rounded 16 GiB for the rest of the process.
    host_table = fill_uniform_(torch.empty(total, args.dim, dtype=torch.float32),
                               -0.01, 0.01, seed=args.seed)
    log(f"host table ready ({time.perf_counter() - t:.1f} s)")
    out_file = results_path(args, env)
    for mode in modes_run:
        results["modes"][mode] = run_mode(mode, args, sizes, data, host_table, device,
                                          profile=args.profile)
        release_memory(device)
        write_json(out_file, results)   # after every mode: a killed run keeps what it measured
    add_ratios(results)
    del host_table
    release_memory(device)
    print_summary(results)
    if args.capacity:
        write_json(out_file, results)
        try:
            results["capacity"] = capacity(args, device)
        except Exception as exc:       # keep the main results and say what failed
            import traceback
            traceback.print_exc()
            results["capacity"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        cap = {k: v for k, v in results["capacity"].items() if k != "timings"}
        print(f"capacity: {cap}")
    write_json(out_file, results)
    if args.results_dir:
        print(f"results: {out_file}")
    return 0


def command_line(argv):
    """The command as run (for the results file)."""
    rest = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python -m sw_driver.bench_training", *rest])


def results_path(args, env):
    """``--json``, or ``--results-dir/<date>-<device>.json`` (the device name as
    ``torch.cuda.get_device_name`` prints it, made a file name), or ``None``."""
    if args.json:
        return args.json
    if not args.results_dir:
        return None
    name = env["device_name"] if env["device"].startswith("cuda") else "cpu"
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    os.makedirs(args.results_dir, exist_ok=True)
    return os.path.join(args.results_dir, f"{time.strftime('%Y-%m-%d')}-{slug}.json")


def add_ratios(results):
    """``hotline_vs_<mode>`` (steady state), ``epoch1_hotline_vs_<mode>`` (epoch 1 end to end)
    and ``epoch1_after_learning_hotline_vs_<mode>`` (epoch 1 after hotline's learning phase):
    the other mode's ms per mini-batch over hotline's (> 1: hotline is faster); the steady-state phase split
    and popular share of hotline."""
    modes = results["modes"]
    hl = modes.get("hotline")
    if not hl:
        return
    for other in ("gpu-only", "hybrid"):
        if other in modes:
            results[f"hotline_vs_{other}"] = modes[other]["ms_per_step"] / hl["ms_per_step"]
            results[f"epoch1_hotline_vs_{other}"] = (modes[other]["epoch1"]["ms_per_step"]
                                                    / hl["epoch1"]["ms_per_step"])
            results[f"epoch1_after_learning_hotline_vs_{other}"] = (
                modes[other]["epoch1"]["after_learning"]["ms_per_step"]
                / hl["epoch1"]["after_learning"]["ms_per_step"])
    c = hl.get("counters") or {}
    if c.get("inputs"):
        results["popular_share"] = c["popular_inputs"] / c["inputs"]
    results["hot_rows_share"] = hl.get("hot_rows", 0) / results["rows"]
    ws = hl["timings"].get("working_set")
    if ws:
        results["phase_split_ms"] = {k: v["mean_ms"] for k, v in ws["phases"].items()}


def write_json(path, results):
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1, default=str)


def print_summary(results):
    modes = results["modes"]
    env = results["environment"]
    print(f"\ndevice: {env['device_name']} ({env['device']}), torch {env['torch']}, "
          f"CUDA {env['cuda']}")
    if not env["device"].startswith("cuda"):
        print("on a CPU these figures say nothing about a GPU: MLPs, copies and gathers share "
              "the same cores")
    print("| mode | epoch 1 ms / mini-batch, end to end | epoch 1 after learning | "
          "steady ms / mini-batch | steady samples/s |")
    print("|---|---|---|---|---|")
    for name, r in modes.items():
        print(f"| {name} | {r['epoch1']['ms_per_step']:.2f} | "
              f"{r['epoch1']['after_learning']['ms_per_step']:.2f} | {r['ms_per_step']:.2f} | "
              f"{r['samples_per_s']:.0f} |")
    for key in ("hotline_vs_gpu-only", "hotline_vs_hybrid", "epoch1_hotline_vs_gpu-only",
                "epoch1_hotline_vs_hybrid", "epoch1_after_learning_hotline_vs_gpu-only",
                "epoch1_after_learning_hotline_vs_hybrid"):
        if key in results:
            print(f"{key}: {results[key]:.2f}x (>1 means hotline is faster)")
    hl = modes.get("hotline")
    if hl:
        e1 = hl["epoch1"]
        print(f"hotline learning: {e1['learn_seconds']:.2f} s of epoch 1's {e1['seconds']:.2f} s "
              f"({e1['learn_batches']} mini-batches trained the hybrid way; EAL "
              f"{e1['eal_learn_seconds']:.2f} s), freeze {e1['freeze_seconds']:.2f} s")
        c = hl.get("counters") or {}
        if c.get("inputs"):
            print(f"popular inputs {100 * c['popular_inputs'] / c['inputs']:.1f} %, hot rows "
                  f"{100 * results.get('hot_rows_share', 0):.2f} % of rows, cold rows per "
                  f"working set {c['cold_rows'] / max(1, c['working_sets']):.0f}")
        ws = hl["timings"].get("working_set")
        if ws:
            print("hotline working-set phases (mean ms): " + ", ".join(
                f"{k} {v['mean_ms']:.2f}" for k, v in ws["phases"].items()))


if __name__ == "__main__":
    sys.exit(main())

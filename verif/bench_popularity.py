"""How well each EAL policy finds the popular rows, against exact oracles (docs/benchmarks.md).

``python -m verif.bench_popularity`` learns on the first fraction ``f`` of a click log (time
order), freezes, and classifies the rest. For every data set, policy, capacity and fraction it
prints:

* ``rows``: popular rows at freeze (the hot table's occupancy);
* ``inputs``: the share of evaluation inputs whose every lookup is popular (what the speed-up
  depends on); ``lookups``: the share of evaluation lookups that hit;
* the same two for ``oracle`` (the K = entries most frequent keys of the learning part, exact
  counts, ties to the smaller key), ``set-oracle`` (the ``ways`` most frequent keys of each set
  of the learning part: the best any tracker of this geometry can keep) and ``clairvoyant``
  (the K most frequent keys of the evaluation part itself);
* ``vs oracle``: the policy's input share over the oracle's.

Data: the Criteo and Avazu samples of ``../shared/data`` (skipped with a note when absent) and
the synthetic generator with the Criteo Kaggle table sizes. ``--drift`` adds a run on a
drifting synthetic stream, learned once versus re-learned every window; ``--speed`` times
learning one 4096 x 26 mini-batch. ``--json`` writes everything measured.
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from hotline_spec.config import ASIC_CONFIG, EALConfig
from sw_driver.data import find_shared_data, read_avazu, read_criteo
from sw_driver.data.synthetic import criteo_kaggle_generator
from verif.golden import AccessLogger, hash_fields, sparse_keys

__all__ = ["CAPACITIES", "POLICIES", "Row", "evaluate", "oracle_keys", "set_oracle_keys",
           "learn_speed", "drift_run", "main"]

#: Capacity name -> geometry (4-way, as the paper's EAL). 2 M is the paper's ASIC EAL.
CAPACITIES = {
    "4K": EALConfig(banks=16, sets=64, ways=4),
    "4K-16w": EALConfig(banks=16, sets=16, ways=16),   # same entries, 16-way sets
    "64K": EALConfig(banks=64, sets=256, ways=4),
    "2M": ASIC_CONFIG,
}
#: Policy name -> EALConfig changes. srrip at threshold 1 is the paper's rule.
POLICIES = {"srrip": {"policy": "srrip"}, "lfu": {"policy": "lfu"}}


@dataclass
class Row:
    """One line of the table."""

    data: str
    capacity: str
    fraction: float
    policy: str
    rows: int
    inputs: float
    lookups: float
    oracle_inputs: float
    oracle_lookups: float
    set_oracle_inputs: float
    clairvoyant_inputs: float
    learn_s: float

    @property
    def vs_oracle(self):
        return self.inputs / self.oracle_inputs if self.oracle_inputs else float("nan")


def _shares(hit):
    """(input share, lookup share) of a bool ``[inputs, tables]`` hit matrix."""
    if hit.size == 0:
        return 0.0, 0.0
    return float(hit.all(1).mean()), float(hit.mean())


def oracle_keys(keys, k):
    """The ``k`` most frequent of ``keys`` (ties: the smaller key), sorted."""
    u, c = np.unique(keys, return_counts=True)
    return np.sort(u[np.argsort(-c, kind="stable")[:k]])


def set_oracle_keys(keys, cfg):
    """Per (bank, set) of ``cfg``, the ``ways`` most frequent keys (ties: smaller key)."""
    u, c = np.unique(keys, return_counts=True)
    bank, set_, _ = hash_fields(torch.from_numpy(u), cfg)
    flat = (bank * cfg.sets + set_).numpy()
    order = np.lexsort((u, -c, flat))               # by set, then count down, then key
    flat_sorted = flat[order]
    first = np.searchsorted(flat_sorted, flat_sorted, side="left")
    rank = np.arange(order.size) - first
    return np.sort(u[order[rank < cfg.ways]])


def _member(keys, chosen):
    if chosen.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(chosen, keys), chosen.size - 1)
    return chosen[pos] == keys


def evaluate(name, sparse, capacities, fractions, policies=POLICIES, out=print):
    """Rows of the table for one data set (``sparse`` int64 ``[inputs, tables]``)."""
    rows = []
    sparse = torch.as_tensor(sparse, dtype=torch.int64)
    for cap in capacities:
        base = CAPACITIES[cap]
        keys = sparse_keys(sparse, base).numpy()
        for f in fractions:
            n_learn = int(len(keys) * f)
            learn, held = keys[:n_learn], keys[n_learn:]
            k = base.entries
            o_in, o_lk = _shares(_member(held, oracle_keys(learn.reshape(-1), k)))
            s_in, _ = _shares(_member(held, set_oracle_keys(learn.reshape(-1), base)))
            c_in, _ = _shares(_member(held, oracle_keys(held.reshape(-1), k)))
            for pol, changes in policies.items():
                cfg = base.replace(**changes)
                eal = AccessLogger(cfg)
                t0 = time.perf_counter()
                eal.learn(torch.from_numpy(learn.reshape(-1)))
                learn_s = time.perf_counter() - t0
                hit = eal.lookup(torch.from_numpy(held)).hit.numpy()
                p_in, p_lk = _shares(hit)
                row = Row(name, cap, f, pol, int(eal.popular_mask().sum()), p_in, p_lk,
                          o_in, o_lk, s_in, c_in, learn_s)
                rows.append(row)
                out(_format(row))
    return rows


HEADER = (f"{'data':<10} {'cap':>6} {'f':>4} {'policy':<6} {'rows':>8} {'inputs':>7} "
          f"{'lookups':>7} | {'oracle':>7} {'o.look':>7} {'set-or':>7} {'clairv':>7} | "
          f"{'vs oracle':>9} {'learn s':>7}")


def _format(r):
    pct = lambda x: f"{100 * x:6.2f}%"
    return (f"{r.data:<10} {r.capacity:>6} {r.fraction:>4.0%} {r.policy:<6} {r.rows:>8} "
            f"{pct(r.inputs)} {pct(r.lookups)} | {pct(r.oracle_inputs)} "
            f"{pct(r.oracle_lookups)} {pct(r.set_oracle_inputs)} {pct(r.clairvoyant_inputs)} | "
            f"{r.vs_oracle:9.2f} {r.learn_s:7.2f}")


def drift_run(capacity, windows, window_inputs, fraction, drift_shift, seed=0, out=print):
    """A drifting synthetic stream (the ranking moves ``drift_shift`` ranks per window):
    per policy, the popular-input share of every window when the EAL learned once on the
    first window, and when it re-learns (clear, learn the window's first ``fraction``)."""
    gen = criteo_kaggle_generator(p_hot=0.75, seed=seed, drift_every=window_inputs,
                                  drift_shift=drift_shift)
    base = CAPACITIES[capacity]
    stream = [sparse_keys(torch.from_numpy(gen.sparse(window_inputs)), base)
              for _ in range(windows)]
    n_learn = int(window_inputs * fraction)
    results = {}
    for pol, changes in POLICIES.items():
        cfg = base.replace(**changes)
        once, again = AccessLogger(cfg), AccessLogger(cfg)
        once.learn(stream[0][:n_learn].reshape(-1))
        per = {"learned once": [], "re-learned": []}
        for w, keys in enumerate(stream):
            held = keys[n_learn:]
            again.clear()
            again.learn(keys[:n_learn].reshape(-1))
            per["learned once"].append(_shares(once.lookup(held).hit.numpy())[0])
            per["re-learned"].append(_shares(again.lookup(held).hit.numpy())[0])
        results[pol] = per
        for how, shares in per.items():
            out(f"drift {capacity} {pol:<6} {how:<13} " +
                " ".join(f"{100 * x:5.1f}%" for x in shares))
    return results


def learn_speed(batch=4096, repeats=5, out=print):
    """Learning speed of the golden model: one ``batch`` x 26 mini-batch (the Criteo sample's
    first rows, or synthetic when it is absent) learned into a fresh default-geometry EAL by
    the compiled learner (best of ``repeats``, after one warm-up) and by the Python reference;
    hashing included. Returns ``{policy: {"compiled_ms", "reference_ms", "keys"}}``."""
    sparse = _real_data("criteo")
    what = "Criteo sample"
    if sparse is None or len(sparse) < batch:
        sparse, what = torch.from_numpy(criteo_kaggle_generator(p_hot=0.75).sparse(batch)), \
            "synthetic"
    sparse = torch.as_tensor(sparse[:batch])
    results = {}
    for pol, changes in POLICIES.items():
        cfg = CAPACITIES["4K"].replace(**changes)
        keys = sparse_keys(sparse, cfg).reshape(-1)
        AccessLogger(cfg).learn(keys)                      # compile / load the kernel
        best = float("inf")
        for _ in range(repeats):
            eal = AccessLogger(cfg)
            t0 = time.perf_counter()
            eal.learn(keys)
            best = min(best, time.perf_counter() - t0)
        eal = AccessLogger(cfg)
        t0 = time.perf_counter()
        eal.learn(keys, reference=True)
        ref = time.perf_counter() - t0
        results[pol] = {"compiled_ms": 1e3 * best, "reference_ms": 1e3 * ref,
                        "keys": keys.numel()}
        out(f"learn speed {what} {batch}x{sparse.shape[1]} {pol:<6} compiled {1e3 * best:7.2f} ms "
            f"({keys.numel() / best / 1e6:6.1f} M keys/s)  reference {1e3 * ref:7.1f} ms "
            f"({keys.numel() / ref / 1e6:5.2f} M keys/s)")
    return results


def _real_data(name):
    root = find_shared_data({"criteo": "criteo_kaggle_8k", "avazu": "avazu_9k"}[name])
    if root is None:
        return None
    return (read_criteo(root) if name == "criteo" else read_avazu(root)).sparse


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m verif.bench_popularity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fractions", default="0.05,0.2", help="learning fractions (default %(default)s)")
    p.add_argument("--synthetic-inputs", type=int, default=400_000,
                   help="synthetic inputs (Criteo Kaggle table sizes, p_hot 0.75)")
    p.add_argument("--data", default="criteo,avazu,synthetic",
                   help="comma-separated: criteo, avazu, synthetic (default %(default)s)")
    p.add_argument("--capacities", default="4K,4K-16w,64K",
                   help="capacities for the real samples (default %(default)s)")
    p.add_argument("--synthetic-capacities", default="4K,4K-16w,64K,2M",
                   help="capacities for synthetic data (default %(default)s)")
    p.add_argument("--drift", action="store_true", help="also run the drift experiment")
    p.add_argument("--drift-windows", type=int, default=6)
    p.add_argument("--drift-inputs", type=int, default=50_000, help="inputs per window")
    p.add_argument("--drift-shift", type=int, default=16, help="ranks moved per window")
    p.add_argument("--speed", action="store_true",
                   help="also time learning a 4096 x 26 mini-batch (compiled vs reference)")
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args(argv)
    try:
        fractions = [float(x) for x in args.fractions.split(",")]
        if not all(0 < f < 1 for f in fractions):
            raise ValueError
    except ValueError:
        p.error(f"--fractions: expected numbers in (0, 1), got {args.fractions!r}")
    caps, syn_caps = args.capacities.split(","), args.synthetic_capacities.split(",")
    bad = [c for c in caps + syn_caps if c not in CAPACITIES]
    if bad:
        p.error(f"capacity {bad[0]!r} unknown, expected some of {', '.join(CAPACITIES)}")
    sets = args.data.split(",")
    bad = [d for d in sets if d not in ("criteo", "avazu", "synthetic")]
    if bad:
        p.error(f"--data: unknown {bad[0]!r}, expected criteo, avazu or synthetic")
    if args.synthetic_inputs < 100:
        p.error("--synthetic-inputs must be >= 100")
    if args.drift and (args.drift_windows < 1 or args.drift_inputs < 100 or args.drift_shift < 1):
        p.error("--drift-windows must be >= 1, --drift-inputs >= 100, --drift-shift >= 1")
    print(HEADER)
    rows = []
    for name in sets:
        if name == "synthetic":
            sparse = criteo_kaggle_generator(p_hot=0.75).sparse(args.synthetic_inputs)
            rows += evaluate("synthetic", sparse, syn_caps, fractions)
            continue
        sparse = _real_data(name)
        if sparse is None:
            print(f"{name}: sample not found under ../shared/data; skipped")
            continue
        rows += evaluate(name, sparse, caps, fractions)
    drift = None
    if args.drift:
        drift = drift_run("64K", args.drift_windows, args.drift_inputs, 0.05, args.drift_shift)
    speed = learn_speed() if args.speed else None
    worst = min((r.vs_oracle for r in rows if r.policy == "lfu"), default=float("nan"))
    print(f"lfu / oracle, worst row: {worst:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "rows": [dict(r.__dict__,
                       vs_oracle=r.vs_oracle) for r in rows], "drift": drift, "learn_speed": speed},
                      f, indent=1)
    return rows


if __name__ == "__main__":
    main()

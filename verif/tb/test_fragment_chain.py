"""cocotb testbench: the fragment chain (lookup engine -> classifier -> fragmenter) against
the golden model's ``fragment_stream``.

A case (written by :func:`verif.tb.runner.run_fragment_case`) names the configuration, a
learn sample and jobs (input matrices ``[n, n_tables]`` with a working-set size). Every
element of every output stream -- remapped lookups, cold rows, popular and non-popular
input indices, and the per-working-set summary -- is compared with the golden schedule of
its working set. Stimulus: idle cycles on ``keys``, random ``ready`` on every output stream
independently, holes in key beats. Inputs change on the falling edge; handshakes are
sampled in the read-only phase before the next rising edge.
"""

import json
import os
import random

import numpy as np
import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from hotline_spec.config import FRAGMENTER_CONFIGS, FragmenterConfig, EALConfig
from hotline_hw.fragmenter.layouts import (cold_lane, index_lane, remap_lane, summary_layout)
from hotline_hw.layouts import lookup_lane
from verif.golden import AccessLogger, fragment_stream, sparse_keys
from verif.tb.fragment_ports import LaneCodec, StructCodec

MAX_REPORTED = 8
STREAMS = ("remapped", "cold", "popular", "non_popular", "summary")


def load_config(spec):
    """A FragmenterConfig from the case: a named one, or its fields (with an ``eal`` dict)."""
    if isinstance(spec, str):
        return FRAGMENTER_CONFIGS[spec]
    spec = dict(spec)
    return FragmenterConfig(eal=EALConfig(**spec.pop("eal")), **spec)


class FragmentChainBench:
    """Drives the chain's streams and controls, and checks it against the golden model."""

    def __init__(self, dut, case):
        self.dut = dut
        self.fcfg = load_config(case["config"])
        self.cfg = self.fcfg.eal
        self.rng = random.Random(case["seed"])
        self.idle_prob = case.get("idle_prob", 0.0)
        self.stall_prob = case.get("stall_prob", 0.0)
        self.hole_prob = case.get("hole_prob", 0.0)
        self.keys_codec = LaneCodec(lookup_lane(self.cfg), self.cfg.lanes)
        self.codecs = {"remapped": (LaneCodec(remap_lane(self.fcfg), self.cfg.lanes), "index"),
                       "cold": (LaneCodec(cold_lane(self.fcfg), self.cfg.lanes), "key"),
                       "popular": (LaneCodec(index_lane(self.fcfg), self.cfg.lanes), "index"),
                       "non_popular": (LaneCodec(index_lane(self.fcfg), self.cfg.lanes), "index")}
        self.summary_codec = StructCodec(summary_layout(self.fcfg))
        self.golden = AccessLogger(self.cfg)
        self.mismatches = 0
        self.first_mismatches = []
        self.compared = 0
        self.cycle = 0

    def mismatch(self, what):
        self.mismatches += 1
        if len(self.first_mismatches) < MAX_REPORTED:
            self.first_mismatches.append(what)
            self.dut._log.error(what)

    async def next_cycle(self):
        await FallingEdge(self.dut.clk)
        self.cycle += 1

    async def reset(self):
        dut = self.dut
        dut.keys__valid.value = 0
        for s in STREAMS + ("dump",):
            getattr(dut, f"{s}__ready").value = 0
        for name in ("clear", "start_dump", "learn", "start"):
            getattr(dut, name).value = 0
        dut.rst.value = 1
        for _ in range(3):
            await self.next_cycle()
        dut.rst.value = 0
        await self.wait_idle()

    async def wait_idle(self, limit=200_000):
        """Until ``busy`` is low; a mismatch (and no hang) when it stays high ``limit`` cycles."""
        for _ in range(limit):
            await ReadOnly()
            if not int(self.dut.busy.value):
                break
            await self.next_cycle()
        else:
            self.mismatch(f"busy still high after {limit} cycles")
            raise AssertionError(f"busy stuck: {self.first_mismatches}")
        await self.next_cycle()

    def beats(self, keys):
        """Key beats with random holes (a hole carries a random key that must be ignored)."""
        lanes, out, i = self.cfg.lanes, [], 0
        while i < len(keys):
            lane_values = []
            for _ in range(lanes):
                if i < len(keys) and not (self.hole_prob and self.rng.random() < self.hole_prob):
                    lane_values.append({"valid": 1, "key": keys[i]})
                    i += 1
                else:
                    lane_values.append({"valid": 0, "key": self.rng.getrandbits(self.cfg.key_bits)})
            out.append(self.keys_codec.pack(lane_values))
        return out

    async def learn(self, keys):
        """Learn mode: keys through the engine, results dropped by the chain."""
        keys = [int(k) for k in keys]
        self.golden.learn(torch.tensor(keys, dtype=torch.int64))
        self.dut.learn.value = 1
        await self.next_cycle()
        await self.send_only(self.beats(keys))
        await self.wait_idle()
        self.dut.learn.value = 0
        await self.next_cycle()

    async def send_only(self, beats):
        dut, sent = self.dut, 0
        while sent < len(beats):
            dut.keys__valid.value = 1
            dut.keys__payload.value = beats[sent]
            await ReadOnly()
            if int(dut.keys__ready.value):
                sent += 1
            await self.next_cycle()
        dut.keys__valid.value = 0

    async def bad_start(self, n_tables, ws_inputs, total):
        """A refused start: ``error`` rises, ``busy`` stays low."""
        dut = self.dut
        dut.n_tables.value, dut.ws_inputs.value, dut.total_inputs.value = n_tables, ws_inputs, total
        dut.start.value = 1
        await self.next_cycle()
        dut.start.value = 0
        await ReadOnly()
        if not int(dut.error.value) or int(dut.busy.value):
            self.mismatch(f"start({n_tables}, {ws_inputs}, {total}) was not refused "
                          f"(error {int(dut.error.value)}, busy {int(dut.busy.value)})")
        await self.next_cycle()

    async def job(self, sparse, ws_inputs, threshold):
        """One job: all of ``sparse``'s inputs, in working sets of ``ws_inputs``."""
        dut, fcfg, rng = self.dut, self.fcfg, self.rng
        n, n_tables = sparse.shape
        expected = fragment_stream(sparse, self.golden, 1, ws_inputs, fcfg, threshold)
        keys = sparse_keys(sparse, self.cfg).reshape(-1).tolist()
        beats = self.beats(keys)
        dut.popular_max_rrpv.value = threshold
        dut.n_tables.value, dut.ws_inputs.value, dut.total_inputs.value = n_tables, ws_inputs, n
        counters_before = {c: int(getattr(dut, c).value) for c in COUNTER_NAMES}
        dut.start.value = 1
        await self.next_cycle()
        dut.start.value = 0
        got = {s: [] for s in STREAMS}
        sent, holding = 0, False
        first_cycle = last_cycle = last_key_cycle = None
        summary_cycles = []
        inputs_done = 0
        limit = self.cycle + 50 * len(beats) + 20_000
        ports = {s: (getattr(dut, f"{s}__valid"), getattr(dut, f"{s}__ready"),
                     getattr(dut, f"{s}__payload")) for s in STREAMS}
        want = None
        while True:
            if not holding:
                offer = sent < len(beats) and not (self.idle_prob and rng.random() < self.idle_prob)
                dut.keys__valid.value = int(offer)
                if offer:
                    dut.keys__payload.value = beats[sent]
                holding = offer
            readies = {}
            for s in STREAMS:
                readies[s] = not (self.stall_prob and rng.random() < self.stall_prob)
                ports[s][1].value = int(readies[s])
            await ReadOnly()
            if holding and int(dut.keys__ready.value):
                if first_cycle is None:
                    first_cycle = self.cycle
                sent += 1
                holding = False
                if sent == len(beats):
                    last_key_cycle = self.cycle
            for s in STREAMS:
                valid, _, payload = ports[s]
                if readies[s] and int(valid.value):
                    value = int(payload.value)
                    if s == "summary":
                        rec = self.summary_codec.unpack(value)
                        got[s].append(rec)
                        inputs_done += rec["n_inputs"]
                        last_cycle = self.cycle
                        summary_cycles.append(self.cycle - first_cycle + 1)
                    else:
                        codec, field = self.codecs[s]
                        got[s].extend(codec.valid_values(value, field))
            await self.next_cycle()
            if inputs_done >= n:
                sums = {k: sum(r[k] for r in got["summary"]) for k in
                        ("n_lookups", "n_cold", "n_popular", "n_inputs")}
                want = {"remapped": sums["n_lookups"], "cold": sums["n_cold"],
                        "popular": sums["n_popular"],
                        "non_popular": sums["n_inputs"] - sums["n_popular"]}
                if all(len(got[s]) >= want[s] for s in want):
                    break
            if self.cycle > limit:
                self.mismatch(f"job of {n} inputs: timed out with {inputs_done} inputs "
                              f"summarised, {sent}/{len(beats)} key beats sent")
                break
        dut.keys__valid.value = 0
        # Nothing more may come out: a few cycles with every stream ready.
        for s in STREAMS:
            ports[s][1].value = 1
        for _ in range(8):
            await ReadOnly()
            for s in STREAMS:
                if int(ports[s][0].value):
                    self.mismatch(f"{s}: an extra beat after the job")
            await self.next_cycle()
        for s in STREAMS:
            ports[s][1].value = 0
        await self.wait_idle()
        self.check(expected, got)
        counters = {c: int(getattr(dut, c).value) - counters_before[c] for c in COUNTER_NAMES}
        if int(dut.error.value):
            self.mismatch("error is set after a good job")
        return {"inputs": n, "n_tables": n_tables, "ws_inputs": ws_inputs,
                "lookups": len(keys), "cycles": (last_cycle - first_cycle + 1) if first_cycle else 0,
                "summary_cycles": summary_cycles,
                "drain_cycles": (last_cycle - last_key_cycle) if last_key_cycle else None,
                "working_sets": len(expected),
                "early_ends": sum(1 for _, s in expected if s.ended_early),
                "golden_cold": [s.n_cold for _, s in expected],
                "golden_popular": [s.n_popular for _, s in expected],
                "counters": counters}

    def check(self, expected, got):
        """Split each stream by the golden working sets and compare element by element."""
        offsets = {s: 0 for s in STREAMS}
        if len(got["summary"]) != len(expected):
            self.mismatch(f"{len(got['summary'])} working sets, golden {len(expected)}: "
                          f"RTL sizes {[r['n_inputs'] for r in got['summary']]}, golden "
                          f"{[s.n_inputs for _, s in expected]}")
        for w, (start, s) in enumerate(expected):
            want = {
                "remapped": s.remapped.reshape(-1).tolist(),
                "cold": s.cold_keys.tolist(),
                "popular": torch.cat(s.popular_micro_batches).tolist() if s.popular_micro_batches else [],
                "non_popular": s.non_popular.tolist(),
            }
            for name, values in want.items():
                seen = got[name][offsets[name]:offsets[name] + len(values)]
                offsets[name] += len(values)
                self.compared += len(values)
                if seen != values:
                    bad = next((i for i, (a, b) in enumerate(zip(seen, values)) if a != b),
                               min(len(seen), len(values)))
                    self.mismatch(f"working set {w} (inputs {start}..): {name}[{bad}] RTL "
                                  f"{seen[bad:bad + 4]} != golden {values[bad:bad + 4]} "
                                  f"({len(seen)} vs {len(values)} elements)")
            summary = {"n_inputs": s.n_inputs, "n_popular": s.n_popular, "n_cold": s.n_cold,
                       "n_hits": s.n_hits, "n_lookups": s.n_lookups,
                       "ended_early": int(s.ended_early)}
            if w < len(got["summary"]) and got["summary"][w] != summary:
                self.mismatch(f"working set {w}: summary RTL {got['summary'][w]} != golden {summary}")
        for name in ("remapped", "cold", "popular", "non_popular"):
            if len(got[name]) != offsets[name]:
                self.mismatch(f"{name}: {len(got[name])} elements, golden {offsets[name]}")


COUNTER_NAMES = ("working_sets", "early_ends", "run_cycles", "stall_bank", "stall_probe",
                 "stall_output", "stall_input")


@cocotb.test()
async def run_case(dut):
    """Plays the case named by HOTLINE_CASE and writes its report."""
    with open(os.environ["HOTLINE_CASE"]) as f:
        case = json.load(f)
    bench = FragmentChainBench(dut, case)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await bench.reset()
    results = []
    if case.get("learn"):
        await bench.learn(np.load(case["learn"]).tolist())
    for bad in case.get("bad_starts", []):
        await bench.bad_start(*bad)
    for job in case["jobs"]:
        sparse = torch.as_tensor(np.load(job["sparse"]), dtype=torch.int64)
        threshold = job.get("popular_max_rrpv", bench.cfg.popular_max_rrpv)
        results.append(await bench.job(sparse, job["ws_inputs"], threshold))
    report = {"jobs": results, "mismatches": bench.mismatches, "compared": bench.compared,
              "first_mismatches": bench.first_mismatches, "total_cycles": bench.cycle}
    with open(case["report"], "w") as f:
        json.dump(report, f)
    assert bench.mismatches == 0, f"{bench.mismatches} mismatches; first: {bench.first_mismatches}"

"""cocotb testbench: plays a scenario (see :mod:`verif.tb.runner`) on the lookup engine RTL.

Every result beat, every dump beat and the mode sequence are checked against the golden
model (:class:`verif.golden.AccessLogger`). Stimulus knobs: ``idle_prob`` (cycles with
``lookups.valid`` low), ``stall_prob`` (cycles with ``results.ready`` / ``dump.ready`` low),
``hole_prob`` (lanes sent with ``valid = 0`` and a random key that must be ignored).
Inputs change on the falling edge; handshakes are sampled in the read-only phase before the
next rising edge, where a transfer takes place.
"""

import json
import os
import random

import numpy as np
import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from hotline_hw.config import EALConfig
from verif.golden import AccessLogger
from verif.tb.ports import PortCodec

MAX_REPORTED = 5


class LookupEngineBench:
    """Drives the DUT's streams and commands and keeps the golden model in step."""

    def __init__(self, dut, scenario):
        self.dut = dut
        self.cfg = EALConfig(**scenario["config"])
        self.codec = PortCodec(self.cfg)
        self.golden = AccessLogger(self.cfg)
        self.rng = random.Random(scenario["seed"])
        self.idle_prob = scenario["idle_prob"]
        self.stall_prob = scenario["stall_prob"]
        self.hole_prob = scenario["hole_prob"]
        self.mismatches = 0
        self.compared = 0  # result and dump beats checked
        self.first_mismatches = []
        self.cycle = 0

    def mismatch(self, what):
        self.mismatches += 1
        if len(self.first_mismatches) < MAX_REPORTED:
            self.first_mismatches.append(what)
            self.dut._log.error(what)

    async def next_cycle(self):
        """Advance to the falling edge, where inputs may change."""
        await FallingEdge(self.dut.clk)
        self.cycle += 1

    async def reset(self):
        dut = self.dut
        dut.lookups__valid.value = 0
        dut.results__ready.value = 0
        dut.dump__ready.value = 0
        dut.clear.value = 0
        dut.start_dump.value = 0
        dut.learn.value = 0
        dut.rst.value = 1
        for _ in range(3):
            await self.next_cycle()
        dut.rst.value = 0
        await self.next_cycle()

    async def wait_idle(self):
        while True:
            await ReadOnly()
            if not int(self.dut.busy.value):
                break
            await self.next_cycle()
        await self.next_cycle()

    def beats_for(self, keys):
        """Packs keys into lookup beats, inserting random holes; returns beats and the keys'
        lane positions so the expected result beats can be built."""
        lanes = self.cfg.lanes
        beats, layout = [], []
        i = 0
        while i < len(keys):
            lane_values, lane_keys = [], []
            for _ in range(lanes):
                if i < len(keys) and not (self.hole_prob and self.rng.random() < self.hole_prob):
                    lane_values.append((1, keys[i]))
                    lane_keys.append(i)
                    i += 1
                else:
                    lane_values.append((0, self.rng.getrandbits(self.cfg.key_bits)))
                    lane_keys.append(None)
            beats.append(self.codec.pack_lookups(lane_values))
            layout.append(lane_keys)
        return beats, layout

    async def run_lookups(self, keys, learn, popular_max_rrpv):
        """Sends ``keys`` through the RTL in one mode and checks every result beat."""
        dut, codec = self.dut, self.codec
        keys = [int(k) for k in keys]
        if learn:
            expected = self.golden.learn(torch.tensor(keys, dtype=torch.int64))
        elif self.cfg.policy == "srrip":
            expected = self.golden.lookup(torch.tensor(keys, dtype=torch.int64),
                                          popular_max_rrpv=popular_max_rrpv)
        else:       # lfu: the threshold is the elaboration parameter popular_min_count
            expected = self.golden.lookup(torch.tensor(keys, dtype=torch.int64))
        hits, slots = expected.hit.tolist(), expected.slot.tolist()
        beats, layout = self.beats_for(keys)
        expected_beats = [codec.pack_results([(1, hits[k], slots[k]) if k is not None
                                              else (0, 0, 0) for k in lanes])
                          for lanes in layout]
        dut.learn.value = int(learn)
        dut.popular_max_rrpv.value = popular_max_rrpv
        await self.next_cycle()
        sent = received = 0
        holding = False
        first_cycle = last_cycle = None
        n = len(beats)
        lookups_valid, lookups_ready = dut.lookups__valid, dut.lookups__ready
        lookups_payload = dut.lookups__payload
        results_valid, results_ready = dut.results__valid, dut.results__ready
        results_payload = dut.results__payload
        rng = self.rng
        rtl_hits = []
        while received < n:
            if not holding:
                offer = sent < n and not (self.idle_prob and rng.random() < self.idle_prob)
                lookups_valid.value = int(offer)
                if offer:
                    lookups_payload.value = beats[sent]
                holding = offer
            ready = not (self.stall_prob and rng.random() < self.stall_prob)
            results_ready.value = int(ready)
            await ReadOnly()
            if holding and int(lookups_ready.value):
                if first_cycle is None:
                    first_cycle = self.cycle
                sent += 1
                holding = False
            if ready and int(results_valid.value):
                got = int(results_payload.value)
                rtl_hits.extend(hit for valid, hit, _ in codec.unpack_results(got) if valid)
                if got != expected_beats[received]:
                    self.mismatch(f"{'learn' if learn else 'frozen'} beat {received}: RTL "
                                  f"{codec.unpack_results(got)} != golden "
                                  f"{codec.unpack_results(expected_beats[received])}")
                received += 1
                last_cycle = self.cycle
            await self.next_cycle()
        lookups_valid.value = 0
        results_ready.value = 0
        cycles = (last_cycle - first_cycle + 1) if n else 0
        self.compared += n
        return {"op": "learn" if learn else "frozen", "lookups": len(keys), "beats": n,
                "cycles": cycles, "golden_hits": int(sum(hits)), "rtl_hits": rtl_hits}

    async def pulse(self, signal):
        signal.value = 1
        await self.next_cycle()
        signal.value = 0

    async def run_dump(self):
        """Reads the whole tag store through ``dump`` and compares it with the golden model."""
        dut, codec = self.dut, self.codec
        expected = self.golden.dump()
        await self.pulse(dut.start_dump)
        got = []
        started = self.cycle
        while len(got) < len(expected):
            ready = not (self.stall_prob and self.rng.random() < self.stall_prob)
            dut.dump__ready.value = int(ready)
            await ReadOnly()
            if ready and int(dut.dump__valid.value):
                got.append(codec.unpack_dump(int(dut.dump__payload.value)))
            await self.next_cycle()
            if self.cycle - started > 4 * len(expected) + 100 and not got:
                self.mismatch("dump: no beat within the expected time")
                break
        dut.dump__ready.value = 0
        self.compared += len(expected)
        if len(got) != len(expected):
            self.mismatch(f"dump: {len(got)} beats, expected {len(expected)}")
        for i, (g, e) in enumerate(zip(got, expected)):
            if (g[0], g[1], tuple(g[2]), g[3]) != (e.bank, e.set, tuple(tuple(w) for w in e.ways),
                                                     e.sketch):
                self.mismatch(f"dump beat {i}: RTL {g} != golden {tuple(e)}")
        await self.wait_idle()
        cfg = self.cfg
        popular = sum(1 for g in got for v, r, _ in g[2]
                      if v and (r <= cfg.popular_max_rrpv if cfg.policy == "srrip"
                                else r >= cfg.popular_min_count))
        return {"op": "dump", "beats": len(got), "cycles": self.cycle - started,
                "valid_entries": sum(v for g in got for v, _, _ in g[2]),
                "popular_entries_at_default_threshold": popular}

    async def run_clear(self):
        started = self.cycle
        await self.pulse(self.dut.clear)
        await self.wait_idle()
        self.golden.clear()
        return {"op": "clear", "cycles": self.cycle - started}


@cocotb.test()
async def run_scenario(dut):
    """Plays the scenario named by HOTLINE_SCENARIO and writes its report."""
    with open(os.environ["HOTLINE_SCENARIO"]) as f:
        scenario = json.load(f)
    bench = LookupEngineBench(dut, scenario)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await bench.reset()
    phases = []
    for index, phase in enumerate(scenario["phases"]):
        op = phase["op"]
        if op in ("learn", "frozen"):
            keys = np.load(phase["keys"]).tolist()
            threshold = phase.get("popular_max_rrpv", bench.cfg.popular_max_rrpv)
            result = await bench.run_lookups(keys, op == "learn", threshold)
            # The RTL's own hit flags, in key order, for reports (e.g. popular inputs).
            hits_file = os.path.join(os.path.dirname(scenario["report"]),
                                     f"phase{index}_rtl_hits.npy")
            np.save(hits_file, np.asarray(result.pop("rtl_hits"), dtype=np.bool_))
            result["rtl_hits_file"] = hits_file
            await bench.wait_idle()
        elif op == "dump":
            result = await bench.run_dump()
        elif op == "clear":
            result = await bench.run_clear()
        else:
            raise ValueError(f"unknown scenario phase {op!r}")
        phases.append(result)
    report = {"phases": phases, "mismatches": bench.mismatches, "compared": bench.compared,
              "first_mismatches": bench.first_mismatches, "total_cycles": bench.cycle}
    with open(scenario["report"], "w") as f:
        json.dump(report, f)
    assert bench.mismatches == 0, f"{bench.mismatches} mismatches; first: {bench.first_mismatches}"

"""cocotb testbench: plays a scenario (see :mod:`verif.tb.runner`) on the lookup engine RTL.

The bench talks only to the ports of docs/spec.md section 8, so a redesigned engine reuses it.
It checks three things, and every failed check is a *mismatch* with a message (the report's
``first_mismatches``, which :func:`verif.tb.runner.run_scenario` puts into the pytest failure):

* **Data.** Every result beat and every dump beat equals the golden model
  (:class:`verif.golden.AccessLogger`), which ignores commands pulsed while ``busy`` is high.
* **Protocol** (:class:`ProtocolMonitor`, every cycle, independent of the stimulus): on
  ``lookups``, ``results`` and ``dump`` a valid beat stays valid with a stable payload until
  it is transferred; no result beat without an outstanding lookup beat, no dump beat without
  a taken ``start_dump``; ``busy`` high while lookup beats are in flight or dump beats are due;
  ``lookups.ready`` low while a clear or dump runs.
* **Progress** (:class:`Budgets`): every wait -- for a result beat, for ``lookups.ready``, for
  a dump beat, for ``busy`` to fall -- has a cycle limit derived from the configuration and
  the stimulus; a deadlocked engine fails the test with a message naming the wait.

Stimulus knobs: ``idle_prob`` (cycles with ``lookups.valid`` low), ``stall_prob`` (cycles with
``results.ready`` / ``dump.ready`` low), ``hole_prob`` (lanes with ``valid = 0`` and a random
key that must be ignored); per phase (:func:`verif.tb.runner.run_scenario`):
``commands_while_busy`` (pulse ``clear`` / ``start_dump`` at random in cycles where ``busy`` is
high: they must be ignored), ``offer_during`` (start the lookup phase with a clear or dump and
offer its first beat while it runs: it must wait, and then be processed), and
``reset_after_beats`` (assert reset with lookups in flight; the store must read all-zero).

Timing: inputs change at the falling edge; handshakes are sampled in the read-only phase
before the next rising edge, where a transfer takes place. ``busy`` is read at the falling
edge (it reflects the engine's registered state), and each phase starts in the first cycle in
which it is low: mode and threshold change, a command arrives or the first lookup beat is
offered at the earliest moment the spec allows.
"""

import json
import math
import os
import random

import numpy as np
import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from hotline_spec.config import EALConfig
from verif.golden import AccessLogger
from verif.tb.ports import PortCodec

MAX_REPORTED = 5
RESET_CYCLES = 3


class BenchFailure(Exception):
    """A check failed in a way that leaves the rest of the scenario meaningless (a deadlock,
    a lookup accepted while it must not be): the scenario stops here."""


class Budgets:
    """Cycle limits of the bench's waits, derived from the configuration and the stimulus.

    They catch deadlocks, not slowness: each is several times what the engine needs
    (latency and throughput are not part of the contract). ``latency`` bounds one lookup
    beat's trip through an engine whose switch, queues and beats in flight are all full of
    lookups to one bank;
    ``slow_in`` / ``slow_out`` are the factors by which random idle / back-pressure cycles
    stretch a stream; ``scale`` stretches every limit (a deeper pipeline, a slower engine).
    """

    def __init__(self, cfg: EALConfig, idle_prob: float, stall_prob: float, scale: float = 1.0):
        self.cfg = cfg
        self.scale = scale
        self.latency = 100 + 10 * (cfg.hash_rounds + cfg.queue_depth
                                   + (cfg.dispatch_beats + cfg.beats_in_flight
                                      + cfg.release_beats) * cfg.lanes)
        self.slow_in = 1.0 / (1.0 - min(idle_prob, 0.95))
        self.slow_out = 1.0 / (1.0 - min(stall_prob, 0.95))

    def _cycles(self, x):
        return int(math.ceil(x * self.scale))

    @property
    def result(self):
        """Cycles between result transfers while lookup beats are outstanding."""
        return self._cycles(4 * self.latency * self.slow_out)

    @property
    def accept(self):
        """Cycles a lookup beat may wait for ``lookups.ready`` outside a clear or dump (the
        beats in flight drain through ``results``)."""
        return self._cycles(4 * self.latency * self.slow_out)

    @property
    def idle(self):
        """Cycles for ``busy`` to fall after the last result or dump beat."""
        return self._cycles(self.latency)

    def maintenance(self, kind):
        """Cycles a clear (also the one after reset) or a whole dump may take."""
        cfg = self.cfg
        if kind == "dump":
            return self._cycles(self.latency + 4 * (cfg.banks + 1) * cfg.sets * self.slow_out)
        return self._cycles(self.latency + 4 * cfg.sets)

    @property
    def dump_beat(self):
        """Cycles between dump beats (and from ``start_dump`` to the first one)."""
        return self._cycles(self.latency * self.slow_out)

    def phase(self, beats):
        """An upper bound of a whole phase: the scenario's overall deadline is their sum."""
        total = self.idle + self.maintenance("clear") + self.maintenance("dump")
        return total + self._cycles(4 * beats * (self.cfg.lanes + 1) * self.slow_in
                                    * self.slow_out) + self.result


class ProtocolMonitor:
    """Checks the port rules of docs/spec.md section 8 in every cycle, whatever the stimulus.

    Streams (``lookups``, ``results``, ``dump``): once ``valid`` is high it stays high, with
    the same payload, until the cycle with ``ready`` high. Beats: a result beat only while a
    lookup beat is outstanding (transfers on ``lookups`` minus transfers on ``results``), a
    dump beat only while beats of a taken ``start_dump`` are due (``banks * sets``). Commands
    are *taken* in a cycle where ``busy`` is low. ``busy`` must be high while a lookup beat is
    in flight, while dump beats are due, and in the cycle after a clear is taken;
    ``lookups.ready`` must be low while a clear or dump runs (from the cycle after the
    command, or after reset, until ``busy`` falls). Reset clears the monitor's state.
    Violations are reported through ``report(message)``. The bench calls :meth:`sample` in
    the read-only phase of every cycle (one scheduling point per cycle for both: a separate
    coroutine would cost two more triggers per cycle).
    """

    def __init__(self, dut, cfg: EALConfig, codec: PortCodec, report):
        self.dut = dut
        self.cfg = cfg
        self.report = report
        self.dump_beats = cfg.banks * cfg.sets
        self.streams = [
            ("lookups", dut.lookups__valid, dut.lookups__ready, dut.lookups__payload,
             codec.unpack_lookups),
            ("results", dut.results__valid, dut.results__ready, dut.results__payload,
             codec.unpack_results),
            ("dump", dut.dump__valid, dut.dump__ready, dut.dump__payload,
             lambda v: codec.unpack_dump(v)[:2]),
        ]
        self.violations = 0
        self.cycle = 0
        self._restart()

    def _restart(self):
        self.held = {name: None for name, *_ in self.streams}   # (cycle, payload) offered
        self.transfers = {name: 0 for name, *_ in self.streams}
        self.dump_due = 0
        self.maintenance = "post-reset clear"
        self.clear_taken = False

    def _violation(self, message):
        self.violations += 1
        self.report(f"protocol: {message}")

    def sample(self, cycle):
        """Cycle ``cycle``'s checks (read-only phase, before the rising edge that transfers)."""
        self.cycle = cycle
        dut = self.dut
        if int(dut.rst.value):
            self._restart()
            return
        busy = int(dut.busy.value)
        in_flight = self.transfers["lookups"] - self.transfers["results"]
        if in_flight > 0 and not busy:
            self._violation(f"busy low while {in_flight} lookup beat(s) are in flight")
        if self.dump_due > 0 and not busy:
            self._violation(f"busy low while {self.dump_due} dump beat(s) are still due")
        if self.clear_taken and not busy:
            self._violation("busy low in the cycle after a clear was taken")
        self.clear_taken = False
        if self.maintenance is not None and not busy:
            self.maintenance = None
        lookups_ready = 0
        for name, valid_h, ready_h, payload_h, decode in self.streams:
            valid, ready = int(valid_h.value), int(ready_h.value)
            held = self.held[name]
            payload = None
            if held is not None:
                if not valid:
                    self._violation(f"{name}.valid fell before the transfer of the beat "
                                    f"offered in cycle {held[0]} ({decode(held[1])})")
                else:
                    payload = int(payload_h.value)
                    if payload != held[1]:
                        self._violation(f"{name}.payload changed while valid and not ready: "
                                        f"{decode(held[1])} -> {decode(payload)}")
            elif valid:
                # A new beat: may the engine offer one? (This cycle's lookup transfer, counted
                # above, is outstanding too.)
                if name == "results" and self.transfers["lookups"] <= self.transfers["results"]:
                    self._violation("results.valid high with no lookup beat outstanding")
                if name == "dump" and self.dump_due <= 0:
                    self._violation("dump.valid high with no start_dump taken")
            if valid and ready:
                self.transfers[name] += 1
                self.held[name] = None
                if name == "dump":
                    self.dump_due -= 1
            elif valid:
                # Offered and not taken: it must still be there, unchanged, next cycle.
                self.held[name] = (self.cycle, payload if payload is not None
                                   else int(payload_h.value))
            else:
                self.held[name] = None
            if name == "lookups":
                lookups_ready = ready
        if self.maintenance is not None and lookups_ready:
            self._violation(f"lookups.ready high while the {self.maintenance} runs")
        clear, start_dump = int(dut.clear.value), int(dut.start_dump.value)
        if (clear or start_dump) and not busy:
            if lookups_ready:       # spec 8: the command goes first, a lookup beat waits
                self._violation(f"lookups.ready high in the cycle a "
                                f"{'clear' if clear else 'start_dump'} is taken")
            if clear:
                self.maintenance = "clear"
                self.clear_taken = True
            else:
                self.maintenance = "dump"
                self.dump_due = self.dump_beats


class LookupEngineBench:
    """Drives the DUT's streams and commands, keeps the golden model in step and checks
    every output beat against it (see the module docstring)."""

    def __init__(self, dut, scenario):
        self.dut = dut
        self.cfg = EALConfig(**scenario["config"])
        self.codec = PortCodec(self.cfg)
        self.golden = AccessLogger(self.cfg)
        self.rng = random.Random(scenario["seed"])
        self.idle_prob = scenario["idle_prob"]
        self.stall_prob = scenario["stall_prob"]
        self.hole_prob = scenario["hole_prob"]
        self.budgets = Budgets(self.cfg, self.idle_prob, self.stall_prob,
                               scenario.get("budget_scale", 1.0))
        self.mismatches = 0
        self.compared = 0  # result and dump beats checked
        self.first_mismatches = []
        self.cycle = 0
        self.deadline = None
        self._command_high = False
        self._driven = {}           # last value written to each stream input
        self._sampled = False       # the monitor has checked this cycle
        self.monitor = ProtocolMonitor(dut, self.cfg, self.codec, self.mismatch)

    # ---- bookkeeping ------------------------------------------------------------------
    def mismatch(self, what):
        """Record a failed check (the first few with their message and cycle)."""
        self.mismatches += 1
        if len(self.first_mismatches) < MAX_REPORTED:
            message = f"cycle {self.cycle}: {what}"
            self.first_mismatches.append(message)
            self.dut._log.error(message)

    def fail(self, what):
        """Record a mismatch and stop the scenario."""
        self.mismatch(what)
        raise BenchFailure(what)

    async def settle(self):
        """Wait for this cycle's read-only phase (inputs and outputs settled, before the rising
        edge) and run the protocol monitor on it."""
        await ReadOnly()
        if not self._sampled:
            self.monitor.sample(self.cycle)
            self._sampled = True

    async def next_cycle(self):
        """Advance to the falling edge, where inputs may change (after the monitor has seen
        the current cycle)."""
        if not self._sampled:
            await self.settle()
        await FallingEdge(self.dut.clk)
        self.cycle += 1
        self._sampled = False
        if self.deadline is not None and self.cycle > self.deadline:
            self.fail(f"the scenario ran past its overall budget of {self.deadline} cycles")

    def drive(self, handle, value):
        """Write an input only when its value changes (writes are the bench's main cost)."""
        if self._driven.get(id(handle)) != value:
            handle.value = value
            self._driven[id(handle)] = value

    def stall(self):
        """A random ``ready`` for an output stream (back-pressure)."""
        return not (self.stall_prob and self.rng.random() < self.stall_prob)

    def command(self, name):
        """The input of command ``name`` (``clear``; anything else is ``start_dump``)."""
        return self.dut.clear if name == "clear" else self.dut.start_dump

    # ---- reset and idle ---------------------------------------------------------------
    async def reset(self, cycles=RESET_CYCLES):
        """Assert reset for ``cycles`` cycles with every input low, then wait for the clear
        that follows reset (the bench resumes in the first cycle with ``busy`` low)."""
        dut = self.dut
        for handle in (dut.lookups__valid, dut.results__ready, dut.dump__ready, dut.clear,
                       dut.start_dump):
            handle.value = 0
        self._driven = {}
        self._command_high = False
        dut.rst.value = 1
        for _ in range(cycles):
            await self.next_cycle()
        dut.rst.value = 0
        await self.next_cycle()
        await self.wait_first_idle("the clear that follows reset",
                                   self.budgets.maintenance("clear"))

    async def wait_first_idle(self, what, budget):
        """Return at the falling edge of the first cycle with ``busy`` low (the caller then
        drives that cycle's inputs); fail after ``budget`` cycles."""
        dut = self.dut
        started = self.cycle
        while int(dut.busy.value):
            if self.cycle - started > budget:
                self.fail(f"waited {self.cycle - started} cycles for busy to fall after "
                          f"{what} (budget {budget})")
            await self.next_cycle()

    def maybe_command(self, prob):
        """In a cycle known to be busy: with probability ``prob`` pulse a random command."""
        self.quiet_commands()
        if prob and self.rng.random() < prob:
            name = self.rng.choice(("clear", "start_dump"))
            self.command(name).value = 1
            self._command_high = True
            return name
        return None

    def quiet_commands(self):
        """Drive ``clear`` and ``start_dump`` low (written only when one is high)."""
        if self._command_high:
            self.dut.clear.value = 0
            self.dut.start_dump.value = 0
            self._command_high = False

    def check_ignored(self, name):
        """After a command pulsed in a busy cycle (read-only phase): ``busy`` must still be
        high, or the engine may have taken the command and the golden model is lost."""
        if not int(self.dut.busy.value):
            self.fail(f"busy low in the cycle {name} was pulsed, although it was high at the "
                      f"falling edge (busy must not depend on the command inputs)")
        return 1

    # ---- stimulus ---------------------------------------------------------------------
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

    def expected_dump(self):
        """The golden tag store in the engine's dump order, bank-major (for each bank, its
        sets in order: the order of the entries' slots), tags as unsigned ``tag_bits``
        patterns (a 64-bit tag is an int64 in the golden model)."""
        mask = (1 << self.cfg.tag_bits) - 1
        beats = sorted(self.golden.dump(), key=lambda b: (b.bank, b.set))
        return [(b.bank, b.set, tuple((v, m, t & mask) for v, m, t in b.ways), b.sketch)
                for b in beats]

    def expected_results(self, keys, learn, threshold):
        """The golden model's results for ``keys`` in one mode (learn mode updates it)."""
        cfg = self.cfg
        t = torch.tensor(keys, dtype=torch.int64)
        if learn:
            return self.golden.learn(t)
        if cfg.policy == "srrip":
            return self.golden.lookup(t, popular_max_rrpv=threshold)
        return self.golden.lookup(t)   # lfu: the threshold is the elaboration parameter

    # ---- one phase --------------------------------------------------------------------
    async def run_phase(self, phase, index):
        """Play one phase, starting in the first cycle with ``busy`` low; returns its
        report. Lookup phases (``learn``, ``frozen``) may start with a command
        (``offer_during``) and be cut by a reset; ``clear`` and ``dump`` phases are the
        command alone."""
        dut, cfg, codec, rng, budgets = self.dut, self.cfg, self.codec, self.rng, self.budgets
        op = phase["op"]
        if op not in ("learn", "frozen", "clear", "dump"):
            raise ValueError(f"unknown scenario phase {op!r}")
        lookup_phase = op in ("learn", "frozen")
        keys = np.load(phase["keys"]).tolist() if lookup_phase else []
        command = op if not lookup_phase else phase.get("offer_during")
        if command not in (None, "clear", "dump"):
            raise ValueError(f"offer_during must be 'clear' or 'dump', not {command!r}")
        learn = op == "learn"
        threshold = phase.get("popular_max_rrpv", cfg.popular_max_rrpv)
        command_prob = phase.get("commands_while_busy", 0.0)
        reset_after = phase.get("reset_after_beats")
        name = f"{op} phase {index}"

        # The first cycle with busy low: the mode, threshold and command change here.
        if lookup_phase:
            dut.learn.value = int(learn)
            dut.popular_max_rrpv.value = threshold
        expected_dump = None
        if command == "clear":
            self.golden.clear()
        elif command == "dump":
            expected_dump = self.expected_dump()
        if lookup_phase:
            expected = self.expected_results(
                keys, learn, phase.get("golden_popular_max_rrpv", threshold))
            hits, slots = expected.hit.tolist(), expected.slot.tolist()
            beats, layout = self.beats_for(keys)
            expected_beats = [codec.pack_results([(1, hits[k], slots[k]) if k is not None
                                                  else (0, 0, 0) for k in lanes])
                              for lanes in layout]
        else:
            hits, beats, expected_beats = [], [], []
        n = len(beats)

        lookups_valid, lookups_ready = dut.lookups__valid, dut.lookups__ready
        lookups_payload = dut.lookups__payload
        results_valid, results_ready = dut.results__valid, dut.results__ready
        results_payload = dut.results__payload
        dump_valid, dump_ready, dump_payload = dut.dump__valid, dut.dump__ready, dut.dump__payload
        busy_h = dut.busy
        drive = self.drive

        sent = received = 0
        holding = False
        rtl_hits = []
        dump_got = []
        dump_gaps = 0   # cycles between the first and the last dump beat with ready but no beat
        first_cycle = last_cycle = None
        started = self.cycle
        maintenance = None          # the command this phase started, while it runs
        ignored = held_in_maintenance = 0
        reset_at = None
        # Cycle of the last progress of each wait (the budgets count from there).
        result_since = accept_since = dump_since = maintenance_since = started
        done_since = None
        c = 0
        while True:
            busy = int(busy_h.value)          # this cycle's registered state
            if c >= 1 and maintenance is not None and not busy:
                if maintenance == "dump" and len(dump_got) < len(expected_dump):
                    self.fail(f"{name}: the dump ended (busy low) after {len(dump_got)} of "
                              f"{len(expected_dump)} beats")
                maintenance = None
            done = received == n and (expected_dump is None or len(dump_got) == len(expected_dump))
            if c >= 1 and done and not busy:
                break
            # ---- drive this cycle's inputs
            pulsed = None
            if c == 0 and command is not None:
                self.quiet_commands()
                self.command(command).value = 1
                self._command_high = True
            elif busy:
                pulsed = self.maybe_command(command_prob)
            else:
                self.quiet_commands()
            offering_in_maintenance = maintenance is not None and c >= 1
            if c == 0 and command is not None:
                # Spec 8: a beat offered together with a command waits until the command
                # has finished; offer the first one right away to check that.
                drive(lookups_valid, int(n > 0))
                if n:
                    lookups_payload.value = beats[0]
                    holding = True
                    accept_since = self.cycle
            elif not holding:
                first = sent == 0
                offer = sent < n and (first or offering_in_maintenance
                                      or not (self.idle_prob and rng.random() < self.idle_prob))
                drive(lookups_valid, int(offer))
                if offer:
                    lookups_payload.value = beats[sent]
                    holding = True
                    accept_since = self.cycle
            ready = self.stall()
            drive(results_ready, int(ready))
            # dump.ready moves only while a dump is due: a spurious dump beat is caught by
            # the monitor whatever ready is.
            dump_go = self.stall() if maintenance == "dump" else False
            drive(dump_ready, int(dump_go))

            await self.settle()
            # ---- sample this cycle's handshakes
            if int(busy_h.value) != busy:
                self.fail(f"{name}: busy changed between the falling edge and the end of the "
                          f"cycle: it must not depend combinationally on the inputs (the bench "
                          f"reads it at the falling edge to start phases and pulse commands)")
            if c == 0 and command is not None:
                if int(busy_h.value):
                    self.fail(f"{name}: busy high in the cycle {command} was pulsed (the "
                              f"phase starts in the first cycle with busy low)")
                maintenance = command
                maintenance_since = dump_since = self.cycle
            if pulsed:
                ignored += self.check_ignored(pulsed)
            if holding and int(lookups_ready.value):
                if c == 0 and command is not None:
                    self.fail(f"{name}: lookup beat {sent} was accepted in the cycle the "
                              f"{command} was taken (the command goes first)")
                if offering_in_maintenance:
                    self.fail(f"{name}: lookup beat {sent} was accepted while the "
                              f"{maintenance} runs (lookups.ready must be low)")
                if first_cycle is None:
                    first_cycle = self.cycle
                if sent == received:
                    result_since = self.cycle
                sent += 1
                holding = False
            elif holding and offering_in_maintenance:
                held_in_maintenance += 1
            if ready and int(results_valid.value) and received < n:
                got = int(results_payload.value)
                self.compared += 1
                rtl_hits.extend(hit for valid, hit, _ in codec.unpack_results(got) if valid)
                if got != expected_beats[received]:
                    self.mismatch(f"{name}: result beat {received}: RTL "
                                  f"{codec.unpack_results(got)} != golden "
                                  f"{codec.unpack_results(expected_beats[received])}")
                received += 1
                result_since = last_cycle = self.cycle
            if dump_go and int(dump_valid.value) and expected_dump is not None \
                    and len(dump_got) < len(expected_dump):
                got = codec.unpack_dump(int(dump_payload.value))
                got = (got[0], got[1], tuple(got[2]), got[3])
                self.compared += 1
                i = len(dump_got)
                if got != expected_dump[i]:
                    self.mismatch(f"{name}: dump beat {i}: RTL {got} != golden "
                                  f"{expected_dump[i]}")
                dump_got.append(got)
                dump_since = self.cycle
            elif dump_go and expected_dump is not None and 0 < len(dump_got) < len(expected_dump):
                dump_gaps += 1

            # ---- budgets: name what the bench waits for
            waited = self.cycle
            if maintenance is not None and c >= 1:
                if waited - maintenance_since > budgets.maintenance(maintenance):
                    self.fail(f"{name}: waited {waited - maintenance_since} cycles for the "
                              f"{maintenance} to finish (busy to fall; budget "
                              f"{budgets.maintenance(maintenance)})")
                if maintenance == "dump" and len(dump_got) < len(expected_dump) \
                        and waited - dump_since > budgets.dump_beat:
                    self.fail(f"{name}: waited {waited - dump_since} cycles for dump beat "
                              f"{len(dump_got)} of {len(expected_dump)} (budget "
                              f"{budgets.dump_beat})")
            if sent > received and waited - result_since > budgets.result:
                self.fail(f"{name}: waited {waited - result_since} cycles for result beat "
                          f"{received} of {n} with {sent - received} lookup beat(s) in flight "
                          f"(budget {budgets.result})")
            if holding and not offering_in_maintenance and waited - accept_since > budgets.accept:
                self.fail(f"{name}: waited {waited - accept_since} cycles for lookups.ready to "
                          f"take beat {sent} of {n} (budget {budgets.accept})")
            if done and maintenance is None:
                if done_since is None:
                    done_since = waited
                elif waited - done_since > budgets.idle:
                    self.fail(f"{name}: waited {waited - done_since} cycles for busy to fall "
                              f"after the last beat (budget {budgets.idle})")

            if reset_after is not None and sent >= reset_after and sent > received:
                reset_at = (sent, received)
                await self.next_cycle()
                await self.reset()
                self.golden.clear()     # the clear that follows reset
                break
            await self.next_cycle()
            c += 1

        # Leave the inputs quiet for the next phase, which starts in this cycle.
        for handle in (lookups_valid, results_ready, dump_ready):
            drive(handle, 0)
        self.quiet_commands()
        report = {"op": op, "cycles": self.cycle - started, "ignored_commands": ignored}
        if lookup_phase:
            report.update({"lookups": len(keys), "beats": n,
                           "cycles": (last_cycle - first_cycle + 1) if received else 0,
                           "golden_hits": int(sum(hits)), "rtl_hits": rtl_hits,
                           "held_during_maintenance": held_in_maintenance})
            if reset_at is not None:
                report.update({"reset_after_beats_sent": reset_at[0],
                               "results_before_reset": reset_at[1]})
        if expected_dump is not None:
            report.update(self.dump_summary(dump_got))
            report["dump_gaps"] = dump_gaps
            if op == "dump":
                report["beats"] = len(dump_got)
        return report

    def dump_summary(self, got):
        """Counts over a dumped tag store for the report: beats, valid and popular entries."""
        cfg = self.cfg
        popular = sum(1 for g in got for v, r, _ in g[2]
                      if v and (r <= cfg.popular_max_rrpv if cfg.policy == "srrip"
                                else r >= cfg.popular_min_count))
        return {"dump_beats": len(got), "valid_entries": sum(v for g in got for v, _, _ in g[2]),
                "popular_entries_at_default_threshold": popular}


def scenario_deadline(bench, scenario, phases_keys):
    """The scenario's overall cycle budget: the sum of its phases' bounds, plus resets."""
    b = bench.budgets
    total = 2 * b.maintenance("clear") + 10
    for phase, n_keys in zip(scenario["phases"], phases_keys):
        beats = math.ceil(n_keys / bench.cfg.lanes / max(0.05, 1 - bench.hole_prob))
        total += b.phase(beats) + b.maintenance("clear") + RESET_CYCLES
    return total


@cocotb.test()
async def run_scenario(dut):
    """Plays the scenario named by HOTLINE_SCENARIO and writes its report (also when a check
    stops it early)."""
    with open(os.environ["HOTLINE_SCENARIO"]) as f:
        scenario = json.load(f)
    bench = LookupEngineBench(dut, scenario)
    phases_keys = [len(np.load(p["keys"], mmap_mode="r")) if "keys" in p else 0
                   for p in scenario["phases"]]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    phases = []
    stopped = None
    try:
        await bench.reset()
        bench.deadline = bench.cycle + scenario_deadline(bench, scenario, phases_keys)
        for index, phase in enumerate(scenario["phases"]):
            result = await bench.run_phase(phase, index)
            if "rtl_hits" in result:
                # The RTL's own hit flags, in key order, for reports (e.g. popular inputs).
                hits_file = os.path.join(os.path.dirname(scenario["report"]),
                                         f"phase{index}_rtl_hits.npy")
                np.save(hits_file, np.asarray(result.pop("rtl_hits"), dtype=np.bool_))
                result["rtl_hits_file"] = hits_file
            phases.append(result)
        # One more cycle so that the monitor sees the engine idle after the last phase.
        await bench.next_cycle()
        await bench.settle()
    except BenchFailure as exc:
        stopped = str(exc)
    finally:
        report = {"phases": phases, "mismatches": bench.mismatches, "compared": bench.compared,
                  "first_mismatches": bench.first_mismatches, "total_cycles": bench.cycle,
                  "protocol_violations": bench.monitor.violations, "stopped": stopped}
        with open(scenario["report"], "w") as f:
            json.dump(report, f)
    assert bench.mismatches == 0, f"{bench.mismatches} mismatches; first: {bench.first_mismatches}"

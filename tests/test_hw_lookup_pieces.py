"""Amaranth-simulator unit tests of the lookup engine's pieces on their own: the bank
switch, a bank pipeline (queue, bank, response queue) and the result release, each under
random stimulus and back-pressure, against what the piece must do by docs/spec.md."""

import random

import pytest
import torch
from amaranth.sim import Simulator

from hotline_hw.bank_pipeline import BankPipeline
from hotline_hw.bank_switch import BankSwitch
from hotline_hw.config import EALConfig
from hotline_hw.result_release import ResultRelease
from verif.golden import AccessLogger, hash_fields

CFG = EALConfig(lanes=4, banks=4, sets=4, ways=3, table_bits=2, row_bits=10,
                dispatch_beats=2, queue_depth=2, beats_in_flight=3)


def _simulate(dut, bench, cycles):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(1e-8 * cycles)


def _random_beats(rng, cfg, n, hot_bank_share=0.4):
    """``n`` beats of (valid, bank, set, tag) lanes; one bank gets a large share so that
    its queue fills and lanes of one beat meet in a bank."""
    beats = []
    for _ in range(n):
        beat = []
        for _ in range(cfg.lanes):
            bank = 0 if rng.random() < hot_bank_share else rng.randrange(cfg.banks)
            beat.append((int(rng.random() < 0.85), bank, rng.randrange(cfg.sets),
                         rng.getrandbits(cfg.tag_bits)))
        beats.append(beat)
    return beats


@pytest.mark.parametrize("dispatch_beats", [1, 2, 3])
def test_switch_sends_every_lookup_to_its_bank_in_stream_order(dispatch_beats):
    """Random beats (holes, a hot bank, lanes of one beat on one bank) under random
    readiness of every bank and of the record FIFO: every bank receives exactly the
    lookups whose bank it is, in stream order; the records are the beats, in order."""
    cfg = CFG.replace(dispatch_beats=dispatch_beats)
    rng = random.Random(11 + dispatch_beats)
    beats = _random_beats(rng, cfg, 300)
    dut = BankSwitch(cfg)
    records, received = [], [[] for _ in range(cfg.banks)]

    async def bench(ctx):
        sent = 0
        for _ in range(6000):
            ctx.set(dut.beats.valid, sent < len(beats))
            if sent < len(beats):
                for l, (valid, bank, set_, tag) in enumerate(beats[sent]):
                    lane = dut.beats.payload[l]
                    ctx.set(lane.valid, valid)
                    ctx.set(lane.bank, bank)
                    ctx.set(lane.set, set_)
                    ctx.set(lane.tag, tag)
            ctx.set(dut.records.ready, rng.random() < 0.8)
            for request in dut.requests:
                ctx.set(request.ready, rng.random() < 0.6)
            if ctx.get(dut.records.valid) and ctx.get(dut.records.ready):
                records.append([(ctx.get(r.valid), ctx.get(r.bank), ctx.get(r.set))
                                for r in dut.records.payload])
            for b, request in enumerate(dut.requests):
                if ctx.get(request.valid) and ctx.get(request.ready):
                    received[b].append((ctx.get(request.payload.set),
                                        ctx.get(request.payload.tag)))
            if ctx.get(dut.beats.valid) and ctx.get(dut.beats.ready):
                sent += 1
            await ctx.tick()
            if sent == len(beats) and not ctx.get(dut.busy):
                break
        assert sent == len(beats), "the switch stopped taking beats"

    _simulate(dut, bench, 7000)
    assert records == [[(v, b, s) for v, b, s, _ in beat] for beat in beats]
    for b in range(cfg.banks):
        expected = [(s, t) for beat in beats for v, bank, s, t in beat if v and bank == b]
        assert received[b] == expected, f"bank {b}"


def test_switch_takes_a_beat_per_cycle_when_the_banks_keep_up():
    """Every lane of every beat on its own bank and every bank always ready: 200 beats in
    at most 200 + a few cycles (the switch adds no bubble)."""
    cfg = EALConfig(lanes=4, banks=8, sets=4, table_bits=2, row_bits=10, dispatch_beats=2)
    rng = random.Random(5)
    dut = BankSwitch(cfg)
    taken = []

    async def bench(ctx):
        ctx.set(dut.records.ready, 1)
        for request in dut.requests:
            ctx.set(request.ready, 1)
        for cycle in range(260):
            banks = rng.sample(range(cfg.banks), cfg.lanes)
            ctx.set(dut.beats.valid, len(taken) < 200)
            for l, bank in enumerate(banks):
                ctx.set(dut.beats.payload[l].valid, 1)
                ctx.set(dut.beats.payload[l].bank, bank)
            if ctx.get(dut.beats.valid) and ctx.get(dut.beats.ready):
                taken.append(cycle)
            await ctx.tick()

    _simulate(dut, bench, 300)
    assert len(taken) == 200 and taken[-1] <= 200 + 2, taken[-5:]


@pytest.mark.parametrize("policy", ["srrip", "lfu"])
def test_bank_pipeline_answers_in_order_under_back_pressure(policy):
    """Requests offered at random to one bank pipeline whose consumer stalls at random
    (long stalls included): no request lost, no response dropped, every response equals
    the golden model's sequential result, and the request queue refuses while full."""
    kw = dict(policy="lfu", ways=4, sketch_counters=8) if policy == "lfu" else dict(ways=3)
    cfg = EALConfig(lanes=1, banks=1, sets=4, table_bits=2, row_bits=10, queue_depth=3, **kw)
    rng = random.Random(17)
    keys = [rng.randrange(40) for _ in range(400)]
    expected = AccessLogger(cfg).learn(torch.tensor(keys))
    _, sets, tags = hash_fields(torch.tensor(keys), cfg)
    dut = BankPipeline(cfg)
    got, refused = [], []

    async def bench(ctx):
        ctx.set(dut.learn, 1)
        sent = 0
        for cycle in range(5000):
            offer = sent < len(keys) and rng.random() < 0.9
            ctx.set(dut.requests.valid, offer)
            if offer:
                ctx.set(dut.requests.payload.set, sets[sent].item())
                ctx.set(dut.requests.payload.tag, tags[sent].item())
            stall = (cycle // 40) % 3 == 1 or rng.random() < 0.3   # long and short stalls
            ctx.set(dut.responses.ready, not stall)
            if offer and not ctx.get(dut.requests.ready):
                refused.append(cycle)
            if ctx.get(dut.responses.valid) and ctx.get(dut.responses.ready):
                got.append((ctx.get(dut.responses.payload.hit),
                            ctx.get(dut.responses.payload.way)))
            if offer and ctx.get(dut.requests.ready):
                sent += 1
            await ctx.tick()
            if len(got) == len(keys):
                break
        for _ in range(6):                      # nothing more comes out
            ctx.set(dut.responses.ready, 1)
            assert not ctx.get(dut.responses.valid)
            await ctx.tick()

    _simulate(dut, bench, 5200)
    assert got == list(zip([int(h) for h in expected.hit.tolist()], expected.way.tolist()))
    assert refused, "the stalls never filled the request queue: the test lost its point"


@pytest.mark.parametrize("lanes,banks", [(4, 4), (3, 8), (1, 2)])
def test_release_assembles_beats_in_order_from_bank_responses(lanes, banks):
    """Beat records (holes, lanes of one beat on one bank) and per-bank response streams
    that arrive with random delays, under random results back-pressure: each result beat
    carries, lane by lane, the response its bank gave in stream order, with the slot
    ``(bank * sets + set) * ways + way``; nothing is released early or twice."""
    cfg = EALConfig(lanes=lanes, banks=banks, sets=4, ways=3, table_bits=2, row_bits=10)
    rng = random.Random(lanes * 100 + banks)
    records = [[(int(rng.random() < 0.85), 0 if rng.random() < 0.4 else rng.randrange(banks),
                 rng.randrange(cfg.sets)) for _ in range(lanes)] for _ in range(250)]
    # Each bank's responses, in stream order, as random (hit, way) pairs.
    answers = {}
    per_bank = [[] for _ in range(banks)]
    for i, record in enumerate(records):
        for l, (valid, bank, _) in enumerate(record):
            if valid:
                answers[i, l] = (rng.randrange(2), rng.randrange(cfg.ways))
                per_bank[bank].append(answers[i, l])
    expected = [[(v, v and answers[i, l][0],
                  ((b * cfg.sets + s) * cfg.ways + answers[i, l][1]) if v else 0)
                 for l, (v, b, s) in enumerate(record)] for i, record in enumerate(records)]
    dut = ResultRelease(cfg)
    got = []

    async def bench(ctx):
        fed, heads = 0, [0] * banks
        showing = [False] * banks
        for _ in range(8000):
            ctx.set(dut.records.valid, fed < len(records))
            if fed < len(records):
                for l, (valid, bank, set_) in enumerate(records[fed]):
                    lane = dut.records.payload[l]
                    ctx.set(lane.valid, valid)
                    ctx.set(lane.bank, bank)
                    ctx.set(lane.set, set_)
            for b, response in enumerate(dut.responses):
                # A response once shown stays until taken (stream rule).
                showing[b] = heads[b] < len(per_bank[b]) and (showing[b] or rng.random() < 0.5)
                ctx.set(response.valid, showing[b])
                if showing[b]:
                    hit, way = per_bank[b][heads[b]]
                    ctx.set(response.payload.hit, hit)
                    ctx.set(response.payload.way, way)
            ctx.set(dut.results.ready, rng.random() < 0.7)
            if ctx.get(dut.results.valid) and ctx.get(dut.results.ready):
                got.append([(ctx.get(r.valid), ctx.get(r.hit), ctx.get(r.slot))
                            for r in dut.results.payload])
            if ctx.get(dut.records.valid) and ctx.get(dut.records.ready):
                fed += 1
            for b, response in enumerate(dut.responses):
                if ctx.get(response.valid) and ctx.get(response.ready):
                    heads[b] += 1
                    showing[b] = False
            await ctx.tick()
            if len(got) == len(records):
                break
        assert heads == [len(p) for p in per_bank], "a response was not taken"

    _simulate(dut, bench, 8200)
    assert got == expected

"""Amaranth-simulator unit tests of the lookup engine's pieces on their own: the repeat
marker, the bank switch, a bank pipeline (queue, bank, response queue), the tag bank's
answer for runs of one key, and the result release, each under random stimulus and
back-pressure, against what the piece must do by docs/spec.md; and the engine's dump path
(the banks' maintenance reads, the bank select and the dump FIFO) under random
``dump.ready``."""

import random

import pytest
import torch
from amaranth.sim import Simulator

from hotline_hw.bank_pipeline import BankPipeline
from hotline_hw.bank_switch import BankSwitch
from hotline_hw.lookup_engine import LookupEngine
from hotline_spec.config import EALConfig
from hotline_hw.repeat_marker import RepeatMarker
from hotline_hw.result_release import ResultRelease
from hotline_hw.tag_bank import TagBank
from verif.golden import AccessLogger, hash_fields
from verif.tb.ports import PortCodec

CFG = EALConfig(lanes=4, banks=4, sets=4, ways=3, table_bits=2, row_bits=10,
                dispatch_beats=2, queue_depth=2, beats_in_flight=3)


def _simulate(dut, bench, cycles):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(1e-8 * cycles)


def _random_beats(rng, cfg, n, hot_bank_share=0.4):
    """``n`` beats of (valid, bank, set, tag, repeat, repeated) lanes; one bank gets a large
    share so that its queue fills and lanes of one beat meet in a bank; some lanes are
    marked as repeats (they must go nowhere) or as repeated (carried to the bank)."""
    beats = []
    for _ in range(n):
        beat = []
        for _ in range(cfg.lanes):
            bank = 0 if rng.random() < hot_bank_share else rng.randrange(cfg.banks)
            beat.append((int(rng.random() < 0.85), bank, rng.randrange(cfg.sets),
                         rng.getrandbits(cfg.tag_bits), int(rng.random() < 0.15),
                         int(rng.random() < 0.3)))
        beats.append(beat)
    return beats


@pytest.mark.parametrize("dispatch_beats", [1, 2, 3])
def test_switch_sends_every_lookup_to_its_bank_in_stream_order(dispatch_beats):
    """Random beats (holes, repeats, a hot bank, lanes of one beat on one bank) under
    random readiness of every bank and of the record FIFO: every bank receives exactly the
    lookups whose bank it is (repeats excepted), in stream order, with their ``repeated``
    flag; the records are the beats, in order."""
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
                for l, (valid, bank, set_, tag, repeat, repeated) in enumerate(beats[sent]):
                    lane = dut.beats.payload[l]
                    ctx.set(lane.valid, valid)
                    ctx.set(lane.bank, bank)
                    ctx.set(lane.set, set_)
                    ctx.set(lane.tag, tag)
                    ctx.set(lane.repeat, repeat)
                    ctx.set(lane.first, 0)
                    ctx.set(lane.repeated, repeated)
            ctx.set(dut.records.ready, rng.random() < 0.8)
            for request in dut.requests:
                ctx.set(request.ready, rng.random() < 0.6)
            if ctx.get(dut.records.valid) and ctx.get(dut.records.ready):
                records.append([(ctx.get(r.valid), ctx.get(r.bank), ctx.get(r.set),
                                 ctx.get(r.repeat)) for r in dut.records.payload])
            for b, request in enumerate(dut.requests):
                if ctx.get(request.valid) and ctx.get(request.ready):
                    received[b].append((ctx.get(request.payload.set),
                                        ctx.get(request.payload.tag),
                                        ctx.get(request.payload.repeated)))
            if ctx.get(dut.beats.valid) and ctx.get(dut.beats.ready):
                sent += 1
            await ctx.tick()
            if sent == len(beats) and not ctx.get(dut.busy):
                break
        assert sent == len(beats), "the switch stopped taking beats"

    _simulate(dut, bench, 7000)
    assert records == [[(v, b, s, r) for v, b, s, _, r, _ in beat] for beat in beats]
    for b in range(cfg.banks):
        expected = [(s, t, rd) for beat in beats for v, bank, s, t, r, rd in beat
                    if v and not r and bank == b]
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


@pytest.mark.parametrize("queue_depth", [2, 4])
def test_bank_pipeline_answers_a_lookup_per_cycle_when_the_consumer_keeps_up(queue_depth):
    """Requests offered every cycle to one bank pipeline whose consumer is always ready:
    it takes one per cycle and answers one per cycle (the response credit covers the
    bank's stages and the buffered queue; the request register's ``ready`` never idles a
    cycle)."""
    cfg = EALConfig(lanes=1, banks=1, sets=4, ways=3, table_bits=2, row_bits=10,
                    queue_depth=queue_depth)
    n = 200
    dut = BankPipeline(cfg)
    taken, answered = [], []

    async def bench(ctx):
        ctx.set(dut.learn, 1)
        ctx.set(dut.responses.ready, 1)
        for cycle in range(n + 40):
            ctx.set(dut.requests.valid, len(taken) < n)
            ctx.set(dut.requests.payload.set, cycle % cfg.sets)
            ctx.set(dut.requests.payload.tag, cycle % 7)
            if len(taken) < n and ctx.get(dut.requests.ready):
                taken.append(cycle)
            if ctx.get(dut.responses.valid):
                answered.append(cycle)
            await ctx.tick()

    _simulate(dut, bench, n + 60)
    assert len(taken) == n and taken[-1] <= n + 1, taken[-5:]
    assert len(answered) == n and answered[-1] - answered[0] == n - 1, answered[-5:]


@pytest.mark.parametrize("lanes,banks,release_beats", [(4, 4, 4), (3, 8, 2), (1, 2, 1)])
def test_release_assembles_beats_in_order_from_bank_responses(lanes, banks, release_beats):
    """Beat records (holes, lanes of one beat on one bank, repeats of an earlier lane) and
    per-bank response streams that arrive with random delays, under random results
    back-pressure: each result beat carries, lane by lane, the response its bank gave in
    stream order (a repeat: its first lane's ``repeat_hit`` and way), with the slot
    ``(bank * sets + set) * ways + way``; nothing is released early or twice."""
    cfg = EALConfig(lanes=lanes, banks=banks, sets=4, ways=3, table_bits=2, row_bits=10,
                    release_beats=release_beats)
    rng = random.Random(lanes * 100 + banks)
    records = []
    for _ in range(250):
        record = []
        for l in range(lanes):
            firsts = [k for k, r in enumerate(record) if r[0] and not r[3]]
            if firsts and rng.random() < 0.25:
                k = rng.choice(firsts)
                record.append((1, record[k][1], record[k][2], 1, k))
            else:
                record.append((int(rng.random() < 0.85),
                               0 if rng.random() < 0.4 else rng.randrange(banks),
                               rng.randrange(cfg.sets), 0, l))
        records.append(record)
    # Each bank's responses, in stream order, as random (hit, way, repeat_hit).
    answers = {}
    per_bank = [[] for _ in range(banks)]
    for i, record in enumerate(records):
        for l, (valid, bank, _, repeat, _) in enumerate(record):
            if valid and not repeat:
                answers[i, l] = (rng.randrange(2), rng.randrange(cfg.ways), rng.randrange(2))
                per_bank[bank].append(answers[i, l])
    expected = []
    for i, record in enumerate(records):
        beat = []
        for l, (v, b, s, repeat, first) in enumerate(record):
            hit, way, _ = answers[i, l] if v and not repeat else (0, 0, 0)
            if repeat:
                _, way, hit = answers[i, first]
            beat.append((v, v and hit, ((b * cfg.sets + s) * cfg.ways + way) if v else 0))
        expected.append(beat)
    dut = ResultRelease(cfg)
    got = []

    async def bench(ctx):
        fed, heads = 0, [0] * banks
        showing = [False] * banks
        for _ in range(8000):
            ctx.set(dut.records.valid, fed < len(records))
            if fed < len(records):
                for l, (valid, bank, set_, repeat, first) in enumerate(records[fed]):
                    lane = dut.records.payload[l]
                    ctx.set(lane.valid, valid)
                    ctx.set(lane.bank, bank)
                    ctx.set(lane.set, set_)
                    ctx.set(lane.repeat, repeat)
                    ctx.set(lane.first, first)
            for b, response in enumerate(dut.responses):
                # A response once shown stays until taken (stream rule).
                showing[b] = heads[b] < len(per_bank[b]) and (showing[b] or rng.random() < 0.5)
                ctx.set(response.valid, showing[b])
                if showing[b]:
                    hit, way, repeat_hit = per_bank[b][heads[b]]
                    ctx.set(response.payload.hit, hit)
                    ctx.set(response.payload.way, way)
                    ctx.set(response.payload.repeat_hit, repeat_hit)
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


@pytest.mark.parametrize("release_beats", [2, 4])
def test_release_takes_a_beat_per_cycle_when_the_banks_keep_up(release_beats):
    """Records offered every cycle, each lane on its own bank, every bank's next answer
    always there and the results always taken: the release takes and releases a beat per
    cycle (two held beats suffice: a finished beat leaves in the cycle after its last
    answer, and a new record enters in that cycle)."""
    lanes, banks = 4, 8
    cfg = EALConfig(lanes=lanes, banks=banks, sets=4, ways=3, table_bits=2, row_bits=10,
                    release_beats=release_beats)
    rng = random.Random(41)
    n_beats = 200
    records = [[(1, (2 * l + i) % banks, rng.randrange(cfg.sets)) for l in range(lanes)]
               for i in range(n_beats)]
    dut = ResultRelease(cfg)
    taken, released = [], []

    async def bench(ctx):
        ctx.set(dut.results.ready, 1)
        for r in dut.responses:
            ctx.set(r.valid, 1)
        fed = 0
        for cycle in range(n_beats + 20):
            ctx.set(dut.records.valid, fed < n_beats)
            if fed < n_beats:
                for l, (valid, bank, set_) in enumerate(records[fed]):
                    lane = dut.records.payload[l]
                    ctx.set(lane.valid, valid)
                    ctx.set(lane.bank, bank)
                    ctx.set(lane.set, set_)
                    ctx.set(lane.first, l)
            if ctx.get(dut.records.valid) and ctx.get(dut.records.ready):
                taken.append(cycle)
                fed += 1
            if ctx.get(dut.results.valid):
                released.append(cycle)
            await ctx.tick()

    _simulate(dut, bench, n_beats + 40)
    assert len(taken) == n_beats and taken[-1] <= n_beats + 2, taken[-5:]
    assert len(released) == n_beats and released[-1] <= n_beats + 6, released[-5:]


def _reference_marks(beat):
    """Per lane ``(repeat, first, repeated)`` by the definition: a lane repeats when the
    nearest lower lane looking up the same (bank, set) holds the same tag; it takes that
    lane's ``first``."""
    marks = []
    for l, (valid, bank, set_, tag) in enumerate(beat):
        nearest = next((k for k in range(l - 1, -1, -1)
                        if valid and beat[k][0] and beat[k][1:3] == (bank, set_)), None)
        if nearest is not None and beat[nearest][3] == tag:
            marks.append([1, marks[nearest][1], 0])
        else:
            marks.append([0, l, 0])
    for repeat, first, _ in marks:
        if repeat:
            marks[first][2] = 1
    return [tuple(m) for m in marks]


@pytest.mark.parametrize("policy", ["srrip", "lfu"])
def test_repeat_marker_marks_runs_of_one_key_within_a_beat(policy):
    """Beats of 6 lanes over few sets and keys (runs, runs broken by another key of the same
    set, runs across other sets, holes) under random back-pressure: the marks equal the
    definition's (srrip), or are all zero (lfu: every access counts); beats pass in order."""
    cfg = EALConfig(lanes=6, banks=2, sets=2, ways=2, table_bits=2, row_bits=10,
                    policy=policy)
    rng = random.Random(23)
    beats = [[(int(rng.random() < 0.9), rng.randrange(2), rng.randrange(2), rng.randrange(3))
              for _ in range(cfg.lanes)] for _ in range(400)]
    dut = RepeatMarker(cfg)
    got = []

    async def bench(ctx):
        sent = 0
        for _ in range(2000):
            ctx.set(dut.i.valid, sent < len(beats))
            if sent < len(beats):
                for l, (valid, bank, set_, tag) in enumerate(beats[sent]):
                    lane = dut.i.payload[l]
                    ctx.set(lane.valid, valid)
                    ctx.set(lane.bank, bank)
                    ctx.set(lane.set, set_)
                    ctx.set(lane.tag, tag)
            ctx.set(dut.o.ready, rng.random() < 0.7)
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                got.append([(ctx.get(o.valid), ctx.get(o.bank), ctx.get(o.set), ctx.get(o.tag),
                             ctx.get(o.repeat), ctx.get(o.first), ctx.get(o.repeated))
                            for o in dut.o.payload])
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                sent += 1
            await ctx.tick()
            if len(got) == len(beats):
                break

    _simulate(dut, bench, 2100)
    assert len(got) == len(beats)
    for beat, out in zip(beats, got):
        assert [o[:4] for o in out] == beat
        marks = _reference_marks(beat) if policy == "srrip" else [
            (0, l, 0) for l in range(cfg.lanes)]
        assert [o[4:] for o in out] == marks, beat
    if policy == "srrip":
        assert sum(o[4] for out in got for o in out) > 200, "too few repeats to test"


def test_tag_bank_answers_for_a_whole_run_of_one_key():
    """A stream of runs of one key (lengths 1 to 3) where only each run's first lookup
    reaches the bank, with ``repeated`` when the run goes on: the bank's answer equals the
    golden model's for the first lookup, ``repeat_hit`` and the way equal its answer for
    the others, in learn then frozen mode, and the sets end as the full stream leaves them
    (the frozen pass reads them back)."""
    cfg = EALConfig(lanes=1, banks=1, sets=2, ways=3, table_bits=2, row_bits=10)
    rng = random.Random(29)
    runs = [(rng.randrange(12), rng.choice([1, 1, 2, 3])) for _ in range(300)]
    expanded = [key for key, n in runs for _ in range(n)]
    golden = AccessLogger(cfg)
    expected = {"learn": golden.learn(torch.tensor(expanded)),
                "frozen": golden.lookup(torch.tensor(expanded), popular_max_rrpv=1)}
    _, sets, tags = hash_fields(torch.tensor([key for key, _ in runs]), cfg)
    dut = TagBank(cfg)
    got = {"learn": [], "frozen": []}

    async def bench(ctx):
        ctx.set(dut.popular_max_rrpv, 1)
        for mode in ("learn", "frozen"):
            ctx.set(dut.learn, mode == "learn")
            for i in range(len(runs) + TagBank.LATENCY):
                ctx.set(dut.request.valid, i < len(runs))
                if i < len(runs):
                    ctx.set(dut.request.payload.set, sets[i].item())
                    ctx.set(dut.request.payload.tag, tags[i].item())
                    ctx.set(dut.request.payload.repeated, runs[i][1] > 1)
                await ctx.tick()
                if ctx.get(dut.response.valid):
                    r = dut.response.payload
                    got[mode].append((ctx.get(r.hit), ctx.get(r.way), ctx.get(r.repeat_hit)))

    _simulate(dut, bench, 2 * (len(runs) + TagBank.LATENCY + 2))
    for mode, exp in expected.items():
        hits, ways = [int(h) for h in exp.hit.tolist()], exp.way.tolist()
        want, at = [], 0
        for _, n in runs:
            for j in range(n):
                want.append((hits[at + j], ways[at + j]))
            at += n
        answers = []
        for (hit, way, repeat_hit), (_, n) in zip(got[mode], runs):
            answers += [(hit, way)] + [(repeat_hit, way)] * (n - 1)
        assert answers == want, mode


@pytest.mark.parametrize("policy", ["srrip", "lfu"])
def test_engine_dump_streams_the_store_bank_major_a_record_per_ready_cycle(policy):
    """The engine learns random keys, then dumps four times under ``dump.ready`` high in
    all, 85 %, half and a fifth of the cycles: each dump is the golden model's tag store,
    bank-major (bank 0's sets 0..sets-1, then bank 1's...), with a record in every cycle that
    ``dump.ready`` is high between the first record and the last, nothing after the last,
    ``busy`` high until the last is taken; the first record comes ``DUMP_LATENCY`` cycles
    after ``start_dump``."""
    kw = dict(policy="lfu", ways=4, sketch_counters=8) if policy == "lfu" else {}
    cfg = CFG.replace(**kw)
    rng = random.Random(31)
    keys = [rng.randrange(80) for _ in range(cfg.lanes * 40)]   # 80 keys, 48 entries
    golden = AccessLogger(cfg)
    golden.learn(torch.tensor(keys))
    expected = sorted(golden.dump(), key=lambda beat: (beat.bank, beat.set))
    assert [(b.bank, b.set) for b in expected] == [(b, s) for b in range(cfg.banks)
                                                   for s in range(cfg.sets)]
    codec = PortCodec(cfg)
    dut = LookupEngine(cfg)
    dumps = []
    shares = (1.0, 0.85, 0.5, 0.2)

    async def bench(ctx):
        ctx.set(dut.learn, 1)
        ctx.set(dut.results.ready, 1)
        while ctx.get(dut.busy):                 # the clear that follows reset
            await ctx.tick()
        for i in range(0, len(keys), cfg.lanes):
            ctx.set(dut.lookups.valid, 1)
            ctx.set(dut.lookups.payload.as_value(),
                    codec.pack_lookups([(1, k) for k in keys[i:i + cfg.lanes]]))
            await ctx.tick().until(dut.lookups.ready)
        ctx.set(dut.lookups.valid, 0)
        while ctx.get(dut.busy):
            await ctx.tick()
        for ready_share in shares:
            ctx.set(dut.start_dump, 1)
            await ctx.tick()
            ctx.set(dut.start_dump, 0)
            got, gaps, first, cycle = [], 0, None, 1
            while ctx.get(dut.busy):
                ready = rng.random() < ready_share
                ctx.set(dut.dump.ready, ready)
                if ctx.get(dut.dump.valid):
                    assert len(got) < len(expected), "a record after the last"
                    if ready:
                        bank, set_, ways, sketch = codec.unpack_dump(
                            ctx.get(dut.dump.payload.as_value()))
                        got.append((bank, set_, tuple(ways), sketch))
                        first = cycle if first is None else first
                elif ready and 0 < len(got) < len(expected):
                    gaps += 1
                await ctx.tick()
                cycle += 1
            assert not ctx.get(dut.dump.valid)
            dumps.append((ready_share, got, gaps, first))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(1e-8 * 20000)
    assert [d[0] for d in dumps] == list(shares), "the bench did not finish"
    want = [(b.bank, b.set, tuple(b.ways), b.sketch) for b in expected]
    assert any(v for b in want for v, _, _ in b[2]), "nothing learned"
    for ready_share, got, gaps, first in dumps:
        assert got == want, ready_share
        assert gaps == 0, ready_share
    assert dumps[0][3] == LookupEngine.DUMP_LATENCY

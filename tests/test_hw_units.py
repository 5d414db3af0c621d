"""Amaranth-simulator unit tests of the small RTL blocks against the golden model."""

import random

import pytest
import torch
from amaranth.sim import Simulator

from hotline_spec.config import EALConfig
from hotline_hw.feistel import FeistelHash
from hotline_hw.lfu_tag_bank import LfuTagBank
from hotline_hw.tag_bank import TagBank
from verif.golden import AccessLogger, hash_fields
from verif.tb.ports import PortCodec


@pytest.mark.parametrize("cfg", [
    EALConfig(lanes=2, banks=4, sets=8, ways=2, table_bits=3, row_bits=12, hash_rounds=3),
    EALConfig(lanes=1, banks=64, sets=8192, ways=4, table_bits=5, row_bits=28),  # odd key width
    EALConfig(lanes=3, banks=2, sets=2, ways=1, table_bits=0, row_bits=40, hash_rounds=8),
], ids=["small", "asic-widths", "wide-keys"])
def test_feistel_pipeline_matches_golden_hash(cfg):
    """Random keys with random input gaps and output stalls: every lane's (bank, set, tag)
    equals the golden hash, in order, with nothing lost or repeated."""
    rng = random.Random(7)
    beats = [[rng.getrandbits(cfg.key_bits) for _ in range(cfg.lanes)] for _ in range(60)]
    dut = FeistelHash(cfg)
    got = []

    async def producer(ctx):
        for beat in beats:
            while rng.random() < 0.3:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            for lane, key in enumerate(beat):
                ctx.set(dut.i.payload[lane].key, key)
                ctx.set(dut.i.payload[lane].valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        while len(got) < len(beats):
            ready = rng.random() < 0.7
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)  # let combinational logic settle before sampling
            if ready and ctx.get(dut.o.valid):
                got.append([(ctx.get(dut.o.payload[l].bank), ctx.get(dut.o.payload[l].set),
                             ctx.get(dut.o.payload[l].tag)) for l in range(cfg.lanes)])
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run_until(1e-8 * 2000)
    assert len(got) == len(beats)
    keys = torch.tensor([k for beat in beats for k in beat], dtype=torch.int64)
    bank, set_, tag = hash_fields(keys, cfg)
    expected = list(zip(bank.tolist(), set_.tolist(), tag.tolist()))
    flat = [lane for beat in got for lane in beat]
    mask = lambda v, bits: v & ((1 << max(1, bits)) - 1)
    assert [(mask(b, cfg.bank_bits) if cfg.bank_bits else 0,
             mask(s, cfg.set_bits) if cfg.set_bits else 0, t) for b, s, t in flat] == expected


@pytest.mark.parametrize("policy", ["srrip", "lfu"])
def test_tag_bank_back_to_back_same_set_matches_golden(policy):
    """One bank, requests every cycle to few sets (read-after-write on consecutive cycles:
    the pipeline's forwarding and the transparent read), learn then frozen: every response
    (``TagBank.LATENCY`` cycles after its request) equals the golden model's sequential result."""
    kw = dict(policy="lfu", ways=4, sketch_counters=8) if policy == "lfu" else dict(ways=3)
    cfg = EALConfig(lanes=1, banks=1, sets=4, table_bits=2, row_bits=10, **kw)
    rng = random.Random(3)
    keys = [rng.randrange(40) for _ in range(400)]
    golden = AccessLogger(cfg)
    exp_learn = golden.learn(torch.tensor(keys))
    exp_frozen = (golden.lookup(torch.tensor(keys), popular_max_rrpv=2) if policy == "srrip"
                  else golden.lookup(torch.tensor(keys)))
    _, sets, tags = hash_fields(torch.tensor(keys), cfg)
    dut = (TagBank if policy == "srrip" else LfuTagBank)(cfg)
    results = {"learn": [], "frozen": []}

    async def bench(ctx):
        for mode in ("learn", "frozen"):
            ctx.set(dut.learn, mode == "learn")
            ctx.set(dut.popular_max_rrpv, 2)
            for i in range(len(keys) + TagBank.LATENCY):   # more cycles: the pipeline drains
                if i < len(keys):
                    ctx.set(dut.request.valid, 1)
                    ctx.set(dut.request.payload.set, sets[i].item())
                    ctx.set(dut.request.payload.tag, tags[i].item())
                else:
                    ctx.set(dut.request.valid, 0)
                await ctx.tick()
                if ctx.get(dut.response.valid):
                    results[mode].append((i, ctx.get(dut.response.payload.hit),
                                          ctx.get(dut.response.payload.way)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for mode, exp in (("learn", exp_learn), ("frozen", exp_frozen)):
        got = results[mode]
        # Sampled after the tick of cycle i: the response to request i + 1 - LATENCY.
        assert [r[0] for r in got] == list(range(TagBank.LATENCY - 1,
                                                 len(keys) + TagBank.LATENCY - 1)), "latency"
        assert [r[1] for r in got] == [int(h) for h in exp.hit.tolist()], mode
        assert [r[2] for r in got] == exp.way.tolist(), mode


def test_port_codec_round_trip():
    """The payload packing used by the cocotb bench agrees with itself on every field."""
    cfg = EALConfig(lanes=3, banks=8, sets=16, ways=3)
    codec = PortCodec(cfg)
    lanes = [(1, 1, cfg.entries - 1), (0, 0, 0), (1, 0, 5)]
    assert codec.unpack_results(codec.pack_results(lanes)) == lanes


def test_port_codec_masks_64_bit_keys():
    """64-bit keys arrive as int64 patterns (negative when the top bit is set, docs/spec.md
    section 2): the codec masks them to the key field, so no bit spills into the valid bit
    or the next lane, and they read back as the unsigned pattern."""
    cfg = EALConfig(lanes=3, banks=4, sets=2, ways=3, table_bits=4, row_bits=60)
    codec = PortCodec(cfg)
    keys = [-1, -2**63, 2**63 - 1]      # all ones, the top bit alone, all but the top bit
    value = codec.pack_lookups([(1, k) for k in keys])
    assert value >> (3 * (1 + cfg.key_bits)) == 0
    assert codec.unpack_lookups(value) == [(1, k % 2**64) for k in keys]
    hole_after = codec.pack_lookups([(1, -1), (0, 0), (0, 0)])
    assert codec.unpack_lookups(hole_after) == [(1, 2**64 - 1), (0, 0), (0, 0)]
    assert codec.pack_lookups([(1, -5)]) == codec.pack_lookups([(1, 2**64 - 5)])


@pytest.mark.parametrize("policy", ["srrip", "lfu"])
def test_tag_bank_keeps_the_mode_of_each_request(policy):
    """The bank samples ``learn`` with each request: lookups in flight finish in the mode
    they were issued in when ``learn`` changes right behind them. Learn requests followed at
    once by ``learn = 0`` (the last ones must still update the set), frozen requests followed
    at once by ``learn = 1`` (they must not write), then a frozen pass over every key reads
    the state back; every response equals the golden model's."""
    kw = dict(policy="lfu", ways=4, sketch_counters=8) if policy == "lfu" else dict(ways=3)
    cfg = EALConfig(lanes=1, banks=1, sets=4, table_bits=2, row_bits=10, **kw)
    rng = random.Random(9)
    # The last key of each run is new, so its write (or its absence) shows in the last pass.
    learned = [rng.randrange(40) for _ in range(30)] + [1000]
    probed = [rng.randrange(40, 80) for _ in range(30)] + [1001]
    everything = learned + probed
    golden = AccessLogger(cfg)
    threshold = {"popular_max_rrpv": 3} if policy == "srrip" else {}
    expected = [golden.learn(torch.tensor(learned)),
                golden.lookup(torch.tensor(probed), **threshold),
                golden.lookup(torch.tensor(everything), **threshold)]
    plan = [(1, learned, 0), (0, probed, 1), (0, everything, 0)]
    dut = (TagBank if policy == "srrip" else LfuTagBank)(cfg)
    got = [[] for _ in plan]

    async def bench(ctx):
        ctx.set(dut.popular_max_rrpv, 3)
        for run, (learn, keys, after) in enumerate(plan):
            _, sets, tags = hash_fields(torch.tensor(keys), cfg)
            ctx.set(dut.learn, learn)
            for i in range(len(keys) + TagBank.LATENCY + 1):
                ctx.set(dut.request.valid, i < len(keys))
                if i < len(keys):
                    ctx.set(dut.request.payload.set, sets[i].item())
                    ctx.set(dut.request.payload.tag, tags[i].item())
                if i == len(keys):
                    ctx.set(dut.learn, after)   # the cycle after the last request
                await ctx.tick()
                if ctx.get(dut.response.valid):
                    got[run].append((ctx.get(dut.response.payload.hit),
                                     ctx.get(dut.response.payload.way)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for run, exp in enumerate(expected):
        assert got[run] == list(zip([int(h) for h in exp.hit.tolist()], exp.way.tolist())), run

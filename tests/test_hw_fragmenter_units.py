"""Amaranth-simulator unit tests of the fragmenter's small blocks: the input classifier and
the de-dup table (hashing, probing, epochs, clear), each against a plain-Python model."""

import random

import pytest
import torch
from amaranth.sim import Simulator

from hotline_spec.config import EALConfig, FragmenterConfig, FRAGMENTER_CONFIGS
from hotline_hw.fragmenter import DedupTable, InputClassifier
from verif.golden import dedup_bank, dedup_bucket, dedup_cut


@pytest.mark.parametrize("lanes,n_tables", [(4, 26), (4, 3), (4, 1), (1, 5), (8, 4)])
def test_classifier_matches_python(lanes, n_tables):
    """Random beats with holes and hits: per lane ``last`` and (at the end of an input) its
    verdict equal a sequential Python count over the valid lookups."""
    fcfg = FragmenterConfig(eal=EALConfig(lanes=lanes), dedup_sets=16)
    dut = InputClassifier(fcfg)
    rng = random.Random(lanes * 100 + n_tables)
    beats = [[(rng.random() < 0.8, rng.random() < 0.85) for _ in range(lanes)]
             for _ in range(200)]
    expected, pos, acc = [], 0, True
    for beat in beats:
        row = []
        for valid, hit in beat:
            if not valid:
                row.append((0, None))
                continue
            acc = hit if pos == 0 else acc and hit
            last = pos == n_tables - 1
            row.append((int(last), int(acc) if last else None))
            pos = 0 if last else pos + 1
        expected.append(row)
    got = []

    async def bench(ctx):
        pos_v, acc_v = 0, 1
        ctx.set(dut.n_tables, n_tables)
        for beat in beats:
            ctx.set(dut.pos_in, pos_v)
            ctx.set(dut.acc_in, acc_v)
            ctx.set(dut.valid, sum(int(v) << l for l, (v, _) in enumerate(beat)))
            ctx.set(dut.hit, sum(int(h) << l for l, (_, h) in enumerate(beat)))
            await ctx.delay(1e-9)
            last, pop = ctx.get(dut.last), ctx.get(dut.popular)
            got.append([((last >> l) & 1, (pop >> l) & 1 if (last >> l) & 1 else None)
                        for l in range(lanes)])
            pos_v, acc_v = ctx.get(dut.pos_out[-1]), ctx.get(dut.acc_out[-1])

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert got == expected


def _keys_in_bucket(fcfg, bank, bucket, n, start=1):
    """``n`` keys whose home is ``(bank, bucket)``: crafted collisions."""
    out, k = [], start
    while len(out) < n:
        ks = torch.arange(k, k + 200_000, dtype=torch.int64)
        sel = (dedup_bank(ks, fcfg) == bank) & (dedup_bucket(ks, fcfg) == bucket)
        out += ks[sel].tolist()
        k += 200_000
    return out[:n]


def test_dedup_table_probes_collisions_and_forgets_old_epochs():
    """One lane: keys that all share a home bucket fill it and spill into the next buckets
    (linear probing), are found again with their rank, and vanish when the epoch changes;
    ``clear`` empties the table."""
    fcfg = FRAGMENTER_CONFIGS["small"]
    dut = DedupTable(fcfg)
    ways = fcfg.dedup_ways
    keys = _keys_in_bucket(fcfg, bank=2, bucket=fcfg.dedup_sets - 1, n=2 * ways + 1)
    log = []

    async def probe(ctx, key, insert_rank=None):
        """Probe home, home+1, ... like the fragmenter; insert when free. -> (found rank | None, probes)."""
        home = int(dedup_bucket(torch.tensor([key]), fcfg)[0])
        bank = int(dedup_bank(torch.tensor([key]), fcfg)[0])
        for probes in range(fcfg.dedup_sets):
            ctx.set(dut.req_valid0, 1)
            ctx.set(dut.req_bank0, bank)
            ctx.set(dut.req_bucket0, (home + probes) % fcfg.dedup_sets)
            ctx.set(dut.req_key0, key)
            await ctx.delay(1e-9)
            if ctx.get(dut.match0):
                rank = ctx.get(dut.rank0)
                ctx.set(dut.req_valid0, 0)
                return rank, probes + 1
            if ctx.get(dut.free0):
                if insert_rank is not None:
                    ctx.set(dut.ins0, 1)
                    ctx.set(dut.ins_rank0, insert_rank)
                    await ctx.tick()
                    ctx.set(dut.ins0, 0)
                ctx.set(dut.req_valid0, 0)
                return None, probes + 1
        raise AssertionError("table full")

    async def bench(ctx):
        await ctx.tick().until(~dut.busy)           # the clear after reset
        ctx.set(dut.epoch, 1)
        for rank, key in enumerate(keys):
            found, probes = await probe(ctx, key, insert_rank=rank)
            assert found is None
            log.append(probes)
        for rank, key in enumerate(keys):
            found, _ = await probe(ctx, key)
            assert found == rank, (key, found, rank)
        ctx.set(dut.epoch, 2)                       # a new working set: all entries stale
        for key in keys:
            assert (await probe(ctx, key))[0] is None
        ctx.set(dut.epoch, 1)                       # epoch 1 again: still there ...
        assert (await probe(ctx, keys[0]))[0] == 0
        ctx.set(dut.clear, 1)                       # ... until a clear
        await ctx.tick()
        ctx.set(dut.clear, 0)
        await ctx.tick().until(~dut.busy)
        for key in keys:
            assert (await probe(ctx, key))[0] is None

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # The home bucket (the last one) takes `ways` keys; the rest wrap around to bucket 0, 1.
    assert log == [1] * ways + [2] * ways + [3]


def test_dedup_cut_matches_sequential_count():
    """The golden bank-capacity rule equals a sequential insert-and-count over the inputs."""
    fcfg = FRAGMENTER_CONFIGS["small"]
    rng = torch.Generator().manual_seed(3)
    for n_tables in (1, 5, 26):
        for _ in range(5):
            n = 60
            keys = torch.randint(0, 1 << 29, (n, n_tables), generator=rng)
            keys[:, 1:] = torch.where(torch.rand(n, n_tables - 1, generator=rng) < 0.3,
                                      keys[:, :1], keys[:, 1:]) if n_tables > 1 else keys[:, 1:]
            seen, counts, cut = set(), {}, n
            for i in range(n):
                for k in keys[i].tolist():
                    if k not in seen:
                        seen.add(k)
                        b = int(dedup_bank(torch.tensor([k]), fcfg)[0])
                        counts[b] = counts.get(b, 0) + 1
                if max(counts.values(), default=0) > fcfg.bank_capacity - n_tables:
                    cut = i + 1
                    break
            flat = keys.reshape(-1)
            uniq, first = [], {}
            for p, k in enumerate(flat.tolist()):
                if k not in first:
                    first[k] = p // n_tables
                    uniq.append(k)
            got = dedup_cut(torch.tensor(uniq), torch.tensor([first[k] for k in uniq]), n,
                            n_tables, fcfg)
            assert got == cut

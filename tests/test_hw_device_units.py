"""The device's command decoder and sequencer alone, in the Amaranth simulator.

The decoder is compared with the driver's own statement of the checks
(``sw_driver.device_checks.check_command``, plain Python written from docs/device.md); the
sequencer drives fake executors that finish after random delays with random errors, and a
plain-Python model says which commands complete, fail, halt and are dropped.
"""

import random

import pytest
from amaranth.sim import Simulator

from hotline_hw.device.command import ExecutorKind
from hotline_hw.device.decoder import CommandDecoder
from hotline_hw.device.sequencer import Sequencer, EXECUTORS
from hotline_spec.commands import Opcode, ErrorCause, Engine
from hotline_spec.config import DEFAULT_DEVICE, SMALL_DEVICE
from sw_driver.device_checks import check_command

KIND = {Opcode.FENCE: ExecutorKind.NONE, Opcode.LEARN: ExecutorKind.LOOKUP,
        Opcode.LOOKUP: ExecutorKind.LOOKUP, Opcode.DUMP: ExecutorKind.DUMP,
        Opcode.CLEAR: ExecutorKind.CLEAR, Opcode.GATHER: ExecutorKind.ROWS,
        Opcode.WRITE_BACK: ExecutorKind.ROWS}


def random_command(rng, dcfg):
    op = rng.randrange(16) if rng.random() < 0.1 else int(rng.choice(list(Opcode)))
    count = rng.choice([0, 1, rng.randrange(1, 1 << 20), dcfg.max_count, dcfg.max_count + 1,
                        dcfg.eal.entries, (1 << 32) - 1])
    addr0 = rng.randrange(1 << 40) & ~rng.choice([0, 7, 7, 7])
    addr1 = rng.randrange(1 << 40) & ~rng.choice([0, 7, dcfg.bus_bytes - 1, dcfg.bus_bytes - 1])
    row_bytes = rng.choice([0, dcfg.bus_bytes, 3 * dcfg.bus_bytes, dcfg.max_row_bytes,
                            dcfg.max_row_bytes + dcfg.bus_bytes, dcfg.bus_bytes + 8,
                            rng.randrange(1 << 16)])
    return op, count, addr0, addr1, row_bytes


@pytest.mark.parametrize("dcfg", [DEFAULT_DEVICE, SMALL_DEVICE], ids=["default", "small"])
def test_decoder_matches_the_drivers_checks(dcfg):
    dut = CommandDecoder(dcfg)
    rng = random.Random(5)
    cases = [random_command(rng, dcfg) for _ in range(600)]

    async def bench(ctx):
        for op, count, addr0, addr1, row_bytes in cases:
            ctx.set(dut.command.opcode, op)
            ctx.set(dut.command.count, count)
            ctx.set(dut.command.addr0, addr0)
            ctx.set(dut.command.addr1, addr1)
            ctx.set(dut.row_bytes, row_bytes)
            valid, cause, engine, addr = (ctx.get(dut.error.valid), ctx.get(dut.error.cause),
                                          ctx.get(dut.error.engine), ctx.get(dut.error.addr))
            kind = ctx.get(dut.kind)
            if op > max(Opcode):
                assert (valid, cause, kind) == (1, ErrorCause.BAD_OPCODE, 0)
                continue
            fault = check_command(dcfg, op, count, addr0, addr1, row_bytes)
            if fault is None:
                assert not valid, (Opcode(op), count, addr0, addr1, row_bytes, ErrorCause(cause))
                assert kind == KIND[Opcode(op)]
            else:
                assert valid and kind == ExecutorKind.NONE
                assert (cause, engine, addr) == (fault.cause, Engine.DECODER, fault.address), \
                    (Opcode(op), count, addr0, addr1, row_bytes)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


def test_sequencer_runs_in_order_halts_and_drops():
    dcfg = SMALL_DEVICE
    dut = Sequencer(dcfg)
    rng = random.Random(11)
    # A script of commands: (opcode, fake executor delay, error cause or 0). Counts and
    # addresses are valid, so only the fake executors fail.
    script = []
    for _ in range(60):
        op = rng.choice([Opcode.FENCE, Opcode.LEARN, Opcode.LOOKUP, Opcode.CLEAR,
                         Opcode.GATHER, Opcode.WRITE_BACK])
        fail = ErrorCause.READ_SLVERR if op != Opcode.FENCE and rng.random() < 0.12 else 0
        script.append((op, rng.randrange(0, 12), fail))
    log = []                        # (seq, kind) of every executor start

    def executor(name):
        job = getattr(dut, name)
        kind = next(k for k, n in EXECUTORS.items() if n == name)

        async def run(ctx):
            while True:
                await ctx.tick()
                if not ctx.get(job.start):
                    continue
                seq = len(log)
                log.append((name, ctx.get(job.params.opcode)))
                ctx.set(job.busy, 1)
                # The command's index travels in addr0, so the fake cannot mix commands up.
                _, delay, fail = script[ctx.get(job.params.addr0) // 8]
                await ctx.tick()                 # done comes at the earliest a cycle later
                for _ in range(delay):
                    await ctx.tick()
                ctx.set(job.error.valid, 1 if fail else 0)
                ctx.set(job.error.cause, fail)
                ctx.set(job.error.engine, Engine.ROW_READ)
                ctx.set(job.error.addr, 0x1000 + seq)
                ctx.set(job.done, 1)
                await ctx.tick()
                ctx.set(job.done, 0)
                ctx.set(job.busy, 0)
        return run

    async def host(ctx):
        ctx.set(dut.row_bytes, dcfg.bus_bytes)
        await ctx.tick().until(~dut.init)
        i = 0
        expected_done = 0
        dropped = 0
        while i < len(script):
            # Submit a random burst of commands while the queue has room.
            burst = rng.randrange(1, dcfg.cmd_depth + 1)
            first = i
            for _ in range(burst):
                if i == len(script) or ctx.get(dut.full):
                    break
                op, _, _ = script[i]
                ctx.set(dut.staged.opcode, op)
                ctx.set(dut.staged.count, dcfg.eal.entries if op == Opcode.DUMP else 5)
                ctx.set(dut.staged.addr0, 8 * i)
                ctx.set(dut.staged.addr1, 0x1000)
                ctx.set(dut.submit, 1)
                await ctx.tick()
                ctx.set(dut.submit, 0)
                i += 1
            # Run them: each either completes, or fails and the rest of the burst drops.
            for j in range(first, i):
                for _ in range(200):     # a cycle budget: a hang fails here, not later
                    if ctx.get(dut.completed) + ctx.get(dut.dropped) > j or ctx.get(dut.halted):
                        break
                    await ctx.tick()
                if ctx.get(dut.halted):
                    op, _, fail = script[j]
                    assert fail, f"command {j} ({op.name}) halted without an error"
                    assert ctx.get(dut.error.cause) == fail
                    assert ctx.get(dut.err_command) == j
                    assert ctx.get(dut.completed) == j + 1 - dropped
                    ctx.set(dut.err_ack, 1)
                    await ctx.tick()
                    ctx.set(dut.err_ack, 0)
                    for _ in range(40):
                        await ctx.tick()
                    assert not ctx.get(dut.halted)
                    dropped += i - j - 1
                    assert ctx.get(dut.dropped) == dropped
                    break
                assert not script[j][2], f"command {j} completed although it failed"
        assert ctx.get(dut.submitted) == len(script)
        assert ctx.get(dut.completed) + ctx.get(dut.dropped) == len(script)
        starts = [op for _, op in log]
        assert all(op != Opcode.FENCE for op in starts)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for name in EXECUTORS.values():
        sim.add_testbench(executor(name), background=True)
    sim.add_testbench(host)
    sim.run()

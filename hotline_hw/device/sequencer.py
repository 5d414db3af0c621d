"""The command sequencer: pop, decode, dispatch, wait, complete or halt."""

from amaranth import Signal, Module
from amaranth.lib import wiring, fifo
from amaranth.lib.wiring import In, Out

from hotline_spec.config import DeviceConfig
from ..job import job_signature, error_record
from .command import command_layout, job_params, ExecutorKind
from .decoder import CommandDecoder

__all__ = ["Sequencer", "EXECUTORS"]

#: The executor ports, by the kind that runs on each.
EXECUTORS = {ExecutorKind.LOOKUP: "lookup", ExecutorKind.ROWS: "rows",
             ExecutorKind.DUMP: "dump", ExecutorKind.CLEAR: "clear"}


class Sequencer(wiring.Component):
    """Runs the queued commands one after another (``docs/device.md``, "Ordering").

    It pops a command, has :class:`CommandDecoder` check it, starts its executor, and waits
    for the executor's ``done`` (which comes only after every write the command issued has
    its B response), so commands never overlap. A failed command (refused or a bus error)
    halts it with the error recorded until ``err_ack``; then the queued commands are dropped.
    After reset it waits for the engine's tag-store clear before the first command.

    Attributes
    ----------
    submit : In(1)
        Push ``staged`` (with the next sequence number) into the command FIFO. Ignored when
        ``full``.
    staged : In(command_layout())
        The staged command registers (``seq`` is ignored).
    full : Out(1)
    free : Out(range(cmd_depth + 1))
    submitted, completed, dropped : Out(32)
        Commands accepted, completed (with or without error) and dropped since reset.
    row_bytes, threshold : In
        ``ROW_BYTES`` and ``POPULAR_MAX_RRPV``, sampled when a command is popped.
    err_ack : In(1)
        Pulse: acknowledge the error (ignored unless halted).
    engine_busy : In(1)
    init, busy, halted : Out(1)
        ``STATUS`` bits.
    error : Out(error_record())
        The failed command's error while halted (zero otherwise).
    err_command : Out(32)
        The failed command's sequence number.
    finished : Out(1)
        Pulse: a command completed (``failed`` says whether with an error).
    failed : Out(1)
    irq_done : Out(1)
        Pulse: a command with the ``irq`` flag completed without error.
    finished_opcode, finished_count : Out
        The completed command's opcode and count (with ``finished``).
    lookup, rows, dump, clear : Out(job_signature(job_params()))
        The executors.
    """

    def __init__(self, dcfg: DeviceConfig):
        self.dcfg = dcfg
        members = {
            "submit": In(1), "staged": In(command_layout()),
            "full": Out(1), "free": Out(range(dcfg.cmd_depth + 1)),
            "submitted": Out(32), "completed": Out(32), "dropped": Out(32),
            "row_bytes": In(16), "threshold": In(2),
            "err_ack": In(1), "engine_busy": In(1),
            "init": Out(1), "busy": Out(1), "halted": Out(1),
            "error": Out(error_record()), "err_command": Out(32),
            "finished": Out(1), "failed": Out(1), "irq_done": Out(1),
            "finished_opcode": Out(4), "finished_count": Out(32),
        }
        for name in EXECUTORS.values():
            members[name] = Out(job_signature(job_params()))
        super().__init__(members)

    def elaborate(self, platform):
        c = self.dcfg
        m = Module()
        layout = command_layout()
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=layout.size, depth=c.cmd_depth)
        m.submodules.decoder = decoder = CommandDecoder(c)

        # ---- the queue ------------------------------------------------------------------
        entry = Signal(layout)
        m.d.comb += [entry.eq(self.staged), entry.seq.eq(self.submitted),
                     queue.w_stream.payload.eq(entry),
                     queue.w_stream.valid.eq(self.submit & queue.w_stream.ready),
                     self.full.eq(~queue.w_stream.ready),
                     self.free.eq(c.cmd_depth - queue.level)]
        with m.If(self.submit & queue.w_stream.ready):
            m.d.sync += self.submitted.eq(self.submitted + 1)

        # ---- the command being run -------------------------------------------------------
        cmd = Signal(layout)
        popped = layout(queue.r_stream.payload)
        # The executors' parameters: the command's fields and the two registers sampled
        # when it was popped.
        row_bytes = Signal(16)
        threshold = Signal(2)
        params = Signal(job_params())
        m.d.comb += [params.opcode.eq(cmd.opcode), params.count.eq(cmd.count),
                     params.addr0.eq(cmd.addr0), params.addr1.eq(cmd.addr1),
                     params.row_bytes.eq(row_bytes), params.threshold.eq(threshold)]
        kind = Signal(ExecutorKind)
        refusal = Signal(error_record())
        m.d.comb += [decoder.command.eq(cmd), decoder.row_bytes.eq(row_bytes),
                     self.finished_opcode.eq(cmd.opcode), self.finished_count.eq(cmd.count)]
        for name in EXECUTORS.values():
            m.d.comb += getattr(self, name).params.eq(params)

        finish_ok = Signal()
        finish_fail = Signal()
        fail_record = Signal(error_record())
        with m.FSM(init="RESET_CLEAR") as fsm:
            with m.State("RESET_CLEAR"):
                m.d.comb += self.init.eq(1)
                with m.If(~self.engine_busy):
                    m.next = "IDLE"
            with m.State("IDLE"):
                with m.If(self.halted):
                    with m.If(self.err_ack):
                        m.next = "DROP"
                with m.Elif(queue.r_stream.valid):
                    m.d.comb += queue.r_stream.ready.eq(1)
                    m.d.sync += [cmd.eq(popped), row_bytes.eq(self.row_bytes),
                                 threshold.eq(self.threshold)]
                    m.next = "DECODE"
            with m.State("DROP"):
                with m.If(queue.r_stream.valid):
                    m.d.comb += queue.r_stream.ready.eq(1)
                    m.d.sync += self.dropped.eq(self.dropped + 1)
                with m.Else():
                    m.d.sync += [self.halted.eq(0), self.error.eq(0), self.err_command.eq(0)]
                    m.next = "IDLE"
            with m.State("DECODE"):
                # The decoder's verdict is registered before it steers anything.
                m.d.sync += [kind.eq(decoder.kind), refusal.eq(decoder.error)]
                m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(refusal.valid):
                    m.d.comb += [finish_fail.eq(1), fail_record.eq(refusal)]
                    m.next = "IDLE"
                with m.Elif(kind == ExecutorKind.NONE):
                    m.d.comb += finish_ok.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    for k, name in EXECUTORS.items():
                        with m.If(kind == k):
                            m.d.comb += getattr(self, name).start.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                for k, name in EXECUTORS.items():
                    job = getattr(self, name)
                    with m.If((kind == k) & job.done):
                        with m.If(job.error.valid):
                            m.d.comb += [finish_fail.eq(1), fail_record.eq(job.error)]
                        with m.Else():
                            m.d.comb += finish_ok.eq(1)
                        m.next = "IDLE"

        with m.If(finish_ok | finish_fail):
            m.d.sync += self.completed.eq(self.completed + 1)
        m.d.comb += [self.finished.eq(finish_ok | finish_fail), self.failed.eq(finish_fail),
                     self.irq_done.eq(finish_ok & cmd.irq)]
        with m.If(finish_fail):
            m.d.sync += [self.halted.eq(1), self.error.eq(fail_record),
                         self.err_command.eq(cmd.seq)]
        waiting = queue.r_stream.valid & ~self.halted          # a queued command will run
        m.d.comb += self.busy.eq(self.init | ~fsm.ongoing("IDLE") | waiting)
        return m

"""One bank of the lookup engine with its request and response queues."""

from amaranth import Signal, Module
from amaranth.lib import wiring, stream, fifo
from amaranth.lib.wiring import In, Out

from hotline_spec.config import EALConfig
from .layouts import bank_request, bank_response, set_layout
from .lfu_tag_bank import LfuTagBank
from .tag_bank import TagBank, MaintenanceSignature

__all__ = ["BankPipeline", "RESPONSE_QUEUE_DEPTH"]

#: Responses a bank may have issued and not yet handed on: the bank's pipeline
#: (``TagBank.LATENCY`` cycles), the buffered response queue's two cycles from write to
#: read, and the consumer's cycle, so a bank answered every cycle is never held back.
RESPONSE_QUEUE_DEPTH = TagBank.LATENCY + 3


class BankPipeline(wiring.Component):
    """A tag bank between a request queue and a response queue.

    Parameters
    ----------
    cfg : EALConfig
        The bank's geometry and policy, and ``queue_depth``.

    Attributes
    ----------
    requests : In(stream of ``bank_request``)
        Lookups for this bank in stream order, taken into a register and from there into
        the request queue (``queue_depth + 1`` entries: ``queue_depth`` waiting and one
        on its way to the bank); ``ready`` (a register) is low while they are full.
    responses : Out(stream of ``bank_response``)
        ``hit`` and ``way`` of each request, in request order.
    learn, popular_max_rrpv : In
        Passed to the bank (sampled with each request).
    maint : In(MaintenanceSignature)
        The bank's maintenance access (clear and dump), used only while ``busy`` is low.
    read_data : Out(set_layout)
        The bank's registered memory read data (:attr:`TagBank.read_data`): the set that
        ``maint.read`` asked for, two cycles later.

    The bank takes a request only when its response is sure to have room: it issues from
    the request queue while fewer than ``RESPONSE_QUEUE_DEPTH`` of its responses are
    outstanding (in the bank or in the response queue), so a stalled consumer stops the
    bank without a response ever being dropped, and the request queue then fills and
    back-pressures the switch.
    """

    def __init__(self, cfg: EALConfig):
        self.cfg = cfg
        super().__init__({
            "requests": In(stream.Signature(bank_request(cfg))),
            "responses": Out(stream.Signature(bank_response(cfg))),
            "learn": In(1), "popular_max_rrpv": In(2),
            "maint": In(MaintenanceSignature(cfg)),
            "read_data": Out(set_layout(cfg)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        request_bits = bank_request(cfg).size
        response_bits = bank_response(cfg).size
        # One entry more than ``queue_depth``: ``ready`` is decided a cycle ahead (below),
        # and a lookup streaming through spends that cycle in the request register while
        # the one before it waits in the queue for its read.
        capacity = cfg.queue_depth + 1
        m.submodules.queue = queue = fifo.SyncFIFO(width=request_bits, depth=capacity)
        m.submodules.bank = bank = (TagBank if cfg.policy == "srrip" else LfuTagBank)(cfg)
        # Buffered: the answers leave from registers, the release's inputs.
        m.submodules.answers = answers = fifo.SyncFIFOBuffered(width=response_bits,
                                                               depth=RESPONSE_QUEUE_DEPTH)
        wiring.connect(m, wiring.flipped(self.maint), bank.maint)

        # Requests arrive into a register and are written into the queue from there, so
        # the switch's select ends at this register, not at the queue's memory; ``ready`` is
        # a register too: high while the queue and the register will hold fewer than
        # ``capacity`` lookups, so a lookup taken in the next cycle always finds room.
        arriving = Signal()
        arriving_payload = Signal(request_bits)
        ready = Signal()
        accepted = Signal()
        issue = Signal()
        held_next = Signal(range(capacity + 2))
        m.d.comb += [
            self.requests.ready.eq(ready),
            accepted.eq(self.requests.valid & ready),
            queue.w_data.eq(arriving_payload),
            queue.w_en.eq(arriving),
            held_next.eq(queue.level + arriving - issue + accepted),
        ]
        m.d.sync += [arriving.eq(accepted), arriving_payload.eq(self.requests.payload),
                     ready.eq(held_next < capacity)]

        outstanding = Signal(range(RESPONSE_QUEUE_DEPTH + 1))
        handed_on = Signal()
        m.d.comb += [
            issue.eq(queue.r_rdy & (outstanding < RESPONSE_QUEUE_DEPTH)),
            queue.r_en.eq(issue),
            bank.request.valid.eq(issue),
            bank.request.payload.eq(queue.r_data),
            bank.learn.eq(self.learn),
            bank.popular_max_rrpv.eq(self.popular_max_rrpv),
            self.read_data.eq(bank.read_data),

            answers.w_data.eq(bank.response.payload),
            answers.w_en.eq(bank.response.valid),
            self.responses.valid.eq(answers.r_rdy),
            self.responses.payload.eq(answers.r_data),
            answers.r_en.eq(self.responses.ready),
            handed_on.eq(self.responses.valid & self.responses.ready),
        ]
        m.d.sync += outstanding.eq(outstanding + issue - handed_on)
        return m

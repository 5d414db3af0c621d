"""One bank of the Embedding Access Logger: a set-associative tag store with SRRIP.

Implements docs/spec.md section 4 for the sets of one bank, one lookup per cycle, in a
three-stage pipeline (read, update, write) with forwarding.
"""

from amaranth import Signal, Module, Mux
from amaranth.lib import wiring, memory, stream
from amaranth.lib.wiring import In, Out

from .config import EALConfig, RRPV_INSERT, RRPV_MAX
from .layouts import set_layout, bank_request, bank_response

__all__ = ["TagBank", "MaintenanceSignature"]


class MaintenanceSignature(wiring.Signature):
    """The maintenance side of a bank, as the engine's clear and dump sequencer drives it.

    Members
    -------
    read : Out(1)
        Read set ``addr``; its ways appear on the bank's ``read_data`` the next cycle.
    hold : Out(1)
        Keep ``read_data`` unchanged (the read port is not enabled).
    clear : Out(1)
        Write an all-zero set at ``addr`` this cycle.
    addr : Out(set_bits)
        The set that ``read`` and ``clear`` address.
    """

    def __init__(self, cfg: EALConfig):
        super().__init__({"read": Out(1), "hold": Out(1), "clear": Out(1),
                          "addr": Out(max(1, cfg.set_bits))})


class TagBank(wiring.Component):
    """A bank of ``sets`` x ``ways`` tag-store entries, pipelined: read, update, write.

    Parameters
    ----------
    cfg : EALConfig
        Sets, ways, tag width and policy parameters of the bank.

    Attributes
    ----------
    request : In(stream of ``bank_request``, always ready)
        A lookup for this bank (set, tag, ``repeated``), taken every cycle it is valid: the
        bank never stalls, so whoever feeds it must have room for the response.
        ``repeated``: in learn mode the key is left at RRPV 0, as the repeats of it later
        in its beat (which skip the bank, :class:`RepeatMarker`) would leave it.
    response : Out(stream of ``bank_response``, always ready)
        ``hit``, ``way`` and ``repeat_hit`` (the answer of its repeats) of each request,
        registered: valid two cycles after the request, in request order.
    learn, popular_max_rrpv : In
        Mode (sampled with each request: a lookup in flight keeps the mode it was issued
        in) and frozen-mode threshold (spec section 4; stable while lookups are in flight).
    maint : In(MaintenanceSignature)
        Read, hold and clear a set while no lookup is in flight (clear and dump).
    read_data : Out(set_layout)
        The memory read port's data.

    Pipeline: cycle ``t`` the request's set is read (stage 1); ``t + 1`` the update stage
    computes the new set and the response from the read ways (stage 2) and registers both;
    ``t + 2`` the write port stores the new set (stage 3) while the response is out. Two
    paths keep back-to-back lookups of one set exact, so they need no stall and are
    processed exactly in the order they were granted: the read port is transparent to the
    write port (a read in the cycle of a write sees the new ways), and the set being written
    is forwarded into the update stage when it is the set that stage works on (the update
    of the lookup one cycle ahead, which the memory read missed). The clock is then set by
    the update stage (forwarding mux, tag compares, victim choice), not by a memory
    read-modify-write in one cycle.
    """

    def __init__(self, cfg: EALConfig):
        self.cfg = cfg
        super().__init__({
            "request": In(stream.Signature(bank_request(cfg), always_ready=True)),
            "response": Out(stream.Signature(bank_response(cfg), always_ready=True)),
            "learn": In(1), "popular_max_rrpv": In(2),
            "maint": In(MaintenanceSignature(cfg)),
            "read_data": Out(set_layout(cfg)),
        })

    def _read_and_request(self, m, extra=()):
        """The bank's memory, its read address (request or maintenance), the update stage's
        registers (the request whose set was read) and the forwarded set word. ``extra``:
        more ``(signal, value)`` pairs registered with the request. Returns ``(wr, word,
        s1_valid, s1_set, s1_tag)`` where ``word`` is the set the update stage works
        on; shared by the SRRIP and lfu banks (:meth:`_write_and_respond` closes the
        pipeline)."""
        cfg = self.cfg
        # Block RAM on every FPGA: without the attribute Yosys puts a 64-set bank in
        # UltraScale+ distributed RAM (docs/benchmarks.md, FPGA synthesis).
        m.submodules.mem = mem = memory.Memory(shape=set_layout(cfg), depth=cfg.sets, init=[],
                                               attrs={"ram_style": "block"})
        wr = mem.write_port()
        rd = mem.read_port(transparent_for=(wr,))
        m.d.comb += [
            rd.addr.eq(Mux(self.maint.read | self.maint.hold, self.maint.addr,
                           self.request.payload.set)),
            rd.en.eq(~self.maint.hold),
            self.read_data.eq(rd.data),
        ]
        # Stage 2 (update): the request whose set the memory is reading.
        s1_valid = Signal()
        s1_set = Signal.like(self.request.payload.set)
        s1_tag = Signal.like(self.request.payload.tag)
        self._s1_learn = Signal()
        self._s1_repeated = Signal()
        m.d.sync += [s1_valid.eq(self.request.valid), s1_set.eq(self.request.payload.set),
                     s1_tag.eq(self.request.payload.tag), self._s1_learn.eq(self.learn),
                     self._s1_repeated.eq(self.request.payload.repeated)]
        m.d.sync += [sig.eq(value) for sig, value in extra]
        # Stage 3 (write): the previous update's set, written this cycle.
        self._s2_write = Signal()
        self._s2_set = Signal.like(s1_set)
        self._s2_word = Signal(set_layout(cfg))
        forward = Signal()
        word = Signal(set_layout(cfg))
        m.d.comb += [
            forward.eq(self._s2_write & (self._s2_set == s1_set)),
            word.eq(Mux(forward, self._s2_word.as_value(), rd.data.as_value())),
        ]
        return wr, word, s1_valid, s1_set, s1_tag

    def _match_free(self, m, cur, s1_tag):
        """Per-way ``match`` (valid and the tag equal) and ``free`` (not valid) bits."""
        match = Signal(self.cfg.ways)
        free = Signal(self.cfg.ways)
        for w in range(self.cfg.ways):
            m.d.comb += [match[w].eq(cur[w].valid & (cur[w].tag == s1_tag)),
                         free[w].eq(~cur[w].valid)]
        return match, free

    def _lowest(self, m, bits, name):
        """Index of the lowest set bit of ``bits`` (0 when none)."""
        index = Signal(max(1, self.cfg.way_bits), name=name)
        for w in reversed(range(self.cfg.ways)):
            with m.If(bits[w]):
                m.d.comb += index.eq(w)
        return index

    def _write_and_respond(self, m, wr, new, s1_valid, s1_set, hit, way, repeat_hit):
        """Register the updated set (written next cycle in learn mode; a maintenance clear
        zeroes a set at once) and the response ``hit`` / ``way`` / ``repeat_hit``."""
        m.d.sync += [
            self._s2_write.eq(s1_valid & self._s1_learn),
            self._s2_set.eq(s1_set),
            self._s2_word.eq(new),
            self.response.valid.eq(s1_valid),
            self.response.payload.hit.eq(hit),
            self.response.payload.way.eq(way),
            self.response.payload.repeat_hit.eq(repeat_hit),
        ]
        m.d.comb += [
            wr.addr.eq(Mux(self.maint.clear, self.maint.addr, self._s2_set)),
            wr.data.eq(Mux(self.maint.clear, 0, self._s2_word.as_value())),
            wr.en.eq(self.maint.clear | self._s2_write),
        ]

    def elaborate(self, platform):
        cfg = self.cfg
        ways = cfg.ways
        m = Module()
        wr, cur, s1_valid, s1_set, s1_tag = self._read_and_request(m)
        learn = self._s1_learn
        match, free = self._match_free(m, cur, s1_tag)
        lowest = lambda bits, name: self._lowest(m, bits, name)

        hit_way = lowest(match, "hit_way")
        free_way = lowest(free, "free_way")
        # A chain of named signals: an expression that reused the running maximum twice per
        # way would double at every way (2**ways terms in the generated Verilog).
        running_max = cur[0].rrpv
        for w in range(1, ways):
            step = Signal(2, name=f"max_upto{w}")
            m.d.comb += step.eq(Mux(cur[w].rrpv > running_max, cur[w].rrpv, running_max))
            running_max = step
        max_rrpv = Signal(2)
        m.d.comb += max_rrpv.eq(running_max)
        at_max = Signal(ways)
        for w in range(ways):
            m.d.comb += at_max[w].eq(cur[w].rrpv == max_rrpv)
        victim_way = lowest(at_max, "victim_way")
        age = Signal(2)
        m.d.comb += age.eq(RRPV_MAX - max_rrpv)

        hit = match.any()
        hit_rrpv = Signal(2)
        m.d.comb += hit_rrpv.eq(cur[hit_way].rrpv)

        # Learn-mode update of the whole set (spec 4: hit / free way / age and evict).
        new = Signal(set_layout(cfg))
        insert_way = Mux(free.any(), free_way, victim_way)
        for w in range(ways):
            with m.If(hit):
                m.d.comb += new[w].eq(cur[w])
                with m.If(hit_way == w):
                    m.d.comb += new[w].rrpv.eq(0)
            with m.Elif(insert_way == w):
                # Repeats of the key later in its beat hit it at once: RRPV 0.
                m.d.comb += [new[w].valid.eq(1),
                             new[w].rrpv.eq(Mux(self._s1_repeated, 0, RRPV_INSERT)),
                             new[w].tag.eq(s1_tag)]
            with m.Elif(free.any()):
                m.d.comb += new[w].eq(cur[w])
            with m.Else():
                m.d.comb += [new[w].eq(cur[w]), new[w].rrpv.eq(cur[w].rrpv + age)]

        resp_hit = Signal()
        resp_way = Signal.like(hit_way)
        repeat_hit = Signal()
        with m.If(learn):
            m.d.comb += [resp_hit.eq(hit), resp_way.eq(Mux(hit, hit_way, insert_way)),
                         repeat_hit.eq(1)]
        with m.Else():
            popular = hit & (hit_rrpv <= self.popular_max_rrpv)
            m.d.comb += [resp_hit.eq(popular), resp_way.eq(Mux(popular, hit_way, 0)),
                         repeat_hit.eq(popular)]
        self._write_and_respond(m, wr, new, s1_valid, s1_set, resp_hit, resp_way, repeat_hit)
        return m

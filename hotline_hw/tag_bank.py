"""One bank of the Embedding Access Logger: a set-associative tag store with SRRIP.

Implements docs/spec.md section 4 for the sets of one bank, one lookup per cycle, in a
five-stage pipeline (read, fetch, compare, update, write) with forwarding.
"""

from amaranth import Signal, Module, Mux
from amaranth.lib import wiring, memory, stream, data
from amaranth.lib.wiring import In, Out

from hotline_spec.config import EALConfig, RRPV_INSERT, RRPV_MAX
from .layouts import set_layout, bank_request, bank_response

__all__ = ["TagBank", "MaintenanceSignature"]


class MaintenanceSignature(wiring.Signature):
    """The maintenance side of a bank, as the engine's clear and dump sequencer drives it.

    Members
    -------
    read : Out(1)
        Read set ``addr``; its ways appear on the bank's ``read_data`` two cycles later
        (``read_data`` is the bank's own register of the memory's read data).
    hold : Out(1)
        Do not enable the read port: the memory's read data keeps the last set read, so
        ``read_data`` repeats it from the next cycle on.
    clear : Out(1)
        Write an all-zero set at ``addr`` this cycle.
    addr : Out(set_bits)
        The set that ``read`` and ``clear`` address.
    """

    def __init__(self, cfg: EALConfig):
        super().__init__({"read": Out(1), "hold": Out(1), "clear": Out(1),
                          "addr": Out(max(1, cfg.set_bits))})


def _in_flight(cfg: EALConfig):
    """A request as it moves down the bank's pipeline, with the mode it was issued in."""
    return data.StructLayout({"valid": 1, "learn": 1, "set": max(1, cfg.set_bits),
                              "tag": cfg.tag_bits, "repeated": 1})


class UpdateStage:
    """What the update stage of a bank works on, handed by :meth:`TagBank._pipeline` to the
    policy's update logic.

    Attributes
    ----------
    request : Signal(in-flight request)
        ``valid``, ``learn``, ``set``, ``tag`` and ``repeated`` of the lookup being updated.
    word : Signal(set_layout)
        Its set as every earlier lookup left it (forwarded when they are still in flight).
    match : Signal(ways)
        Per way: valid and holding the request's tag (computed a stage earlier and
        forwarded, so no tag compare is on the update stage's path).
    free : Signal(ways)
        Per way: not valid in ``word``.
    extra : list of Signal
        The ``extra`` values given to :meth:`TagBank._pipeline`, delayed to this stage.
    """

    def __init__(self, request, word, match, free, extra):
        self.request, self.word, self.match, self.free, self.extra = (request, word, match,
                                                                      free, extra)


class TagBank(wiring.Component):
    """A bank of ``sets`` x ``ways`` tag-store entries, pipelined over five stages.

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
        registered: valid ``LATENCY`` cycles after the request, in request order.
    learn, popular_max_rrpv : In
        Mode (sampled with each request: a lookup in flight keeps the mode it was issued
        in) and frozen-mode threshold (spec section 4; stable while lookups are in flight).
    maint : In(MaintenanceSignature)
        Read, hold and clear a set while no lookup is in flight (clear and dump).
    read_data : Out(set_layout)
        The memory's read data as the fetch stage registered it (``fetched``: the set read
        two cycles before, see ``maint``), for the maintenance reads of the dump: a register,
        so what selects among the banks' read data starts at flip-flops, not at a block
        RAM's output.

    Pipeline, for a request taken in cycle ``t``:

    - ``t`` *read*: the memory reads the request's set.
    - ``t + 1`` *fetch*: the read data is registered as it leaves the block RAM (its
      clock-to-out delay gets a cycle of its own), and the request's set and tag are
      compared with those of the three requests ahead of it.
    - ``t + 2`` *compare*: the set as the lookups up to three ahead left it (the word being
      written, else the word written a cycle ago, else the read data) and its ways' tags
      compared with the request's tag.
    - ``t + 3`` *update*: the set as the lookup one ahead left it, when that one is of the
      same set (its new word is then in the write register), else the compare stage's word;
      the policy's update of the whole set and the response, registered.
    - ``t + 4`` *write*: the new set is stored while the response is out.

    The read port is transparent to the write port, so a read sees the write of the same
    cycle, the lookup four ahead. The lookups one, two and three ahead are forwarded as
    above, so back-to-back lookups of one set need no stall and are processed exactly in
    request order. The loop that remains, a set's update feeding the next update of the
    same set, is the policy's logic from one register to the next: the tag compares were
    done a stage before (the update stage's match of a way is the lookup ahead's, unless
    that lookup wrote its own tag there: then it is whether the two tags are equal).
    """

    #: Cycles from a request to its response.
    LATENCY = 4

    def __init__(self, cfg: EALConfig):
        self.cfg = cfg
        super().__init__({
            "request": In(stream.Signature(bank_request(cfg), always_ready=True)),
            "response": Out(stream.Signature(bank_response(cfg), always_ready=True)),
            "learn": In(1), "popular_max_rrpv": In(2),
            "maint": In(MaintenanceSignature(cfg)),
            "read_data": Out(set_layout(cfg)),
        })

    def _ways(self, word):
        """The ways of a memory word (an lfu word also holds a sketch)."""
        return word if self.cfg.policy == "srrip" else word.ways

    def _pipeline(self, m, extra=()) -> UpdateStage:
        """The bank's memory and every stage but the policy's update (shared by the srrip
        and lfu banks; :meth:`_write_and_respond` closes the pipeline). ``extra``: more
        values computed from the request, delayed with it to the update stage."""
        cfg = self.cfg
        ways = cfg.ways
        # Block RAM on every FPGA: without the attribute Yosys puts a 64-set bank in
        # UltraScale+ distributed RAM (docs/benchmarks.md, FPGA synthesis).
        m.submodules.mem = mem = memory.Memory(shape=set_layout(cfg), depth=cfg.sets, init=[],
                                               attrs={"ram_style": "block"})
        self._wr = wr = mem.write_port()
        rd = mem.read_port(transparent_for=(wr,))
        m.d.comb += [
            rd.addr.eq(Mux(self.maint.read | self.maint.hold, self.maint.addr,
                           self.request.payload.set)),
            rd.en.eq(~self.maint.hold),
        ]

        # The request in each stage. Registered as a whole so each stage is one signal.
        fetch = Signal(_in_flight(cfg), name="fetch")
        compare = Signal(_in_flight(cfg), name="compare")
        update = Signal(_in_flight(cfg), name="update")
        m.d.sync += [
            fetch.valid.eq(self.request.valid), fetch.learn.eq(self.learn),
            fetch.set.eq(self.request.payload.set), fetch.tag.eq(self.request.payload.tag),
            fetch.repeated.eq(self.request.payload.repeated),
            compare.eq(fetch), update.eq(compare),
        ]
        delayed = []
        for i, value in enumerate(extra):
            chain = value
            for stage in ("fetch", "compare", "update"):
                step = Signal.like(value, name=f"{stage}_extra{i}")
                m.d.sync += step.eq(chain)
                chain = step
            delayed.append(chain)

        # The write stage: the set the update stage produced last cycle (``written``, stored
        # this cycle) and the one before it (``stored``, written a cycle ago).
        self._written = written = Signal(data.StructLayout({
            "write": 1, "set": max(1, cfg.set_bits), "word": set_layout(cfg),
            "tag_ways": ways}), name="written")
        stored = Signal(data.StructLayout({
            "write": 1, "set": max(1, cfg.set_bits), "word": set_layout(cfg)}), name="stored")
        m.d.sync += [stored.write.eq(written.write), stored.set.eq(written.set),
                     stored.word.eq(written.word)]

        # Fetch stage: which lookups ahead share the request's set. In the compare stage
        # the one two ahead is in ``written`` and the one three ahead in ``stored``; in the
        # update stage the one ahead is in ``written``.
        writes = lambda stage: stage.valid & stage.learn
        same = Signal(data.StructLayout({"ahead": 1, "ahead_tag": 1, "two": 1, "three": 1}),
                      name="same_set")
        m.d.sync += [
            same.ahead.eq(writes(compare) & (compare.set == fetch.set)),
            same.ahead_tag.eq(compare.tag == fetch.tag),
            same.two.eq(writes(update) & (update.set == fetch.set)),
            same.three.eq(written.write & (written.set == fetch.set)),
        ]
        fetched = Signal(set_layout(cfg), name="fetched")
        m.d.sync += fetched.eq(rd.data)
        # The maintenance read data is this register too: no second register on the block
        # RAM's output (a copy of this one in the engine made bank RAM -> update_base_match
        # the 2-lane engine's slowest path, 76.5 MHz).
        m.d.comb += self.read_data.eq(fetched)

        # Compare stage: the set without the lookup one ahead, and its ways' tag compares.
        base = Signal(set_layout(cfg), name="base")
        m.d.comb += base.eq(Mux(same.two, written.word.as_value(),
                                Mux(same.three, stored.word.as_value(), fetched.as_value())))
        base_match = Signal(ways, name="base_match")
        for w, entry in enumerate(self._ways(base)):
            m.d.comb += base_match[w].eq(entry.valid & (entry.tag == compare.tag))
        u_base = Signal(set_layout(cfg), name="update_base")
        u_base_match = Signal(ways, name="update_base_match")
        u_same = Signal.like(same, name="update_same_set")
        m.d.sync += [u_base.eq(base), u_base_match.eq(base_match), u_same.eq(same)]

        # Update stage: the lookup one ahead's new set when it is of this set. A way it
        # wrote its own tag into matches when the two tags are equal; any other way keeps
        # the tag and the valid bit the compare stage matched against (no policy clears a
        # way's valid bit in a lookup: only the maintenance clear does).
        word = Signal(set_layout(cfg), name="word")
        match = Signal(ways, name="match")
        m.d.comb += word.eq(Mux(u_same.ahead, written.word.as_value(), u_base.as_value()))
        free = Signal(ways, name="free")
        for w, entry in enumerate(self._ways(word)):
            m.d.comb += [match[w].eq(Mux(u_same.ahead & written.tag_ways[w],
                                         u_same.ahead_tag, u_base_match[w])),
                         free[w].eq(~entry.valid)]
        return UpdateStage(update, word, match, free, delayed)

    def _lowest(self, m, bits, name):
        """Index of the lowest set bit of ``bits`` (0 when none)."""
        index = Signal(max(1, self.cfg.way_bits), name=name)
        for w in reversed(range(self.cfg.ways)):
            with m.If(bits[w]):
                m.d.comb += index.eq(w)
        return index

    def _write_and_respond(self, m, stage, new, tag_ways, hit, way, repeat_hit):
        """Register the updated set and ``tag_ways`` (the ways now holding the request's
        tag that held another one, or were free), written next cycle in learn mode (a
        maintenance clear zeroes a set at once), and the response ``hit`` / ``way`` /
        ``repeat_hit``."""
        request, written = stage.request, self._written
        m.d.sync += [
            written.write.eq(request.valid & request.learn),
            written.set.eq(request.set),
            written.word.eq(new),
            written.tag_ways.eq(tag_ways),
            self.response.valid.eq(request.valid),
            self.response.payload.hit.eq(hit),
            self.response.payload.way.eq(way),
            self.response.payload.repeat_hit.eq(repeat_hit),
        ]
        wr = self._wr
        m.d.comb += [
            wr.addr.eq(Mux(self.maint.clear, self.maint.addr, written.set)),
            wr.data.eq(Mux(self.maint.clear, 0, written.word.as_value())),
            wr.en.eq(self.maint.clear | written.write),
        ]

    def elaborate(self, platform):
        cfg = self.cfg
        ways = cfg.ways
        m = Module()
        stage = self._pipeline(m)
        cur, match, free, request = stage.word, stage.match, stage.free, stage.request
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
        tag_ways = Signal(ways)
        insert_way = Mux(free.any(), free_way, victim_way)
        for w in range(ways):
            with m.If(hit):
                m.d.comb += new[w].eq(cur[w])
                with m.If(hit_way == w):
                    m.d.comb += new[w].rrpv.eq(0)
            with m.Elif(insert_way == w):
                # Repeats of the key later in its beat hit it at once: RRPV 0.
                m.d.comb += [new[w].valid.eq(1),
                             new[w].rrpv.eq(Mux(request.repeated, 0, RRPV_INSERT)),
                             new[w].tag.eq(request.tag), tag_ways[w].eq(1)]
            with m.Elif(free.any()):
                m.d.comb += new[w].eq(cur[w])
            with m.Else():
                m.d.comb += [new[w].eq(cur[w]), new[w].rrpv.eq(cur[w].rrpv + age)]

        resp_hit = Signal()
        resp_way = Signal.like(hit_way)
        repeat_hit = Signal()
        with m.If(request.learn):
            m.d.comb += [resp_hit.eq(hit), resp_way.eq(Mux(hit, hit_way, insert_way)),
                         repeat_hit.eq(1)]
        with m.Else():
            popular = hit & (hit_rrpv <= self.popular_max_rrpv)
            m.d.comb += [resp_hit.eq(popular), resp_way.eq(Mux(popular, hit_way, 0)),
                         repeat_hit.eq(popular)]
        self._write_and_respond(m, stage, new, tag_ways, resp_hit, resp_way, repeat_hit)
        return m

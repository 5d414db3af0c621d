"""The de-duplication table: banks of bucketised hash tables in memory (docs/spec.md 7.5)."""

from amaranth import Signal, Module, Array, Cat, Const, Mux, unsigned
from amaranth.lib import wiring, data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hotline_spec.config import FragmenterConfig
from .layouts import dedup_entry

__all__ = ["DedupTable"]


class DedupTable(wiring.Component):
    """``dedup_banks`` banks of ``dedup_sets`` buckets of ``dedup_ways`` entries
    ``{epoch, key, rank}``; an entry belongs to the current working set iff its epoch equals
    ``epoch``, so a new working set starts empty without erasing anything.

    Each cycle every lane may probe one bucket (``req_*``); lanes probing in the same cycle
    must name different banks (the fragmenter guarantees it). The answer is combinational
    (the bank is read asynchronously): ``match`` with the stored ``rank``, else ``free``
    with the lowest free ``way``. ``ins`` then writes ``{epoch, req_key, ins_rank}`` into
    that way at the clock edge, so the next cycle sees it.

    ``clear`` (a pulse while ``busy`` is low) writes epoch 0 into every entry, ``dedup_sets``
    cycles with ``busy`` high; it also runs after reset (memory has no reset value). The
    fragmenter never uses epoch 0 for a working set.
    """

    def __init__(self, fcfg: FragmenterConfig):
        self.fcfg = fcfg
        lanes = fcfg.eal.lanes
        bb, sb = max(1, fcfg.dedup_bank_bits), max(1, fcfg.dedup_set_bits)
        wb = max(1, (fcfg.dedup_ways - 1).bit_length())
        self.way_bits = wb
        lane_ports = {}
        for l in range(lanes):
            lane_ports.update({
                f"req_valid{l}": In(1), f"req_bank{l}": In(bb), f"req_bucket{l}": In(sb),
                f"req_key{l}": In(fcfg.eal.key_bits),
                f"match{l}": Out(1), f"free{l}": Out(1), f"rank{l}": Out(fcfg.rank_bits),
                f"way{l}": Out(wb),
                f"ins{l}": In(1), f"ins_rank{l}": In(fcfg.rank_bits),
            })
        super().__init__({"epoch": In(fcfg.epoch_bits), "clear": In(1), "busy": Out(1),
                          **lane_ports})

    def lane(self, name, l):
        """Port ``name`` of lane ``l`` (``req_valid``, ``match``, ...)."""
        return getattr(self, f"{name}{l}")

    def elaborate(self, platform):
        fcfg = self.fcfg
        m = Module()
        lanes, n_banks, ways = fcfg.eal.lanes, fcfg.dedup_banks, fcfg.dedup_ways
        ent = dedup_entry(fcfg)
        ew = ent.size
        bucket_layout = data.ArrayLayout(ent, ways)

        clearing = Signal(init=1)                  # the clear after reset
        clear_addr = Signal(max(1, fcfg.dedup_set_bits))
        m.d.comb += self.busy.eq(clearing)
        with m.If(clearing):
            m.d.sync += clear_addr.eq(clear_addr + 1)
            with m.If(clear_addr == fcfg.dedup_sets - 1):
                m.d.sync += clearing.eq(0)
        with m.Elif(self.clear):
            m.d.sync += [clearing.eq(1), clear_addr.eq(0)]

        lane_bank = [self.lane("req_bank", l) if fcfg.dedup_bank_bits else Const(0, 1)
                     for l in range(lanes)]
        # Each bank compares its bucket with the key of the lane probing it, and the lanes
        # pick their bank's small answer: cheaper than moving whole buckets to the lanes.
        answer = data.StructLayout({"match": 1, "free": 1, "rank": fcfg.rank_bits,
                                    "way": self.way_bits})
        answers = []
        for b in range(n_banks):
            mem = Memory(shape=unsigned(ew * ways), depth=fcfg.dedup_sets, init=[])
            m.submodules[f"bank{b}"] = mem
            rp = mem.read_port(domain="comb")
            wp = mem.write_port(granularity=ew)
            # The lane probing this bank this cycle (at most one, by contract).
            targets = [self.lane("req_valid", l) & (lane_bank[l] == b) for l in range(lanes)]
            addr = Const(0, len(rp.addr))
            key = Const(0, fcfg.eal.key_bits)
            for l in reversed(range(lanes)):
                addr = Mux(targets[l], self.lane("req_bucket", l), addr)
                key = Mux(targets[l], self.lane("req_key", l), key)
            m.d.comb += rp.addr.eq(addr)
            bucket = Signal(bucket_layout, name=f"bucket{b}")
            m.d.comb += bucket.eq(rp.data)
            live = [bucket[w].epoch == self.epoch for w in range(ways)]
            hits = [live[w] & (bucket[w].key == key) for w in range(ways)]
            rank, way = Const(0, fcfg.rank_bits), Const(0, self.way_bits)
            for w in reversed(range(ways)):
                rank = Mux(hits[w], bucket[w].rank, rank)
                way = Mux(~live[w], w, way)          # the lowest free way
            ans = Signal(answer, name=f"answer{b}")
            m.d.comb += [ans.match.eq(Cat(*hits).any()), ans.free.eq(~Cat(*live).all()),
                         ans.rank.eq(rank), ans.way.eq(way)]
            answers.append(ans)
            # Writes: the clear (every way, epoch 0), or the probing lane's insert into the
            # lowest free way of the bucket it just read.
            insert = Const(0)
            ins_rank = Const(0, fcfg.rank_bits)
            for l in reversed(range(lanes)):
                insert = insert | (targets[l] & self.lane("ins", l))
                ins_rank = Mux(targets[l], self.lane("ins_rank", l), ins_rank)
            entry = Signal(ent, name=f"entry{b}")
            m.d.comb += [entry.epoch.eq(self.epoch), entry.key.eq(key), entry.rank.eq(ins_rank)]
            with m.If(clearing):
                m.d.comb += [wp.addr.eq(clear_addr), wp.data.eq(0), wp.en.eq(-1)]
            with m.Else():
                m.d.comb += [wp.addr.eq(addr), wp.data.eq(entry.as_value().replicate(ways)),
                             wp.en.eq(Mux(insert, 1 << ans.way, 0))]

        by_bank = Array(answers)
        for l in range(lanes):
            ans = Signal(answer, name=f"lane_answer{l}")
            m.d.comb += ans.eq(by_bank[lane_bank[l]])
            valid = self.lane("req_valid", l) & ~clearing
            m.d.comb += [
                self.lane("match", l).eq(valid & ans.match),
                self.lane("free", l).eq(valid & ans.free),
                self.lane("rank", l).eq(ans.rank),
                self.lane("way", l).eq(ans.way),
            ]
        return m

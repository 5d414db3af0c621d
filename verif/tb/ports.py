"""Pack and unpack the lookup engine's flattened stream payloads.

Amaranth flattens a stream payload into one vector port (``lookups__payload``); the bit
positions come from the layouts in :mod:`hotline_hw.layouts`, never from hand-written offsets.
Keys may be given as Python ints in ``[0, 2**key_bits)`` or, for 64-bit keys, as the int64
two's-complement pattern the golden model uses (docs/spec.md section 2): every field is masked
to its width before it is shifted into place, so a negative key never spills into other lanes.
"""

from amaranth.hdl import Shape

from hotline_spec.config import EALConfig
from hotline_hw.layouts import lookup_lane, result_lane, dump_record, entry_layout

__all__ = ["PortCodec"]


def _field(layout, name):
    f = layout[name]
    return f.offset, Shape.cast(f.shape).width


class PortCodec:
    """Converts between Python values and the integer values of the DUT's payload ports."""

    def __init__(self, cfg: EALConfig):
        self.cfg = cfg
        lane = lookup_lane(cfg)
        self._lookup_stride = lane.size
        self._lk_valid = _field(lane, "valid")
        self._lk_key = _field(lane, "key")
        res = result_lane(cfg)
        self._res_stride = res.size
        self._res_valid = _field(res, "valid")
        self._res_hit = _field(res, "hit")
        self._res_slot = _field(res, "slot")
        rec = dump_record(cfg)
        self._dump_bank = _field(rec, "bank")
        self._dump_set = _field(rec, "set")
        self._dump_ways = rec["ways"].offset
        self._dump_sketch = rec["sketch"].offset if cfg.policy == "lfu" else None
        ent = entry_layout(cfg)
        self._entry_stride = ent.size
        self._ent_valid = _field(ent, "valid")
        self._ent_meta = _field(ent, cfg.meta_name)
        self._ent_tag = _field(ent, "tag")

    @staticmethod
    def _get(value, field):
        offset, width = field
        return (value >> offset) & ((1 << width) - 1)

    @staticmethod
    def _put(value, field):
        """``value`` masked to the field's width and shifted to its offset: a negative int
        (an int64 key with the top bit set) becomes its unsigned bit pattern."""
        offset, width = field
        return (int(value) & ((1 << width) - 1)) << offset

    def pack_lookups(self, lanes):
        """``lanes``: a list of ``(valid, key)`` pairs, lane 0 first; a key may be negative
        (the int64 pattern of a 64-bit key)."""
        value = 0
        for i, (valid, key) in enumerate(lanes):
            base = i * self._lookup_stride
            value |= (self._put(valid, self._lk_valid) | self._put(key, self._lk_key)) << base
        return value

    def unpack_lookups(self, value):
        """The lookup port value as a list of ``(valid, key)`` pairs (keys unsigned)."""
        out = []
        for i in range(self.cfg.lanes):
            lane = value >> (i * self._lookup_stride)
            out.append((self._get(lane, self._lk_valid), self._get(lane, self._lk_key)))
        return out

    def pack_results(self, lanes):
        """``lanes``: a list of ``(valid, hit, slot)`` triples: the expected result port value."""
        value = 0
        for i, (valid, hit, slot) in enumerate(lanes):
            base = i * self._res_stride
            value |= (self._put(valid, self._res_valid) | self._put(hit, self._res_hit)
                      | self._put(slot, self._res_slot)) << base
        return value

    def unpack_results(self, value):
        """The result port value as a list of ``(valid, hit, slot)`` triples."""
        out = []
        for i in range(self.cfg.lanes):
            lane = value >> (i * self._res_stride)
            out.append((self._get(lane, self._res_valid), self._get(lane, self._res_hit),
                        self._get(lane, self._res_slot)))
        return out

    def unpack_dump(self, value):
        """A dump beat as ``(bank, set, [(valid, rrpv or count, tag) per way], sketch)``;
        ``sketch`` is a tuple of 2 tuples of counts (lfu) or ``()`` (srrip)."""
        cfg = self.cfg
        ways = []
        for w in range(cfg.ways):
            entry = value >> (self._dump_ways + w * self._entry_stride)
            ways.append((self._get(entry, self._ent_valid), self._get(entry, self._ent_meta),
                         self._get(entry, self._ent_tag)))
        bank = self._get(value, self._dump_bank) if cfg.bank_bits else 0
        set_ = self._get(value, self._dump_set) if cfg.set_bits else 0
        sketch = ()
        if self._dump_sketch is not None:
            mask = (1 << cfg.count_bits) - 1
            bits = value >> self._dump_sketch
            sketch = tuple(tuple((bits >> ((r * cfg.sketch_counters + c) * cfg.count_bits)) & mask
                                 for c in range(cfg.sketch_counters)) for r in range(2))
        return bank, set_, ways, sketch

"""Payload layouts of the lookup path's streams, derived from an :class:`EALConfig`.

These layouts are the single description of the bit formats: the RTL uses them as stream
payloads and the cocotb testbenches pack and unpack port values through the same objects
(:mod:`verif.tb.ports`), so a field is never located by a hand-written offset.
"""

from amaranth.lib import data

from hotline_spec.commands import DUMP_WORDS, RESULT_WORD
from hotline_spec.config import EALConfig, SKETCH_ROWS

__all__ = ["lookup_lane", "lookup_beat", "result_lane", "result_beat", "entry_layout",
           "ways_layout", "sketch_layout", "set_layout", "dump_record", "hashed_lane",
           "lane_index_bits", "marked_lane", "bank_request", "bank_response", "beat_record",
           "result_word", "dump_word"]


def result_word():
    """One lookup result word in host memory (``hotline_spec.commands.RESULT_WORD``)."""
    return data.StructLayout(dict(RESULT_WORD))


def dump_word(policy="srrip"):
    """One tag-store entry word in host memory (``hotline_spec.commands.DUMP_WORDS``)."""
    return data.StructLayout(dict(DUMP_WORDS[policy]))


def lookup_lane(cfg: EALConfig):
    """One lane of a lookup beat: ``valid`` (a hole when 0) and the key ``(table << row_bits) | row``."""
    return data.StructLayout({"valid": 1, "key": cfg.key_bits})


def lookup_beat(cfg: EALConfig):
    """``cfg.lanes`` lookup lanes; lane 0 is first in stream order."""
    return data.ArrayLayout(lookup_lane(cfg), cfg.lanes)


def result_lane(cfg: EALConfig):
    """One lane of a result beat: ``valid`` mirrors the lookup lane, ``hit`` and the hot ``slot``."""
    return data.StructLayout({"valid": 1, "hit": 1, "slot": cfg.slot_bits})


def result_beat(cfg: EALConfig):
    return data.ArrayLayout(result_lane(cfg), cfg.lanes)


def hashed_lane(cfg: EALConfig):
    """A lookup after the hash: the bank it goes to, its set and tag."""
    return data.StructLayout({"valid": 1, "bank": max(1, cfg.bank_bits),
                              "set": max(1, cfg.set_bits), "tag": cfg.tag_bits})


def entry_layout(cfg: EALConfig):
    """One tag-store entry: valid, the replacement state (srrip: 2-bit re-reference
    prediction value ``rrpv``; lfu: ``count_bits``-bit ``count``), exact tag."""
    return data.StructLayout({"valid": 1, cfg.meta_name: cfg.meta_bits, "tag": cfg.tag_bits})


def ways_layout(cfg: EALConfig):
    """All ways of one set."""
    return data.ArrayLayout(entry_layout(cfg), cfg.ways)


def sketch_layout(cfg: EALConfig):
    """lfu: a set's count-min sketch, ``SKETCH_ROWS`` rows of ``sketch_counters`` counts."""
    return data.ArrayLayout(data.ArrayLayout(cfg.count_bits, cfg.sketch_counters), SKETCH_ROWS)


def set_layout(cfg: EALConfig):
    """One memory word of a bank: a set's ways (srrip), or its ways and sketch (lfu)."""
    if cfg.policy == "srrip":
        return ways_layout(cfg)
    return data.StructLayout({"ways": ways_layout(cfg), "sketch": sketch_layout(cfg)})


def dump_record(cfg: EALConfig):
    """One beat of the tag-store dump: which bank and set, the set's ways (and its lfu
    sketch)."""
    fields = {"bank": max(1, cfg.bank_bits), "set": max(1, cfg.set_bits),
              "ways": ways_layout(cfg)}
    if cfg.policy == "lfu":
        fields["sketch"] = sketch_layout(cfg)
    return data.StructLayout(fields)


def lane_index_bits(cfg: EALConfig):
    """Width of a lane number."""
    return max(1, (cfg.lanes - 1).bit_length())


def marked_lane(cfg: EALConfig):
    """A hashed lookup with its place in its beat's runs of one key (:class:`RepeatMarker`):
    ``repeat`` (an earlier lane's lookup answers it; it skips the bank), ``first`` (the lane
    that answers it; its own lane otherwise) and ``repeated`` (later lanes repeat it)."""
    return data.StructLayout({"valid": 1, "bank": max(1, cfg.bank_bits),
                              "set": max(1, cfg.set_bits), "tag": cfg.tag_bits,
                              "repeat": 1, "first": lane_index_bits(cfg), "repeated": 1})


def bank_request(cfg: EALConfig):
    """A lookup on its way to its bank: the set within the bank, the tag, and ``repeated``
    (lookups of the same key follow it in its beat: in learn mode the key ends at RRPV 0)."""
    return data.StructLayout({"set": max(1, cfg.set_bits), "tag": cfg.tag_bits, "repeated": 1})


def bank_response(cfg: EALConfig):
    """A bank's answer to one request: ``hit`` and the way (spec section 4), and
    ``repeat_hit``, the answer of the lookups that repeat it in its beat (1 in learn mode,
    where the key is then present; ``hit`` in frozen mode)."""
    return data.StructLayout({"hit": 1, "way": max(1, cfg.way_bits), "repeat_hit": 1})


def beat_record(cfg: EALConfig):
    """What the result release keeps of a beat in flight: per lane ``valid``, where the
    lookup went (its bank and set), enough to pick its response and form its slot, and
    ``repeat`` / ``first`` (answered from lane ``first``'s response)."""
    return data.ArrayLayout(data.StructLayout({
        "valid": 1, "bank": max(1, cfg.bank_bits), "set": max(1, cfg.set_bits),
        "repeat": 1, "first": lane_index_bits(cfg)}), cfg.lanes)

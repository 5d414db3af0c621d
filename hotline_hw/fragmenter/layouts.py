"""Payload layouts of the classifier/fragmenter streams, derived from a
:class:`~hotline_spec.config.FragmenterConfig` (the single description of their bit formats;
the testbenches pack and unpack ports through the same objects)."""

from amaranth.lib import data

from hotline_spec.config import FragmenterConfig

__all__ = ["classified_lane", "classified_beat", "remap_lane", "cold_lane", "index_lane",
           "lanes_of", "summary_layout", "dedup_entry"]


def classified_lane(fcfg: FragmenterConfig):
    """One frozen-mode lookup with its key: what the fragmenter consumes."""
    cfg = fcfg.eal
    return data.StructLayout({"valid": 1, "key": cfg.key_bits, "hit": 1, "slot": cfg.slot_bits})


def classified_beat(fcfg: FragmenterConfig):
    return data.ArrayLayout(classified_lane(fcfg), fcfg.eal.lanes)


def remap_lane(fcfg: FragmenterConfig):
    """A remapped lookup: its index into ``[hot table; cold rows]`` (spec 7.4)."""
    return data.StructLayout({"valid": 1, "index": fcfg.remap_bits})


def cold_lane(fcfg: FragmenterConfig):
    """A cold row, first seen: its key ``(table << row_bits) | row``."""
    return data.StructLayout({"valid": 1, "key": fcfg.eal.key_bits})


def index_lane(fcfg: FragmenterConfig):
    """An input index within the working set (popular or non-popular list)."""
    return data.StructLayout({"valid": 1, "index": fcfg.inputs_bits})


def lanes_of(lane_layout, fcfg: FragmenterConfig):
    """``lanes`` copies of a lane layout: a beat; holes (``valid = 0``) carry nothing."""
    return data.ArrayLayout(lane_layout, fcfg.eal.lanes)


def summary_layout(fcfg: FragmenterConfig):
    """One record per working set, after all of its other outputs (spec 7, 7.5)."""
    n = fcfg.inputs_bits + 1
    lk = fcfg.inputs_bits + fcfg.eal.table_bits + 1
    return data.StructLayout({"n_inputs": n, "n_popular": n, "n_cold": fcfg.rank_bits + 1,
                              "n_hits": lk, "n_lookups": lk, "ended_early": 1})


def dedup_entry(fcfg: FragmenterConfig):
    """One de-dup table entry: the working-set epoch that wrote it, the key, its cold rank."""
    return data.StructLayout({"epoch": fcfg.epoch_bits, "key": fcfg.eal.key_bits,
                              "rank": fcfg.rank_bits})

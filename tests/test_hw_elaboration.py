"""Parameter validation and Verilog generation, including the paper's ASIC configuration."""

import re

import pytest

from hotline_spec.config import ASIC_CONFIG, DEFAULT_CONFIG, EALConfig
from hotline_hw.generate import TOP_NAME, main as generate_main, verilog_text
from verif.tb.runner import REPO_ROOT


@pytest.mark.parametrize("changes, message", [
    ({"banks": 12}, "banks must be a power of two"),
    ({"sets": 0}, "sets must be a power of two"),
    ({"ways": 0}, "ways must be >= 1"),
    ({"lanes": 0}, "lanes must be >= 1"),
    ({"hash_rounds": 1}, "hash_rounds must be in 2..8"),
    ({"dispatch_beats": 0}, "dispatch_beats must be >= 1"),
    ({"queue_depth": 1}, "queue_depth must be >= 2"),
    ({"beats_in_flight": 1}, "beats_in_flight must be >= 2"),
    ({"release_beats": 0}, "release_beats must be >= 1"),
    ({"popular_max_rrpv": 4}, "popular_max_rrpv must be in 0..3"),
    ({"table_bits": 0, "row_bits": 8, "banks": 16, "sets": 16}, "so that a tag remains"),
    ({"table_bits": 40, "row_bits": 30}, "key_bits = table_bits \\+ row_bits must be in 2..64"),
])
def test_bad_parameters_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        DEFAULT_CONFIG.replace(**changes)


def test_non_integer_parameter_is_a_type_error():
    with pytest.raises(TypeError, match="lanes must be an int"):
        EALConfig(lanes=2.0)


def test_asic_geometry_matches_the_paper():
    """2 M entries, 4-way, 64 banks and 14-bit exact tags, about 4 MB of tag store."""
    assert ASIC_CONFIG.entries == 2 * 1024 * 1024
    assert (ASIC_CONFIG.ways, ASIC_CONFIG.banks, ASIC_CONFIG.tag_bits) == (4, 64, 14)
    assert ASIC_CONFIG.entries * ASIC_CONFIG.entry_bits / 8 / 2**20 == pytest.approx(4.25)


def test_committed_rtl_is_current(capsys):
    assert generate_main(["--check", str(REPO_ROOT / "rtl")]) == 0


def test_stale_rtl_is_reported(tmp_path, capsys):
    (tmp_path / f"{TOP_NAME}.v").write_text("// stale\n")
    assert generate_main(["--check", str(tmp_path)]) == 1
    assert "not current" in capsys.readouterr().err


@pytest.mark.slow
def test_asic_configuration_elaborates():
    """The paper's ASIC configuration generates Verilog (generation only, no simulation):
    64 bank memories of 8192 sets x 4 ways x 17 bits and the 16-lane stream ports."""
    text = verilog_text(ASIC_CONFIG)
    assert f"module {TOP_NAME}(" in text
    memories = re.findall(r"reg \[67:0\] \S+ \[8191:0\];", text)
    assert len(memories) == 64
    lane_bits = 1 + ASIC_CONFIG.key_bits
    assert re.search(rf"input \[{16 * lane_bits - 1}:0\] lookups__payload;", text)


@pytest.mark.parametrize("changes,message", [
    ({"dedup_banks": 3}, "dedup_banks must be a power of two"),
    ({"dedup_sets": 1}, "dedup_sets must be a power of two >= 2"),
    ({"dedup_ways": 0}, "dedup_ways must be >= 1"),
    ({"dedup_sets": 4, "dedup_ways": 4}, "fewer than the 32 lookups of one input"),
    ({"epoch_bits": 0}, "epoch_bits must be in 1..16"),
    ({"inputs_bits": 40}, "inputs_bits must be in 1..31"),
    ({"out_depth": 1}, "out_depth must be >= 2"),
])
def test_bad_fragmenter_parameters_are_named(changes, message):
    from hotline_spec.config import DEFAULT_FRAGMENTER
    with pytest.raises(ValueError, match=message):
        DEFAULT_FRAGMENTER.replace(**changes)
    with pytest.raises(TypeError, match="dedup_ways must be an int"):
        DEFAULT_FRAGMENTER.replace(dedup_ways=2.0)


def test_fragment_chain_of_eight_lanes_elaborates():
    """The chain with 8 lanes, 33-bit keys and 64 de-dup banks generates Verilog whose key
    port has the width of 8 lanes (generation only; the 16-lane chain takes minutes)."""
    from hotline_spec.config import EALConfig, FragmenterConfig
    from hotline_hw.generate import fragment_chain_verilog
    eal = EALConfig(lanes=8, banks=32, sets=16, table_bits=5, row_bits=28)
    fcfg = FragmenterConfig(eal=eal, dedup_banks=64, dedup_sets=64)
    text = fragment_chain_verilog(fcfg)
    assert f"input [{8 * (1 + eal.key_bits) - 1}:0] keys__payload" in text

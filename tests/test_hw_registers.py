"""The register description, the command set and DeviceConfig (no simulation)."""

import pytest

from amaranth.hdl import Shape
from hotline_hw.layouts import dump_word, result_word
from hotline_spec.commands import DUMP_WORDS, RESULT_WORD, ErrorCause, Opcode, word_fields
from hotline_spec.config import DEFAULT_DEVICE, DEVICE_CONFIGS, SMALL_DEVICE, DeviceConfig
from hotline_spec.registers import COUNTERS, ID_PARAMETERS, Field, Register, register_map, \
    registers_markdown


@pytest.mark.parametrize("name", sorted(DEVICE_CONFIGS))
def test_map_is_consistent(name):
    dcfg = DEVICE_CONFIGS[name]
    rmap = register_map(dcfg)
    offsets = [r.offset for r in rmap]
    assert len(set(offsets)) == len(offsets) and all(o % 4 == 0 for o in offsets)
    assert max(offsets) < 1 << dcfg.csr_addr_bits
    assert rmap.offset("ID_MAGIC") == 0
    ids = rmap.id_values()
    assert ids["P_BUS_BITS"] == dcfg.bus_bits and ids["P_READ_IDS"] == dcfg.read_ids
    assert len(ids) == 2 + len(ID_PARAMETERS)
    for name_, _ in COUNTERS:
        assert rmap.offset(f"{name_}_HI") == rmap.offset(f"{name_}_LO") + 4
    for t in range(dcfg.max_tables):
        assert rmap.table(t, "ROWS") in rmap
    assert rmap["ROW_BYTES"].reset == dcfg.bus_bytes
    assert rmap["POPULAR_MAX_RRPV"].reset == dcfg.eal.popular_max_rrpv


def test_docs_name_every_register_and_code():
    text = registers_markdown(DEFAULT_DEVICE)
    rmap = register_map(DEFAULT_DEVICE)
    for r in rmap:
        if r.group != "table":
            assert f"`{r.name}`" in text, r.name
    for op in Opcode:
        assert f"{op.value} {op.name}" in text
    for cause in ErrorCause:
        assert f"{cause.value} {cause.name}" in text


def test_bad_register_descriptions_are_refused():
    with pytest.raises(ValueError, match="not 4-aligned"):
        Register("X", 2, "rw", "x")
    with pytest.raises(ValueError, match="access"):
        Register("X", 0, "rx", "x")
    with pytest.raises(ValueError, match="overlaps"):
        Register("X", 0, "rw", "x", (Field("a", 0, 4), Field("b", 3, 2)))
    with pytest.raises(TypeError, match="DeviceConfig"):
        register_map(SMALL_DEVICE.eal)


def test_word_formats_are_64_bits():
    assert result_word().size == 64 and dump_word().size == 64
    assert result_word()["hit"].offset == 32 and dump_word()["valid"].offset == 63


@pytest.mark.parametrize("policy", sorted(DUMP_WORDS))
def test_host_word_fields_match_the_gateware_layouts(policy):
    """The host reads fields from the plain tuples; the RTL builds its layouts from them."""
    for fields, layout in ((RESULT_WORD, result_word()), (DUMP_WORDS[policy], dump_word(policy))):
        host = word_fields(fields)
        assert sum(w for _, w in host.values()) == 64
        assert host == {name: (f.offset, Shape.cast(f.shape).width) for name, f in layout}


@pytest.mark.parametrize("change, message", [
    ({"bus_bits": 96}, "bus_bits must be a power of two in 64..512, not 96"),
    ({"read_ids": 3}, "read_ids must be a power of two >= 2, not 3"),
    ({"burst_beats": 512}, "burst_beats must be a power of two in 1..256, not 512"),
    ({"max_row_bytes": 100}, "max_row_bytes must be a multiple of bus_bytes"),
    ({"word_writes": 0}, "word_writes must be a power of two >= 2, not 0"),
    ({"csr_addr_bits": 8}, "csr_addr_bits must be in 12..16, not 8"),
    ({"bus_bits": 512, "burst_beats": 128}, "more than 4 KiB"),
])
def test_device_config_refuses_bad_parameters(change, message):
    with pytest.raises(ValueError, match=message):
        DEFAULT_DEVICE.replace(**change)
    with pytest.raises(TypeError, match="eal must be an EALConfig"):
        DeviceConfig(eal=3)

"""The SystemRDL export (hotline_spec.rdl) parsed back with systemrdl-compiler: every
register's offset, fields, access and reset value round-trip to the description."""

import pytest

from hotline_spec.config import DEFAULT_DEVICE, SMALL_DEVICE
from hotline_spec.rdl import _register, registers_rdl
from hotline_spec.registers import Field, Register, register_map


def _access(field):
    """The description's access kind of a compiled field (from its SystemRDL properties)."""
    from systemrdl.rdltypes import AccessType, OnWriteType
    sw, hw = field.get_property("sw"), field.get_property("hw")
    onwrite = field.get_property("onwrite")
    if sw == AccessType.r and hw == AccessType.w:
        return "ro"
    if sw == AccessType.w and hw == AccessType.r:
        return "wo"
    if sw == AccessType.rw and onwrite == OnWriteType.woclr and field.get_property("hwset"):
        return "w1c"
    if sw == AccessType.rw and hw == AccessType.r and onwrite is None:
        return "rw"
    raise AssertionError(f"{field.get_path()}: sw={sw} hw={hw} onwrite={onwrite}")


@pytest.mark.parametrize("dcfg", [DEFAULT_DEVICE, SMALL_DEVICE.replace(addr_bits=40)],
                         ids=["default", "small-addr40"])
def test_rdl_round_trips_the_register_map(dcfg, tmp_path):
    systemrdl = pytest.importorskip("systemrdl")
    path = tmp_path / "hotline.rdl"
    path.write_text(registers_rdl(dcfg))
    rdlc = systemrdl.RDLCompiler()
    rdlc.compile_file(str(path))
    root = rdlc.elaborate(top_def_name="hotline")

    got = {}
    for reg in root.top.descendants(unroll=True):
        if not isinstance(reg, systemrdl.node.RegNode):
            continue
        parent = reg.parent
        if isinstance(parent, systemrdl.node.RegfileNode):   # TABLE[t].BASE_LO
            name = f"{parent.inst_name}{parent.current_idx[0]}_{reg.inst_name}"
        else:
            name = reg.inst_name
        fields = {}
        for f in reg.fields():
            fields[f.inst_name] = (f.lsb, f.width, f.get_property("reset"), _access(f))
        got[name] = (reg.absolute_address, fields)

    rmap = register_map(dcfg)
    want = {}
    for r in rmap:
        reset = (lambda f: f.reset) if r.access in ("rw", "w1c") else (lambda f: None)
        want[r.name] = (r.offset, {f.name: (f.lsb, f.width, reset(f), r.access)
                                   for f in r.fields})
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], name


def test_rdl_escapes_keywords_and_quotes(tmp_path):
    """A field named like a SystemRDL keyword and a description with quotes and a
    backslash still compile, with the name and text intact."""
    systemrdl = pytest.importorskip("systemrdl")
    reg = Register("ODD", 0x8, "w1c", 'say "hi" \\ twice',
                   (Field("sw", 0, 1, 1, 'a "quoted" field'), Field("reset", 4, 3)))
    text = "\n".join(["addrmap t {", *_register(reg, 4), "    } ODD @ 0x8;", "};", ""])
    path = tmp_path / "t.rdl"
    path.write_text(text)
    rdlc = systemrdl.RDLCompiler()
    rdlc.compile_file(str(path))
    node = rdlc.elaborate(top_def_name="t").top.get_child_by_name("ODD")
    assert node.get_property("desc") == reg.doc
    fields = {f.inst_name: (f.lsb, f.width, f.get_property("reset"), _access(f))
              for f in node.fields()}
    assert fields == {"sw": (0, 1, 1, "w1c"), "reset": (4, 3, 0, "w1c")}

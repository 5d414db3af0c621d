"""The register map as SystemRDL 2.0 text, for the PeakRDL tools (C headers, HTML, register
test layers): :func:`registers_rdl`. Written from :func:`~hotline_spec.registers.register_map`,
so it names nothing the description does not.

Access kinds map to SystemRDL field properties as follows:

``ro``   ``sw = r; hw = w;`` (the core drives the value)
``rw``   ``sw = rw; hw = r;`` with the description's reset value
``wo``   ``sw = w; hw = r;`` (an action on write; reads give 0)
``w1c``  ``sw = rw; hw = w; onwrite = woclr; hwset = true;`` (sticky, write 1 to clear)

The table slots become one ``regfile`` array ``TABLE[max_tables]`` (register ``TABLE[t].BASE_LO``
is the description's ``TABLE<t>_BASE_LO``).
"""

from hotline_spec.config import DeviceConfig
from hotline_spec.registers import TABLE_REGISTERS, register_map

__all__ = ["registers_rdl", "ACCESS_PROPERTIES"]

#: SystemRDL field properties of each access kind.
ACCESS_PROPERTIES = {
    "ro": "sw = r; hw = w;",
    "rw": "sw = rw; hw = r;",
    "wo": "sw = w; hw = r;",
    "w1c": "sw = rw; hw = w; onwrite = woclr; hwset = true;",
}

# SystemRDL 2.0 keywords (clause 4.4.1): an instance with such a name must be escaped.
_KEYWORDS = set("""abstract accesstype addressingtype addrmap alias all bit boolean bothedge
compact component componentwidth constraint default encode enum external false field
fullalign hw inside internal level longint mem na negedge nonsticky number onreadtype
onwritetype posedge property r rclr ref reg regalign regfile rset ruser rw rw1 signal sticky
stickybit struct sw this true type unsigned w w1 wclr woclr woset wot wr wset wuser wzc wzs
wzt""".split())


def _ident(name):
    return f"\\{name}" if name in _KEYWORDS else name


def _string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _register(r, indent, name=None):
    pad = " " * indent
    out = [f"{pad}reg {{",
           f"{pad}    name = {_string(name or r.name)};",
           f"{pad}    desc = {_string(r.doc)};"]
    for f in r.fields:
        reset = f" reset = {f.reset:#x};" if r.access in ("rw", "w1c") else ""
        out.append(f"{pad}    field {{ {ACCESS_PROPERTIES[r.access]}{reset} "
                   f"desc = {_string(f.doc or r.doc)}; }} "
                   f"{_ident(f.name)}[{f.lsb + f.width - 1}:{f.lsb}];")
    return out


def registers_rdl(dcfg: DeviceConfig) -> str:
    """SystemRDL text of ``dcfg``'s register map: one ``addrmap hotline`` whose registers
    have the description's offsets, fields, access and reset values."""
    rmap = register_map(dcfg)
    out = ["// Generated from hotline_spec/registers.py by hotline_spec.rdl (do not edit).",
           f"// Configuration: {dcfg.describe()}",
           "addrmap hotline {",
           '    name = "Hotline accelerator registers";',
           "    desc = " + _string("AXI4-Lite register file; an offset not listed answers "
                              "SLVERR and sets REG_ERROR.unmapped.") + ";",
           "    default regwidth = 32;",
           "    default accesswidth = 32;",
           "    addressing = regalign;",
           ""]
    table_names = {rmap.table(t, what) for t in range(dcfg.max_tables)
                   for what, _ in TABLE_REGISTERS}
    for r in rmap:
        if r.name in table_names:
            continue
        out += _register(r, 4)
        out.append(f"    }} {_ident(r.name)} @ {r.offset:#05x};")
    if dcfg.max_tables:
        first = rmap[rmap.table(0, TABLE_REGISTERS[0][0])]
        stride = (rmap.offset(rmap.table(1, TABLE_REGISTERS[0][0])) - first.offset
                  if dcfg.max_tables > 1 else 4 * len(TABLE_REGISTERS))
        out += ["", "    regfile {",
                '        name = "Table slot";',
                '        desc = "One per table id t.";']
        for what, _ in TABLE_REGISTERS:
            r = rmap[rmap.table(0, what)]
            out += _register(r, 8, name=f"TABLE_{what}")
            out.append(f"        }} {what} @ {r.offset - first.offset:#04x};")
        out.append(f"    }} TABLE[{dcfg.max_tables}] @ {first.offset:#05x} += {stride:#x};")
    out.append("};")
    return "\n".join(out) + "\n"

"""Which design and configuration to synthesize, and its Verilog.

A design is one of the three top levels that ``make rtl`` generates; its configuration is a
name from the design's table in :mod:`hotline_spec.config` (``python -m hotline_hw`` lists them),
optionally with fields changed (``banks=2``).
"""

import re
from dataclasses import dataclass, fields

from hotline_spec.config import CONFIGS, DEVICE_CONFIGS, FRAGMENTER_CONFIGS, EALConfig
from .errors import SynthError

__all__ = ["DESIGNS", "Design", "resolve_config", "design_verilog", "verilog_memories"]


@dataclass(frozen=True)
class Design:
    """A synthesizable top level: its named configurations and the smallest useful one."""

    name: str
    configs: dict
    default_config: str


# The default of each design is its smallest configuration that still has every block
# (one lookup lane, four banks): quick to synthesize, yet the same logic as the big ones.
DESIGNS = {
    "lookup_engine": Design("lookup_engine", CONFIGS, "lanes1"),
    "accelerator": Design("accelerator", DEVICE_CONFIGS, "small"),
    "fragment_chain": Design("fragment_chain", FRAGMENTER_CONFIGS, "small"),
}


def _parse_value(text):
    """An override's value: an int (decimal or 0x...) or a bare string (``policy=lfu``)."""
    try:
        return int(text, 0)
    except ValueError:
        return text


def resolve_config(design: str, name: str | None = None, overrides=()):
    """The configuration object for ``design``: the named one (``None``: the design's
    default) with ``overrides`` (``"field=value"`` strings) applied.

    A field is looked up in the design's own configuration first and then in its EAL
    (``DeviceConfig.eal``, ``FragmenterConfig.eal``), so ``banks=2`` works for every design.
    Raises :class:`SynthError` with a one-line message for an unknown design, name or field,
    or a value the configuration rejects.
    """
    if design not in DESIGNS:
        raise SynthError(f"unknown design {design!r}: choose one of {', '.join(DESIGNS)}")
    table = DESIGNS[design].configs
    name = name or DESIGNS[design].default_config
    if name not in table:
        raise SynthError(f"unknown {design} configuration {name!r}: choose one of "
                         f"{', '.join(table)} (python -m hotline_hw lists them)")
    cfg = table[name]
    outer, eal = {}, {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SynthError(f"bad override {item!r}: write FIELD=VALUE, for example banks=2")
        own = {f.name for f in fields(cfg)}
        if key in own and key != "eal":
            outer[key] = _parse_value(value.strip())
        elif not isinstance(cfg, EALConfig) and key in {f.name for f in fields(EALConfig)}:
            eal[key] = _parse_value(value.strip())
        else:
            raise SynthError(f"unknown configuration field {key!r} for {design}")
    try:
        if eal:
            outer["eal"] = cfg.eal.replace(**eal)
        return cfg.replace(**outer) if outer else cfg
    except (TypeError, ValueError) as exc:
        raise SynthError(str(exc)) from None


def design_verilog(design: str, cfg):
    """``(top module name, Verilog text)`` of ``design`` elaborated for ``cfg``: the same
    generator ``make rtl`` uses, so the flow synthesizes exactly what ``rtl/`` holds."""
    from .. import generate
    if design == "lookup_engine":
        return generate.TOP_NAME, generate.verilog_text(cfg)
    if design == "accelerator":
        return generate.ACCELERATOR_NAME, generate.accelerator_verilog(cfg)
    if design == "fragment_chain":
        return generate.FRAGMENT_CHAIN_NAME, generate.fragment_chain_verilog(cfg)
    raise SynthError(f"unknown design {design!r}: choose one of {', '.join(DESIGNS)}")


_MODULE = re.compile(r"^module\s+\\?(\S+)\s*\(", re.M)
_MEMORY = re.compile(r"^\s*reg\s+(?:\[(\d+):0\]\s+)?\\?(\S+)\s+\[(\d+):0\];", re.M)


def verilog_memories(top: str, text: str):
    """``{flattened name: (width, depth)}`` of every memory array in Amaranth's Verilog.

    Amaranth writes one module per instance, named by its path (``top.engine.bank0``), so a
    memory ``mem`` in that module is ``engine.bank0.mem`` once Yosys flattens the design --
    the name its memory-mapping passes log.
    """
    found = {}
    modules = list(_MODULE.finditer(text))
    for i, module in enumerate(modules):
        end = modules[i + 1].start() if i + 1 < len(modules) else len(text)
        path = module.group(1)
        if path == top:
            prefix = ""
        elif path.startswith(top + "."):
            prefix = path[len(top) + 1:] + "."
        else:
            prefix = path + "."
        for mem in _MEMORY.finditer(text, module.end(), end):
            width = int(mem.group(1)) + 1 if mem.group(1) is not None else 1
            found[prefix + mem.group(2)] = (width, int(mem.group(3)) + 1)
    return found

"""Hotline accelerator hardware, written in Amaranth HDL.

Blocks (one file each): :mod:`.config` (parameters), :mod:`.layouts` (stream payloads),
:mod:`.feistel` (the pipelined key hash), :mod:`.tag_bank` (one bank of the Embedding Access
Logger), :mod:`.lookup_engine` (lanes, bank arbitration, reorder window, clear and dump).
``python -m hotline_hw.generate`` writes the Verilog to ``rtl/``.
"""

from .config import EALConfig, CONFIGS, DEFAULT_CONFIG, ASIC_CONFIG

__all__ = ["EALConfig", "CONFIGS", "DEFAULT_CONFIG", "ASIC_CONFIG"]

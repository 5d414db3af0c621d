"""Hotline accelerator hardware, written in Amaranth HDL.

Blocks (one file each): :mod:`.config` (parameters), :mod:`.layouts` (stream payloads),
:mod:`.feistel` (the pipelined key hash), :mod:`.repeat_marker` (runs of one key in a beat),
:mod:`.bank_switch` (lookups to their banks in stream order), :mod:`.bank_pipeline` (a bank
between its queues), :mod:`.tag_bank` (one bank of the Embedding Access Logger),
:mod:`.result_release` (answers back into beats, in order), :mod:`.lookup_engine` (the engine
from these, clear and dump), :mod:`.logic` (shared combinational helpers).
``python -m hotline_hw.generate`` writes the Verilog to ``rtl/``.
"""

from hotline_spec.config import EALConfig, CONFIGS, DEFAULT_CONFIG, ASIC_CONFIG

__all__ = ["EALConfig", "CONFIGS", "DEFAULT_CONFIG", "ASIC_CONFIG"]

"""Hotline's shared description, in plain Python: parameters, command set, word formats and
register map.

One source for every format, register and parameter, read by both sides: the gateware
(:mod:`hotline_hw`, which builds its Amaranth layouts from it) and the host software
(:mod:`sw_driver`, which must import on a machine with no HDL packages). Nothing here
imports amaranth, cocotb or verilator; ``tests/test_host_imports.py`` checks it.

:mod:`.config` (``EALConfig``, ``DeviceConfig``, ``FragmenterConfig`` and the named
configurations), :mod:`.commands` (opcodes, error causes, host-memory word formats),
:mod:`.registers` (the register map).
"""

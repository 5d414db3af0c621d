"""Synthesis of the Hotline RTL with the open FPGA flow (``make synth``).

``python -m hotline_hw.synth`` elaborates a design (the lookup engine, the accelerator or the
fragment chain) for a named configuration, runs Yosys ``synth_ecp5`` and nextpnr-ecp5 *out of
context* from the YoWASP packages that ``pyproject.toml`` pins, and prints LUTs, flip-flops,
block RAM, DSPs, LUTRAM, Yosys' cell count, where every memory went (is the EAL tag store in
block RAM?), the Fmax nextpnr reaches and its critical path; ``--xilinx`` adds a Yosys
``synth_xilinx`` estimate for UltraScale+. ``docs/benchmarks.md`` records the figures.

* :mod:`.designs` -- designs, configurations and overrides, the Verilog and its memories.
* :mod:`.flow` -- :func:`synthesize`: the tool runs and the figures.
* :mod:`.parse` -- readers of Yosys and nextpnr output.
* :mod:`.tools` -- finding and running the YoWASP tools.
"""

from .designs import DESIGNS, resolve_config
from .errors import DoesNotFit, SynthError
from .flow import ECP5_PARTS, check_limits, synthesize

__all__ = ["DESIGNS", "ECP5_PARTS", "DoesNotFit", "SynthError", "check_limits",
           "resolve_config", "synthesize"]

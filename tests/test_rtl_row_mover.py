"""cocotb + Verilator tests of the gather / write-back engine (``hotline_hw.dma.RowMover``)
against the simulated host memory (``verif.tb.host_memory.HostMemory``).

Every command's whole memory image is compared with the expected one (destinations exact,
everything else, guard bytes included, unchanged) and the bursts on the bus with the
expected chunks (burst length, 4 KiB boundaries of source and destination). The suites are
in ``verif/tb/test_row_mover.py``: row sizes around the bus width up to ``max_row_bytes``,
tables and buffers at and just before 4 KiB boundaries, counts 1, 3 and above ``read_ids``,
duplicate keys, idle/back-pressure on every channel, out-of-order interleaved read data,
read and write SLVERR/DECERR with a normal command after each, key streams cut short by
``stop``. The table parameters come from a RAM with one cycle of read latency.
"""

import pytest

from hotline_spec.commands import Engine, ErrorCause
from hotline_spec.config import DEVICE_CONFIGS
from verif.tb.test_row_mover import run_row_mover

pytestmark = pytest.mark.rtl


def check(report, device):
    dcfg = DEVICE_CONFIGS[device]
    assert not report["failures"], report["failures"][:5]
    assert not report["violations"], report["violations"][:5]
    commands = report["commands"]
    # The suite exercised what it claims.
    assert {c["row_bytes"] for c in commands} >= {dcfg.bus_bytes, 2 * dcfg.bus_bytes,
                                                  3 * dcfg.bus_bytes, dcfg.max_row_bytes}
    assert any(c["count"] > dcfg.read_ids for c in commands)
    assert any(c["count"] == 1 for c in commands)
    assert any(c["reorder"] for c in commands)
    errors = [c for c in commands if c["err_valid"]]
    assert {(c["err_engine"], c["err_cause"]) for c in errors} >= {
        (Engine.ROW_READ, ErrorCause.READ_SLVERR), (Engine.ROW_WRITE, ErrorCause.WRITE_SLVERR),
        (Engine.ROW_WRITE, ErrorCause.WRITE_DECERR)}
    stopped = {c["sent"] for c in commands if c["stopped"] and c["sent"] < c["count"]}
    assert 0 in stopped and len(stopped) >= 3
    assert report["read_errors"] and report["write_errors"]
    # Many reads were in flight at once (the engine pipelines its reads).
    assert report["max_reads_in_flight"] >= dcfg.read_ids // 2
    return commands


@pytest.mark.parametrize("device", ["default", "bus64", "bus512"])
def test_row_mover_fast(device):
    report = run_row_mover(device, "fast", seed=21, name=f"fast_{device}")
    check(report, device)


@pytest.mark.slow
@pytest.mark.parametrize("device", ["default", "bus64", "bus512"])
def test_row_mover_full(device):
    report = run_row_mover(device, "full", seed=22, name=f"full_{device}",
                           mem_size=2 << 20)
    check(report, device)

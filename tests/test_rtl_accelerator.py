"""cocotb + Verilator tests of the accelerator top level: registers, commands, DMA, errors.

Each case (verif/tb/test_accelerator.py) runs against the simulated host memory
(verif.tb.host_memory.HostMemory) with latency, random back-pressure on every AXI channel and
out-of-order read responses, and compares the whole memory after every command with a mirror
that holds exactly the writes the command should make; lookups and dumps are compared with the
golden AccessLogger. After every case the AXI handshake monitor (ten channels) and the host
memory's protocol checks must be clean.
"""

import dataclasses
import json

import pytest

from hotline_spec.config import DEVICE_CONFIGS, SMALL_DEVICE, DEFAULT_DEVICE
from hotline_hw.generate import ACCELERATOR_NAME
from verif.tb.runner import REPO_ROOT, build_accelerator, run_cocotb

pytestmark = pytest.mark.rtl

TB_FILE = REPO_ROOT / "verif" / "tb" / "test_accelerator.py"

def run_case(config_name, case, *, seed=1, read_latency=20, write_latency=20, pause=0.0,
             reorder=False, **extra):
    """Build (cached) the top for ``DEVICE_CONFIGS[config_name]`` and play ``case``."""
    dcfg = DEVICE_CONFIGS[config_name]
    runner, build_dir = build_accelerator(dcfg)
    spec = {"config": dataclasses.asdict(dcfg), "case": case, "seed": seed,
            "read_latency": read_latency, "write_latency": write_latency, "pause": pause,
            "reorder": reorder, **extra}
    work = build_dir / f"case_{case}_{seed}"
    work.mkdir(exist_ok=True)
    spec["report"] = str(work / "report.json")
    (work / "case.json").write_text(json.dumps(spec))
    run_cocotb(runner, build_dir, ACCELERATOR_NAME, "verif.tb.test_accelerator", TB_FILE,
               {"HOTLINE_CASE": work / "case.json"}, name=f"{case}_{seed}")
    return json.loads((work / "report.json").read_text())


def test_registers_id_refusals_interrupt():
    report = run_case("small", "registers", pause=0.2)
    assert report["checks"] >= 2


def test_lookups_dump_clear_match_golden_model():
    report = run_case("small", "lookups", pause=0.3, read_latency=50, reorder=True)
    assert report["hits"] > 0 and report["checks"] >= 8


def test_gather_write_back_every_byte_and_hazard():
    report = run_case("small", "rows", pause=0.25, read_latency=60, write_latency=30,
                      reorder=True, seed=3)
    assert report["gathered"] > 0 and report["written"] > 0


@pytest.mark.parametrize("config_name", ["bus64", "bus512"])
def test_gather_write_back_other_bus_widths(config_name):
    dcfg = DEVICE_CONFIGS[config_name]
    bb = dcfg.bus_bytes
    report = run_case(config_name, "rows", pause=0.2, read_latency=30, reorder=True, seed=4,
                      row_sizes=[bb, 2 * bb, 3 * bb], hazard_row_bytes=bb)
    assert report["gathered"] > 0


def test_refused_commands_dma_errors_recovery():
    report = run_case("small", "errors", pause=0.1, read_latency=10, seed=5)
    assert report["errors_counted"] >= 10


def test_reset_mid_run_clears_tag_store():
    run_case("small", "reset", read_latency=10, seed=6)


def test_list_error_in_move_pass_after_clean_check():
    report = run_case("small", "move_error", pause=0.2, read_latency=30, reorder=True, seed=7)
    assert report["lost_keys"] > 0


def test_dump_write_error():
    run_case("small", "dump_error", pause=0.2, read_latency=20, seed=8)


def test_reset_mid_gather_with_reads_in_flight():
    report = run_case("small", "reset_gather", pause=0.1, read_latency=40, reorder=True, seed=9)
    assert report["reads_in_flight_at_reset"] >= 2


def test_err_ack_when_not_halted_is_harmless():
    run_case("small", "err_ack", pause=0.2, seed=10)


def test_submit_while_dropping_the_queue():
    report = run_case("small", "submit_drop", seed=11)
    assert report["new_command"] in ("ran", "dropped")


def test_default_configuration_tour():
    """DEFAULT_DEVICE (4 lanes, 128 read IDs) through learn, dump, lookup, a gather of more
    rows than read IDs, write-back, a refusal and a row read error."""
    report = run_case("default", "default_mix", pause=0.2, read_latency=40, reorder=True,
                      seed=12)
    assert report["lanes"] == DEFAULT_DEVICE.eal.lanes > 1


def _real_data(name):
    from sw_driver.data.avazu import read_avazu
    from sw_driver.data.locate import find_shared_data
    from verif.workload import load_criteo_or_synthetic
    if name == "criteo":
        data, description, _ = load_criteo_or_synthetic(max_rows=3000)
        return data, description
    folder = find_shared_data("avazu_9k")
    if folder is None:
        data, description, _ = load_criteo_or_synthetic(max_rows=3000, seed=9)
        return data, description
    return read_avazu(folder, split="train", max_rows=3000), f"Avazu sample {folder}"


@pytest.mark.parametrize("name", ["criteo", "avazu"])
def test_real_working_sets_gather_and_write_back(name):
    """The rows that a real log's working sets touch: the device learns a sample, looks up a
    working set, gathers the cold rows its own hit flags name and writes them back; every
    result word, dump entry, hit flag, cold list and row equals the golden model's."""
    from verif.device_workload import device_workload, run_device_workload
    data, description = _real_data(name)
    arrays = device_workload(data, SMALL_DEVICE.eal, batch_size=128, sample_rate=0.1, seed=2,
                             working_set=4, working_sets=1)
    report = run_device_workload(SMALL_DEVICE, arrays, dim=16, latency=60, seed=2,
                                 name=f"real_{name}")
    assert report["mismatches"] == 0, description
    assert report["stats"]["GATHER"]["count"] > 100, description
    assert report["counters"]["ROWS_WRITTEN"] == report["stats"]["WRITE_BACK"]["count"]

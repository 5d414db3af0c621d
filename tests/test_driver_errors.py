"""Driver: every error path with its message, and the state machine (docs/driver.md)."""

import pytest
import torch

from hotline_spec.config import EALConfig
from sw_driver.driver import HotlineDevice
from sw_driver.errors import (DeviceStateError, DriverError, IndexOutOfRangeError,
                              ScheduleError, TableSpecError)

CFG = EALConfig(banks=2, sets=4, ways=2, table_bits=2, row_bits=4)  # <= 4 tables, <= 16 rows


def test_error_hierarchy():
    for cls in (TableSpecError, IndexOutOfRangeError, ScheduleError):
        assert issubclass(cls, ValueError) and issubclass(cls, DriverError)
    assert issubclass(DeviceStateError, RuntimeError)
    assert not issubclass(DeviceStateError, ValueError)
    e = IndexOutOfRangeError(2, 17, (5, 2), 16)
    assert (e.table, e.row, e.position, e.limit) == (2, 17, (5, 2), 16)
    assert str(e) == ("sparse[5, 2]: row 17 is out of range for table 2: must be "
                      "0 <= row < 16 (table_rows[2])")


@pytest.mark.parametrize("table_rows, msg", [
    ([], r"table_rows is empty"),
    ([3, 0], r"table_rows\[1\] = 0 rows: a table needs at least one row"),
    ([3, -2], r"table_rows\[1\] = -2 rows"),
    ([3, 2.5], r"table_rows\[1\] = 2.5 is not an int"),
    ([True], r"table_rows\[0\] = True is not an int"),
    ([3, "4"], r"table_rows\[1\] = '4' is not an int"),
    ([16, 17], r"table_rows\[1\] = 17 rows is more than the 16 \(2\*\*row_bits = 2\*\*4\)"),
    ([1, 1, 1, 1, 1], r"5 tables is more than the 4 \(2\*\*table_bits = 2\*\*2\)"),
    (7, r"table_rows must be a sequence of ints"),
    ("abc", r"table_rows must be a sequence of ints"),
])
def test_table_spec_errors(table_rows, msg):
    with pytest.raises(TableSpecError, match=msg):
        HotlineDevice(table_rows, 4, config=CFG)


def test_table_spec_limits_accepted():
    with HotlineDevice([16, 16, 16, 16], 1, config=CFG) as dev:
        assert dev.total_rows == 64 and dev.n_tables == 4
        assert dev.table_offsets.tolist() == [0, 16, 32, 48]
    with HotlineDevice(torch.tensor([3, 5]), 2, config=CFG) as dev:
        assert dev.table_rows == (3, 5)


@pytest.mark.parametrize("dim", [0, -1, 2.0, None, True])
def test_bad_dim(dim):
    with pytest.raises(TableSpecError, match="dim must be an int >= 1"):
        HotlineDevice([4], dim, config=CFG)


def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match="config must be an EALConfig"):
        HotlineDevice([4], 2, config={"banks": 2})
    with pytest.raises(ValueError, match="gather_threads must be an int >= 1, not 0"):
        HotlineDevice([4], 2, config=CFG, gather_threads=0)
    with pytest.raises(ValueError, match="unknown transport 'fpga'"):
        HotlineDevice([4], 2, config=CFG, transport="fpga")
    with pytest.raises(NotImplementedError, match="'pcie'"):
        HotlineDevice([4], 2, config=CFG, transport="pcie")


@pytest.mark.parametrize("call", ["learn", "schedule"])
def test_index_out_of_range(call):
    with HotlineDevice([5, 3, 8], 2, config=CFG) as dev:
        if call == "schedule":
            dev.freeze()
            run, what = (lambda x: dev.schedule(x, 2)), "sparse_ws"
        else:
            run, what = dev.learn, "sparse"
        cases = [
            ([[0, 0, 0], [4, 3, 7]], 1, 1, 3, 3),
            ([[0, 0, 0], [1, 2, 3], [0, 0, 8]], 2, 2, 8, 8),
            ([[5, 0, 0]], 0, 0, 5, 5),
            ([[0, -1, 0]], 0, 1, -1, 3),
            ([[0, 0, 0], [0, 0, 99], [9, 0, 0]], 1, 2, 99, 8),  # the first in input order
        ]
        for rows, inp, t, row, limit in cases:
            with pytest.raises(IndexOutOfRangeError) as ei:
                run(torch.tensor(rows))
            e = ei.value
            assert (e.table, e.row, e.position, e.limit) == (t, row, (inp, t), limit)
            assert str(e) == (f"{what}[{inp}, {t}]: row {row} is out of range for table {t}: "
                              f"must be 0 <= row < {limit} (table_rows[{t}])")
        if call == "learn":  # nothing was learned by the failed calls
            assert not bool(dev.transport.logger.valid.any())
        else:
            assert dev.counters().working_sets == 0


@pytest.mark.parametrize("call", ["learn", "schedule"])
def test_bad_sparse_shape_and_dtype(call):
    with HotlineDevice([5, 3], 2, config=CFG) as dev:
        if call == "schedule":
            dev.freeze()
            run, what = (lambda x: dev.schedule(x, 2)), "sparse_ws"
        else:
            run, what = dev.learn, "sparse"
        with pytest.raises(ValueError, match=rf"{what} must be \[n_inputs, n_tables=2\].*"
                                             r"not shape \(4, 3\)"):
            run(torch.zeros(4, 3, dtype=torch.int64))
        with pytest.raises(ValueError, match=r"not shape \(4,\)"):
            run(torch.zeros(4, dtype=torch.int64))
        with pytest.raises(TypeError, match=rf"{what} must be an integer tensor of row "
                                            r"indices, not torch.float32"):
            run(torch.zeros(4, 2))
        with pytest.raises(TypeError, match=r"not torch.bool"):
            run(torch.zeros(4, 2, dtype=torch.bool))
        with pytest.raises(TypeError, match=rf"{what} must hold integers, not float64"):
            run([[1.5, 2.0]])


def test_bad_micro_batch_size_and_threshold():
    with HotlineDevice([5, 3], 2, config=CFG) as dev:
        for bad in (-1, 4, 1.0, True, "1"):
            with pytest.raises(ValueError, match=r"popular_max_rrpv must be an int in 0..3"):
                dev.freeze(bad)
        assert dev.state == "learning"
        dev.freeze()
        ws = torch.zeros(3, 2, dtype=torch.int64)
        for bad in (0, -3, 2.0, None, False):
            with pytest.raises(ValueError, match=r"micro_batch_size must be an int >= 1"):
                dev.schedule(ws, bad)


def test_state_errors():
    dev = HotlineDevice([5, 3], 2, config=CFG)
    assert dev.state == "learning" and not dev.closed
    ws = torch.zeros(2, 2, dtype=torch.int64)
    with pytest.raises(DeviceStateError, match=r"schedule: the device is learning; call "
                                               r"freeze\(\) first"):
        dev.schedule(ws, 1)
    for name in ("load_hot_table", "store_hot_table"):
        with pytest.raises(DeviceStateError, match=rf"{name}: the device is learning"):
            getattr(dev, name)(torch.zeros(8, 2), torch.zeros(8, 2))
    assert dev.hot_rows is None and dev.slot_map is None and dev.popular_max_rrpv is None
    dev.learn(ws)
    dev.freeze()
    assert dev.state == "frozen"
    with pytest.raises(DeviceStateError, match=r"learn: the device is frozen; call clear\(\)"):
        dev.learn(ws)
    s = dev.schedule(ws, 1)
    dev.freeze(3)  # re-freezing with another threshold is allowed
    dev.unfreeze()
    with pytest.raises(DeviceStateError, match="the device is learning"):
        dev.schedule(ws, 1)
    dev.close()
    dev.close()  # idempotent
    assert dev.closed and dev.state == "closed"
    host, buf = torch.zeros(8, 2), torch.zeros(2, 2)
    calls = {
        "learn": lambda: dev.learn(ws),
        "freeze": lambda: dev.freeze(),
        "schedule": lambda: dev.schedule(ws, 1),
        "gather": lambda: dev.gather(s, host, buf),
        "write_back": lambda: dev.write_back(s, buf, host),
        "counters": lambda: dev.counters(),
        "reset_counters": lambda: dev.reset_counters(),
        "clear": lambda: dev.clear(),
        "unfreeze": lambda: dev.unfreeze(),
        "relearn": lambda: dev.relearn(ws),
        "new_staging": lambda: dev.new_staging(4),
        "load_hot_table": lambda: dev.load_hot_table(host),
        "store_hot_table": lambda: dev.store_hot_table(host, host),
        "hot_rows": lambda: dev.hot_rows,
        "slot_map": lambda: dev.slot_map,
        "__enter__": lambda: dev.__enter__(),
    }
    for name, call in calls.items():
        with pytest.raises(DeviceStateError, match=rf"HotlineDevice.{name}: the device is "
                                                   r"closed"):
            call()


def test_context_manager_closes_on_error():
    with pytest.raises(KeyError):
        with HotlineDevice([5], 2, config=CFG) as dev:
            raise KeyError("boom")
    assert dev.closed
    with pytest.raises(DeviceStateError):
        dev.learn(torch.zeros(1, 1, dtype=torch.int64))
    with pytest.raises(DeviceStateError, match="ModelTransport.learn"):
        dev.transport.learn(torch.zeros(1, dtype=torch.int64))


def test_freeze_rejects_foreign_rows_in_tag_store():
    """A transport fed outside the driver (here: a key of table 1 row 7, with table 1 only 4
    rows long) cannot be laid out: freeze names the row."""
    from sw_driver.model_transport import ModelTransport
    from verif.golden import make_keys
    t = ModelTransport(CFG)
    k = make_keys(1, 7, CFG).view(1)
    t.learn(torch.cat([k, k]))
    with HotlineDevice([5, 4], 2, config=CFG, transport=t) as dev:
        with pytest.raises(DeviceStateError, match=r"holds table 1 row 7 \(slot \d+\), outside"):
            dev.freeze()

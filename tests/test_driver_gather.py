"""Driver: threaded row gather/scatter (sw_driver/gather.py) and HotlineDevice.gather /
write_back, against plain ``torch.index_select`` / ``index_copy_``."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from hotline_spec.config import EALConfig
from sw_driver.driver import HotlineDevice
from sw_driver.errors import ScheduleError
from sw_driver.gather import chunk_bounds, gather_rows, make_pool, scatter_rows


@pytest.fixture(scope="module")
def pools():
    made = {t: make_pool(t) for t in (1, 2, 3, 8)}
    yield made
    for p in made.values():
        if p is not None:
            p.shutdown()


def test_chunk_bounds():
    assert chunk_bounds(0, 4) == []
    assert chunk_bounds(10, 4, min_chunk=100) == [(0, 10)]
    assert chunk_bounds(10, 4, min_chunk=1) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert chunk_bounds(3, 8, min_chunk=1) == [(0, 1), (1, 2), (2, 3)]
    b = chunk_bounds(100_000, 8, min_chunk=4096)
    assert len(b) == 8 and b[0][0] == 0 and b[-1][1] == 100_000
    assert all(x[1] == y[0] for x, y in zip(b, b[1:]))


def test_make_pool():
    assert make_pool(1) is None
    p = make_pool(3)
    assert isinstance(p, ThreadPoolExecutor)
    p.shutdown()
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be an int >= 1"):
            make_pool(bad)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
@pytest.mark.parametrize("min_chunk", [1, 7, 4096])
def test_gather_rows_matches_index_select(pools, threads, min_chunk):
    gen = torch.Generator().manual_seed(threads * 100 + min_chunk)
    table = torch.randn(5000, 16, generator=gen)
    for n in (0, 1, 5, 999, 20_000):       # with duplicates (n > rows)
        idx = torch.randint(0, 5000, (n,), generator=gen)
        out = torch.full((n + 3, 16), -7.0)
        got = gather_rows(table, idx, out, pools[threads], min_chunk=min_chunk)
        assert got.shape == (n, 16) and (n == 0 or got.data_ptr() == out.data_ptr())
        assert torch.equal(out[:n], torch.index_select(table, 0, idx))
        assert bool((out[n:] == -7.0).all())  # rows past n untouched


def test_gather_rows_big_list_and_int32(pools):
    gen = torch.Generator().manual_seed(1)
    table = torch.randn(50_000, 8, generator=gen)
    idx = torch.randperm(50_000, generator=gen)[:40_000]
    out = torch.empty(40_000, 8)
    gather_rows(table, idx.to(torch.int32), out, pools[8])
    assert torch.equal(out, table.index_select(0, idx))
    # non-contiguous table (every other column) and float64
    wide = torch.randn(3000, 10, dtype=torch.float64, generator=gen)[:, ::2]
    idx = torch.randint(0, 3000, (9000,), generator=gen)
    out = torch.empty(9000, 5, dtype=torch.float64)
    gather_rows(wide, idx, out, pools[3], min_chunk=100)
    assert torch.equal(out, wide.index_select(0, idx))


@pytest.mark.parametrize("threads", [1, 2, 8])
@pytest.mark.parametrize("min_chunk", [1, 4096])
def test_scatter_rows_matches_index_copy(pools, threads, min_chunk):
    gen = torch.Generator().manual_seed(threads + min_chunk)
    for rows, n in ((100, 0), (100, 1), (100, 100), (60_000, 45_000)):
        table = torch.randn(rows, 6, generator=gen)
        idx = torch.randperm(rows, generator=gen)[:n]        # duplicate-free
        src = torch.randn(n + 2, 6, generator=gen)
        want = table.clone().index_copy_(0, idx, src[:n])
        assert scatter_rows(table, idx, src, pools[threads], min_chunk=min_chunk) is table
        assert torch.equal(table, want)


def test_gather_scatter_round_trip(pools):
    gen = torch.Generator().manual_seed(2)
    table = torch.randn(30_000, 4, generator=gen)
    orig = table.clone()
    idx = torch.randperm(30_000, generator=gen)[:25_000]
    buf = torch.empty(25_000, 4)
    gather_rows(table, idx, buf, pools[8], min_chunk=512)
    buf.mul_(2.0)
    scatter_rows(table, idx, buf, pools[8], min_chunk=512)
    want = orig.clone()
    want[idx] *= 2.0
    assert torch.equal(table, want)


def test_gather_scatter_errors(pools):
    table = torch.zeros(10, 4)
    idx = torch.tensor([1, 2])
    with pytest.raises(TypeError, match="int64 or int32"):
        gather_rows(table, idx.float(), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="1-D"):
        gather_rows(table, idx.view(1, 2), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="out has dtype torch.float64"):
        gather_rows(table, idx, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="out has dim 3"):
        gather_rows(table, idx, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="out has 1 rows, fewer than the 2"):
        gather_rows(table, idx, torch.zeros(1, 4))
    with pytest.raises(ValueError, match="table must be 2-D"):
        gather_rows(torch.zeros(10), idx, torch.zeros(2, 4))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        gather_rows(table, [1, 2], torch.zeros(2, 4))
    with pytest.raises(ValueError, match="rows has 1 rows, fewer than the 2"):
        scatter_rows(table, idx, torch.zeros(1, 4))
    with pytest.raises(TypeError, match="rows has dtype"):
        scatter_rows(table, idx, torch.zeros(2, 4, dtype=torch.float16))
    # an out-of-range index inside one chunk of many is reported from the worker
    big = torch.arange(20_000)
    big[15_000] = 10 ** 6
    with pytest.raises((IndexError, RuntimeError)):
        gather_rows(torch.zeros(20_000, 2), big, torch.zeros(20_000, 2), pools[8],
                    min_chunk=100)


# --- HotlineDevice.gather / write_back ------------------------------------------------------

def _device_with_schedule(table_rows, dim, ws, threads=8, learn=None):
    # A de-dup table large enough that the big working sets here are not ended early.
    from hotline_spec.config import FragmenterConfig
    big = FragmenterConfig(eal=EALConfig(), dedup_banks=64, dedup_sets=1024, dedup_ways=8)
    dev = HotlineDevice(table_rows, dim, config=EALConfig(), gather_threads=threads,
                        fragmenter=big)
    if learn is not None:
        dev.learn(learn)
    dev.freeze()
    return dev, dev.schedule(ws, 64)


@pytest.mark.parametrize("threads", [1, 8])
def test_device_gather_write_back_round_trip(threads):
    gen = torch.Generator().manual_seed(threads)
    table_rows = [70_000, 30_000]
    ws = torch.stack([torch.randint(0, 70_000, (30_000,), generator=gen),
                      torch.randint(0, 30_000, (30_000,), generator=gen)], 1)
    learn = ws[:2000].repeat(2, 1)
    dev, s = _device_with_schedule(table_rows, 8, ws, threads, learn)
    with dev:
        off = torch.tensor([0, 70_000])
        host = torch.randn(100_000, 8, generator=gen)
        orig = host.clone()
        staging = dev.new_staging(s.n_cold + 10)
        assert staging.shape == (s.n_cold + 10, 8) and staging.dtype == torch.float32
        assert s.n_cold > 8 * 4096  # really split into chunks
        staged = dev.gather(s, host, staging)
        assert staged.data_ptr() == staging.data_ptr() and staged.shape == (s.n_cold, 8)
        assert torch.equal(staged, torch.index_select(host, 0, s.cold_global_rows))
        # the cold rows are exactly the distinct missed lookups (plain torch)
        glob = off[None, :] + ws
        missed = glob[~s.hit]
        assert torch.equal(torch.sort(s.cold_global_rows).values, torch.unique(missed))
        updated = staged * 3.0 + 1.0
        assert dev.write_back(s, updated, host) is host
        want = orig.clone().index_copy_(0, s.cold_global_rows, updated)
        assert torch.equal(host, want)
        c = dev.counters()
        assert c.bytes_gathered == s.n_cold * 8 * 4
        assert c.bytes_written_back == s.n_cold * 8 * 4


def test_device_gather_empty_schedule():
    dev, s = _device_with_schedule([5], 2, torch.zeros(0, 1, dtype=torch.int64))
    with dev:
        host = torch.randn(5, 2)
        out = dev.gather(s, host, torch.empty(0, 2))
        assert out.shape == (0, 2)
        dev.write_back(s, out, host)
        assert dev.counters().bytes_gathered == 0


def test_device_gather_buffer_errors():
    dev, s = _device_with_schedule([4, 6], 3, torch.tensor([[0, 1], [2, 1], [3, 5]]))
    other, s_other = _device_with_schedule([4, 6], 3, torch.tensor([[0, 1]]))
    with dev, other:
        assert s.n_cold == 5
        host = torch.zeros(10, 3)
        ok = torch.zeros(5, 3)
        cases = [
            (lambda: dev.gather(s, host, torch.zeros(4, 3)),
             r"staging has 4 rows, fewer than the schedule's n_cold = 5"),
            (lambda: dev.gather(s, host, torch.zeros(5, 2)),
             r"staging has shape \(5, 2\), expected \[rows, dim=3\]"),
            (lambda: dev.gather(s, host, torch.zeros(5, 3, dtype=torch.float64)),
             r"staging has dtype torch.float64, host_table has torch.float32"),
            (lambda: dev.gather(s, host, "buffer"), r"staging must be a torch.Tensor, not str"),
            (lambda: dev.gather(s, torch.zeros(9, 3), ok),
             r"host_table has shape \(9, 3\), expected \[sum\(table_rows\), dim\] = \[10, 3\]"),
            (lambda: dev.gather(s, torch.zeros(10, 3, dtype=torch.int32), ok),
             r"host_table has dtype torch.int32"),
            (lambda: dev.gather(s, None, ok), r"host_table must be a torch.Tensor, not NoneType"),
            (lambda: dev.gather("sched", host, ok), r"sched must be a Schedule, not str"),
            (lambda: dev.gather(s_other, host, ok), r"made by another HotlineDevice"),
            (lambda: dev.write_back(s, torch.zeros(6, 3), host),
             r"rows has 6 rows, the schedule has n_cold = 5"),
            (lambda: dev.write_back(s, torch.zeros(4, 3), host),
             r"rows has 4 rows, the schedule has n_cold = 5"),
            (lambda: dev.write_back(s, torch.zeros(5, 3, dtype=torch.float16), host),
             r"rows has dtype torch.float16"),
            (lambda: dev.write_back(s, torch.zeros(5, 3), torch.zeros(10, 4)),
             r"host_table has shape \(10, 4\)"),
            (lambda: dev.write_back(s_other, ok, host), r"made by another HotlineDevice"),
        ]
        for call, msg in cases:
            with pytest.raises(ScheduleError, match=msg):
                call()
        assert host.abs().sum() == 0  # nothing written by the failed calls
        assert dev.counters().bytes_gathered == 0 and dev.counters().bytes_written_back == 0

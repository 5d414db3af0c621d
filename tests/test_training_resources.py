"""Memory hygiene of the trainer and the benchmark helpers (what the GPU benchmark relies on to
run three modes and a larger-than-GPU table in one process), on the CPU."""

import gc
import weakref

import pytest
import torch

from sw_driver import bench_training
from sw_driver.data import SyntheticClickGenerator
from sw_driver.training import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = (3, 40, 200, 1000)
KW = dict(dim=8, bottom=(16,), top=(16,), batch_size=32, working_set=2, sample_rate=0.2,
          gather_threads=2)


def test_fill_uniform_is_in_place_bounded_and_thread_independent(monkeypatch):
    monkeypatch.setattr(bench_training, "FILL_CHUNK", 1000)      # several chunks
    a = torch.empty(1234, 7)
    ptr = a.data_ptr()
    out = bench_training.fill_uniform_(a, -0.5, 0.25, seed=3, threads=1)
    assert out is a and a.data_ptr() == ptr
    assert float(a.min()) >= -0.5 and float(a.max()) < 0.25
    assert a.std() > 0.1                                         # not a constant fill
    b = bench_training.fill_uniform_(torch.empty(1234, 7), -0.5, 0.25, seed=3, threads=3)
    assert torch.equal(a, b)
    c = bench_training.fill_uniform_(torch.empty(1234, 7), -0.5, 0.25, seed=4, threads=3)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("mode", ["gpu-only", "hybrid", "hotline"])
def test_close_releases_the_tables(mode):
    """The trainer and its store refer to each other; close() must drop the big tensors so
    that they go as soon as the caller lets go of them (the benchmark's shared host table
    and gpu-only's device copy)."""
    data = SyntheticClickGenerator(SIZES, p_hot=0.6, head_rows=8, n_dense=4, seed=1).batch(300)
    host = torch.zeros(sum(SIZES), KW["dim"])
    tr = Trainer(SIZES, data.n_dense, mode, hot_budget=64, host_table=host, **KW)
    tr.train_epoch(data)
    refs = [weakref.ref(host)]
    if mode == "gpu-only":
        refs.append(weakref.ref(tr.store.table))
    if mode == "hotline":
        refs.append(weakref.ref(tr.store.working))
    tr.close()
    tr.close()                                                   # idempotent
    del host
    # No gc.collect(): the trainer object is still alive here, its tensors must not be.
    assert all(r() is None for r in refs)
    del tr
    gc.collect()


def test_release_memory_collects_cycles():
    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a
    a.table = torch.zeros(10)
    ref = weakref.ref(a.table)
    del a, b
    bench_training.release_memory(torch.device("cpu"))
    assert ref() is None

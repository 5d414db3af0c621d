"""TEMPORARY stand-in for sw_driver.driver.HotlineDevice (docs/driver.md) built on the golden
model, used only while sw_driver/driver.py is not there yet."""

from dataclasses import dataclass

import torch

from hotline_hw.config import EALConfig
from verif.golden import AccessLogger, fragment
from verif.golden.feistel import make_keys


@dataclass
class HotRows:
    slots: torch.Tensor
    tables: torch.Tensor
    rows: torch.Tensor
    global_rows: torch.Tensor


@dataclass
class Schedule:
    popular: torch.Tensor
    popular_micro_batches: list
    non_popular: torch.Tensor
    cold_global_rows: torch.Tensor
    remapped: torch.Tensor
    n_cold: int
    n_inputs: int
    n_lookups: int
    n_hits: int


class _Counters(dict):
    pass


class HotlineDevice:
    def __init__(self, table_rows, dim, config=EALConfig(), transport="model", device="cpu",
                 gather_threads=1):
        self.table_rows = tuple(int(r) for r in table_rows)
        self.dim = dim
        self.config = config
        self.device = torch.device(device)
        self.logger = AccessLogger(config)
        self.offsets = torch.tensor([0, *self.table_rows[:-1]]).cumsum(0)
        self.frozen = False

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        pass

    def learn(self, sparse):
        sparse = torch.as_tensor(sparse).cpu()
        t = torch.arange(sparse.shape[1]).expand_as(sparse)
        self.logger.learn(make_keys(t, sparse, self.config))

    def freeze(self):
        self.frozen = True
        slots, tables, rows = self.logger.popular_rows()
        return HotRows(slots, tables, rows, self.offsets[tables] + rows)

    def schedule(self, sparse_ws, micro_batch_size):
        s = fragment(torch.as_tensor(sparse_ws).cpu(), self.logger, micro_batch_size)
        d = self.device
        return Schedule(s.popular.to(d), [m.to(d) for m in s.popular_micro_batches],
                        s.non_popular.to(d), self.offsets[s.cold_tables] + s.cold_rows,
                        s.remapped.to(d), s.n_cold, s.n_inputs, s.n_lookups, s.n_hits)

    def gather(self, sched, host_table, staging):
        n = sched.n_cold
        torch.index_select(host_table, 0, sched.cold_global_rows, out=staging[:n])
        return staging[:n]

    def write_back(self, sched, rows, host_table):
        host_table.index_copy_(0, sched.cold_global_rows, rows[:sched.n_cold])

    def counters(self):
        return _Counters()

"""Turn click logs into lookup streams for the RTL: the learn sample and the frozen rest.

Used by ``make sim`` (:mod:`verif.sim_report`), the RTL tests and the lookup benchmark.
"""

from dataclasses import dataclass

import numpy as np
import torch

from hotline_spec.config import EALConfig
from sw_driver.data.criteo import read_criteo
from sw_driver.data.locate import find_shared_data, shared_data_roots
from sw_driver.data.synthetic import criteo_kaggle_generator
from verif.golden import sparse_keys

__all__ = ["LookupWorkload", "load_criteo_or_synthetic", "split_learn_sample", "lookup_keys"]


def load_criteo_or_synthetic(max_rows=None, table_sizes=None, seed=0, synthetic_rows=7200):
    """The real Criteo Kaggle sample when ../shared/data (or $HOTLINE_DATA) has it, else a
    synthetic Criteo-shaped sample. Returns ``(dataset, description, is_real)``."""
    folder = find_shared_data("criteo_kaggle_8k")
    kwargs = {} if table_sizes is None else {"table_sizes": table_sizes}
    if folder is not None:
        data = read_criteo(folder, split="train", max_rows=max_rows, **kwargs)
        return data, f"Criteo Kaggle sample {folder}/train.tsv", True
    n = synthetic_rows if max_rows is None else min(max_rows, synthetic_rows)
    gen = criteo_kaggle_generator(seed=seed, p_hot=0.6, **kwargs)
    searched = ", ".join(str(p) for p in shared_data_roots())
    return gen.batch(n), (f"SYNTHETIC Criteo-shaped data ({n} samples, seed {seed}): no real "
                          f"sample found in {searched}"), False


def lookup_keys(sparse: torch.Tensor, cfg: EALConfig) -> torch.Tensor:
    """Keys ``(table << row_bits) | row`` of a ``[n, tables]`` row-index matrix (the column is
    the table id); errors name any table or row that does not fit the configuration."""
    return sparse_keys(sparse, cfg)


def split_learn_sample(n_inputs, batch_size, sample_rate, seed=0):
    """Mini-batch ids to learn popularity from (a seeded random ``sample_rate`` share, at
    least one, kept in stream order) and the remaining mini-batch ids."""
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], not {sample_rate}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    n_batches = -(-n_inputs // batch_size)
    n_learn = max(1, round(n_batches * sample_rate))
    rng = np.random.default_rng(seed)
    learn = np.sort(rng.choice(n_batches, size=n_learn, replace=False))
    rest = np.setdiff1d(np.arange(n_batches), learn)
    return learn, rest


@dataclass
class LookupWorkload:
    """The lookup streams of one learn-then-classify run.

    ``learn_keys`` / ``frozen_keys``: int64 keys in stream order (inputs in order, each
    input's tables in order); ``frozen_inputs`` the number of inputs classified.
    """

    learn_keys: torch.Tensor
    frozen_keys: torch.Tensor
    learn_batches: int
    frozen_batches: int
    learn_inputs: int
    frozen_inputs: int
    tables: int

    @classmethod
    def from_sparse(cls, sparse, cfg, batch_size=128, sample_rate=0.05, seed=0):
        keys = lookup_keys(sparse, cfg)
        n = keys.shape[0]
        learn, rest = split_learn_sample(n, batch_size, sample_rate, seed)

        def rows_of(batches):
            if len(batches) == 0:
                return torch.zeros(0, dtype=torch.int64)
            idx = [torch.arange(b * batch_size, min(n, (b + 1) * batch_size)) for b in batches]
            return torch.cat(idx)

        learn_rows, rest_rows = rows_of(learn), rows_of(rest)
        return cls(keys[learn_rows].reshape(-1), keys[rest_rows].reshape(-1), len(learn),
                   len(rest), len(learn_rows), len(rest_rows), keys.shape[1])

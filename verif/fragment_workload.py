"""Working sets for the fragmenter's tests and benchmark: Criteo-like synthetic inputs whose
learned EAL classifies about 75 % of them popular, the real samples, and crafted inputs whose
cold rows collide in the de-dup table."""

import torch

from hotline_spec.config import FragmenterConfig
from sw_driver.data.synthetic import CRITEO_KAGGLE_TABLE_SIZES, calibrate
from verif.golden import dedup_bank, dedup_bucket, make_keys

__all__ = ["calibrated_criteo_like", "colliding_rows"]


def calibrated_criteo_like(n_learn, n_inputs, seed=0):
    """``(learn, inputs)`` row matrices ``[n, 26]`` of the calibrated Criteo Kaggle generator.

    The generator is calibrated (``calibrate``, budget 2048 hot rows on ``n_learn`` samples,
    held-out oracle share 0.87) so that the default 4096-entry EAL, learning on ``n_learn``
    samples with SRRIP, finds about 75 % of the following inputs popular (the oracle keeps
    the best rows; SRRIP keeps fewer of them)."""
    cal = calibrate(0.87, 2048, CRITEO_KAGGLE_TABLE_SIZES, n_learn=n_learn,
                    n_measure=max(4096, n_learn), min_count=2, seed=seed)
    gen = cal.generator.replace(stream=1)
    learn = torch.as_tensor(gen.sparse(n_learn), dtype=torch.int64)
    return learn, torch.as_tensor(gen.sparse(n_inputs), dtype=torch.int64)


def colliding_rows(fcfg: FragmenterConfig, n_tables, per_table, bank, bucket=None,
                   row_limit=1 << 20):
    """``[per_table, n_tables]`` rows whose keys ``(t << row_bits) | row`` all hash to de-dup
    ``bank`` (and home ``bucket`` when given): crafted collisions, found by search."""
    cols = []
    rows = torch.arange(row_limit, dtype=torch.int64)
    for t in range(n_tables):
        keys = make_keys(torch.full_like(rows, t), rows, fcfg.eal)
        sel = dedup_bank(keys, fcfg) == bank
        if bucket is not None:
            sel &= dedup_bucket(keys, fcfg) == bucket
        found = rows[sel][:per_table]
        if found.numel() < per_table:
            raise ValueError(f"only {found.numel()} rows of table {t} below {row_limit} collide")
        cols.append(found)
    return torch.stack(cols, dim=1)

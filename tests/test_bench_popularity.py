"""The popularity-quality benchmark (verif/bench_popularity.py): its oracles against
independent computations, and a small run of the command."""

import random
from collections import Counter

import numpy as np
import pytest
import torch

from hotline_spec.config import EALConfig
from sw_driver.data.popularity import popular_share
from sw_driver.data.synthetic import criteo_kaggle_generator
from verif import bench_popularity as bench
from verif.golden import hash_fields


def test_oracle_share_equals_the_data_package_popular_share():
    sparse = criteo_kaggle_generator(p_hot=0.75, seed=3).sparse(3000)
    rows = bench.evaluate("syn", sparse, ["4K"], [0.2], out=lambda line: None)
    n_learn = int(3000 * 0.2)
    want = popular_share(sparse[:n_learn], 4096, measure_on=sparse[n_learn:]).share
    assert {r.policy for r in rows} == {"srrip", "lfu"}
    for r in rows:
        assert r.oracle_inputs == pytest.approx(want, abs=1e-12)
    lfu = next(r for r in rows if r.policy == "lfu")
    srrip = next(r for r in rows if r.policy == "srrip")
    assert lfu.inputs > srrip.inputs          # the frequency policy keeps more of the head


def test_set_oracle_matches_a_per_set_count():
    cfg = EALConfig(banks=2, sets=4, ways=2, table_bits=2, row_bits=8)
    rng = random.Random(4)
    keys = np.array([rng.randrange(200) for _ in range(3000)], dtype=np.int64)
    got = bench.set_oracle_keys(keys, cfg)
    per_set = {}
    for key, n in Counter(keys.tolist()).items():
        b, s, _ = hash_fields(torch.tensor([key]), cfg)
        per_set.setdefault((int(b), int(s)), []).append((-n, key))
    want = sorted(k for items in per_set.values() for _, k in sorted(items)[:cfg.ways])
    assert got.tolist() == want


def test_command_prints_the_table_and_drift(capsys, tmp_path):
    out = tmp_path / "pop.json"
    rows = bench.main(["--data", "synthetic", "--synthetic-inputs", "2000",
                       "--synthetic-capacities", "4K", "--fractions", "0.2", "--drift",
                       "--drift-windows", "3", "--drift-inputs", "2000", "--drift-shift", "4", "--speed",
                       "--json", str(out)])
    text = capsys.readouterr().out
    assert "vs oracle" in text and "drift 64K lfu" in text and "re-learned" in text
    assert "learn speed" in text and "M keys/s" in text
    assert len(rows) == 2 and out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--fractions", "1.5"], "--fractions"),
    (["--capacities", "8K"], "capacity '8K' unknown"),
    (["--data", "kdd"], "--data: unknown 'kdd'"),
])
def test_command_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err

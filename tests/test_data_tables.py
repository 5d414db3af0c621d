"""Per-table sizes and mappings of the readers, `RawClickLog`, and the per-table statistics
and warnings (sw_driver/data/tables.py), checked against independent plain-Python code."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from sw_driver.data import (ClickDataset, RawClickLog, TableStats, find_shared_data, map_keys,
                            parse_avazu, parse_criteo, read_avazu, read_criteo, table_stats,
                            table_warnings)

M64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _blake(v: str) -> int:
    return int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little")


def _criteo_file(tmp_path: Path, n: int = 60) -> Path:
    """``n`` Criteo rows; C1 takes 3 values, C2 is constant, C5 is often empty."""
    lines = []
    for i in range(n):
        ints = [str((i * 7 + j) % 50 - 1) for j in range(13)]
        cats = [f"{(i * 2654435761 + j * 97) % 2**32:08x}" for j in range(26)]
        cats[0] = ["a", "b1", "ffffffff"][i % 3]
        cats[1] = "68fd1e64"
        cats[4] = "" if i % 2 else cats[4]
        lines.append("\t".join([str(i % 2)] + ints + cats))
    path = tmp_path / "c.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_map_keys_against_plain_python():
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 2**63, size=(40, 4), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    empty = np.zeros((40, 4), dtype=bool)
    empty[3, 1] = empty[7, 2] = True
    sizes, maps = (7, 1000, 2**20, 3), ("modulo", "hash", "hash", "modulo")
    rows = map_keys(keys, empty, sizes, maps)
    assert rows.dtype == np.int64
    for i in range(40):
        for t in range(4):
            k = int(keys[i, t])
            want = k % sizes[t] if maps[t] == "modulo" else _splitmix64(k ^ (t << 32)) % sizes[t]
            assert rows[i, t] == (0 if empty[i, t] else want), (i, t)


def test_criteo_per_table_mapping_and_sizes(tmp_path):
    path = _criteo_file(tmp_path)
    sizes = tuple(range(50, 76))
    maps = tuple("hash" if t % 3 == 0 else "modulo" for t in range(26))
    ds = read_criteo(path, table_sizes=sizes, mapping=maps)
    assert ds.table_sizes == sizes
    for i, line in enumerate(path.read_text().splitlines()):
        fields = line.split("\t")[14:]
        for t, (f, n) in enumerate(zip(fields, sizes)):
            v = int(f, 16) if f else 0
            want = 0 if not f else (_splitmix64(v | (t << 32)) % n if maps[t] == "hash"
                                    else v % n)
            assert ds.sparse[i, t].item() == want, (i, t)
    with pytest.raises(ValueError, match="expected 26 mappings"):
        read_criteo(path, mapping=("hash", "modulo"))
    with pytest.raises(ValueError, match="'fold'"):
        read_criteo(path, mapping=("fold",) * 26)


def test_avazu_hash_mapping(tmp_path):
    header = ("id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,"
              "app_domain,app_category,device_id,device_ip,device_model,device_type,"
              "device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21")
    rows = [f"{i},{i % 2},141021{i % 24:02d}," + ",".join(f"v{(i * 31 + t) % 7}" for t in
                                                        range(21)) for i in range(30)]
    path = tmp_path / "a.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    maps = ("hash",) * 10 + ("modulo",) * 11
    ds = read_avazu(path, table_sizes=97, mapping=maps)
    for i, line in enumerate(rows):
        for t, v in enumerate(line.split(",")[3:]):
            k = _blake(v)
            want = _splitmix64(k ^ (t << 32)) % 97 if maps[t] == "hash" else k % 97
            assert ds.sparse[i, t].item() == want
    # The default stays today's mapping: string_hash64 % size.
    plain = read_avazu(path, table_sizes=97)
    assert plain.sparse[0].tolist() == [_blake(v) % 97 for v in rows[0].split(",")[3:]]


def test_raw_log_keys_auto_sizes_and_stats(tmp_path):
    path = _criteo_file(tmp_path)
    raw = parse_criteo(path)
    assert isinstance(raw, RawClickLog) and raw.keys.dtype == np.uint64
    assert raw.table_names[0] == "C1" and len(raw) == 60
    lines = [line.split("\t")[14:] for line in path.read_text().splitlines()]
    distinct = [len({r[t] for r in lines}) for t in range(26)]   # "" counts as a value
    assert raw.distinct_values() == distinct
    assert distinct[:2] == [3, 1] and distinct[4] == 31
    assert raw.auto_table_sizes() == tuple(distinct)
    assert raw.auto_table_sizes(cap=10) == tuple(min(d, 10) for d in distinct)
    ds = raw.to_dataset(raw.auto_table_sizes(cap=10), "hash")
    assert torch.equal(ds.sparse, read_criteo(path, table_sizes=ds.table_sizes,
                                              mapping="hash").sparse)
    stats = table_stats(ds, raw)
    for t, s in enumerate(stats):
        assert isinstance(s, TableStats)
        assert (s.table, s.name, s.rows, s.samples) == (t, f"C{t + 1}", ds.table_sizes[t], 60)
        assert s.distinct_values == distinct[t]
        assert s.distinct_rows == len(set(ds.sparse[:, t].tolist()))
        assert s.constant == (s.distinct_rows == 1)
    assert stats[1].constant and not stats[0].constant
    # Without the raw log only rows are known.
    bare = table_stats(ds)
    assert bare[0].distinct_values is None and bare[0].name == "table0"
    assert [s.distinct_rows for s in bare] == [s.distinct_rows for s in stats]


def test_table_warnings_constant_and_collisions():
    stats = [
        TableStats(0, "C1", 1460, 100, 1, 1),          # constant data
        TableStats(1, "C2", 10, 100, 21, 10),          # 2.1 values per row: warned
        TableStats(2, "C3", 10, 100, 20, 10),          # exactly 2 per row: not warned
        TableStats(3, "C4", 1, 100, 35000, 1),         # size 1: constant, not both
        TableStats(4, "C5", 10, 100, None, 3),         # rows only: nothing to compare
        TableStats(5, "C6", 10, 0, 0, 0),              # no samples: not constant
    ]
    lines = table_warnings(stats)
    assert lines == [
        "table 0 (C1) is constant: all 100 samples look up one row (1 distinct value, "
        "1,460 rows)",
        "table 1 (C2): 21 distinct values share 10 rows (2.1 per row, 10 rows used)",
        "table 3 (C4) is constant: all 100 samples look up one row (35,000 distinct values, "
        "1 row)",
    ]
    assert table_warnings(stats, collision_factor=1.5)[2].startswith("table 2 (C3): 20")


def test_avazu_raw_log_matches_reader():
    folder = find_shared_data("avazu_9k")
    if folder is None:
        pytest.skip("avazu_9k not found (set HOTLINE_DATA)")
    raw = parse_avazu(folder, split="dev")
    ds = read_avazu(folder, split="dev", table_sizes=500, mapping="hash")
    assert torch.equal(raw.to_dataset(500, "hash").sparse, ds.sparse)
    lines = (folder / "dev.csv").read_text().splitlines()
    assert raw.distinct_values()[9] == len({line.split(",")[12] for line in lines})


def test_click_dataset_concat_and_pin_memory():
    a = ClickDataset(torch.zeros(2), torch.ones(2, 1), torch.tensor([[0, 1], [1, 0]]), (2, 3),
                     "a")
    b = ClickDataset(torch.ones(1), torch.zeros(1, 1), torch.tensor([[1, 2]]), (2, 3), "b")
    c = ClickDataset.concat([a, b], "ab")
    assert len(c) == 3 and c.name == "ab" and c.sparse[:, 1].tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match="cannot concatenate"):
        ClickDataset.concat([a, ClickDataset(torch.zeros(1), torch.zeros(1, 1),
                                             torch.tensor([[0, 0]]), (2, 4))])
    if torch.cuda.is_available():
        p = c.pin_memory()
        assert p.sparse.is_pinned() and torch.equal(p.sparse, c.sparse)

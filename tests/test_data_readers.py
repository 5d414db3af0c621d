"""Tests of sw_driver.data's real-data readers, the ClickDataset container and data location.

The real samples are read in place (their terms forbid copying them into the project); when
they are absent the tests that need them skip with a message naming the folders searched.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sw_driver.data import (
    CRITEO_KAGGLE_TABLE_SIZES,
    ClickDataset,
    DataFormatError,
    find_shared_data,
    read_avazu,
    read_criteo,
    shared_data_roots,
)
from sw_driver.data import locate as locate_mod

M64 = (1 << 64) - 1


def _shared(name: str) -> Path:
    found = find_shared_data(name)
    if found is None:
        roots = ", ".join(str(r) for r in shared_data_roots())
        pytest.skip(f"real data {name}/ not found in {roots} (set HOTLINE_DATA); CI has it")
    return found


@pytest.fixture(scope="module")
def criteo_dir() -> Path:
    return _shared("criteo_kaggle_8k")


@pytest.fixture(scope="module")
def avazu_dir() -> Path:
    return _shared("avazu_9k")


# --- independent plain-Python re-parsers (no code shared with the readers) -------------------


def _splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _criteo_line(line: str, sizes, mapping: str):
    f = line.rstrip("\n").split("\t")
    assert len(f) == 40
    label = float(f[0])
    raw = [int(x) if x else 0 for x in f[1:14]]
    logd = [math.log1p(max(x, 0)) for x in raw]
    rows = []
    for t, (x, n) in enumerate(zip(f[14:], sizes)):
        if mapping == "modulo":
            rows.append((int(x, 16) if x else 0) % n)
        else:
            rows.append(0 if not x else _splitmix64(int(x, 16) | (t << 32)) % n)
    return label, raw, logd, rows


def _avazu_line(line: str, size: int):
    f = line.rstrip("\n").split(",")
    assert len(f) == 24
    hour = f[2]
    day = datetime.date(2000 + int(hour[:2]), int(hour[2:4]), int(hour[4:6]))
    dense = [float(int(hour[6:8])), float(day.weekday())]
    rows = [
        int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little") % size
        for v in f[3:]
    ]
    return float(f[1]), dense, rows


# --- real data: Criteo -------------------------------------------------------------------


@pytest.mark.parametrize("split, rows", [("train", 7200), ("dev", 409), ("test", 391)])
def test_criteo_counts_and_shapes(criteo_dir, split, rows):
    ds = read_criteo(criteo_dir, split=split)
    assert len(ds) == rows
    assert ds.labels.shape == (rows,) and ds.labels.dtype == torch.float32
    assert ds.dense.shape == (rows, 13) and ds.dense.dtype == torch.float32
    assert ds.sparse.shape == (rows, 26) and ds.sparse.dtype == torch.int64
    assert set(ds.labels.unique().tolist()) == {0.0, 1.0}
    assert ds.table_sizes == CRITEO_KAGGLE_TABLE_SIZES
    assert ds.name == f"criteo_kaggle_8k/{split}"
    assert bool((ds.dense >= 0).all())  # log1p(max(x, 0))


@pytest.mark.parametrize("mapping", ["modulo", "hash"])
def test_criteo_matches_plain_python(criteo_dir, mapping):
    path = criteo_dir / "train.tsv"
    lines = path.read_text().split("\n")
    picks = [0, 1, 2, 17, 1234, 7199]
    sizes = CRITEO_KAGGLE_TABLE_SIZES
    ds = read_criteo(path, mapping=mapping)
    raw = read_criteo(path, mapping=mapping, log_dense=False, max_rows=max(picks) + 1)
    assert torch.equal(raw.sparse, ds.sparse)
    for i in picks:
        label, dense_raw, dense_log, rows = _criteo_line(lines[i], sizes, mapping)
        assert ds.labels[i].item() == label
        assert ds.sparse[i].tolist() == rows, f"line {i + 1}"
        assert raw.dense[i].tolist() == [float(x) for x in dense_raw]
        np.testing.assert_allclose(ds.dense[i].numpy(), dense_log, rtol=1e-6)


def test_criteo_sample_has_negatives_and_empties(criteo_dir):
    raw = read_criteo(criteo_dir, log_dense=False)
    negative = raw.dense < 0
    assert bool(negative.any()), "raw I fields include -1"
    ds = read_criteo(criteo_dir)
    assert bool((ds.dense[negative] == 0).all())  # log1p(max(x, 0)): negatives become 0
    positive = raw.dense > 0
    assert torch.allclose(ds.dense[positive], torch.log1p(raw.dense[positive]))
    # Empty C fields exist and map to row 0 under both mappings.
    lines = (criteo_dir / "train.tsv").read_text().split("\n")
    i, t = next((i, t) for i, line in enumerate(lines) for t, v in
                enumerate(line.split("\t")[14:]) if v == "" and line)
    assert ds.sparse[i, t].item() == 0
    assert read_criteo(criteo_dir, mapping="hash").sparse[i, t].item() == 0


def test_criteo_small_tables_and_max_rows(criteo_dir):
    ds = read_criteo(criteo_dir / "dev.tsv", table_sizes=7, max_rows=50)
    assert len(ds) == 50 and ds.table_sizes == (7,) * 26
    assert int(ds.sparse.max()) <= 6
    full = read_criteo(criteo_dir, split="dev", table_sizes=7)
    assert torch.equal(full.sparse[:50], ds.sparse)
    with pytest.raises(ValueError, match="26 table sizes"):
        read_criteo(criteo_dir, table_sizes=(10, 20))
    with pytest.raises(ValueError, match="mapping"):
        read_criteo(criteo_dir, mapping="fold")
    with pytest.raises(ValueError, match="split"):
        read_criteo(criteo_dir, split="validation")
    with pytest.raises(ValueError, match="is a file"):
        read_criteo(criteo_dir / "dev.tsv", split="dev")


def test_criteo_reader_is_fast(criteo_dir):
    best = min(_timed(lambda: read_criteo(criteo_dir)) for _ in range(3))
    assert best < 1.0, f"reading 7,200 rows took {best:.2f} s"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# --- real data: Avazu --------------------------------------------------------------------


# The data README says dev 479 / test 431, but dev.csv and test.csv hold 480 and 432 data rows
# (no header: every line has 24 fields and an id); the README counted one line as a header.
@pytest.mark.parametrize("split, rows", [("train", 8087), ("dev", 480), ("test", 432)])
def test_avazu_counts_and_shapes(avazu_dir, split, rows):
    ds = read_avazu(avazu_dir, split=split)
    assert len(ds) == rows
    assert ds.dense.shape == (rows, 2) and ds.sparse.shape == (rows, 21)
    assert set(ds.labels.unique().tolist()) == {0.0, 1.0}
    assert ds.table_sizes == (2**20,) * 21
    assert bool((ds.dense[:, 0] <= 23).all()) and bool((ds.dense[:, 1] <= 6).all())


def test_avazu_header_detection_on_real_files(avazu_dir):
    train_lines = (avazu_dir / "train.csv").read_text().split("\n")
    dev_lines = (avazu_dir / "dev.csv").read_text().split("\n")
    assert train_lines[0].startswith("id,click,hour")
    assert not dev_lines[0].startswith("id")
    train = read_avazu(avazu_dir / "train.csv", table_sizes=1000)
    dev = read_avazu(avazu_dir / "dev.csv", table_sizes=1000)
    # Sample 0 of train is file line 2 (after the header); sample 0 of dev is line 1.
    for ds, line in ((train, train_lines[1]), (dev, dev_lines[0])):
        label, dense, rows = _avazu_line(line, 1000)
        assert ds.labels[0].item() == label
        assert ds.dense[0].tolist() == dense
        assert ds.sparse[0].tolist() == rows


def test_avazu_matches_plain_python(avazu_dir):
    lines = (avazu_dir / "train.csv").read_text().split("\n")[1:]
    sizes = tuple(range(1000, 1021))  # a different size per field
    ds = read_avazu(avazu_dir, table_sizes=sizes)
    for i in (0, 5, 999, 8086):
        label, dense, _ = _avazu_line(lines[i], 1)
        f = lines[i].split(",")
        rows = [
            int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little") % n
            for v, n in zip(f[3:], sizes)
        ]
        assert ds.labels[i].item() == label
        assert ds.dense[i].tolist() == dense
        assert ds.sparse[i].tolist() == rows
    assert len(read_avazu(avazu_dir, max_rows=10)) == 10  # the header does not count


# --- malformed rows (small files written to tmp_path) -------------------------------------


def _criteo_row(label="0", ints=None, cats=None) -> list[str]:
    ints = ints if ints is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else ["68fd1e64"] * 26
    return [label, *ints, *cats]


def _write(tmp_path: Path, name: str, rows: list[list[str]], sep: str) -> Path:
    path = tmp_path / name
    path.write_text("".join(sep.join(r) + "\n" for r in rows))
    return path


def _expect(exc: pytest.ExceptionInfo, path: Path, line: int, column: int, name: str, what: str):
    msg = str(exc.value)
    assert str(path) in msg
    assert f"line {line}, column {column} ({name})" in msg, msg
    assert what in msg, msg
    assert (exc.value.line, exc.value.column, exc.value.column_name) == (line, column, name)
    assert isinstance(exc.value, ValueError)


def test_criteo_good_small_file(tmp_path):
    ints = ["", "-3", "7", *["1"] * 10]
    cats = ["", "a", "0000000F", *["ffffffff"] * 23]
    path = _write(tmp_path, "ok.tsv", [_criteo_row("1", ints, cats), _criteo_row()], "\t")
    ds = read_criteo(path, table_sizes=1000, log_dense=False)
    assert ds.labels.tolist() == [1.0, 0.0]
    assert ds.dense[0, :3].tolist() == [0.0, -3.0, 7.0]
    assert ds.sparse[0, :4].tolist() == [0, 10, 15, 0xFFFFFFFF % 1000]


def test_criteo_crlf_empty_file_and_bad_encoding(tmp_path):
    lf = _write(tmp_path, "lf.tsv", [_criteo_row("1"), _criteo_row()], "\t")
    crlf = tmp_path / "crlf.tsv"
    crlf.write_bytes(lf.read_bytes().replace(b"\n", b"\r\n"))
    a, b = read_criteo(lf), read_criteo(crlf)
    assert torch.equal(a.sparse, b.sparse) and torch.equal(a.dense, b.dense)
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    assert len(read_criteo(empty)) == 0
    assert len(read_criteo(lf, max_rows=0)) == 0
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(lf.read_bytes() + b"0\t\xff\n")
    with pytest.raises(DataFormatError, match=r"line 3: not valid UTF-8"):
        read_criteo(bad)


@pytest.mark.parametrize(
    "row_count, column, name",
    [(39, 40, "C26"), (41, 41, "unexpected"), (1, 2, "I1")],
)
def test_criteo_wrong_column_count(tmp_path, row_count, column, name):
    bad = _criteo_row()[:row_count] if row_count <= 40 else _criteo_row() + ["x"]
    path = _write(tmp_path, "t.tsv", [_criteo_row(), _criteo_row(), bad], "\t")
    with pytest.raises(DataFormatError) as exc:
        read_criteo(path)
    _expect(exc, path, 3, column, name, f"expected 40 tab-separated columns, found {row_count}")


def test_criteo_blank_line_is_an_error(tmp_path):
    path = tmp_path / "blank.tsv"
    path.write_text("\t".join(_criteo_row()) + "\n\n" + "\t".join(_criteo_row()) + "\n")
    with pytest.raises(DataFormatError) as exc:
        read_criteo(path)
    _expect(exc, path, 2, 2, "I1", "found 1")


@pytest.mark.parametrize("value", ["1.5", "abc", "-", "1-2", " 3", "12345678901234567890"])
def test_criteo_non_numeric_integer(tmp_path, value):
    ints = [str(i) for i in range(13)]
    ints[4] = value  # I5, column 6
    path = _write(tmp_path, "t.tsv", [_criteo_row(), _criteo_row(ints=ints)], "\t")
    with pytest.raises(DataFormatError) as exc:
        read_criteo(path)
    what = "out of range" if value.isdigit() else "not an integer"
    _expect(exc, path, 2, 6, "I5", what)


@pytest.mark.parametrize("value", ["xyz", "123456789", "12 4", "0x12", "-1"])
def test_criteo_bad_hex(tmp_path, value):
    cats = ["68fd1e64"] * 26
    cats[25] = value  # C26, column 40
    path = _write(tmp_path, "t.tsv", [_criteo_row(), _criteo_row(), _criteo_row(cats=cats)], "\t")
    with pytest.raises(DataFormatError) as exc:
        read_criteo(path)
    _expect(exc, path, 3, 40, "C26", "1-8 hex digits")


@pytest.mark.parametrize("value", ["2", "", "0.5", "-1", "true"])
def test_criteo_label_not_binary(tmp_path, value):
    path = _write(tmp_path, "t.tsv", [_criteo_row(), _criteo_row(label=value)], "\t")
    with pytest.raises(DataFormatError) as exc:
        read_criteo(path)
    _expect(exc, path, 2, 1, "label", "label must be 0 or 1")


def test_criteo_reports_the_first_error(tmp_path):
    ints = [str(i) for i in range(13)]
    ints[0] = "z"
    cats = ["68fd1e64"] * 26
    cats[0] = "zz"
    rows = [_criteo_row(), _criteo_row(cats=cats), _criteo_row(ints=ints)]
    path = _write(tmp_path, "t.tsv", rows, "\t")
    with pytest.raises(DataFormatError) as exc:
        read_criteo(path)
    # Integer fields are checked before categorical ones: the I1 error on line 3 wins.
    _expect(exc, path, 3, 2, "I1", "not an integer")


AVAZU_HEADER = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,"
    "app_category,device_id,device_ip,device_model,device_type,device_conn_type,"
    "C14,C15,C16,C17,C18,C19,C20,C21"
).split(",")


def _avazu_row(click="0", hour="14102100") -> list[str]:
    return ["1000", click, hour, "1005", "0", "1fbe01fe", *["x"] * 18]


def test_avazu_header_detection(tmp_path):
    rows = [_avazu_row("1"), _avazu_row("0", "14102523")]
    with_header = _write(tmp_path, "h.csv", [AVAZU_HEADER, *rows], ",")
    without = _write(tmp_path, "n.csv", rows, ",")
    a, b = read_avazu(with_header), read_avazu(without)
    assert len(a) == len(b) == 2
    assert torch.equal(a.sparse, b.sparse) and torch.equal(a.labels, b.labels)
    assert a.dense.tolist() == [[0.0, 1.0], [23.0, 5.0]]  # 2014-10-21 Tue, 2014-10-25 Sat
    # Line numbers count the header: the bad click is on line 3 with it, line 2 without.
    bad = [_avazu_row(), _avazu_row(click="x")]
    with pytest.raises(DataFormatError) as exc:
        read_avazu(_write(tmp_path, "bh.csv", [AVAZU_HEADER, *bad], ","))
    assert exc.value.line == 3
    with pytest.raises(DataFormatError) as exc:
        read_avazu(_write(tmp_path, "bn.csv", bad, ","))
    assert exc.value.line == 2


def test_avazu_wrong_header(tmp_path):
    header = list(AVAZU_HEADER)
    header[5] = "siteid"
    path = _write(tmp_path, "t.csv", [header, _avazu_row()], ",")
    with pytest.raises(DataFormatError) as exc:
        read_avazu(path)
    _expect(exc, path, 1, 6, "site_id", "'siteid'")


def test_avazu_wrong_column_count(tmp_path):
    path = _write(tmp_path, "t.csv", [_avazu_row(), _avazu_row()[:20]], ",")
    with pytest.raises(DataFormatError) as exc:
        read_avazu(path)
    _expect(exc, path, 2, 21, "C18", "expected 24 comma-separated columns, found 20")


@pytest.mark.parametrize("value", ["2", "", "yes"])
def test_avazu_label_not_binary(tmp_path, value):
    path = _write(tmp_path, "t.csv", [AVAZU_HEADER, _avazu_row(click=value)], ",")
    with pytest.raises(DataFormatError) as exc:
        read_avazu(path)
    _expect(exc, path, 2, 2, "click", "label must be 0 or 1")


@pytest.mark.parametrize("value", ["14102124", "1410210", "14133100", "141021ab", "14023000"])
def test_avazu_bad_hour(tmp_path, value):
    path = _write(tmp_path, "t.csv", [_avazu_row(), _avazu_row(hour=value)], ",")
    with pytest.raises(DataFormatError) as exc:
        read_avazu(path)
    _expect(exc, path, 2, 3, "hour", "YYMMDDHH")


# --- ClickDataset and locate -------------------------------------------------------------


def _dataset(sparse, sizes=(4, 5)) -> ClickDataset:
    n = len(sparse)
    return ClickDataset(
        labels=torch.zeros(n),
        dense=torch.zeros(n, 3),
        sparse=torch.tensor(sparse, dtype=torch.int64).reshape(n, -1),
        table_sizes=sizes,
        name="t",
    )


def test_click_dataset_validation():
    ok = _dataset([[0, 0], [3, 4], [1, 2], [2, 3], [0, 1]])
    assert len(ok) == 5 and ok.n_tables == 2 and ok.n_dense == 3
    with pytest.raises(ValueError, match=r"table 1: row 5 outside 0\.\.4 \(sample 1\)"):
        _dataset([[0, 0], [3, 5]])
    with pytest.raises(ValueError, match=r"table 0: row -1 outside 0\.\.3"):
        _dataset([[-1, 0]])
    with pytest.raises(ValueError, match="table_sizes"):
        _dataset([[0, 0]], sizes=(4, 5, 6))
    with pytest.raises(TypeError, match="sparse must be torch.int64"):
        ClickDataset(torch.zeros(1), torch.zeros(1, 1), torch.zeros(1, 2), (4, 5))
    with pytest.raises(ValueError, match="sample counts differ"):
        ClickDataset(torch.zeros(2), torch.zeros(1, 1), torch.zeros(1, 2, dtype=torch.int64),
                     (4, 5))


def test_click_dataset_subset_and_mini_batches():
    ds = _dataset([[i % 4, i % 5] for i in range(10)])
    sub = ds.subset(2, 5)
    assert len(sub) == 3 and sub.sparse[:, 1].tolist() == [2, 3, 4]
    batches = list(ds.mini_batches(4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b.sparse for b in batches]), ds.sparse)
    assert [len(b) for b in ds.mini_batches(4, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError):
        list(ds.mini_batches(0))


def test_find_shared_data_env_var_and_absence(tmp_path, monkeypatch):
    (tmp_path / "criteo_kaggle_8k").mkdir()
    monkeypatch.setenv("HOTLINE_DATA", str(tmp_path))
    assert find_shared_data("criteo_kaggle_8k") == tmp_path / "criteo_kaggle_8k"
    assert find_shared_data("no_such_data_set") is None
    # Without the variable the repository-relative folder is searched.
    monkeypatch.delenv("HOTLINE_DATA")
    assert shared_data_roots() == [locate_mod._REPO_ROOT.parent / "shared" / "data"]
    monkeypatch.setattr(locate_mod, "_REPO_ROOT", tmp_path / "repo")
    assert find_shared_data("criteo_kaggle_8k") is None

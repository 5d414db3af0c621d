"""The generic delimited click-log reader (sw_driver/data/delimited.py): the description
language, a small log against an independent plain-Python parse, every malformed-row case,
and the Criteo / Avazu presets against `read_criteo` / `read_avazu` on the real samples."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import pytest
import torch

from sw_driver.data import (AVAZU_FORMAT, CRITEO_FORMAT, ClickLogFormat, ColumnSpec,
                            DataFormatError, FormatSpecError, parse_click_log, read_avazu,
                            read_click_log, read_criteo)

from test_data_readers import M64, _shared   # the real samples, or a skip that says where


def _blake(v: str) -> int:
    return int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little")


def _same(a, b) -> None:
    assert len(a) == len(b)
    assert a.table_sizes == b.table_sizes
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.dense, b.dense)
    assert torch.equal(a.sparse, b.sparse)


# --- the description language -------------------------------------------------------------


def test_parse_compact_description():
    f = ClickLogFormat.parse("sep=tab label=1 dense=2-14:log cat=15-40:hex32")
    assert f.separator == "\t" and f.label == 1 and f.header is False and f.names is None
    assert f.dense == (ColumnSpec(2, 14, "log"),)
    assert f.categorical == (ColumnSpec(15, 40, "hex32"),)
    g = ClickLogFormat.parse("label=click; dense=hour:hour ; cat=C1..C3,site_id "
                             "cat=7 ignore=rest sep=, header=auto")
    assert g.label == "click" and g.header == "auto" and g.separator == ","
    assert g.dense == (ColumnSpec("hour", None, "hour"),)
    assert g.categorical == (ColumnSpec("C1", "C3", "str"), ColumnSpec("site_id", None, "str"),
                             ColumnSpec(7, None, "str"))
    assert ClickLogFormat.parse("label=1 cat=2 header").header is True
    for fmt in (f, g, CRITEO_FORMAT, AVAZU_FORMAT):
        assert ClickLogFormat.parse(str(fmt)) == fmt, str(fmt)


def test_presets_describe_the_public_logs():
    assert str(CRITEO_FORMAT).endswith("label=label dense=I1..I13:log cat=C1..C26:hex32")
    assert CRITEO_FORMAT.n_columns == 40 and len(CRITEO_FORMAT.table_names) == 26
    assert CRITEO_FORMAT.n_dense == 13
    assert AVAZU_FORMAT.table_names[:3] == ("C1", "banner_pos", "site_id")
    assert AVAZU_FORMAT.n_dense == 2 and len(AVAZU_FORMAT.table_names) == 21


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("label=1 cat=3 lable=4", "unknown key 'lable'"),
    ("dense=2 cat=3", "no label= column"),
    ("label=1 dense=2", "no cat= column"),
    ("label=1 dense=2:lg cat=3", "unknown transform 'lg'"),
    ("label=1 cat=3:hour", "unknown transform 'hour'"),
    ("label=1 cat=3 ignore=4:log", "unknown transform 'log'"),
    ("label=1 cat=3 sep=ab", "sep must be one character"),
    ("label=1 cat=3 header=maybe", "header must be yes, no or auto"),
    ("label=0 cat=3", "column numbers start at 1"),
    ("label=1 label=2 cat=3", "label= is given twice"),
    ("label=1 cat=3 names=a,b,a", "'a' is given twice"),
    ("label=1 cat=3 foo", "'foo' is not key=value"),
    ("label=1 cat=3,,4", "an empty item"),
    ("label=1 cat=3 columns=x", "columns must be an integer"),
    ("label=1 cat=3 names=a,b,c columns=4", "columns=4 but 3 names"),
])
def test_bad_descriptions(text, fragment):
    with pytest.raises(FormatSpecError) as e:
        ClickLogFormat.parse(text)
    assert fragment in str(e.value), str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("text, fragment", [
    ("label=1 dense=2 cat=3", "column 4 is not used: add it to dense=, cat= or ignore="),
    ("label=1 cat=3", "columns 2, 4 are not used"),
    ("label=1 dense=2 cat=3-5", "column 5 is outside 1..4 (the first line of"),
    ("label=1 dense=2 cat=2 ignore=3,4", "column 2 is used twice: as dense and as cat"),
    ("label=1 dense=x cat=3 ignore=4", "unknown column name 'x': the columns have no names"),
    ("label=1 dense=2 cat=4..3", "range 4-3 runs backwards"),
    ("label=1 dense=2 cat=3 names=a,b,c,d ignore=e", "unknown column name 'e' (names: a, b"),
])
def test_descriptions_that_do_not_fit_the_file(tmp_path, text, fragment):
    path = tmp_path / "four.csv"
    path.write_text("1,2,x,y\n0,3,z,w\n")
    with pytest.raises(FormatSpecError) as e:
        read_click_log(path, text, table_sizes=10)
    assert fragment in str(e.value), str(e.value)
    ok = read_click_log(path, "label=1 dense=2 cat=3 ignore=rest", table_sizes=10)
    assert len(ok) == 2 and ok.n_tables == 1


# --- a small log against plain Python -----------------------------------------------------

HEADER = "ts,clicked,price,views,user,item,category,note"


def _log_rows(n: int = 40) -> list[list[str]]:
    prices = ["3.5", "", "-2", "1e2", "+0.25", ".5", "7.", "1E-2"]
    rows = []
    for i in range(n):
        rows.append([f"2024-01-{i % 28 + 1:02d}", str(i % 3 == 0 and 1 or 0),
                     prices[i % len(prices)], "" if i % 5 == 0 else str(i * 3 - 10),
                     f"u{i % 17}", f"i{i % 5}", "x", f"free text {i}"])
    return rows


def _write(path: Path, rows, header: str | None = HEADER, sep: str = ",", eol: str = "\n"):
    lines = ([header] if header else []) + [sep.join(r) for r in rows]
    path.write_bytes((eol.join(lines) + eol).encode())
    return path


def _expected(rows, sizes):
    labels = [float(r[1]) for r in rows]
    dense = [[float(r[2] or 0), math.log1p(max(float(r[3] or 0), 0))] for r in rows]
    sparse = [[_blake(v) % n for v, n in zip(r[4:7], sizes)] for r in rows]
    return labels, dense, sparse


DESCRIPTIONS = [
    "sep=, header=yes label=clicked dense=price,views:log cat=user..category ignore=ts,note",
    "sep=comma header=auto label=2 dense=3,4:log cat=5-7 ignore=1,8",
    "header label=clicked dense=price dense=views:log cat=user,item,category ignore=rest",
]


@pytest.mark.parametrize("text", DESCRIPTIONS)
def test_small_log_matches_plain_python(tmp_path, text):
    rows = _log_rows()
    path = _write(tmp_path / "log.csv", rows)
    sizes = (7, 3, 11)
    ds = read_click_log(path, text, table_sizes=sizes)
    labels, dense, sparse = _expected(rows, sizes)
    assert ds.labels.tolist() == labels
    assert torch.allclose(ds.dense, torch.tensor(dense, dtype=torch.float32))
    assert ds.sparse.tolist() == sparse
    assert ds.table_sizes == sizes and ds.name == f"{tmp_path.name}/log"
    raw = parse_click_log(path, text)
    assert raw.table_names == ("user", "item", "category")
    assert raw.distinct_values() == [17, 5, 1]


def test_json_description_and_formats_equal(tmp_path):
    rows = _log_rows()
    path = _write(tmp_path / "log.csv", rows)
    spec = {"sep": ",", "header": True, "label": "clicked",
            "dense": ["price", {"column": "views", "transform": "log"}],
            "categorical": "user..category", "ignore": ["ts", 8]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    a = read_click_log(path, str(tmp_path / "spec.json"), table_sizes=9)
    b = read_click_log(path, DESCRIPTIONS[0], table_sizes=9)
    _same(a, b)
    (tmp_path / "bad.json").write_text("{'sep': ','}")
    with pytest.raises(FormatSpecError, match="not valid JSON"):
        read_click_log(path, str(tmp_path / "bad.json"), table_sizes=9)
    with pytest.raises(FormatSpecError, match="unknown key 'colour'"):
        ClickLogFormat.from_dict({"label": 1, "cat": 2, "colour": "red"})


def test_headerless_semicolon_crlf_and_max_rows(tmp_path):
    rows = _log_rows(12)
    text = "sep=semicolon label=2 dense=3,4:log cat=5-7 ignore=1,8"
    lf = _write(tmp_path / "lf.txt", rows, header=None, sep=";")
    crlf = _write(tmp_path / "crlf.txt", rows, header=None, sep=";", eol="\r\n")
    _same(read_click_log(lf, text, table_sizes=5), read_click_log(crlf, text, table_sizes=5))
    head = _write(tmp_path / "head.csv", rows)
    cut = read_click_log(head, DESCRIPTIONS[0], table_sizes=5, max_rows=4)
    assert len(cut) == 4   # the header does not count
    assert cut.sparse.tolist() == _expected(rows[:4], (5, 5, 5))[2]
    # A folder with splits.
    (tmp_path / "d").mkdir()
    _write(tmp_path / "d" / "train.csv", rows)
    _write(tmp_path / "d" / "dev.csv", rows[:3], header=None)
    fmt = ClickLogFormat.parse(DESCRIPTIONS[1]).resolved(tmp_path / "d" / "train.csv")
    assert fmt.names == tuple(HEADER.split(","))
    assert len(read_click_log(tmp_path / "d", fmt, split="dev", table_sizes=5)) == 3


def test_empty_files(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("")
    ds = read_click_log(empty, "label=1 dense=2 cat=3-4", table_sizes=5)
    assert len(ds) == 0 and ds.n_tables == 2 and ds.n_dense == 1
    assert len(read_click_log(empty, CRITEO_FORMAT, table_sizes=5)) == 0
    with pytest.raises(FormatSpecError, match="the file is empty"):
        read_click_log(empty, "header label=clicked cat=user", table_sizes=5)
    header_only = _write(tmp_path / "h.csv", [])
    assert len(read_click_log(header_only, DESCRIPTIONS[0], table_sizes=5)) == 0


# --- malformed rows -----------------------------------------------------------------------


def _expect(exc, path: Path, line: int, column: int | None, name: str | None, what: str):
    msg = str(exc.value)
    assert str(path) in msg and what in msg, msg
    assert (exc.value.line, exc.value.column, exc.value.column_name) == (line, column, name)


@pytest.mark.parametrize("column, value, problem", [
    (2, "2", "label must be 0 or 1, got '2'"),
    (2, "", "label must be 0 or 1"),
    (3, "abc", "not a number: 'abc'"),
    (3, "1.2.3", "not a number"),
    (3, "nan", "not a number"),
    (3, "inf", "not a number"),
    (3, " 3", "not a number"),
    (3, "0x10", "not a number"),
    (3, "1_000", "not a number"),
    (4, "-", "not a number"),
    (4, "1e999", "number out of range: '1e999'"),
])
def test_bad_fields_name_line_and_column(tmp_path, column, value, problem):
    rows = _log_rows(9)
    rows[6][column - 1] = value
    path = _write(tmp_path / "bad.csv", rows)
    with pytest.raises(DataFormatError) as e:
        read_click_log(path, DESCRIPTIONS[0], table_sizes=5)
    _expect(e, path, 8, column, HEADER.split(",")[column - 1], problem)   # 1 header line


def test_wrong_column_counts_and_utf8(tmp_path):
    rows = _log_rows(6)
    short = [r[:] for r in rows]
    short[2] = short[2][:5]
    path = _write(tmp_path / "short.csv", short)
    with pytest.raises(DataFormatError) as e:
        read_click_log(path, DESCRIPTIONS[0], table_sizes=5)
    _expect(e, path, 4, 6, "item", "expected 8 comma-separated columns, found 5")
    long = [r[:] for r in rows]
    long[4] = long[4] + ["extra"]
    path = _write(tmp_path / "long.csv", long, header=None)
    with pytest.raises(DataFormatError) as e:
        read_click_log(path, "sep=, label=2 dense=3,4 cat=5-7 ignore=1,8", table_sizes=5)
    _expect(e, path, 5, 9, "unexpected", "found 9")
    bad = tmp_path / "utf8.csv"
    bad.write_bytes(_write(tmp_path / "ok.csv", rows).read_bytes() + b"1,0,1,1,\xff,a,b,c\n")
    with pytest.raises(DataFormatError, match=r"line 8: not valid UTF-8"):
        read_click_log(bad, DESCRIPTIONS[0], table_sizes=5)


def test_header_checks(tmp_path):
    rows = _log_rows(3)
    names = "names=" + HEADER.replace("price", "cost")
    path = _write(tmp_path / "h.csv", rows)
    with pytest.raises(DataFormatError) as e:
        read_click_log(path, f"sep=, header=yes {names} label=clicked dense=cost,views "
                             f"cat=user..category ignore=ts,note", table_sizes=5)
    _expect(e, path, 1, 3, "cost", "header has 'price' where 'cost' is expected")
    dup = _write(tmp_path / "dup.csv", rows, header=HEADER.replace("views", "price"))
    with pytest.raises(DataFormatError) as e:
        read_click_log(dup, "header label=clicked cat=user ignore=rest", table_sizes=5)
    _expect(e, dup, 1, 4, "price", "header: the name 'price' again")


def test_hex32_and_hour_decoders(tmp_path):
    lines = ["1\t14102100\t0000000a\tfoo", "0\t14102523\t\tbar", "1\t14102523\tFFFFFFFF\t"]
    path = tmp_path / "x.tsv"
    path.write_text("\n".join(lines) + "\n")
    text = "sep=tab label=1 dense=2:hour cat=3:hex32,4"
    ds = read_click_log(path, text, table_sizes=(7, 13), mapping=("modulo", "hash"))
    # 2014-10-21 is a Tuesday (1), 2014-10-25 a Saturday (5).
    assert ds.dense.tolist() == [[0.0, 1.0], [23.0, 5.0], [23.0, 5.0]]
    assert ds.sparse[:, 0].tolist() == [10 % 7, 0, 0xFFFFFFFF % 7]

    def mix(x: int) -> int:
        z = (x + 0x9E3779B97F4A7C15) & M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    assert ds.sparse[:, 1].tolist() == [mix(_blake(v) ^ (1 << 32)) % 13
                                        for v in ("foo", "bar", "")]
    for i, (field, bad, problem) in enumerate([(2, "14102124", "hour must be YYMMDDHH"),
                                               (3, "xyz", "1-8 hex digits")]):
        broken = [line.split("\t") for line in lines]
        broken[2][field - 1] = bad
        p = tmp_path / f"b{i}.tsv"
        p.write_text("\n".join("\t".join(r) for r in broken) + "\n")
        with pytest.raises(DataFormatError) as e:
            read_click_log(p, text, table_sizes=5)
        _expect(e, p, 3, field, None, problem)


# --- the presets against the dedicated readers (real samples) -----------------------------


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_avazu_preset_equals_read_avazu(split):
    folder = _shared("avazu_9k")
    sizes = tuple(range(900, 921))
    maps = tuple("hash" if t % 2 else "modulo" for t in range(21))
    want = read_avazu(folder, split=split, table_sizes=sizes, mapping=maps)
    _same(read_click_log(folder, AVAZU_FORMAT, split=split, table_sizes=sizes, mapping=maps),
          want)
    _same(read_click_log(folder, "avazu", split=split, table_sizes=sizes, mapping=maps), want)
    if split == "train":   # numbers, names from the header line
        text = "sep=, header=auto label=click dense=hour:hour cat=4-24 ignore=id"
        _same(read_click_log(folder / "train.csv", text, table_sizes=sizes, mapping=maps), want)


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_criteo_preset_equals_read_criteo(split):
    folder = _shared("criteo_kaggle_8k")
    maps = tuple("hash" if t % 3 else "modulo" for t in range(26))
    want = read_criteo(folder, split=split, mapping=maps)
    _same(read_click_log(folder, CRITEO_FORMAT, split=split,
                         table_sizes=want.table_sizes, mapping=maps), want)
    raw = read_criteo(folder, split=split, table_sizes=1000, log_dense=False)
    _same(read_click_log(folder, "sep=tab label=1 dense=2-14 cat=15-40:hex32", split=split,
                         table_sizes=1000), raw)


def test_generic_reader_is_fast():
    folder = _shared("criteo_kaggle_8k")
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        read_click_log(folder, CRITEO_FORMAT, table_sizes=1000)
        best = min(best, time.perf_counter() - t)
    assert best < 1.0, f"reading 7,200 rows took {best:.2f} s"

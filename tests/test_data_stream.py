"""Streaming click logs (sw_driver/data/stream.py): the streamed batches concatenate to what
the in-memory readers give, in the documented order with 0 and 2 DataLoader workers and with
ranks; malformed rows raise with their absolute line through the DataLoader; the stream holds
at most ``chunk_rows`` lines; the synthetic stream equals the generator's mini-batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from sw_driver.data import (ClickDataset, ClickLogStream, DataFormatError,
                            SyntheticClickGenerator, SyntheticClickStream, expand_paths,
                            find_shared_data, read_avazu, read_click_log, read_criteo,
                            stream_loader)
from sw_driver.data import _text
from sw_driver.data import stream as stream_mod

BATCH, CHUNK = 128, 300          # neither divides the other: batches span chunks


def _criteo_text(n: int, bad_line: int | None = None) -> str:
    lines = []
    for i in range(n):
        ints = [str((i * 7 + j) % 50 - 3) if (i + j) % 9 else "" for j in range(13)]
        cats = [f"{(i * 2654435761 + j * 97) % 2**32:08x}" if (i * j) % 11 else ""
                for j in range(26)]
        if i + 1 == bad_line:
            ints[3] = "1.5x"
        lines.append("\t".join([str(i % 3 % 2)] + ints + cats))
    return "".join(line + "\n" for line in lines)


@pytest.fixture(scope="module")
def criteo_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "day_0"
    path.write_text(_criteo_text(1000))
    return path


def _same(a: ClickDataset, b: ClickDataset) -> None:
    assert len(a) == len(b) and a.table_sizes == b.table_sizes
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.dense, b.dense)
    assert torch.equal(a.sparse, b.sparse)


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_equals_whole_file_in_order(criteo_file, workers):
    whole = read_criteo(criteo_file, table_sizes=997, mapping="hash")
    stream = ClickLogStream(criteo_file, "criteo", BATCH, table_sizes=997, mapping="hash",
                            chunk_rows=CHUNK)
    batches = list(stream_loader(stream, num_workers=workers, prefetch_factor=2))
    # File order with any number of workers: batch b holds samples b*128 .. b*128+127.
    assert [len(b) for b in batches] == [BATCH] * 7 + [1000 - 7 * BATCH]
    for b, batch in enumerate(batches):
        assert batch.name.endswith(f"[{b * BATCH}:{min((b + 1) * BATCH, 1000)}]")
        _same(batch, whole.subset(b * BATCH, (b + 1) * BATCH))
    _same(ClickDataset.concat(batches), whole)
    dropped = ClickLogStream(criteo_file, "criteo", BATCH, table_sizes=997, mapping="hash",
                             chunk_rows=CHUNK, drop_last=True)
    assert [len(b) for b in dropped] == [BATCH] * 7


def test_stream_ranks_take_every_kth_batch(criteo_file):
    whole = read_criteo(criteo_file, table_sizes=50)
    got = {}
    for rank in range(2):
        s = ClickLogStream([criteo_file], "criteo", 100, table_sizes=50, chunk_rows=64,
                           rank=rank, world_size=2)
        got[rank] = list(stream_loader(s, num_workers=2 if rank else 0))
    # 10 batches of 100: rank 0 takes 0, 2, 4, 6, 8 and rank 1 takes 1, 3, 5, 7, 9.
    for rank, batches in got.items():
        assert len(batches) == 5
        for j, batch in enumerate(batches):
            b = 2 * j + rank
            _same(batch, whole.subset(b * 100, (b + 1) * 100))


def test_stream_holds_at_most_chunk_rows_lines(criteo_file, monkeypatch):
    held, parsed = [], []
    real_chunks, real_parse = stream_mod.read_chunks, stream_mod._parse_rows

    def chunks(lines, chunk_rows):
        for chunk in real_chunks(lines, chunk_rows):
            held.append(len(chunk))
            yield chunk

    def parse(file, rows, lay, first_line):
        parsed.append(len(rows))
        return real_parse(file, rows, lay, first_line)

    def whole_file(*args, **kwargs):
        raise AssertionError("the stream read a whole file")

    monkeypatch.setattr(stream_mod, "read_chunks", chunks)
    monkeypatch.setattr(stream_mod, "_parse_rows", parse)
    monkeypatch.setattr(_text, "read_lines", whole_file)
    stream = ClickLogStream(criteo_file, "criteo", 256, table_sizes=100, chunk_rows=50)
    n = sum(len(b) for b in stream)             # in this process: the patches apply
    assert n == 1000 and sum(held) == 1000 and sum(parsed) == 1000
    assert max(held) == 50 and max(parsed) <= 50   # batches of 256 assembled from pieces


@pytest.mark.parametrize("workers", [0, 2])
def test_malformed_row_deep_in_file_through_dataloader(tmp_path, workers):
    path = tmp_path / "bad.tsv"
    path.write_text(_criteo_text(1000, bad_line=777))
    stream = ClickLogStream(path, "criteo", BATCH, table_sizes=100, chunk_rows=CHUNK)
    seen = 0
    with pytest.raises(DataFormatError) as e:
        for batch in stream_loader(stream, num_workers=workers):
            seen += len(batch)
    assert (e.value.path, e.value.line, e.value.column, e.value.column_name) == (
        path, 777, 5, "I4")
    assert str(e.value) == f"{path}: line 777, column 5 (I4): not a number: '1.5x'"
    assert seen == 6 * BATCH       # the batches before the bad one (samples 768..895)
    if workers:                    # a plain DataLoader: torch's RuntimeError with the message
        with pytest.raises(RuntimeError, match="line 777, column 5 \\(I4\\)"):
            list(DataLoader(stream, batch_size=None, num_workers=2))


def test_several_files_with_headers_and_line_numbers(tmp_path):
    header = "ts,clicked,price,user,item"
    files = []
    for k in range(3):
        rows = [f"{k}-{i},{(i + k) % 2},{i * 0.5},u{i % 13},i{(i * k) % 7}" for i in range(70)]
        p = tmp_path / f"part_{[2, 10, 1][k]}.csv"
        p.write_text("\n".join([header] + rows) + "\n")
        files.append(p)
    fmt = "sep=, header=yes label=clicked dense=price:log cat=user,item ignore=ts"
    stream = ClickLogStream(str(tmp_path / "part_*.csv"), fmt, 32, table_sizes=(5, 3),
                            chunk_rows=20)
    assert [f.name for f in stream.files] == ["part_1.csv", "part_2.csv", "part_10.csv"]
    whole = ClickDataset.concat([read_click_log(f, fmt, table_sizes=(5, 3))
                                 for f in stream.files])
    batches = list(stream_loader(stream, num_workers=2))
    assert [len(b) for b in batches] == [32] * 6 + [18]
    _same(ClickDataset.concat(batches), whole)
    # A bad row in the second file: its own line number, the header counted.
    text = files[0].read_text().splitlines()
    text[51] = text[51].replace(",u", ",x,u")
    files[0].write_text("\n".join(text) + "\n")
    with pytest.raises(DataFormatError) as e:
        list(stream_loader(stream, num_workers=2))
    assert e.value.path.name == "part_2.csv" and e.value.line == 52
    assert "expected 5 comma-separated columns, found 6" in str(e.value)


@pytest.mark.parametrize("workers", [0, 2])
def test_synthetic_stream_equals_mini_batches(workers):
    gen = SyntheticClickGenerator((50, 1000, 7), p_hot=0.5, seed=4, drift_every=100,
                                  drift_shift=3)
    want = list(gen.replace().mini_batches(64, 7))
    got = list(stream_loader(SyntheticClickStream(gen, 64, 7), num_workers=workers))
    assert len(got) == 7
    for a, b in zip(got, want):
        _same(a, b)
    odd = list(SyntheticClickStream(gen.config, 64, 7, rank=1, world_size=2))
    assert len(odd) == 3
    for j, a in enumerate(odd):
        _same(a, want[2 * j + 1])


def test_skip_matches_drawing():
    a = SyntheticClickGenerator((30, 5000), p_hot=0.2, seed=9)
    b = a.replace()
    a.batch(77)
    b.skip(77)
    _same(a.batch(40), b.batch(40))


def test_real_samples_stream_like_the_readers():
    criteo, avazu = find_shared_data("criteo_kaggle_8k"), find_shared_data("avazu_9k")
    if criteo is None or avazu is None:
        pytest.skip("real samples not found (set HOTLINE_DATA)")
    c = ClickLogStream(criteo / "train.tsv", "criteo", 500, table_sizes=1000,
                       chunk_rows=1500)
    _same(ClickDataset.concat(list(stream_loader(c, num_workers=2))),
          read_criteo(criteo, table_sizes=1000))
    # Avazu: train.csv has a header, dev.csv and test.csv none; one stream over all three.
    a = ClickLogStream([avazu / f"{s}.csv" for s in ("train", "dev", "test")], "avazu", 1000,
                       table_sizes=2**20, chunk_rows=777)
    want = ClickDataset.concat([read_avazu(avazu, split=s) for s in ("train", "dev", "test")])
    _same(ClickDataset.concat(list(a)), want)


def test_paths_and_arguments(tmp_path, criteo_file):
    for name in ("day_10", "day_2", "day_1"):
        (tmp_path / name).write_text("")
    assert [p.name for p in expand_paths(str(tmp_path / "day_*"))] == ["day_1", "day_2",
                                                                       "day_10"]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        expand_paths(str(tmp_path / "night_*"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        expand_paths(tmp_path / "nope")
    with pytest.raises(IsADirectoryError, match="give files or a glob"):
        expand_paths(tmp_path)
    with pytest.raises(ValueError, match="auto"):
        ClickLogStream(criteo_file, "criteo", 10, table_sizes="auto")
    with pytest.raises(ValueError, match="chunk_rows"):
        ClickLogStream(criteo_file, "criteo", 10, table_sizes=5, chunk_rows=0)
    with pytest.raises(ValueError, match="rank"):
        ClickLogStream(criteo_file, "criteo", 10, table_sizes=5, rank=2, world_size=2)
    loader = stream_loader(ClickLogStream(criteo_file, "criteo", 10, table_sizes=5),
                           num_workers=2, prefetch_factor=3)
    assert loader.batch_size is None and loader.num_workers == 2
    assert loader.prefetch_factor == 3 and loader.pin_memory == torch.cuda.is_available()

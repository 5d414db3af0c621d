"""Click logs larger than memory, in mini-batches: ``torch.utils.data.IterableDataset`` streams.

`ClickLogStream` reads delimited files (any `ClickLogFormat`: Criteo Terabyte's ``day_0`` ..
``day_23``, Avazu, ...) in chunks of ``chunk_rows`` lines and yields `ClickDataset`
mini-batches, the format every reader and the synthetic generator produce.
`SyntheticClickStream` does the same for `SyntheticClickGenerator`. `stream_loader` builds a
DataLoader with worker processes, prefetch and pinned memory.

Order and sharding. The samples of all files, in the order given (a glob is sorted
naturally: ``day_2`` before ``day_10``), are cut into consecutive mini-batches ``b = 0, 1,
...`` of ``batch_size`` samples (a batch may span two chunks or two files; only the very last
may be shorter). With ``world_size`` ranks, rank ``r`` takes batches ``b % world_size == r``;
within a rank, DataLoader worker ``w`` of ``k`` takes every ``k``-th of those, starting at its
``w``-th. The DataLoader asks its workers in turn (round robin) and returns their batches in
that order, so with any number of workers a rank's batches arrive in file order, exactly
what ``num_workers=0`` gives. Every worker reads all bytes (counting lines, so error
messages give absolute line numbers) but splits and converts only its own batches' lines.
"""

from __future__ import annotations

import dataclasses
import glob
import re
from itertools import chain, islice
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from . import _text
from .dataset import ClickDataset
from .delimited import (ClickLogFormat, _check_header, _first_is_header, _parse_rows,
                        as_format)
from .errors import DataFormatError
from .synthetic import SyntheticClickGenerator, SyntheticConfig
from .tables import map_keys, mappings_for, table_sizes_for

#: Default lines per chunk: ~10-40 MB of Criteo text, a small share of any host's memory.
DEFAULT_CHUNK_ROWS = 65536


def natural_key(path: str | Path) -> list:
    """Sort key that orders the digit runs of a path by value: ``day_2`` < ``day_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"([0-9]+)", str(path))]


def expand_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files from a path, a glob pattern (sorted by `natural_key`) or a list of either."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files: list[Path] = []
    for item in items:
        text = str(item)
        if any(ch in text for ch in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(text), key=natural_key)]
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise FileNotFoundError(f"{text}: no file matches")
            files += matches
        else:
            path = Path(item)
            if path.is_dir():
                raise IsADirectoryError(f"{path} is a folder: give files or a glob such as "
                                        f"{path / 'day_*'}")
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file")
            files.append(path)
    if not files:
        raise ValueError("no files given")
    return files


def _shard() -> tuple[int, int]:
    """(this DataLoader worker's id, number of workers); (0, 1) in the main process."""
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _check_shard(batch_size: int, rank: int, world_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size "
                         f"{world_size}")


def read_chunks(lines: Iterable[bytes], chunk_rows: int) -> Iterator[list[bytes]]:
    """Consecutive lists of at most ``chunk_rows`` lines: all a stream holds of a file."""
    it = iter(lines)
    while True:
        chunk = list(islice(it, chunk_rows))
        if not chunk:
            return
        yield chunk


class ClickLogStream(IterableDataset):
    """Mini-batches (`ClickDataset`) of delimited click-log files, read in chunks of lines.

    Args:
        paths: a file, a glob pattern (``".../day_*"``) or a list of files / patterns.
        fmt: a `ClickLogFormat`, a preset name (``criteo``, ``avazu``), a description or a
            JSON path; names missing from it come from the first file's header.
        batch_size: samples per mini-batch.
        table_sizes: rows per table (one int or one per categorical column); ``auto`` needs
            a pass over the data and is not offered here.
        mapping: ``modulo`` / ``hash``, for all tables or per table.
        chunk_rows: lines read at a time; with the current batch, all the stream holds.
        drop_last: drop the last batch when it is shorter than ``batch_size``.
        rank, world_size: take batches ``b % world_size == rank`` (data-parallel training).

    Iterating yields batches in file order (module docstring: order with workers). A
    malformed line raises `DataFormatError` with its file and absolute line number; through
    a plain DataLoader with workers, torch re-raises it as a ``RuntimeError`` carrying the
    message, through `stream_loader` as the `DataFormatError` itself.
    """

    def __init__(self, paths, fmt: ClickLogFormat | str, batch_size: int, *,
                 table_sizes: int | Sequence[int], mapping: str | Sequence[str] = "modulo",
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, drop_last: bool = False, rank: int = 0,
                 world_size: int = 1):
        super().__init__()
        _check_shard(batch_size, rank, world_size)
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        if isinstance(table_sizes, str):
            raise ValueError(f"table_sizes={table_sizes!r}: a stream needs sizes before it "
                             f"reads (for 'auto' read a sample with parse_click_log and use "
                             f"its auto_table_sizes())")
        self.files = expand_paths(paths)
        fmt = as_format(fmt)
        first = self.files[0]
        with open(first, "rb") as f:
            line = f.readline()
        fields = _text.decode_lines(line, first, 1)[0].split(fmt.separator) if line else None
        self.format, self._layout = fmt._resolve(first, fields)
        n_tables = len(self._layout.table_names)
        self.table_sizes = table_sizes_for(table_sizes, n_tables)
        self.mappings = mappings_for(mapping, n_tables)
        self.batch_size, self.chunk_rows, self.drop_last = batch_size, chunk_rows, drop_last
        self.rank, self.world_size = rank, world_size
        self.name = f"{first.parent.name}/{first.stem}" + ("+" if len(self.files) > 1 else "")

    @property
    def table_names(self) -> tuple[str, ...]:
        """The categorical columns' names, in table order."""
        return self._layout.table_names

    @property
    def n_dense(self) -> int:
        """Dense features per sample."""
        return self._layout.n_dense

    def _mine(self, b: int, worker: int, workers: int) -> bool:
        return b % self.world_size == self.rank and (b // self.world_size) % workers == worker

    def __iter__(self) -> Iterator[ClickDataset]:
        worker, workers = _shard()
        size = self.batch_size
        parts: list[ClickDataset] = []    # the pieces of the current batch (one batch only)
        sample = 0                        # global index of the next sample
        for file in self.files:
            with open(file, "rb") as f:
                lines, line_no = self._data_lines(file, f)
                for chunk in read_chunks(lines, self.chunk_rows):
                    end_of_chunk = sample + len(chunk)
                    s = sample
                    while s < end_of_chunk:   # runs of one batch each
                        b = s // size
                        stop = min(end_of_chunk, (b + 1) * size)
                        if self._mine(b, worker, workers):
                            lo, hi = s - sample, stop - sample
                            parts.append(self._convert(file, chunk[lo:hi], line_no + lo, s))
                            if stop == (b + 1) * size:
                                yield ClickDataset.concat(parts, f"{self.name}[{b * size}:"
                                                                 f"{stop}]")
                                parts = []
                        s = stop
                    line_no += len(chunk)
                    sample = end_of_chunk
        if parts and not self.drop_last:
            start = sample - sum(len(p) for p in parts)
            yield ClickDataset.concat(parts, f"{self.name}[{start}:{sample}]")

    def _data_lines(self, file: Path, f: BinaryIO) -> tuple[Iterable[bytes], int]:
        """(the data lines of an open file, the number of the first); skips a header."""
        first = f.readline()
        if not first:
            return (), 1
        fields = _text.decode_lines(first, file, 1)[0].split(self._layout.sep)
        if _first_is_header(self.format, fields):
            _check_header(file, fields, self._layout, self.format.names)
            return f, 2
        return chain([first], f), 1

    def _convert(self, file: Path, lines: list[bytes], first_line: int, start: int
                 ) -> ClickDataset:
        """Samples of ``lines`` (a run of whole lines of ``file``) as a `ClickDataset`."""
        text = _text.decode_lines(b"".join(lines), file, first_line)
        rows = [line.split(self._layout.sep) for line in text]
        labels, dense, keys, empty = _parse_rows(file, rows, self._layout, first_line)
        sparse = map_keys(keys, empty, self.table_sizes, self.mappings)
        return ClickDataset(torch.from_numpy(labels), torch.from_numpy(dense),
                            torch.from_numpy(np.ascontiguousarray(sparse)), self.table_sizes,
                            f"{self.name}[{start}:{start + len(rows)}]")


class SyntheticClickStream(IterableDataset):
    """``n_batches`` mini-batches of a `SyntheticClickGenerator`'s stream, sharded like
    `ClickLogStream`: with any number of workers (and ranks together) the batches are those
    of ``generator.mini_batches(batch_size, n_batches)`` from the start of its stream, in
    that order. Each iteration starts the stream afresh; a worker passes over the other
    workers' batches with `SyntheticClickGenerator.skip`."""

    def __init__(self, generator: SyntheticClickGenerator | SyntheticConfig, batch_size: int,
                 n_batches: int, *, rank: int = 0, world_size: int = 1):
        super().__init__()
        _check_shard(batch_size, rank, world_size)
        if n_batches < 0:
            raise ValueError(f"n_batches must be >= 0, got {n_batches}")
        self.config = generator.config if isinstance(generator, SyntheticClickGenerator) \
            else generator
        self.batch_size, self.n_batches = batch_size, n_batches
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[ClickDataset]:
        worker, workers = _shard()
        gen = SyntheticClickGenerator(**dataclasses.asdict(self.config))
        for b in range(self.n_batches):
            if b % self.world_size == self.rank and (b // self.world_size) % workers == worker:
                yield gen.batch(self.batch_size)
            else:
                gen.skip(self.batch_size)


@dataclasses.dataclass
class _RaisedInWorker:
    """A worker's `DataFormatError`, sent as an item so it arrives intact and in order."""

    error: DataFormatError


class _ErrorsAsItems(IterableDataset):
    def __init__(self, stream: IterableDataset):
        super().__init__()
        self.stream = stream

    def __iter__(self):
        try:
            yield from self.stream
        except DataFormatError as e:
            if get_worker_info() is None:
                raise
            yield _RaisedInWorker(e)


class ClickLogLoader(DataLoader):
    """A DataLoader of a click stream (see `stream_loader`) that re-raises a worker's
    `DataFormatError` as itself (torch would turn it into a ``RuntimeError``), at the
    batch where it occurred. ``stream`` is the wrapped stream."""

    def __init__(self, stream: IterableDataset, **kwargs):
        super().__init__(_ErrorsAsItems(stream), **kwargs)
        self.stream = stream

    def __iter__(self):
        for item in super().__iter__():
            if isinstance(item, _RaisedInWorker):
                raise item.error
            yield item


def stream_loader(stream: IterableDataset, *, num_workers: int = 2,
                  prefetch_factor: int | None = 2, pin_memory: bool | None = None,
                  persistent_workers: bool = False, **kwargs) -> ClickLogLoader:
    """A DataLoader over a `ClickLogStream` / `SyntheticClickStream` with sensible settings:
    ``batch_size=None`` (the stream makes the batches), ``num_workers`` processes parsing
    ahead, ``prefetch_factor`` batches queued per worker, ``in_order=True`` (the documented
    file order), and ``pin_memory`` (default: when CUDA is available) so that
    ``batch.sparse.to(device, non_blocking=True)`` overlaps with compute. Other keyword
    arguments go to ``DataLoader`` (``multiprocessing_context``, ``timeout``, ...)."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return ClickLogLoader(stream, batch_size=None, num_workers=num_workers,
                          prefetch_factor=prefetch_factor if num_workers else None,
                          pin_memory=pin_memory, in_order=True,
                          persistent_workers=persistent_workers and num_workers > 0, **kwargs)

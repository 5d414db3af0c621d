"""Shared plumbing of the text readers: files, lines, column counts and error locations."""

from __future__ import annotations

import re
from itertools import islice
from pathlib import Path
from typing import Sequence

from .errors import DataFormatError

SPLITS = ("train", "dev", "test")

# A valid field: empty or an optional minus and 1-18 digits (fits int64). The search looks for
# anything that breaks it in the fields joined by newlines, which is ~10x faster than matching.
_BAD_INT = re.compile(r"[^0-9\n-]|-(?![0-9])|[0-9-]-|[0-9]{19}")
_INT_FIELD = re.compile(r"-?[0-9]{1,18}")


def resolve_file(path: str | Path, split: str | None, suffixes: Sequence[str]) -> Path:
    """A data file: ``path`` itself, or ``path/<split><suffix>`` when ``path`` is a folder."""
    path = Path(path)
    if path.is_dir():
        split = split or "train"
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        for suffix in suffixes:
            candidate = path / f"{split}{suffix}"
            if candidate.is_file():
                return candidate
        names = ", ".join(f"{split}{s}" for s in suffixes)
        raise FileNotFoundError(f"{path}: no {names}")
    if split is not None:
        raise ValueError(f"split={split!r} given but {path} is a file, not a folder")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path


def read_lines(path: Path, max_lines: int | None) -> list[str]:
    """The file's lines without their terminators (``\\n`` or ``\\r\\n``), at most ``max_lines``.

    The newline ending the last line does not start another line; any other empty line is
    returned (and then fails the column-count check: nothing is skipped silently). Bytes that
    are not UTF-8 raise `DataFormatError` naming the line.
    """
    if max_lines is not None and max_lines < 0:
        raise ValueError(f"max_rows must be >= 0, got {max_lines}")
    with open(path, "rb") as f:  # binary: split on b"\n" only, decode once
        data = f.read() if max_lines is None else b"".join(islice(f, max_lines))
    return decode_lines(data, path, 1)


def decode_lines(data: bytes, path: Path, first_line: int) -> list[str]:
    """Lines of ``data`` (whole lines of a file, the first being line ``first_line``) as text
    without terminators, with the rules of `read_lines`."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        raise DataFormatError(path, line, None, None, f"not valid UTF-8 ({e.reason})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines


def check_column_counts(
    path: Path, rows: list[list[str]], names: Sequence[str], first_line: int, separator: str
) -> None:
    """Raise on the first row whose field count differs from ``len(names)``."""
    expected = len(names)
    for i, row in enumerate(rows):
        if len(row) != expected:
            found = len(row)
            # Point at the first missing column, or the first unexpected one.
            column = found + 1 if found < expected else expected + 1
            name = names[column - 1] if column <= expected else "unexpected"
            raise DataFormatError(
                path, first_line + i, column, name,
                f"expected {expected} {separator}-separated columns, found {found}",
            )


def check_labels(
    path: Path, labels: list[str], column: int, name: str, first_line: int
) -> None:
    """Raise on the first label that is not exactly ``0`` or ``1``."""
    for i, value in enumerate(labels):
        if value != "0" and value != "1":
            raise DataFormatError(
                path, first_line + i, column, name, f"label must be 0 or 1, got {value!r}"
            )


def find_bad_int(fields: list[str]) -> int | None:
    """Index of the first field that is neither empty nor an int64 decimal integer, or None."""
    if _BAD_INT.search("\n".join(fields)) is None:
        return None
    for i, f in enumerate(fields):
        if f and not _INT_FIELD.fullmatch(f):
            return i
    return None  # pragma: no cover - the fast search and the slow scan agree


def int_problem(value: str) -> str:
    """Why ``value`` is not an accepted integer field."""
    if re.fullmatch(r"-?[0-9]+", value):
        return f"integer out of range (more than 18 digits): {value!r}"
    return f"not an integer: {value!r}"


def field_position(
    index: int, first_column: int, width: int, first_line: int
) -> tuple[int, int]:
    """(line, column) of flat field ``index`` of a row-major block ``width`` fields wide."""
    row, offset = divmod(index, width)
    return first_line + row, first_column + offset

"""Reader for any delimited click log, described column by column (docs/data.md).

A `ClickLogFormat` says which column is the label, which are dense features (with a
transform: ``raw``, ``log`` = DLRM's ``log(1 + max(x, 0))``, or ``hour`` = Avazu's
``YYMMDDHH`` -> hour of day and day of week) and which are categorical (decoded as ``str``:
key ``string_hash64(text)``, or ``hex32``: Criteo's 8 hex digits as a 32-bit key, empty ->
row 0), which are ignored, the separator, and whether files start with a header line.
Columns are 1-based numbers (like ``cut -f``) or names (from ``names`` or the header).

The compact description language (``ClickLogFormat.parse``), items separated by spaces or
``;``::

    sep=tab label=1 dense=2-14:log cat=15-40:hex32                  # Criteo
    sep=, header=auto names=id,click,hour,C1,... label=click dense=hour:hour cat=C1..C21 ignore=id

`CRITEO_FORMAT` and `AVAZU_FORMAT` describe the two public logs; `read_click_log` reads any
log into a `ClickDataset`, `parse_click_log` up to the categorical keys (a `RawClickLog`).
Malformed rows raise `DataFormatError` (file, line, column, name), a description that does not
fit the file `FormatSpecError`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import _text
from .avazu import COLUMNS as AVAZU_COLUMNS
from .avazu import hour_features, hour_problem
from .criteo import COLUMNS as CRITEO_COLUMNS
from .criteo import decode_hex32, find_bad_hex, hex_problem
from .dataset import ClickDataset
from .errors import DataFormatError
from .hashing import string_hash64
from .tables import RawClickLog, mappings_for, table_sizes_for

#: Separator names accepted by ``sep=`` (any other single character is taken literally).
SEPARATORS: dict[str, str] = {"tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|",
                              "space": " "}
#: Dense transforms; ``hour`` gives two features (hour of day, day of week).
DENSE_TRANSFORMS: tuple[str, ...] = ("raw", "log", "hour")
#: Categorical decoders.
CAT_DECODERS: tuple[str, ...] = ("str", "hex32")
#: File suffixes searched for ``<split>`` in a folder.
SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".txt")

_KEYS = ("label", "dense", "cat", "ignore", "sep", "header", "names", "columns")
_ALIASES = {"categorical": "cat", "separator": "sep", "n_columns": "columns"}
_ROLE_KEY = {"dense": "dense", "categorical": "cat", "ignore": "ignore"}
# A number: optional sign, digits with an optional fraction (or a bare fraction), optional
# exponent; or an empty field. MULTILINE: finds the first line (field) that is neither.
_BAD_NUMBER = re.compile(
    r"^(?!(?:[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)?$)", re.M)


class FormatSpecError(ValueError):
    """A column description that is malformed or does not fit the file it describes."""


@dataclass(frozen=True)
class ColumnSpec:
    """A column, or an inclusive range of columns, and how to decode it.

    Attributes:
        column: a 1-based column number or a column name.
        last: the range's last column (number or name, inclusive), or None for one column.
        transform: dense: ``raw`` (default), ``log``, ``hour``; categorical: ``str``
            (default), ``hex32``; empty for ignored columns. ``""`` means the default.
    """

    column: int | str
    last: int | str | None = None
    transform: str = ""

    def __post_init__(self) -> None:
        for what, ref in (("column", self.column), ("last", self.last)):
            if ref is None and what == "last":
                continue
            if isinstance(ref, bool) or not isinstance(ref, (int, str)):
                raise FormatSpecError(f"{what} must be a 1-based column number or a name, "
                                      f"got {ref!r}")
            if isinstance(ref, int) and ref < 1:
                raise FormatSpecError(f"column numbers start at 1, got {ref}")
            if isinstance(ref, str) and not ref:
                raise FormatSpecError("empty column name")

    @classmethod
    def parse(cls, text: str) -> ColumnSpec:
        """``3``, ``name``, ``2-14`` (numbers), ``I1..I13`` (names or numbers), each with an
        optional ``:transform``."""
        ref, _, transform = text.strip().partition(":") if ":" in text else (text, "", "")
        ref = ref.strip()
        m = re.fullmatch(r"([0-9]+)-([0-9]+)", ref)
        if m:
            return cls(int(m.group(1)), int(m.group(2)), transform.strip())
        if ".." in ref:
            first, last = ref.split("..", 1)
            return cls(_ref(first), _ref(last), transform.strip())
        return cls(_ref(ref), None, transform.strip())

    def __str__(self) -> str:
        text = str(self.column)
        if self.last is not None:
            both_numbers = isinstance(self.column, int) and isinstance(self.last, int)
            text += f"{'-' if both_numbers else '..'}{self.last}"
        return f"{text}:{self.transform}" if self.transform else text


def _ref(text: str) -> int | str:
    text = text.strip()
    if not text:
        raise FormatSpecError("empty column reference")
    return int(text) if text.isascii() and text.isdigit() else text


@dataclass(frozen=True)
class ClickLogFormat:
    """The layout of a delimited click log (see the module docstring and docs/data.md).

    Attributes:
        label: the label column (values ``0`` / ``1``).
        dense: dense columns in feature order (``ColumnSpec``; ints/strings are accepted).
        categorical: categorical columns in table order (at least one).
        ignore: columns that are read past; ``"rest"`` ignores every column not used
            otherwise. Every column must be used or ignored, so a miscounted description is
            an error rather than silently dropped data.
        separator: one character (``"\\t"``, ``","``, ...).
        header: False (no header line), True (every file starts with one) or ``"auto"`` (a
            file starts with one iff the first line's label field is neither ``0`` nor ``1``;
            with a label given by name and no ``names``: iff that name is in the first line).
        names: names of all columns; without them a header supplies them. A header must
            match the names.
        n_columns: the number of columns (default: ``len(names)``, else the first line's).
    """

    label: int | str
    dense: tuple[ColumnSpec, ...] = ()
    categorical: tuple[ColumnSpec, ...] = ()
    ignore: tuple[ColumnSpec, ...] = ()
    separator: str = ","
    header: bool | str = False
    names: tuple[str, ...] | None = None
    n_columns: int | None = None

    def __post_init__(self) -> None:
        label = _ref(self.label) if isinstance(self.label, str) else self.label
        ColumnSpec(label)  # checks the reference
        set_ = functools.partial(object.__setattr__, self)
        set_("label", label)
        for role, allowed, default in (("dense", DENSE_TRANSFORMS, "raw"),
                                       ("categorical", CAT_DECODERS, "str"),
                                       ("ignore", ("",), "")):
            specs = []
            for item in getattr(self, role):
                spec = item if isinstance(item, ColumnSpec) else ColumnSpec.parse(str(item))
                transform = spec.transform or default
                if transform not in allowed:
                    kinds = ", ".join(allowed) if role != "ignore" else "none"
                    raise FormatSpecError(f"{_ROLE_KEY[role]}={spec}: unknown transform "
                                          f"{spec.transform!r} ({role}: {kinds})")
                specs.append(dataclasses.replace(spec, transform=transform))
            set_(role, tuple(specs))
        if not self.categorical:
            raise FormatSpecError("no cat= column: at least one categorical column is needed")
        sep = SEPARATORS.get(self.separator, self.separator)
        if len(sep) != 1 or sep in "\r\n":
            raise FormatSpecError(f"sep must be one character or one of "
                                  f"{', '.join(SEPARATORS)}, got {self.separator!r}")
        set_("separator", sep)
        if self.header not in (True, False, "auto"):
            raise FormatSpecError(f"header must be yes, no or auto, got {self.header!r}")
        if self.names is not None:
            names = tuple(str(n) for n in self.names)
            set_("names", names)
            _check_names(names)
            if self.n_columns is not None and self.n_columns != len(names):
                raise FormatSpecError(f"columns={self.n_columns} but {len(names)} names")
            set_("n_columns", len(names))
        if self.n_columns is not None and (isinstance(self.n_columns, bool)
                                           or not isinstance(self.n_columns, int)
                                           or self.n_columns < 1):
            raise FormatSpecError(f"columns must be an integer >= 1, got {self.n_columns!r}")

    # --- construction from text -------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> ClickLogFormat:
        """A format from the compact description language (docs/data.md), e.g.
        ``"sep=tab label=1 dense=2-14:log cat=15-40:hex32"``."""
        items = [i for i in re.split(r"[\s;]+", text.strip()) if i]
        if not items:
            raise FormatSpecError("the description is empty (e.g. 'label=1 dense=2-14 "
                                  "cat=15-40 sep=tab')")
        fields: dict[str, Any] = {}
        for item in items:
            key, eq, value = item.partition("=")
            key = _ALIASES.get(key.lower(), key.lower())
            if not eq:
                if key != "header":
                    raise FormatSpecError(f"{item!r} is not key=value (keys: "
                                          f"{', '.join(_KEYS)})")
                value = "yes"
            if key in ("dense", "cat", "ignore"):
                fields[key] = fields.get(key, "") + ("," if key in fields else "") + value
            elif key in fields:
                raise FormatSpecError(f"{key}= is given twice")
            else:
                fields[key] = value
        return cls.from_dict(fields)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClickLogFormat:
        """A format from a dict with the compact language's keys (``label``, ``dense``,
        ``cat``, ``ignore``, ``sep``, ``header``, ``names``, ``columns``; the long names
        ``categorical``, ``separator`` are accepted). Values are strings in the compact
        syntax, numbers, booleans, or lists (of references, ``{"column": ..., "last": ...,
        "transform": ...}`` objects, or names)."""
        if not isinstance(d, Mapping):
            raise FormatSpecError(f"a format description must be an object/dict, got "
                                  f"{type(d).__name__}")
        kw: dict[str, Any] = {}
        for raw_key, value in d.items():
            key = _ALIASES.get(str(raw_key).lower(), str(raw_key).lower())
            if key not in _KEYS:
                raise FormatSpecError(f"unknown key {raw_key!r} (keys: {', '.join(_KEYS)})")
            if key == "label":
                if isinstance(value, bool) or not isinstance(value, (int, str)):
                    raise FormatSpecError(f"label must be one column, got {value!r}")
                kw["label"] = _ref(value) if isinstance(value, str) else value
            elif key in ("dense", "cat", "ignore"):
                kw[{"cat": "categorical"}.get(key, key)] = _specs(key, value)
            elif key == "sep":
                kw["separator"] = _separator(value)
            elif key == "header":
                kw["header"] = _header(value)
            elif key == "names":
                kw["names"] = tuple(_list(key, value))
            else:
                kw["n_columns"] = _int(key, value)
        if "label" not in kw:
            raise FormatSpecError("no label= column")
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> ClickLogFormat:
        """A format from a JSON file holding an object for `from_dict`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise FormatSpecError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") \
                from None
        return cls.from_dict(data)

    def __str__(self) -> str:
        """The compact description (``ClickLogFormat.parse(str(f)) == f`` for names without
        separators or spaces)."""
        word = {v: k for k, v in SEPARATORS.items()}.get(self.separator, self.separator)
        parts = [f"sep={word}"]
        if self.header:
            parts.append(f"header={'yes' if self.header is True else 'auto'}")
        if self.names is not None:
            parts.append("names=" + ",".join(self.names))
        elif self.n_columns is not None:
            parts.append(f"columns={self.n_columns}")
        parts.append(f"label={self.label}")
        for key, specs, default in (("dense", self.dense, "raw"),
                                    ("cat", self.categorical, "str"), ("ignore", self.ignore, "")):
            if specs:
                parts.append(f"{key}=" + ",".join(
                    str(dataclasses.replace(s, transform="")) if s.transform == default
                    else str(s) for s in specs))
        return " ".join(parts)

    @property
    def table_names(self) -> tuple[str, ...]:
        """The categorical columns' names in table order (``column<i>`` when unnamed).
        Needs the columns known (``names`` or ``n_columns``; see `resolved`)."""
        return self._known_layout().table_names

    @property
    def n_dense(self) -> int:
        """Dense features per sample (``hour`` columns give two). Needs the columns known."""
        return self._known_layout().n_dense

    def _known_layout(self) -> _Layout:
        if self.n_columns is None:
            raise FormatSpecError("the columns are not known yet: give names= or columns=, or "
                                  "resolve the format against a file (resolved(path))")
        return _layout(self)

    # --- resolution against a file ---------------------------------------------------

    def resolved(self, path: str | Path) -> ClickLogFormat:
        """This format with ``names`` (from the file's header when it has none) and
        ``n_columns`` filled in, every column reference checked against the file's first
        line. Reuse the result for the other files of a data set (a dev split without a
        header, say)."""
        file = Path(path)
        return self._resolve(file, _first_fields(file, self.separator))[0]

    def _resolve(self, file: Path, first: list[str] | None) -> tuple[ClickLogFormat, _Layout]:
        """(format with names and column count, its layout) for a file whose first line has
        the fields ``first`` (None: the file is empty)."""
        names, n_columns = self.names, self.n_columns
        if names is None and first is not None and _first_is_header(self, first):
            for i, name in enumerate(first):
                if not name or name in first[:i]:
                    problem = "no name" if not name else f"the name {name!r} again"
                    raise DataFormatError(file, 1, i + 1, name or None, f"header: {problem}")
            names = tuple(first)
        if names is not None:
            n_columns = len(names)
        strict, inferred_from = True, None
        if n_columns is None:
            if first is not None:
                n_columns, inferred_from = len(first), str(file)
            else:  # an empty file: only numbered columns can be placed
                refs = [self.label] + [r for s in (*self.dense, *self.categorical, *self.ignore)
                                       for r in (s.column, s.last) if r is not None]
                refs = [r for r in refs if r != "rest"]
                if not all(isinstance(r, int) for r in refs):
                    raise FormatSpecError(f"{file}: the file is empty, so no header names the "
                                          f"columns")
                n_columns, strict = max(refs), False
        fmt = dataclasses.replace(self, names=names, n_columns=n_columns)
        return fmt, _layout(fmt, strict, inferred_from)


def _check_names(names: tuple[str, ...]) -> None:
    for i, name in enumerate(names):
        if not name:
            raise FormatSpecError(f"names: column {i + 1} has an empty name")
        if name in names[:i]:
            raise FormatSpecError(f"names: {name!r} is given twice (columns "
                                  f"{names.index(name) + 1} and {i + 1})")


def _list(key: str, value: Any) -> list:
    if isinstance(value, str):
        return [v for v in value.split(",")]
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    raise FormatSpecError(f"{key} must be a list or a comma-separated string, got {value!r}")


def _specs(key: str, value: Any) -> tuple[ColumnSpec, ...]:
    specs = []
    for item in _list(key, value):
        if isinstance(item, Mapping):
            unknown = set(item) - {"column", "last", "transform"}
            if unknown or "column" not in item:
                raise FormatSpecError(f"{key}: an object item needs 'column' (and optionally "
                                      f"'last', 'transform'), got {dict(item)!r}")
            specs.append(ColumnSpec(item["column"], item.get("last"), item.get("transform", "")))
        elif isinstance(item, bool) or not isinstance(item, (int, str)):
            raise FormatSpecError(f"{key}: {item!r} is not a column")
        elif isinstance(item, int):
            specs.append(ColumnSpec(item))
        elif item.strip():
            specs.append(ColumnSpec.parse(item))
        else:
            raise FormatSpecError(f"{key}={value!r}: an empty item")
    return tuple(specs)


def _separator(value: Any) -> str:
    if not isinstance(value, str):
        raise FormatSpecError(f"sep must be a string, got {value!r}")
    return {"\\t": "\t"}.get(value, SEPARATORS.get(value.lower(), value))


def _header(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    table = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False,
             "auto": "auto"}
    if text not in table:
        raise FormatSpecError(f"header must be yes, no or auto, got {value!r}")
    return table[text]


def _int(key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    raise FormatSpecError(f"{key} must be an integer, got {value!r}")


# --- the resolved layout -----------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """A resolved format: 0-based column indices per role, ready for `_parse_rows`."""

    n_columns: int
    names: tuple[str | None, ...]
    sep: str
    sep_word: str
    label: int
    numbers: tuple[int, ...]           # dense columns parsed as numbers (raw / log)
    log: tuple[bool, ...]              # per entry of numbers
    hours: tuple[int, ...]             # dense columns with the hour transform
    dense_slots: tuple[tuple[str, int], ...]   # ("num", j) / ("hour", j) in feature order
    n_dense: int
    hex_cols: tuple[int, ...]
    hex_slots: tuple[int, ...]
    str_cols: tuple[int, ...]
    str_slots: tuple[int, ...]
    table_names: tuple[str, ...]


@functools.lru_cache(maxsize=64)
def _layout(fmt: ClickLogFormat, strict: bool = True, inferred_from: str | None = None
            ) -> _Layout:
    n = fmt.n_columns
    assert n is not None
    names = fmt.names or (None,) * n
    count = (f"the first line of {inferred_from} has {n} column{'s' * (n != 1)}"
             if inferred_from else f"the file has {n} column{'s' * (n != 1)}")

    def index(ref: int | str) -> int:
        if isinstance(ref, int):
            if ref > n:
                raise FormatSpecError(f"column {ref} is outside 1..{n} ({count})")
            return ref - 1
        if fmt.names and ref in fmt.names:
            return fmt.names.index(ref)
        if fmt.names:
            shown = ", ".join(fmt.names[:8]) + (", ..." if n > 8 else "")
            raise FormatSpecError(f"unknown column name {ref!r} (names: {shown})")
        raise FormatSpecError(f"unknown column name {ref!r}: the columns have no names (give "
                              f"names=, or header=yes with a header line, or use 1-based "
                              f"column numbers)")

    def columns(spec: ColumnSpec) -> list[int]:
        first = index(spec.column)
        if spec.last is None:
            return [first]
        last = index(spec.last)
        if last < first:
            raise FormatSpecError(f"range {dataclasses.replace(spec, transform='')} runs "
                                  f"backwards (column {first + 1} to {last + 1})")
        return list(range(first, last + 1))

    def describe(c: int) -> str:
        return f"{c + 1} ({names[c]})" if names[c] else str(c + 1)

    role: dict[int, str] = {}

    def assign(c: int, what: str) -> None:
        if c in role:
            raise FormatSpecError(f"column {describe(c)} is used twice: as {role[c]} and as "
                                  f"{what}")
        role[c] = what

    label = index(fmt.label)
    assign(label, "label")
    numbers, log, hours, slots = [], [], [], []
    n_dense = 0
    for spec in fmt.dense:
        for c in columns(spec):
            assign(c, "dense")
            if spec.transform == "hour":
                slots.append(("hour", len(hours)))
                hours.append(c)
                n_dense += 2
            else:
                slots.append(("num", len(numbers)))
                numbers.append(c)
                log.append(spec.transform == "log")
                n_dense += 1
    hex_cols, hex_slots, str_cols, str_slots, table_names = [], [], [], [], []
    for spec in fmt.categorical:
        for c in columns(spec):
            assign(c, "cat")
            target = (hex_cols, hex_slots) if spec.transform == "hex32" else (str_cols,
                                                                                str_slots)
            target[0].append(c)
            target[1].append(len(table_names))
            table_names.append(names[c] or f"column{c + 1}")
    rest = False
    for spec in fmt.ignore:
        if spec.column == "rest" and spec.last is None and "rest" not in (fmt.names or ()):
            rest = True
            continue
        for c in columns(spec):
            assign(c, "ignore")
    unused = [c for c in range(n) if c not in role]
    if unused and strict and not rest:
        shown = ", ".join(describe(c) for c in unused[:6]) + (", ..." if len(unused) > 6
                                                              else "")
        raise FormatSpecError(f"column{'s' * (len(unused) > 1)} {shown} "
                              f"{'are' if len(unused) > 1 else 'is'} not used: add "
                              f"{'them' if len(unused) > 1 else 'it'} to dense=, cat= or "
                              f"ignore= (ignore=rest ignores every column not used otherwise)")
    word = {v: k for k, v in SEPARATORS.items()}.get(fmt.separator, repr(fmt.separator))
    return _Layout(n, tuple(names), fmt.separator, word, label, tuple(numbers), tuple(log),
                   tuple(hours), tuple(slots), n_dense, tuple(hex_cols), tuple(hex_slots),
                   tuple(str_cols), tuple(str_slots), tuple(table_names))


def _first_fields(file: Path, sep: str) -> list[str] | None:
    """The fields of the file's first line, or None for an empty file."""
    with open(file, "rb") as f:
        first = f.readline()
    if not first:
        return None
    return _text.decode_lines(first, file, 1)[0].split(sep)


def _first_is_header(fmt: ClickLogFormat, first: list[str]) -> bool:
    """Whether a file whose first line has fields ``first`` starts with a header."""
    if fmt.header != "auto":
        return bool(fmt.header)
    label = fmt.label
    if isinstance(label, str) and not (fmt.names and label in fmt.names):
        return label in first
    i = label - 1 if isinstance(label, int) else fmt.names.index(label)
    return i < len(first) and first[i] not in ("0", "1")


def _check_header(file: Path, fields: list[str], lay: _Layout, expected: Sequence[str]) -> None:
    """A header line must repeat the names."""
    for i, (got, want) in enumerate(zip(fields, expected)):
        if got != want:
            raise DataFormatError(file, 1, i + 1, want,
                                  f"header has {got!r} where {want!r} is expected")
    if len(fields) != len(expected):
        column = min(len(fields), len(expected)) + 1
        name = expected[column - 1] if column <= len(expected) else "unexpected"
        raise DataFormatError(file, 1, column, name,
                              f"header has {len(fields)} {lay.sep_word}-separated columns, "
                              f"expected {len(expected)}")


def _parse_rows(file: Path, rows: list[list[str]], lay: _Layout, first_line: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels, dense, keys, empty) of split rows whose first is line ``first_line``.

    Checks go column group by column group (count, label, numbers, hours, hex), each
    reporting its first failing line, like the Criteo and Avazu readers.
    """
    n = len(rows)
    _text.check_column_counts(file, rows, lay.names, first_line, lay.sep_word)
    _text.check_labels(file, [r[lay.label] for r in rows], lay.label + 1,
                       lay.names[lay.label], first_line)

    dense = np.zeros((n, lay.n_dense), dtype=np.float64)
    if lay.numbers:
        values = _numbers(file, rows, lay, first_line)
        if any(lay.log):
            cols = [j for j, is_log in enumerate(lay.log) if is_log]
            values[:, cols] = np.log1p(np.maximum(values[:, cols], 0))
    hours = []
    for c in lay.hours:
        fields = [r[c] for r in rows]
        features = {h: hour_features(h) for h in set(fields)}  # few distinct hours
        for i, h in enumerate(fields):
            if features[h] is None:
                raise DataFormatError(file, first_line + i, c + 1, lay.names[c], hour_problem(h))
        hours.append(np.array([features[h] for h in fields], dtype=np.float64).reshape(n, 2))
    out = 0
    for kind, j in lay.dense_slots:
        if kind == "num":
            dense[:, out] = values[:, j]
            out += 1
        else:
            dense[:, out:out + 2] = hours[j]
            out += 2

    n_tables = len(lay.table_names)
    keys = np.zeros((n, n_tables), dtype=np.uint64)
    empty = np.zeros((n, n_tables), dtype=bool)
    if lay.hex_cols:
        fields = _fields(rows, lay.hex_cols)
        bad = find_bad_hex(fields)
        if bad is not None:
            row, j = divmod(bad, len(lay.hex_cols))
            c = lay.hex_cols[j]
            raise DataFormatError(file, first_line + row, c + 1, lay.names[c],
                                  hex_problem(fields[bad]))
        k, e = decode_hex32(fields)
        keys[:, lay.hex_slots] = k.reshape(n, len(lay.hex_cols))
        empty[:, lay.hex_slots] = e.reshape(n, len(lay.hex_cols))
    if lay.str_cols:
        fields = _fields(rows, lay.str_cols)
        codes = {v: string_hash64(v) for v in set(fields)}  # values repeat heavily
        keys[:, lay.str_slots] = np.array([codes[v] for v in fields],
                                          dtype=np.uint64).reshape(n, len(lay.str_cols))
    labels = np.array([r[lay.label] == "1" for r in rows], dtype=np.float32)
    return labels, dense.astype(np.float32), keys, empty


def _fields(rows: list[list[str]], cols: Sequence[int]) -> list[str]:
    """The fields of ``cols`` of every row, row-major."""
    if len(cols) == 1:
        c = cols[0]
        return [r[c] for r in rows]
    get = itemgetter(*cols)
    return [f for r in rows for f in get(r)]


def _numbers(file: Path, rows: list[list[str]], lay: _Layout, first_line: int) -> np.ndarray:
    """The numeric dense columns as float64 ``[n, len(numbers)]`` (empty -> 0)."""
    fields = _fields(rows, lay.numbers)
    width = len(lay.numbers)

    def fail(index: int, problem: str):
        row, j = divmod(index, width)
        c = lay.numbers[j]
        raise DataFormatError(file, first_line + row, c + 1, lay.names[c], problem)

    joined = "\n".join(fields)
    m = _BAD_NUMBER.search(joined)
    if m is not None:
        index = joined.count("\n", 0, m.start())
        fail(index, f"not a number: {fields[index]!r}")
    values = np.fromiter((float(f) if f else 0.0 for f in fields), dtype=np.float64,
                         count=len(fields))
    infinite = ~np.isfinite(values)
    if infinite.any():
        index = int(np.argmax(infinite))
        fail(index, f"number out of range: {fields[index]!r}")
    return values.reshape(len(rows), width)


# --- presets and readers -----------------------------------------------------------------

#: Criteo Kaggle / Terabyte TSV in the description language (what `read_criteo` reads with
#: ``log_dense=True``; dense values may also be decimals here).
CRITEO_FORMAT = ClickLogFormat(
    label="label", dense=(ColumnSpec("I1", "I13", "log"),),
    categorical=(ColumnSpec("C1", "C26", "hex32"),), separator="\t", header=False,
    names=CRITEO_COLUMNS)
#: Avazu CSV in the description language (what `read_avazu` reads; the header is recognised
#: by its ``click`` field instead of its ``id`` field).
AVAZU_FORMAT = ClickLogFormat(
    label="click", dense=(ColumnSpec("hour", transform="hour"),),
    categorical=(ColumnSpec("C1", "C21"),), ignore=(ColumnSpec("id"),), separator=",",
    header="auto", names=AVAZU_COLUMNS)
#: The presets by name (``--format criteo`` / ``avazu``).
PRESETS: dict[str, ClickLogFormat] = {"criteo": CRITEO_FORMAT, "avazu": AVAZU_FORMAT}


def as_format(fmt: ClickLogFormat | str | Path | Mapping[str, Any]) -> ClickLogFormat:
    """A `ClickLogFormat` from a format, a preset name (``criteo``, ``avazu``), a JSON file
    (a `Path`, or a string ending in ``.json``), a dict, or a compact description."""
    if isinstance(fmt, ClickLogFormat):
        return fmt
    if isinstance(fmt, Mapping):
        return ClickLogFormat.from_dict(fmt)
    if isinstance(fmt, Path) or (isinstance(fmt, str) and fmt.strip().endswith(".json")):
        return ClickLogFormat.load(Path(str(fmt).strip()))
    if isinstance(fmt, str) and fmt.strip().lower() in PRESETS:
        return PRESETS[fmt.strip().lower()]
    if isinstance(fmt, str):
        return ClickLogFormat.parse(fmt)
    raise TypeError(f"a format must be a ClickLogFormat, a preset name, a description or a "
                    f"JSON path, got {type(fmt).__name__}")


def parse_click_log(
    path: str | Path,
    fmt: ClickLogFormat | str,
    *,
    split: str | None = None,
    max_rows: int | None = None,
) -> RawClickLog:
    """Read a delimited click log up to the categorical keys (see `read_click_log`)."""
    fmt = as_format(fmt)
    if max_rows is not None and max_rows < 0:
        raise ValueError(f"max_rows must be >= 0, got {max_rows}")
    file = _text.resolve_file(path, split, SUFFIXES)
    first = _first_fields(file, fmt.separator)
    fmt, lay = fmt._resolve(file, first)
    has_header = first is not None and _first_is_header(fmt, first)
    limit = None if max_rows is None else max_rows + has_header
    lines = _text.read_lines(file, limit)
    if has_header:
        _check_header(file, lines[0].split(lay.sep), lay, fmt.names)
        lines = lines[1:]
    rows = [line.split(lay.sep) for line in lines]
    labels, dense, keys, empty = _parse_rows(file, rows, lay, 1 + has_header)
    return RawClickLog(labels, dense, keys, empty, lay.table_names,
                       name=f"{file.parent.name}/{file.stem}")


def read_click_log(
    path: str | Path,
    fmt: ClickLogFormat | str,
    *,
    split: str | None = None,
    table_sizes: int | Sequence[int],
    mapping: str | Sequence[str] = "modulo",
    max_rows: int | None = None,
) -> ClickDataset:
    """Read a delimited click log described by ``fmt`` into a `ClickDataset`.

    Args:
        path: a file, or a folder holding ``<split>.csv`` / ``.tsv`` / ``.txt``.
        fmt: a `ClickLogFormat`, a preset name, a compact description or a JSON path.
        split: ``"train"`` (default for a folder), ``"dev"`` or ``"test"``; folders only.
        table_sizes: rows per categorical column (in ``fmt`` order) or one int for all.
        mapping: ``"modulo"`` or ``"hash"`` (see `sw_driver.data.tables`), for all tables or
            one per table.
        max_rows: read only the first ``max_rows`` samples (a header does not count).

    Raises:
        DataFormatError: wrong column count, a header that differs from the names, a label
            not 0/1, a dense value that is not a number (or out of range), a bad ``hour`` or
            ``hex32`` field, bytes that are not UTF-8; with file, line, column and name.
        FormatSpecError: a description that does not fit the file (unknown name, a column
            outside the file, a column used twice or not at all).
    """
    fmt = as_format(fmt)
    if fmt.n_columns is not None:  # check sizes and mapping before reading
        n_tables = len(fmt.table_names)
        table_sizes_for(table_sizes, n_tables)
        mappings_for(mapping, n_tables)
    raw = parse_click_log(path, fmt, split=split, max_rows=max_rows)
    return raw.to_dataset(table_sizes, mapping)

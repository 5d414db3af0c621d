"""Errors raised by the data readers."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A malformed row in a click-log file.

    The message names the file, the 1-based line number, the 1-based column number with the
    column's name, and what was wrong, e.g.
    ``data/train.tsv: line 7, column 3 (I2): not an integer: '1.5'``.
    The same facts are kept as attributes for programs.
    """

    def __init__(
        self,
        path: str | Path,
        line: int,
        column: int | None,
        column_name: str | None,
        problem: str,
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.column = column
        self.column_name = column_name
        self.problem = problem
        where = f"{self.path}: line {line}"
        if column is not None:
            where += f", column {column}"
            if column_name:
                where += f" ({column_name})"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):
        # Rebuild from the facts, not from the message (pickling, e.g. out of a DataLoader
        # worker process).
        return (type(self), (self.path, self.line, self.column, self.column_name, self.problem))

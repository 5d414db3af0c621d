"""Train the DLRM example with Hotline, the hybrid CPU-GPU baseline or GPU-only storage.

``python -m sw_driver.train --help``; docs/training.md describes the modes and the output.
Prints one parseable line per epoch and mode::

    epoch=1 mode=hotline auc=0.6712 logloss=0.5031 samples_per_s=4321.0 train_loss=0.5104 seconds=1.67

(hotline: then ``learning mode=hotline epoch=1 learn_batches=4 of=15 trained=hybrid ...``, the
mini-batches trained the hybrid way while the EAL learned), then the driver counters (hotline)
and the per-phase timings, and writes to ``--out``:
``metrics.json``, ``timeline_hotline.png`` (one working set's phases as horizontal bars) and
``throughput.png`` (samples/s per mode; the comparison of all three with ``--mode all``).

``--checkpoint PATH`` saves a checkpoint after every epoch, ``--resume PATH`` continues from
one; ``--relearn-every K`` re-learns popularity every K working sets (hotline);
``--world-size N`` trains data-parallel in N local processes (torch.distributed), or launch
with torchrun (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``).

``--mode all`` first warms each mode up on a few mini-batches in a throwaway trainer
(untimed), then times the three in a rotation chosen by ``--seed`` (or ``--order``) and prints
``speedup hotline/hybrid=... hotline/gpu-only=... device=...`` (on the CPU also a line saying
that the figures say nothing about a GPU).

``--format`` describes any delimited click log column by column (docs/data.md),
``--table-sizes`` sets the rows per table (one for all, one per table, or ``auto``: the
distinct values of the training file), ``--mapping`` modulo or hash per table. After reading,
a table that is constant or whose distinct values exceed twice its rows gets one
``warning: ...`` line on stderr.

A user error (a bad option, unusable data, a table that does not fit in memory) is refused
with one line on stderr, ``python -m sw_driver.train: error: <message>``, and exit status 2;
``--debug`` shows the Python traceback instead.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import pickle
import re
import sys
import time
from pathlib import Path

import torch

from sw_driver.data import (AVAZU_DEFAULT_TABLE_SIZE, CRITEO_KAGGLE_TABLE_SIZES, MAPPINGS,
                            ClickDataset, DataFormatError, FormatSpecError,
                            SyntheticClickGenerator, as_format, parse_avazu, parse_click_log,
                            parse_criteo, table_stats, table_warnings)
from sw_driver.data.avazu import CATEGORICAL as AVAZU_TABLE_NAMES
from sw_driver.data.delimited import PRESETS, SUFFIXES
from sw_driver.training import MODES, Trainer
from sw_driver.training.distributed import default_backend, free_port, init_from_env
from sw_driver.data.detect import describe_first_line, detect_layout
from sw_driver.training.modes import DEFAULT_POLICY, eal_config_for_budget, init_table
from sw_driver.training.resources import host_memory_bytes

__all__ = ["main", "load_data", "parse_args", "CliError", "Refused"]

PROG = "python -m sw_driver.train"
#: exit status of a refusal (argparse's usage-error status, used for every user error)
EXIT_REFUSED = 2
#: share of a single data file held out for evaluation (its tail)
HELD_OUT = 0.1
#: ``--hot-budget`` when not given; lowered to the distinct rows the training data use
#: when they are fewer (one warning line)
DEFAULT_HOT_BUDGET = 16384

_CRITEO_TABLE_NAMES = tuple(f"C{i}" for i in range(1, 27))
#: Suffixes of a folder's split files per data kind.
_SUFFIXES = {"criteo": (".tsv", ".txt"), "avazu": (".csv",), "generic": SUFFIXES}
_PHASE_ORDER = ("schedule", "popular", "gather", "h2d", "non_popular", "d2h", "write_back",
                "compute", "update")
_PHASE_COLORS = {"schedule": "#7f7f7f", "popular": "#2ca02c", "gather": "#1f77b4",
                 "h2d": "#17becf", "non_popular": "#d62728", "d2h": "#9467bd",
                 "write_back": "#ff7f0e", "compute": "#2ca02c", "update": "#ff7f0e"}


class CliError(Exception):
    """A user error (an option, the data, memory): refused with one line naming the option or
    the file, ``python -m sw_driver.train: error: <message>`` (see :func:`main`)."""


class Refused(SystemExit):
    """How a refusal ends the program: exit status 2 (:data:`EXIT_REFUSED`), after its one
    line was printed on stderr; ``str()`` is that line."""

    def __init__(self, line):
        super().__init__(EXIT_REFUSED)
        self.line = line

    def __str__(self):
        return self.line


def _refuse(message):
    """Print ``python -m sw_driver.train: error: <message>`` (one line) on stderr and exit 2."""
    line = f"{PROG}: error: " + re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip()
    print(line, file=sys.stderr, flush=True)
    raise Refused(line)


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (unknown option, not a number, bad choice) as one line too,
    without the usage block (``--help`` shows it)."""

    def error(self, message):
        _refuse(message)


def _parser():
    p = _Parser(
        prog=PROG,
        description="Train DLRM with Hotline / hybrid CPU-GPU / GPU-only embedding storage.",
        epilog="A user error is refused with one line on stderr "
               f"('{PROG}: error: ...') and exit status {EXIT_REFUSED}; --debug shows the "
               "traceback instead.")
    p.add_argument("--data", default=None,
                   help="Criteo .tsv/.txt or Avazu .csv file, any delimited click log with "
                        "--format, or a folder holding train/dev splits (default: synthetic "
                        "Criteo-shaped data)")
    p.add_argument("--format", default=None, metavar="SPEC",
                   help="the file's layout: criteo, avazu, a column description such as "
                        "'sep=tab label=1 dense=2-14:log cat=15-40:hex32' (docs/data.md), or "
                        "a .json file holding one (default: recognised from the first line: "
                        "Criteo or Avazu; anything else needs --format)")
    p.add_argument("--table-sizes", default=None, metavar="SIZES",
                   help="rows per table: N for every table, N1,N2,... one per table, or auto "
                        "(each table as many rows as it has distinct values in the training "
                        "file, at most --table-size-cap). Default: the data set's (Criteo "
                        "Kaggle's sizes, 2**20 per Avazu field, --table-size-cap per table "
                        "for a --format description) capped at --table-size-cap")
    p.add_argument("--mapping", default=None, metavar="M",
                   help="categorical value -> row: modulo or hash for every table, or one per "
                        "table, comma-separated (default modulo)")
    p.add_argument("--mode", default="hotline", choices=(*MODES, "all"),
                   help="embedding storage; 'all' runs the three and compares them")
    p.add_argument("--backend", default="cpu", choices=("cpu", "cuda"),
                   help="training device")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128, help="mini-batch size N")
    p.add_argument("--working-set", type=int, default=4, help="mini-batches per working set W")
    p.add_argument("--hot-budget", type=int, default=None,
                   help="hot-table rows; the EAL gets entries = next power of two >= budget "
                        f"(default {DEFAULT_HOT_BUDGET}, or the distinct rows the training "
                        "data use when fewer, with a warning)")
    p.add_argument("--policy", default=DEFAULT_POLICY, choices=("srrip", "lfu"),
                   help="EAL replacement policy (docs/spec.md section 4): lfu (default), "
                        "frequency counts with sketch admission, which finds more of the "
                        "popular inputs (docs/benchmarks.md), or srrip, the paper's")
    p.add_argument("--sample-rate", type=float, default=0.25,
                   help="share of the first epoch's mini-batches the EAL learns from")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--embedding-optimizer", default="sgd", choices=("sgd", "rowwise_adagrad"),
                   help="optimizer of the embedding rows: sgd (row -= lr * grad) or "
                        "rowwise_adagrad (FBGEMM's, TorchRec's default; one accumulator per "
                        "row travels with it)")
    p.add_argument("--embedding-lr", type=float, default=None,
                   help="learning rate of the embedding optimizer (default: --lr)")
    p.add_argument("--dim", type=int, default=16, help="embedding dimension")
    p.add_argument("--bottom", default="512,256", help="bottom MLP hidden sizes")
    p.add_argument("--top", default="512,256", help="top MLP hidden sizes")
    p.add_argument("--max-rows", type=int, default=None,
                   help="read at most this many training rows")
    p.add_argument("--table-size-cap", type=int, default=2**16,
                   help="rows per table at most for the default and auto sizes (explicit "
                        "--table-sizes above it are refused)")
    p.add_argument("--synthetic-samples", type=int, default=8000,
                   help="samples of synthetic data (without --data), 10%% held out")
    p.add_argument("--gather-threads", type=int, default=2,
                   help="CPU threads of the driver's cold-row gather / write-back")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (default: 1 with --backend cpu, torch's "
                        "choice with cuda). On a busy 2-core machine 2 threads made each "
                        "step ~50x slower (OpenMP barriers), hence 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="train_out", help="folder for metrics.json and plots")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="save a checkpoint (MLPs, optimizer, complete table, EAL state, "
                        "position) to PATH after every epoch")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="continue from a checkpoint; --epochs counts the epochs in total")
    p.add_argument("--relearn-every", type=int, default=0, metavar="K",
                   help="hotline (and the hotline run of --mode all): re-learn popularity "
                        "every K working sets (0: learn once)")
    p.add_argument("--relearn-batches", type=int, default=None, metavar="M",
                   help="with --relearn-every: mini-batches each re-learn learns from "
                        "(default ceil(sample_rate * K * working_set))")
    p.add_argument("--world-size", type=int, default=None,
                   help="data-parallel processes (torch.distributed) started here; under "
                        "torchrun the WORLD_SIZE variable is used instead")
    p.add_argument("--dist-backend", default=None, choices=("gloo", "nccl"),
                   help="torch.distributed backend (default: nccl with cuda, gloo with cpu)")
    p.add_argument("--order", default=None, metavar="MODES",
                   help="--mode all: the timed runs' order, e.g. hybrid,hotline,gpu-only "
                        "(default: a rotation of gpu-only,hybrid,hotline starting at mode "
                        "number seed mod 3)")
    p.add_argument("--warmup-batches", type=int, default=None, metavar="B",
                   help="--mode all: untimed warm-up mini-batches per mode in a throwaway "
                        "trainer (default 2 working sets, 2 * --working-set; 0: none)")
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback of a refusal instead of the one-line error")
    return p


def parse_args(argv=None):
    """The checked options. An unusable one is refused (one line on stderr, exit status 2;
    with ``--debug`` the :class:`CliError` is raised instead)."""
    a = _parser().parse_args(argv)
    try:
        _check_args(a)
    except CliError as e:
        if a.debug:
            raise
        _refuse(e)
    return a


def _check_args(a):
    """Checks that need the options only (the data and memory checks come later)."""
    for name in ("epochs", "batch_size", "working_set", "hot_budget", "dim",
                 "table_size_cap", "gather_threads", "synthetic_samples"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            raise CliError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.max_rows is not None and a.max_rows < 1:
        raise CliError(f"--max-rows must be >= 1 (leave it out to read every row), "
                       f"got {a.max_rows}")
    if not math.isfinite(a.lr) or a.lr <= 0:
        raise CliError(f"--lr must be a finite number > 0, got {a.lr}")
    if a.embedding_lr is not None and (not math.isfinite(a.embedding_lr)
                                       or a.embedding_lr <= 0):
        raise CliError(f"--embedding-lr must be a finite number > 0, got {a.embedding_lr}")
    if not 0 < a.sample_rate <= 1:
        raise CliError(f"--sample-rate must be in (0, 1], got {a.sample_rate}")
    if a.threads is not None and a.threads < 1:
        raise CliError(f"--threads must be >= 1, got {a.threads}")
    _layers(a.bottom, "--bottom")
    _layers(a.top, "--top")
    auto = a.table_sizes is not None and a.table_sizes.strip().lower() == "auto"
    if a.table_sizes is not None and not auto:
        _int_items(a.table_sizes, "--table-sizes", "table sizes such as 1000 or 1460,583,...")
    if a.mapping is not None:
        _mapping_items(a.mapping)
    if a.data is None:
        if a.format is not None:
            raise CliError("--format is for --data: the synthetic data has no file to describe")
        if a.mapping is not None:
            raise CliError("--mapping is for --data: the synthetic data has no raw values to "
                           "map")
        if auto:
            raise CliError("--table-sizes auto needs --data: it counts the distinct values of "
                           "the training file")
    if a.relearn_every < 0:
        raise CliError(f"--relearn-every must be >= 0, got {a.relearn_every}")
    if a.relearn_every and a.mode not in ("hotline", "all"):
        raise CliError(f"--relearn-every is for --mode hotline (with --mode all it applies to "
                       f"the hotline run), not --mode {a.mode}")
    if a.relearn_batches is not None:
        if a.relearn_batches < 1:
            raise CliError(f"--relearn-batches must be >= 1, got {a.relearn_batches}")
        if not a.relearn_every:
            raise CliError("--relearn-batches needs --relearn-every K (K >= 1): without it "
                           "popularity is learned once")
    if a.mode != "all":
        for opt, v in (("--order", a.order), ("--warmup-batches", a.warmup_batches)):
            if v is not None:
                raise CliError(f"{opt} is for --mode all, not --mode {a.mode}")
    else:
        if a.order is not None:
            _parse_order(a.order)
        if a.warmup_batches is not None and a.warmup_batches < 0:
            raise CliError(f"--warmup-batches must be >= 0, got {a.warmup_batches}")
    if a.world_size is not None and a.world_size < 1:
        raise CliError(f"--world-size must be >= 1, got {a.world_size}")
    if a.mode == "all" and (a.checkpoint or a.resume):
        raise CliError("--checkpoint / --resume need one --mode, not all")
    if a.resume and not Path(a.resume).is_file():
        raise CliError(f"--resume {a.resume}: no such file")
    if a.backend == "cuda" and not torch.cuda.is_available():
        raise CliError("--backend cuda: no CUDA device is available")


def _layers(text, option):
    """Hidden-layer sizes of ``--bottom`` / ``--top``: comma-separated integers >= 1."""
    return _int_items(text, option, "hidden-layer sizes such as 512,256")


def _int_items(text, option, example):
    """Comma-separated integers >= 1 (``example``: what to give, for the empty case)."""
    if not text.strip():
        raise CliError(f"{option} is empty: give {example}")
    sizes = []
    for i, item in enumerate(text.split(","), 1):
        s = item.strip()
        if not s:
            raise CliError(f"{option} {text!r}: item {i} is empty")
        if not re.fullmatch(r"[+-]?[0-9]+", s):
            raise CliError(f"{option} {text!r}: item {i} ({s!r}) is not an integer")
        if int(s) < 1:
            raise CliError(f"{option} {text!r}: item {i} ({int(s)}) must be >= 1")
        sizes.append(int(s))
    return tuple(sizes)


def _mapping_items(text):
    """The items of ``--mapping``, each ``modulo`` or ``hash``."""
    items = [m.strip() for m in text.split(",")]
    for i, m in enumerate(items, 1):
        if m not in MAPPINGS:
            raise CliError(f"--mapping {text!r}: item {i} ({m!r}) must be modulo or hash")
    return items


def _parse_order(text):
    order = tuple(m.strip() for m in text.split(","))
    if sorted(order) != sorted(MODES):
        raise CliError(f"--order {text!r}: name each of {', '.join(MODES)} once, "
                       f"comma-separated")
    return order


def _cat(parts, name):
    return ClickDataset(torch.cat([d.labels for d in parts]), torch.cat([d.dense for d in parts]),
                        torch.cat([d.sparse for d in parts]), parts[0].table_sizes, name)


def _split_tail(ds, share=HELD_OUT):
    n_eval = _n_held_out(len(ds), share)
    cut = len(ds) - n_eval
    return ds.subset(0, cut), ds.subset(cut, len(ds)), f"held-out tail ({n_eval} samples)"


def _n_held_out(n, share=HELD_OUT):
    return max(1, int(n * share))


def _rows_needed(batch_size, share=HELD_OUT):
    """The fewest rows whose training part (after the held-out tail) holds one mini-batch."""
    n = batch_size + 1
    while n - _n_held_out(n, share) < batch_size:
        n += 1
    return n


class _Source:
    """Where the data come from, found without reading them (a generic log's first line is
    read to resolve ``--format``): ``kind`` (``criteo``, ``avazu``, ``generic``,
    ``synthetic``), ``path``, the folder's file ``names``, ``table_names``, the
    ``table_sizes`` (None with ``auto`` until the training file is read), the per-table
    ``mappings``, ``size_rule`` (the options that set the sizes, for messages) and, after
    the training file was read, its per-table ``stats``."""

    def __init__(self, data, cap, fmt=None, sizes=None, mapping=None):
        self.path = None if data is None else Path(data)
        self.names = set()
        self.cap, self.format, self.given_format, self.format_text = cap, None, None, fmt
        self.stats = []
        preset = None
        if fmt is not None and data is not None:
            preset = fmt.strip().lower() if fmt.strip().lower() in PRESETS else None
            if preset is None:
                self.format = self.given_format = _load_format(fmt)
        if data is None:
            self.kind = "synthetic"
        elif self.path.is_dir():
            self.names = {f.name for f in self.path.iterdir()}
            if preset or self.format:
                self.kind = preset or "generic"
                wanted = [f"train{x}" for x in _SUFFIXES[self.kind]]
                if not self.names & set(wanted):
                    raise CliError(f"--data {self.path}: the folder has no "
                                   f"{' / '.join(wanted)} (--format {fmt})")
            else:
                self.kind = ("criteo" if self.names & {"train.tsv", "train.txt"} else
                             "avazu" if "train.csv" in self.names else None)
            if self.kind is None:
                raise CliError(f"--data {self.path}: the folder has no train.tsv / train.txt "
                               f"(Criteo) or train.csv (Avazu)")
        elif not self.path.exists():
            raise CliError(f"--data {self.path}: no such file")
        else:
            self.kind = preset or ("generic" if self.format else self._detect(self.path))
        if self.path is not None and self.path.is_dir() and not (preset or self.format):
            self._detect(self.file("train"), self.kind)
        if self.kind == "generic":
            self._resolve_format()
        else:
            self.table_names = AVAZU_TABLE_NAMES if self.kind == "avazu" else _CRITEO_TABLE_NAMES
        self.table_sizes, self.size_rule = self._sizes(sizes, cap)
        self.mappings = self._mappings(mapping)

    def _detect(self, f, expected=None):
        """The layout of file ``f`` without ``--format`` (:func:`detect_layout`); an empty
        file keeps the name's guess (the reader then says it has no data rows). Refuses a
        file of no known layout, or (``expected``: a folder's file names chose it) of
        another layout."""
        try:
            kind = detect_layout(f)
        except OSError as e:
            raise CliError(f"--data {f}: {e.strerror or e}") from e
        if kind == "empty":
            return expected or ("avazu" if f.suffix == ".csv" else "criteo")
        if kind is None or (expected is not None and kind != expected):
            seen = (f"it looks like {kind}, not {expected} as the file name says" if kind
                    else f"first line: {describe_first_line(f)}")
            raise CliError(f"--data {f}: not a Criteo (40 tab-separated fields) or Avazu (24 "
                           f"comma-separated fields) log ({seen}): give --format (criteo, "
                           f"avazu or a column description, docs/data.md)")
        return kind

    def _resolve_format(self):
        """Check ``--format`` against the training file's first line (names from a header)."""
        f = self.file("train" if self.path.is_dir() else None)
        try:
            empty = f.stat().st_size == 0
        except OSError as e:
            raise CliError(f"--data {f}: {e.strerror or e}") from e
        if empty:
            raise CliError(f"--data {f}: the file has no data rows")
        try:
            self.format = self.format.resolved(f)
        except FormatSpecError as e:
            raise CliError(f"--format {self.format_text!r}: {e}") from e
        except OSError as e:
            raise CliError(f"--data {f}: {e.strerror or e}") from e
        self.table_names = self.format.table_names

    def _sizes(self, text, cap):
        """(table sizes or None for auto, the rule for messages) from ``--table-sizes``."""
        n = len(self.table_names)
        if text is None:
            # The data set's sizes: Criteo Kaggle's, Avazu's one size, a generic log none
            # (every table gets the cap); capped, as before --table-sizes existed.
            preset = {"avazu": (AVAZU_DEFAULT_TABLE_SIZE,) * n, "generic": (cap,) * n}.get(
                self.kind, CRITEO_KAGGLE_TABLE_SIZES)
            return tuple(min(s, cap) for s in preset), f"--table-size-cap {cap}"
        if text.strip().lower() == "auto":
            return None, f"--table-sizes auto, --table-size-cap {cap}"
        sizes = _int_items(text, "--table-sizes", "table sizes such as 1000 or 1460,583,...")
        if len(sizes) == 1:
            sizes = sizes * n
        elif len(sizes) != n:
            raise CliError(f"--table-sizes {text!r}: {len(sizes)} sizes for {n} tables: give "
                           f"one size for every table, one per table, or auto")
        for t, size in enumerate(sizes):
            if size > cap:
                raise CliError(f"--table-sizes {text!r}: table {t} ({self.table_names[t]}) "
                               f"has {size:,} rows, more than --table-size-cap {cap}: raise "
                               f"--table-size-cap")
        return tuple(sizes), f"--table-sizes {text}"

    def _mappings(self, text):
        n = len(self.table_names)
        if text is None:
            return ("modulo",) * n
        items = _mapping_items(text)
        if len(items) == 1:
            return tuple(items) * n
        if len(items) != n:
            raise CliError(f"--mapping {text!r}: {len(items)} mappings for {n} tables: give "
                           f"one for every table or one per table")
        return tuple(items)

    def file(self, split=None):
        """The file of ``split`` (a folder's ``train`` by default), for messages."""
        if not self.path.is_dir():
            return self.path
        suffixes = _SUFFIXES[self.kind]
        for suffix in suffixes:
            f = self.path / f"{split or 'train'}{suffix}"
            if f.is_file():
                return f
        return self.path / f"{split or 'train'}{suffixes[0]}"

    def describe(self):
        """The data kind for the ``data:`` line."""
        return "click log" if self.kind == "generic" else self.kind

    def read(self, split=None, rows=None):
        """Read ``split`` and map it to rows; the training split (read first) fixes ``auto``
        sizes and gives the per-table ``stats``."""
        try:
            if self.kind == "criteo":
                raw = parse_criteo(self.path, split=split, max_rows=rows)
            elif self.kind == "avazu":
                raw = parse_avazu(self.path, split=split, max_rows=rows)
            else:
                raw = parse_click_log(self.path, self.format, split=split, max_rows=rows)
        except OSError as e:     # unreadable, or a folder where the file should be
            raise CliError(f"--data {self.file(split)}: {e.strerror or e}") from e
        except FormatSpecError as e:
            raise CliError(f"--format {self.format_text!r}: {self.file(split)}: {e}") from e
        if len(raw) == 0:
            raise CliError(f"--data {self.file(split)}: the file has no data rows")
        if self.table_sizes is None:
            self.table_sizes = raw.auto_table_sizes(self.cap)
        ds = raw.to_dataset(self.table_sizes, self.mappings)
        if split in (None, "train"):
            self.stats = table_stats(ds, raw, self.table_names)
        return ds


def _load_format(text):
    """``--format``'s description or JSON file as a ``ClickLogFormat``."""
    try:
        return as_format(text)
    except FileNotFoundError as e:
        raise CliError(f"--format {text}: no such file") from e
    except OSError as e:
        raise CliError(f"--format {text}: {e.strerror or e}") from e
    except FormatSpecError as e:
        msg = str(e)    # a JSON file's own message starts with its path
        raise CliError(f"--format {msg}" if msg.startswith(f"{text.strip()}: ")
                       else f"--format {text!r}: {msg}") from e


def _check_rows(n, batch_size, what, held_out, max_rows=None):
    """Refuse data too small to train one mini-batch (``held_out``: the training rows lose a
    held-out tail). ``what``: ``--data FILE`` or ``--synthetic-samples N``; ``max_rows``:
    given when ``--max-rows`` cut the file short."""
    if n < batch_size:
        cut = f", read with --max-rows {max_rows}" if max_rows else ""
        raise CliError(f"--batch-size {batch_size} is larger than the data: {n} rows "
                       f"({what}{cut})")
    if held_out and n - _n_held_out(n) < batch_size:
        cut = f" (read with --max-rows {max_rows})" if max_rows else ""
        raise CliError(f"{what}: {n} rows{cut} are too few for one mini-batch of "
                       f"{batch_size} (--batch-size) plus the held-out {HELD_OUT:.0%} "
                       f"({_n_held_out(n)} rows): at least {_rows_needed(batch_size)} "
                       f"are needed")


def load_data(data, cap, max_rows=None, synthetic_samples=8000, seed=0, batch_size=None):
    """``(train, eval, description)``. ``data``: a Criteo (.tsv/.txt) or Avazu (.csv) file, a
    folder with ``train``/``dev`` files, ``None`` for synthetic Criteo-shaped data, or a
    ``_Source`` (which also carries ``--format``, ``--table-sizes`` and ``--mapping``). By
    default table sizes are the data set's, capped at ``cap`` rows (values modulo the size).
    The eval split is ``dev`` (+ ``test``) when the folder has them, else the last 10 % of the
    training rows. The source's ``stats`` then describe the training file's tables.

    Raises :class:`CliError` for a missing path, a folder without data, an empty file and,
    given ``batch_size``, data too small for one mini-batch (plus the held-out tail), and
    :class:`~sw_driver.data.DataFormatError` (file, line, column) for a malformed row."""
    src = data if isinstance(data, _Source) else _Source(data, cap)
    if src.kind == "synthetic":
        if batch_size is not None:
            _check_rows(synthetic_samples, batch_size, f"--synthetic-samples "
                        f"{synthetic_samples}", True, "")
        gen = SyntheticClickGenerator(src.table_sizes, p_hot=0.75, head_rows=64, seed=seed)
        ds = gen.batch(synthetic_samples)
        train, ev, what = _split_tail(ds)
        return train, ev, f"synthetic Criteo-shaped data ({synthetic_samples} samples), {what}"
    path, kind = src.path, src.describe()
    fmt = f"; format: {src.given_format}" if src.kind == "generic" else ""

    def check(ds, held_out):
        if batch_size is not None:
            what = f"--data {src.file('train' if path.is_dir() else None)}"
            _check_rows(len(ds), batch_size, what, held_out,
                        max_rows if max_rows == len(ds) else None)

    if path.is_dir():
        train = src.read("train", max_rows)
        evals = [src.read(s) for s in ("dev", "test")
                 if any(n.startswith(s + ".") for n in src.names)]
        if evals:
            check(train, False)
            ev = evals[0] if len(evals) == 1 else _cat(evals, f"{path.name}/dev+test")
            return train, ev, f"{kind} {path} ({len(train)} train, {len(ev)} dev+test){fmt}"
        check(train, True)
        train, ev, what = _split_tail(train)
        return train, ev, f"{kind} {path}, {what}{fmt}"
    ds = src.read(None, max_rows)
    check(ds, True)
    train, ev, what = _split_tail(ds)
    return train, ev, f"{kind} {path}, {what}{fmt}"


def _size(n_bytes):
    for unit, k in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= k:
            return f"{n_bytes / k:.1f} {unit}"
    return f"{n_bytes} B"


def _host_available():
    """Bytes of host memory available for new allocations (``MemAvailable``), or ``None``
    where that is unknown (then nothing is refused)."""
    return host_memory_bytes("MemAvailable")


def _device_free(device):
    """Free bytes on a CUDA ``device`` (``torch.cuda.mem_get_info``)."""
    return torch.cuda.mem_get_info(torch.device(device))[0]


def _check_resources(a, sizes, modes, device, rule=None):
    """Before anything is allocated: the hot budget against the tables, and the tables
    against free memory. Host table: ``sum(sizes) * dim * 4`` bytes in host memory (every
    mode); hot table (hotline): ``entries * dim * 4`` bytes on the training device, entries =
    the next power of two >= the budget (``eal_config_for_budget``); gpu-only: a copy of the
    whole table on the training device. With --mode all the modes run one after another, so
    each must fit on its own. On the CPU backend the device is host memory. ``rule``: the
    options that set the sizes, for the messages (default ``--table-size-cap N``)."""
    rule = rule or f"--table-size-cap {a.table_size_cap}"
    # Row-wise Adagrad stores one accumulator float beside each row.
    extra = int(a.embedding_optimizer == "rowwise_adagrad")
    rows, row_bytes = sum(sizes), (a.dim + extra) * 4
    width = f"dim {a.dim}" if not extra else f"(dim {a.dim} + 1 accumulator)"
    budget = _hot_budget(a, rows)
    if "hotline" in modes and budget > rows:
        raise CliError(f"--hot-budget {a.hot_budget} is larger than all tables together "
                       f"({rows:,} rows with {rule}): at most {rows:,}")
    host = rows * row_bytes
    host_avail = _host_available()
    cuda = torch.device(device).type == "cuda"
    if host_avail is not None and host > host_avail:
        raise CliError(f"{rule} / --dim {a.dim}: the host table "
                       f"({rows:,} rows x {width} x 4 B = {_size(host)}) does not fit in "
                       f"the available host memory ({_size(host_avail)})")
    if cuda:
        avail, where, beside = _device_free(device), f"free memory of {device}", 0
    else:
        avail, where, beside = host_avail, "available host memory", host
    if avail is None:
        return
    also = f" next to the host table ({_size(host)})" if beside else ""
    if "hotline" in modes:
        entries = eal_config_for_budget(budget, sizes, policy=a.policy).entries
        hot = entries * row_bytes
        if beside + hot > avail:
            raise CliError(f"--hot-budget {budget}: the hot table ({entries:,} entries "
                           f"x {width} x 4 B = {_size(hot)}) does not fit in the {where}"
                           f"{also} ({_size(avail)}); lower --hot-budget or --dim")
    if "gpu-only" in modes and beside + host > avail:
        raise CliError(f"--mode {a.mode}: gpu-only's copy of the table ({_size(host)}) does "
                       f"not fit in the {where}{also} ({_size(avail)}); lower "
                       f"--table-size-cap or --dim, or use --mode hybrid or hotline")


def _hot_budget(a, rows):
    """``--hot-budget``, or while it is not resolved yet (default) the default capped at the
    tables' ``rows`` (the most it can become)."""
    return a.hot_budget if a.hot_budget is not None else min(DEFAULT_HOT_BUDGET, rows)


def _resolve_hot_budget(a, train, warn=True):
    """Without ``--hot-budget``: the default, lowered to the distinct rows the training data
    use (all tables together) when they are fewer, with one ``warning:`` line on stderr;
    sets ``a.hot_budget``."""
    if a.hot_budget is not None:
        return a.hot_budget
    sparse = train.sparse
    distinct = sum(int(torch.unique(sparse[:, t]).numel()) for t in range(sparse.shape[1]))
    a.hot_budget = max(1, min(DEFAULT_HOT_BUDGET, distinct))
    if a.hot_budget < DEFAULT_HOT_BUDGET and warn and "hotline" in _modes(a):
        sys.stdout.flush()
        print(f"warning: the training data use {distinct:,} distinct rows (all tables "
              f"together), fewer than the default --hot-budget {DEFAULT_HOT_BUDGET:,}: the hot "
              f"budget is {a.hot_budget:,} (give --hot-budget to choose)", file=sys.stderr,
              flush=True)
    return a.hot_budget


def _precheck(a, device):
    """The data source (without reading it) and the memory checks; returns the source.
    With ``auto`` sizes the memory checks wait for the training file (see :func:`_main`)."""
    src = _Source(a.data, a.table_size_cap, a.format, a.table_sizes, a.mapping)
    if src.table_sizes is not None:
        _check_resources(a, src.table_sizes, _modes(a), device, src.size_rule)
    return src


def _modes(a):
    return MODES if a.mode == "all" else (a.mode,)


def _warn_tables(src):
    """One ``warning:`` line on stderr per constant or heavily shared table (training file);
    returns the statistics for metrics.json."""
    sys.stdout.flush()       # after the data line, also when both go to one file
    for line in table_warnings(src.stats):
        print(f"warning: {line}", file=sys.stderr, flush=True)
    return [dict(vars(s), constant=s.constant) for s in src.stats]


def _fmt_timings(t):
    lines = []
    for kind, v in t.items():
        phases = " ".join(f"{p}={v['phases'][p]['mean_ms']:.3f}" for p in _PHASE_ORDER
                          if p in v["phases"])
        lines.append(f"  {kind} (n={v['count']}, mean ms): {phases}")
    return lines


def plot_timeline(intervals, path, title):
    """Horizontal bars, one row per phase, of one working set's intervals (ms)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"schedule": "schedule (k+1)", "write_back": "write-back (k-1)",
              "non_popular": "non-popular", "h2d": "H2D copy", "d2h": "D2H copy",
              "gather": "cold gather"}
    phases = [p for p in _PHASE_ORDER if p in intervals]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(phases) + 1.5))
    for y, p in enumerate(phases):
        spans = [(s, max(e - s, 1e-3)) for s, e in intervals[p]]
        ax.broken_barh(spans, (y - 0.35, 0.7), color=_PHASE_COLORS.get(p, "#444444"))
    ax.set_yticks(range(len(phases)), [labels.get(p, p) for p in phases])
    ax.invert_yaxis()
    ax.set_xlabel("ms since the start of the working set")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_throughput(results, path, title):
    """Bars of samples/s per mode (last epoch)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(results)
    vals = [results[m]["epochs"][-1]["samples_per_s"] for m in modes]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(modes, vals, color=["#1f77b4", "#ff7f0e", "#2ca02c"][:len(modes)])
    for b, v in zip(bars, vals):
        ax.annotate(f"{v:,.0f}", (b.get_x() + b.get_width() / 2, v), ha="center",
                    va="bottom", fontsize=9)
    ax.set_ylabel("training samples / s (last epoch)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _quiet(*args, **kwargs):
    pass


def _trainer(mode, a, train, device, distributed, **kw):
    relearn = a.relearn_every if mode == "hotline" else 0
    return Trainer(train.table_sizes, train.n_dense, mode, device or a.backend, dim=a.dim,
                   bottom=_layers(a.bottom, "--bottom"), top=_layers(a.top, "--top"), lr=a.lr,
                   batch_size=a.batch_size, working_set=a.working_set,
                   hot_budget=a.hot_budget, sample_rate=a.sample_rate, seed=a.seed,
                   gather_threads=a.gather_threads, relearn_every=relearn,
                   relearn_batches=a.relearn_batches if relearn else None,
                   distributed=distributed, policy=a.policy if mode == "hotline" else None,
                   embedding_optimizer=a.embedding_optimizer, embedding_lr=a.embedding_lr,
                   **kw)


def _mode_order(a):
    """The timed runs' order of --mode all and the rule that chose it: ``--order``, else the
    rotation of ``MODES`` that starts at mode number ``seed mod 3``."""
    if a.order:
        return _parse_order(a.order), "--order"
    r = a.seed % len(MODES)
    return MODES[r:] + MODES[:r], f"rotation-by-seed rotation={r}"


def _warm_up(order, a, train, device, distributed, say):
    """Untimed: each mode in ``order`` trains the first ``--warmup-batches`` mini-batches
    (default two working sets) in a throwaway trainer, so that one-time costs (first kernel
    launches and library handles, allocator pools, thread pools, the driver's first calls)
    fall outside the timed runs. The throwaway trainers share one host table of their own;
    the timed trainers are new objects that start from the seeded initial model, and the
    global random state is restored afterwards (``fork_rng``), so the warm-up changes none of
    the timed runs' numbers."""
    k = 2 * a.working_set if a.warmup_batches is None else a.warmup_batches
    n = min(len(train), k * a.batch_size)
    info = {"batches": math.ceil(n / a.batch_size), "samples": n, "order": list(order),
            "seconds": 0.0}
    if n == 0:
        say("warmup batches=0 (none: the first timed run pays the one-time start-up costs)")
        return info
    dev = torch.device(device or a.backend)
    devices = ([dev.index if dev.index is not None else torch.cuda.current_device()]
               if dev.type == "cuda" else [])
    part = train.subset(0, n)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        host = init_table(train.table_sizes, a.dim, a.seed)
        for mode in order:
            tr = _trainer(mode, a, train, device, distributed, host_table=host)
            try:
                tr.train_epoch(part)
            finally:
                tr.close()
            del tr
        del host
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    info["seconds"] = time.perf_counter() - t0
    say(f"warmup batches={info['batches']} samples={n} order={','.join(order)} "
        f"seconds={info['seconds']:.2f} (untimed, each mode in a throwaway trainer)")
    return info


def _device_name(device):
    d = torch.device(device)
    if d.type != "cuda":
        return d.type
    idx = d.index if d.index is not None else torch.cuda.current_device()
    return f"cuda:{idx} gpu={torch.cuda.get_device_name(idx).replace(' ', '_')}"


def run_mode(mode, a, train, ev, out, say=print, device=None, distributed=False):
    """Train in ``mode`` until ``a.epochs`` epochs are complete; prints (through ``say``)
    and returns the results dict."""
    from tqdm import tqdm

    tr = _trainer(mode, a, train, device, distributed)
    res = {"mode": mode, "epochs": []}
    n_batches = math.ceil(len(train) / a.batch_size)
    try:
        if a.resume:
            try:
                tr.load_checkpoint(a.resume)
            except (ValueError, KeyError) as e:       # a checkpoint of other settings
                raise CliError(f"--resume {a.resume}: {e}") from e
            except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
                raise CliError(f"--resume {a.resume}: not a readable checkpoint "
                               f"(torch.load: {type(e).__name__})") from e
            say(f"[{mode}] resumed from {a.resume}: {tr.epoch} epochs done, position "
                f"{tr.position}")
        if mode == "hotline":
            cfg = tr.eal_config
            say(f"[{mode}] EAL: {cfg.entries} entries ({cfg.banks} banks x {cfg.sets} sets x "
                f"{cfg.ways} ways, policy {cfg.policy}) for a hot budget of {a.hot_budget} "
                f"rows")
        if tr.world_size > 1:
            say(f"[{mode}] data parallel: {tr.world_size} ranks")
        while tr.epoch < a.epochs:
            bar = tqdm(total=len(train), initial=tr.position, desc=f"{mode} epoch {tr.epoch + 1}",
                       unit="sample", file=sys.stderr, disable=a.no_progress or tr.rank != 0,
                       dynamic_ncols=True)
            st = tr.train_epoch(train, progress=bar.update)
            bar.close()
            auc, ll = tr.evaluate(ev)
            e = {"epoch": st.epoch, "auc": auc, "logloss": ll, "samples_per_s": st.samples_per_s,
                 "train_loss": st.train_loss, "seconds": st.seconds,
                 "learn_batches": st.learn_batches, "batches": n_batches,
                 "end_to_end_samples_per_s": st.end_to_end_samples_per_s}
            res["epochs"].append(e)
            say(f"epoch={st.epoch} mode={mode} auc={auc:.4f} logloss={ll:.4f} "
                f"samples_per_s={st.samples_per_s:.1f} train_loss={st.train_loss:.4f} "
                f"seconds={st.seconds:.2f}", flush=True)
            if mode == "hotline":
                learn_s, eal_s, freeze_s = (st.learn_seconds, st.eal_learn_seconds,
                                            st.freeze_seconds)
                e.update(learn_seconds=learn_s, eal_learn_seconds=eal_s,
                         freeze_seconds=freeze_s, learn_samples=st.learn_samples)
                say(f"learning mode={mode} epoch={st.epoch} learn_batches={st.learn_batches} "
                    f"of={n_batches} trained=hybrid seconds={learn_s:.2f} "
                    f"eal_seconds={eal_s:.2f} freeze_seconds={freeze_s:.2f} "
                    f"learn_samples={st.learn_samples} end_to_end_samples_per_s="
                    f"{st.end_to_end_samples_per_s:.1f} (rows gathered from the host table "
                    f"while the EAL learned their lookups; not in samples_per_s, which counts "
                    f"the working sets only)")
            if a.checkpoint:
                tr.save_checkpoint(a.checkpoint)
                say(f"checkpoint: {a.checkpoint} (epoch {tr.epoch})")
        timings = tr.step_timings()
        res["timings"] = timings
        if mode == "hotline":
            c = tr.counters()
            res["counters"] = c
            res["hot_rows"] = tr.store.hot_rows
            res["freeze_log"] = tr.freeze_log
            pop = 100.0 * c["popular_inputs"] / c["inputs"] if c["inputs"] else 0.0
            hit = 100.0 * c["hits"] / c["lookups"] if c["lookups"] else 0.0
            moved = c["bytes_gathered"] + c["bytes_written_back"]
            say(f"counters mode={mode} hot_rows={res['hot_rows']} lookups={c['lookups']} "
                f"hits={c['hits']} hit_pct={hit:.2f} inputs={c['inputs']} "
                f"popular_inputs={c['popular_inputs']} popular_pct={pop:.2f} "
                f"cold_rows={c['cold_rows']} bytes_gathered={c['bytes_gathered']} "
                f"bytes_written_back={c['bytes_written_back']} bytes_moved={moved} "
                f"working_sets={c['working_sets']}")
            if tr.relearn_every:
                n_re = sum(1 for f in tr.freeze_log if f["relearn"])
                moved_in = sum(f["moved_in"] for f in tr.freeze_log if f["relearn"])
                say(f"relearn mode={mode} relearns={n_re} rows_moved_in={moved_in}")
            tl = tr.timeline()
            if tl:
                res["timeline"] = tl
                if tr.rank == 0:
                    png = out / "timeline_hotline.png"
                    plot_timeline(tl, png, f"one Hotline working set (W={a.working_set}, "
                                  f"N={a.batch_size}, {a.backend})")
                    say(f"timeline plot: {png}")
        say(f"timings mode={mode}:")
        for line in _fmt_timings(timings):
            say(line)
    finally:
        tr.close()
    return res


def _spawned(rank, argv, world, port):
    """One process of ``--world-size N``: torchrun's variables, then :func:`main`."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    main(argv)


def _spawn(a, argv):
    """Start ``a.world_size`` local processes (spawn) and wait; returns rank 0's summary."""
    import torch.multiprocessing as mp

    _precheck(a, a.backend)          # refuse here once rather than in every process
    argv = list(sys.argv[1:] if argv is None else argv)
    print(f"starting {a.world_size} processes (torch.distributed, "
          f"{a.dist_backend or default_backend(a.backend)})", flush=True)
    try:
        mp.start_processes(_spawned, args=(argv, a.world_size, free_port()),
                           nprocs=a.world_size, join=True, start_method="spawn")
    except mp.ProcessExitedException as e:
        if e.exit_code != EXIT_REFUSED:
            raise
        # The process printed its refusal already.
        raise CliError(f"--world-size {a.world_size}: process {e.error_index} refused to "
                       f"run (its error is above)") from e
    return json.loads((Path(a.out) / "metrics.json").read_text())


def main(argv=None):
    """Command line entry point; returns the results dict (also written to metrics.json).

    A user error (:class:`CliError`: an option, the data, memory; or a
    :class:`~sw_driver.data.DataFormatError` naming file, line and column) is printed as one
    line ``python -m sw_driver.train: error: <message>`` on stderr and ends the program with
    exit status 2 (:class:`Refused`, a ``SystemExit``); with ``--debug`` the exception is
    raised instead (traceback, exit status 1)."""
    a = parse_args(argv)
    try:
        return _main_checked(a, argv)
    except (CliError, DataFormatError) as e:
        if a.debug:
            raise
        _refuse(e)


def _main_checked(a, argv):
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if a.world_size and a.world_size > 1 and "WORLD_SIZE" not in os.environ:
        return _spawn(a, argv)
    if a.world_size and "WORLD_SIZE" in os.environ and a.world_size != env_world:
        raise CliError(f"--world-size {a.world_size} but WORLD_SIZE={env_world}")
    backend = a.dist_backend or default_backend(a.backend)
    rank, world, local = init_from_env(backend)
    device = a.backend
    if a.backend == "cuda" and world > 1:
        device = f"cuda:{local % torch.cuda.device_count()}"
        torch.cuda.set_device(device)
    say = print if rank == 0 else _quiet
    try:
        return _main(a, say, device, world, rank)
    finally:
        if world > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def _main(a, say, device, world, rank):
    src = _precheck(a, device)
    torch.manual_seed(a.seed)
    threads = a.threads or (1 if a.backend == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    out = Path(a.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"--out {a.out}: cannot create the folder ({e.strerror or e})") from e
    t0 = time.perf_counter()
    if a.data is None:
        say("no --data given: using synthetic Criteo-shaped data")
    auto_sizes = src.table_sizes is None
    train, ev, desc = load_data(src, a.table_size_cap, a.max_rows, a.synthetic_samples,
                                a.seed, batch_size=a.batch_size)
    if auto_sizes:      # now known: the checks _precheck could not make
        _check_resources(a, train.table_sizes, _modes(a), device, src.size_rule)
    _resolve_hot_budget(a, train, warn=rank == 0)
    say(f"data: {desc}; {train.n_tables} tables, {sum(train.table_sizes):,} rows, "
        f"dim {a.dim}, batch {a.batch_size}, backend {a.backend}"
        + (f", {world} ranks" if world > 1 else ""))
    tables = _warn_tables(src) if rank == 0 else []
    summary = {"args": vars(a), "data": desc, "world_size": world, "tables": tables}
    if a.mode == "all":
        modes, rule = _mode_order(a)
        summary["order"] = list(modes)
        say(f"order modes={','.join(modes)} rule={rule} (the timed runs, one after another)")
        if a.relearn_every:
            say(f"note: --relearn-every {a.relearn_every} applies to the hotline run only")
        summary["warmup"] = _warm_up(modes, a, train, device, world > 1, say)
    else:
        modes = (a.mode,)
    results = {}
    for mode in modes:
        results[mode] = run_mode(mode, a, train, ev, out, say, device, world > 1)
    # Keep the usual mode order in metrics.json and the plot, whatever the run order.
    results = {m: results[m] for m in MODES if m in results}
    summary["results"] = results
    summary["device"] = _device_name(device)
    if rank != 0:
        summary["wall_seconds"] = time.perf_counter() - t0
        return summary
    if all(r["epochs"] for r in results.values()):
        png = out / "throughput.png"
        plot_throughput(results, png, f"DLRM training throughput ({a.backend})")
        say(f"throughput plot: {png}")
    else:
        say(f"nothing to train: the checkpoint has {a.epochs} epochs already")
    if a.mode == "all":
        sps = {m: results[m]["epochs"][-1]["samples_per_s"] for m in MODES}

        def ratio(x, y):
            return f"{sps[x] / sps[y]:.2f}" if sps[y] else "nan"

        summary["speedup"] = {"hotline/hybrid": sps["hotline"] / sps["hybrid"] if sps["hybrid"]
                              else None,
                              "hotline/gpu-only": sps["hotline"] / sps["gpu-only"]
                              if sps["gpu-only"] else None}
        say(f"speedup hotline/hybrid={ratio('hotline', 'hybrid')} "
            f"hotline/gpu-only={ratio('hotline', 'gpu-only')} device={summary['device']} "
            f"order={','.join(modes)} warmup_batches={summary['warmup']['batches']} "
            f"(samples/s of the last epoch)")
        if torch.device(device).type == "cpu":
            say("note: device=cpu: these figures say nothing about a GPU. On the CPU the "
                "'device' is host memory, so there are no host-device copies for Hotline to "
                "hide; measure the speed-up with --backend cuda on a GPU "
                "(or python -m sw_driver.bench_training)")
    summary["wall_seconds"] = time.perf_counter() - t0
    (out / "metrics.json").write_text(json.dumps(_finite(summary), indent=1, allow_nan=False,
                                                 default=_json_default))
    say(f"metrics: {out / 'metrics.json'}")
    return summary


def _finite(o):
    """``o`` with NaN and infinite floats replaced by None: strict JSON has no NaN (an AUC is
    NaN when the evaluation set holds one class only)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return _finite(o.tolist())
    return str(o)


if __name__ == "__main__":
    main()

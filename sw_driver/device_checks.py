"""The accelerator's command checks and host-memory word formats, for the transports.

``hotline_spec/commands.py`` defines the opcodes, error causes and 64-bit word layouts; this
module applies them on the host side:

* :func:`check_command` -- the checks the command decoder and the key-list pass make before
  a command moves anything (``BAD_COUNT``, ``MISALIGNED``, ``BAD_ROW_BYTES``, ``BAD_KEY``,
  ``BAD_TABLE``, ``ROW_OUT_OF_RANGE``). The ``model`` transport runs them so that it refuses
  exactly what the RTL refuses, with the same cause, engine and key index; the ``sim``
  transport's tests compare the two.
* :class:`TableLayout` and :func:`table_layout` -- the per-table ``TABLE_BASE`` /
  ``TABLE_STRIDE`` / ``TABLE_ROWS`` values and ``ROW_BYTES`` of a host table.
* :func:`decode_results`, :func:`decode_dump` -- lookup result and dump words in host memory
  to tensors (field positions from the layouts of ``commands.py``, never spelled here).
"""

import functools
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numba
import numpy as np
import torch
from hotline_spec.commands import (DUMP_WORDS, KEY_WORD_BYTES, LIST_OPCODES, RESULT_WORD, Engine,
                                   ErrorCause, Opcode, word_fields)

from .errors import DeviceCommandError, ScheduleError

__all__ = ["Fault", "TableLayout", "table_layout", "check_command", "check_command_rows",
           "raise_fault", "slot_arrays", "first_bad_lookup",
           "decode_results", "decode_dump", "encode_dump", "encode_results", "ROW_OPCODES",
           "WORD_FIELDS"]

#: Opcodes that move rows (``ROW_BYTES``, the table registers and ``bus_bytes`` alignment
#: of ``addr1`` apply).
ROW_OPCODES = (Opcode.GATHER, Opcode.WRITE_BACK)


#: ``{"result": {field: (lsb, width)}, "dump": {...}}`` from ``hotline_spec/commands.py``.
WORD_FIELDS = {"result": word_fields(RESULT_WORD), "dump": word_fields(DUMP_WORDS["srrip"]),
               "dump_lfu": word_fields(DUMP_WORDS["lfu"])}


def _dump_kind(policy):
    return "dump" if policy == "srrip" else "dump_lfu"


class Fault(NamedTuple):
    """A refused command: ``cause``, ``engine``, ``address`` (ERR_ADDR) and ``index`` (the
    key's list position when the cause names a key, else ``None``)."""

    cause: ErrorCause
    engine: Engine
    address: int
    index: Optional[int] = None


@dataclass(frozen=True)
class TableLayout:
    """What ``set_tables`` programs: ``row_bytes`` (ROW_BYTES) and, per table slot
    ``0 .. max_tables-1``, ``base`` (bus address of row 0), ``stride`` (bytes) and ``rows``
    (0 for an unused slot). ``dtype``/``dim`` describe the rows (for buffer checks)."""

    row_bytes: int
    base: tuple
    stride: tuple
    rows: tuple
    dtype: torch.dtype
    dim: int


def table_layout(dcfg, host_table, table_rows, table_offsets, bus_address):
    """The :class:`TableLayout` of ``host_table`` (2-D, rows of contiguous elements) whose
    table ``t`` starts at row ``table_offsets[t]`` and has ``table_rows[t]`` rows;
    ``bus_address(tensor)`` maps a tensor to its bus address. Unused table slots get
    ``rows = 0`` (a key naming one is ``ROW_OUT_OF_RANGE``), base 0 and stride 0 (their
    reset values). Raises :class:`ScheduleError` for a table that is not 2-D, whose rows are not
    contiguous, or whose tables do not fit in it."""
    if not isinstance(host_table, torch.Tensor):
        raise ScheduleError(f"set_tables: host_table must be a torch.Tensor, not "
                            f"{type(host_table).__name__}")
    if host_table.dim() != 2 or host_table.shape[0] < 1:
        raise ScheduleError(f"set_tables: host_table must be 2-D [rows, dim], not shape "
                            f"{tuple(host_table.shape)}")
    if host_table.stride(1) != 1 and host_table.shape[1] > 1:
        raise ScheduleError("set_tables: host_table rows must be contiguous (stride(1) == 1), "
                            f"not strides {host_table.stride()}")
    rows = [int(r) for r in torch.as_tensor(table_rows).tolist()]
    offsets = [int(o) for o in torch.as_tensor(table_offsets).tolist()]
    if len(rows) != len(offsets) or not 1 <= len(rows) <= dcfg.max_tables:
        raise ScheduleError(f"set_tables: {len(rows)} table_rows and {len(offsets)} "
                            f"table_offsets: need the same number, 1..{dcfg.max_tables}")
    for t, (r, o) in enumerate(zip(rows, offsets)):
        if r < 1 or o < 0 or o + r > host_table.shape[0]:
            raise ScheduleError(f"set_tables: table {t} (rows {o}..{o + r - 1}) does not fit "
                                f"host_table's {host_table.shape[0]} rows")
    esize = host_table.element_size()
    stride = host_table.stride(0) * esize
    base0 = bus_address(host_table)
    bases = [base0 + o * stride for o in offsets]
    pad = dcfg.max_tables - len(rows)
    return TableLayout(row_bytes=host_table.shape[1] * esize,
                       base=tuple(bases + [0] * pad), stride=tuple([stride] * len(rows) + [0] * pad),
                       rows=tuple(rows + [0] * pad), dtype=host_table.dtype,
                       dim=int(host_table.shape[1]))


def _keys_i64(keys):
    keys = torch.as_tensor(keys)
    if keys.dtype != torch.int64:
        keys = keys.to(torch.int64)
    return keys.reshape(-1).cpu()


def check_command(dcfg, opcode, count, addr0=0, addr1=0, row_bytes=None, keys=None,
                  layout=None):
    """The checks a command passes before it moves anything, in the order the RTL makes
    them; returns the first :class:`Fault` or ``None``.

    Decoder (:attr:`Engine.DECODER`): ``count`` zero or above ``max_count`` (``DUMP``: not
    the number of entries; ``FENCE``/``CLEAR`` take no count) -> ``BAD_COUNT`` (address 0);
    a key list ``addr0`` not 8-aligned, or ``addr1`` not aligned (8 bytes for result / dump
    words, ``bus_bytes`` for rows) -> ``MISALIGNED`` (address: the misaligned one);
    ``ROW_BYTES`` (row opcodes) zero, above ``max_row_bytes`` or not a multiple of
    ``bus_bytes`` -> ``BAD_ROW_BYTES`` (address 0).

    Key list (:attr:`Engine.LIST_CHECK`), first bad key in list order, address
    ``addr0 + 8 * index``: bits above ``key_bits`` -> ``BAD_KEY``; for the row opcodes, a
    row ``>= TABLE_ROWS`` -> ``ROW_OUT_OF_RANGE`` (so an unused table slot, 0 rows, refuses
    every key), then a table whose base or stride is not a multiple of ``bus_bytes`` or whose
    stride is below ``ROW_BYTES`` -> ``BAD_TABLE`` (``hotline_hw/dma/key_checker.py``).
    """
    op = Opcode(opcode)
    cfg = dcfg
    bus = cfg.bus_bytes
    if op in LIST_OPCODES or op == Opcode.DUMP:
        if op == Opcode.DUMP:
            bad = count != cfg.eal.entries
        else:
            bad = not 1 <= count <= cfg.max_count
        if bad:
            return Fault(ErrorCause.BAD_COUNT, Engine.DECODER, 0)
    if op in LIST_OPCODES and addr0 % KEY_WORD_BYTES:
        return Fault(ErrorCause.MISALIGNED, Engine.DECODER, addr0)
    if op in (Opcode.LEARN, Opcode.LOOKUP, Opcode.DUMP) and addr1 % KEY_WORD_BYTES:
        return Fault(ErrorCause.MISALIGNED, Engine.DECODER, addr1)
    if op in ROW_OPCODES:
        if addr1 % bus:
            return Fault(ErrorCause.MISALIGNED, Engine.DECODER, addr1)
        if not row_bytes or row_bytes > cfg.max_row_bytes or row_bytes % bus:
            return Fault(ErrorCause.BAD_ROW_BYTES, Engine.DECODER, 0)
    if op not in LIST_OPCODES or keys is None:
        return None
    keys = _keys_i64(keys)
    if cfg.eal.key_bits < 64:
        fault, _ = _check_keys_compiled(cfg, op, addr0, row_bytes, keys, layout, None)
        return fault
    return _check_keys_reference(cfg, op, addr0, row_bytes, keys, layout)


def check_command_rows(dcfg, opcode, count, addr0, addr1, row_bytes, keys, layout, global_base):
    """:func:`check_command` of a ``GATHER`` / ``WRITE_BACK`` command that also maps its keys
    to host-table rows in the same pass: returns ``(fault, rows)``, ``rows`` (int64 ``[n]``)
    = ``global_base[table] + row`` of each key when there is no fault (``global_base``: int64
    ``[max_tables]``, the host-table row of each table's row 0), else ``None``."""
    keys = _keys_i64(keys)
    compiled = Opcode(opcode) in ROW_OPCODES and dcfg.eal.key_bits < 64
    # The decoder's checks, and the key-list pass too unless the compiled pass below makes it
    # (it maps the keys to rows as it goes).
    fault = check_command(dcfg, opcode, count, addr0, addr1, row_bytes,
                          None if compiled else keys, layout)
    if fault is not None:
        return fault, None
    if compiled:
        return _check_keys_compiled(dcfg, Opcode(opcode), addr0, row_bytes, keys, layout,
                                    global_base)
    rb = dcfg.eal.row_bits
    return None, global_base[keys >> rb] + (keys & ((1 << rb) - 1))


def slot_arrays(dcfg, layout):
    """numpy ``(rows, slot_bad)`` of a :class:`TableLayout` for the compiled key-list pass:
    each table slot's ``TABLE_ROWS`` and whether the slot is ``BAD_TABLE`` (base or stride not
    a multiple of ``bus_bytes``, stride below ``ROW_BYTES``). Cached per layout."""
    return _slot_arrays(layout, dcfg.bus_bytes, layout.row_bytes)


@functools.lru_cache(maxsize=16)
def _slot_arrays(layout, bus, row_bytes):
    """numpy ``(rows, slot_bad)`` of a layout: each slot's TABLE_ROWS and whether its base or
    stride is not a multiple of ``bus`` or its stride is below ``row_bytes``."""
    rows = np.array(layout.rows, dtype=np.int64)
    bad = np.array([b % bus != 0 or s % bus != 0 or s < row_bytes
                    for b, s in zip(layout.base, layout.stride)], dtype=np.bool_)
    return rows, bad


_BAD_KEY = int(ErrorCause.BAD_KEY)
_ROW_OUT_OF_RANGE = int(ErrorCause.ROW_OUT_OF_RANGE)
_BAD_TABLE = int(ErrorCause.BAD_TABLE)


@numba.njit(cache=True, nogil=True)
def _check_keys_kernel(keys, key_bits, row_op, row_bits, rows, slot_bad, global_base, out):
    """The key-list pass (``key_bits < 64``): returns ``(index, cause)`` of the first bad key
    in list order (``BAD_KEY``, then for row opcodes ``ROW_OUT_OF_RANGE``, then
    ``BAD_TABLE``), or ``(-1, 0)``; for row opcodes with ``out`` non-empty, fills
    ``out[i] = global_base[table] + row``."""
    rmask = (1 << row_bits) - 1
    fill = out.shape[0] > 0
    # one compare a key on the good path: limit = TABLE_ROWS, or 0 for a bad slot
    limit = np.zeros(rows.shape[0], dtype=np.int64)
    for t in range(rows.shape[0]):
        if not slot_bad[t]:
            limit[t] = rows[t]
    if row_op and not fill:
        # the good path: a branch-free pass that only says whether any key is bad
        tmask = rows.shape[0] - 1               # max_tables, a power of two
        bad = False
        for i in range(keys.shape[0]):
            k = keys[i]
            bad |= ((k >> key_bits) != 0) | ((k & rmask) >= limit[(k >> row_bits) & tmask])
        if not bad:
            return -1, 0
    for i in range(keys.shape[0]):
        k = keys[i]
        if (k >> key_bits) != 0:                # bits above key_bits, negative keys too
            return i, _BAD_KEY
        if row_op:
            t = k >> row_bits
            r = k & rmask
            if r >= limit[t]:
                if r >= rows[t]:
                    return i, _ROW_OUT_OF_RANGE
                return i, _BAD_TABLE
            if fill:
                out[i] = global_base[t] + r
    return -1, 0


_NO_ROWS = np.zeros(1, dtype=np.int64)
_NO_BAD = np.zeros(1, dtype=np.bool_)
_EMPTY = np.zeros(0, dtype=np.int64)


def _check_keys_compiled(cfg, op, addr0, row_bytes, keys, layout, global_base):
    """The key-list pass compiled (one pass, one thread): ``(fault or None, rows or None)``;
    ``rows`` only when ``global_base`` is given and there is no fault."""
    row_op = op in ROW_OPCODES
    k = np.ascontiguousarray(keys.numpy())
    if row_op:
        rows, slot_bad = _slot_arrays(layout, cfg.bus_bytes, row_bytes)
    else:
        rows, slot_bad = _NO_ROWS, _NO_BAD
    out = None
    if row_op and global_base is not None:
        out = torch.empty(k.shape[0], dtype=torch.int64)
        base = np.ascontiguousarray(torch.as_tensor(global_base, dtype=torch.int64).numpy())
        out_np = out.numpy()
    else:
        base, out_np = _EMPTY, _EMPTY
    i, cause = _check_keys_kernel(k, cfg.eal.key_bits, row_op, cfg.eal.row_bits, rows,
                                  slot_bad, base, out_np)
    if i >= 0:
        return Fault(ErrorCause(int(cause)), Engine.LIST_CHECK,
                     addr0 + KEY_WORD_BYTES * int(i), int(i)), None
    return None, out


def _check_keys_reference(cfg, op, addr0, row_bytes, keys, layout):
    """The key-list pass as torch ops (the reference the compiled pass is tested against;
    used for 64-bit keys)."""
    bus = cfg.bus_bytes
    kb = cfg.eal.key_bits
    if kb < 64:
        bad_key = (keys < 0) | ((keys >> kb) != 0)
    else:
        bad_key = torch.zeros_like(keys, dtype=torch.bool)
    bad = bad_key
    cause = torch.full_like(keys, int(ErrorCause.BAD_KEY))
    if op in ROW_OPCODES:
        rb = cfg.eal.row_bits
        table = torch.where(bad_key, 0, keys >> rb)
        row = torch.where(bad_key, 0, keys & ((1 << rb) - 1))
        base = torch.tensor(layout.base, dtype=torch.int64)
        stride = torch.tensor(layout.stride, dtype=torch.int64)
        rows = torch.tensor(layout.rows, dtype=torch.int64)
        slot_bad = (base % bus != 0) | (stride % bus != 0) | (stride < row_bytes)
        bad_row = ~bad_key & (row >= rows[table])
        bad_table = ~bad_key & ~bad_row & slot_bad[table]
        cause = torch.where(bad_row, int(ErrorCause.ROW_OUT_OF_RANGE), cause)
        cause = torch.where(bad_table, int(ErrorCause.BAD_TABLE), cause)
        bad = bad_key | bad_table | bad_row
    if not bool(bad.any()):
        return None
    i = int(torch.nonzero(bad)[0])
    return Fault(ErrorCause(int(cause[i])), Engine.LIST_CHECK, addr0 + KEY_WORD_BYTES * i, i)


@numba.njit(cache=True, nogil=True)
def _first_bad_lookup_kernel(sparse, limits):
    n, nt = sparse.shape
    for i in range(n):
        for t in range(nt):
            r = sparse[i, t]
            if r < 0 or r >= limits[t]:
                return i * nt + t
    return -1


def first_bad_lookup(sparse, table_rows):
    """The flat position (``i * n_tables + t``) of the first lookup of ``sparse`` (int64 CPU
    ``[n, n_tables]``) outside ``0 <= row < table_rows[t]``, or -1: one compiled pass, no
    torch op (``HotlineDevice.learn``'s range check as ``(sparse < 0) | (sparse >= rows)``
    and ``.any()`` forks torch's intra-op threads four times, slow on a loaded machine)."""
    limits = np.ascontiguousarray(torch.as_tensor(table_rows, dtype=torch.int64).numpy())
    return int(_first_bad_lookup_kernel(sparse.numpy(), limits))


def raise_fault(fault, opcode, sequence, keys=None, layout=None, dcfg=None):
    """Raise :class:`DeviceCommandError` for ``fault`` of command ``opcode`` / ``sequence``,
    with a detail clause naming the offending key when the cause names one."""
    detail = ""
    if fault.index is not None and keys is not None:
        keys = _keys_i64(keys)
        if 0 <= fault.index < keys.numel():
            k = int(keys[fault.index])
            detail = f"key {k:#x}"
            if dcfg is not None and fault.cause == ErrorCause.ROW_OUT_OF_RANGE:
                rb = dcfg.eal.row_bits
                t, r = k >> rb, k & ((1 << rb) - 1)
                limit = layout.rows[t] if layout is not None else "?"
                detail += f" (table {t} row {r}, TABLE_ROWS {limit})"
            elif dcfg is not None and fault.cause == ErrorCause.BAD_KEY:
                detail += f" has bits above key_bits = {dcfg.eal.key_bits}"
    raise DeviceCommandError(fault.cause, fault.engine, opcode, sequence, fault.address,
                             fault.index, detail)


def _field(words, name, kind):
    lsb, width = WORD_FIELDS[kind][name]
    # int64 words: the shift is arithmetic, the mask drops the copied sign bits
    return (words >> lsb) & ((1 << width) - 1)


def decode_results(words):
    """Lookup result words (int64 ``[n]``) -> ``(hit bool [n], slot int64 [n])``."""
    words = torch.as_tensor(words, dtype=torch.int64)
    return _field(words, "hit", "result").bool(), _field(words, "slot", "result")


def encode_results(hit, slot):
    """The inverse of :func:`decode_results` (the model transport's words, for tests)."""
    f = WORD_FIELDS["result"]
    return (torch.as_tensor(slot, dtype=torch.int64) << f["slot"][0]) | (
        torch.as_tensor(hit).to(torch.int64) << f["hit"][0])


def decode_dump(words, eal):
    """Dump words (int64 ``[entries]``, entry ``slot`` at index ``slot``) -> the
    ``dump_tensors`` dict set-major (for each set, for each bank: the transports' dump
    order; the words, like the RTL dump stream, are bank-major):
    ``{"bank", "set"}`` int64 ``[sets * banks]``, ``{"valid" bool, "rrpv" (srrip) or
    "count" (lfu), "tag"}`` ``[sets * banks, ways]``."""
    kind, meta = _dump_kind(eal.policy), eal.meta_name
    words = torch.as_tensor(words, dtype=torch.int64).reshape(eal.banks, eal.sets, eal.ways)
    sets, banks = torch.meshgrid(torch.arange(eal.sets), torch.arange(eal.banks), indexing="ij")
    words = words.permute(1, 0, 2).reshape(-1, eal.ways)
    return {"bank": banks.reshape(-1), "set": sets.reshape(-1),
            "valid": _field(words, "valid", kind).bool(),
            meta: _field(words, meta, kind),
            "tag": _field(words, "tag", kind)}


def encode_dump(valid, meta, tag, policy="srrip"):
    """Dump words of a ``[banks, sets, ways]`` tag store (slot order; ``meta`` the RRPVs or
    counts): the inverse of :func:`decode_dump` for tags that fit the word's tag field."""
    kind = _dump_kind(policy)
    f = WORD_FIELDS[kind]
    meta_name = "rrpv" if policy == "srrip" else "count"
    tag_mask = (1 << f["tag"][1]) - 1
    return ((torch.as_tensor(tag, dtype=torch.int64) & tag_mask) << f["tag"][0]
            | torch.as_tensor(meta, dtype=torch.int64) << f[meta_name][0]
            | torch.as_tensor(valid).to(torch.int64) << f["valid"][0]).reshape(-1)

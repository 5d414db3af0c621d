"""The Hotline host driver: :class:`HotlineDevice` (``docs/driver.md``).

The driver owns one Embedding Access Logger (through a :class:`~sw_driver.transport.Transport`)
and turns the training code's row indices into what the accelerator's lookup path computes
(``docs/spec.md`` sections 4-7):

1. :meth:`HotlineDevice.learn` -- learn mode: feed sampled inputs to the tag store.
2. :meth:`HotlineDevice.freeze` -- read the tag store out, lay out the hot table
   (:class:`HotRows`, spec section 5) and build the **slot map** (the hot slot of every global
   row, or -1) on the training device.
3. :meth:`HotlineDevice.schedule` -- classify and fragment one working set (spec sections 6
   and 7) with a few device kernels against the slot map -> :class:`Schedule`; equal to
   ``verif.golden.fragment`` on the same state.
4. :meth:`HotlineDevice.gather` / :meth:`HotlineDevice.write_back` -- move the schedule's cold
   rows between the host table and a device-visible staging buffer with the transport's
   ``GATHER`` / ``WRITE_BACK`` commands (``model``: CPU threads, :mod:`sw_driver.gather`;
   ``sim``: the RTL's DMA engine).

Indexing: table ``t`` of ``table_rows[t]`` rows starts at global row ``table_offsets[t]`` of the
host table ``[sum(table_rows), dim]``; a lookup ``(t, r)`` is global row ``table_offsets[t] + r``
and EAL key ``(t << row_bits) | r`` (spec section 2).
"""

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from hotline_spec.config import (DEFAULT_CONFIG, DeviceConfig, EALConfig, FragmenterConfig,
                                 RRPV_MAX, fragmenter_for_working_set)
from verif.golden import dedup_bank, key_from_fields, make_keys, sparse_keys, split_keys
from verif.golden.access_logger import meta_name, popular_entries

from .counters import Counters
from .device_checks import first_bad_lookup
from .errors import DeviceStateError, IndexOutOfRangeError, ScheduleError, TableSpecError
from .gather import gather_rows, make_pool, scatter_rows
from .model_transport import command_chunks
from .transport import Transport, as_device_config, open_transport

__all__ = ["HotlineDevice", "HotRows", "Schedule", "HOT_SLOT_LAYOUTS"]

_LEARNING, _FROZEN, _CLOSED = "learning", "frozen", "closed"

#: Hot-table layouts (``HotlineDevice(hot_slots=...)``): ``"entry"`` -- a hot row sits at its
#: tag-store entry's index (spec section 5, ``config.entries`` rows); ``"compact"`` -- the hot
#: rows sit at ``0..n_hot-1`` in entry order, in a hot table of ``hot_capacity`` rows.
HOT_SLOT_LAYOUTS = ("entry", "compact")


class HotRows(NamedTuple):
    """The hot-table layout after :meth:`HotlineDevice.freeze` (spec section 5), int64 CPU
    tensors ``[n_hot]`` sorted by slot: hot-table row ``slots[i]`` holds row ``rows[i]`` of
    table ``tables[i]``, which is host-table row ``global_rows[i]``; ``entry_slots[i]`` is
    its tag-store entry. With the ``"entry"`` layout ``slots`` is ``entry_slots`` and
    ``(slots, tables, rows)`` equals ``verif.golden.AccessLogger.popular_rows`` of the same
    tag store; with ``"compact"`` ``slots`` is ``0..n_hot-1`` (same order) and
    ``(entry_slots, tables, rows)`` equals it. The hot table's rows (the offset of the cold
    rows in the schedules' ``remapped``) are :attr:`HotlineDevice.hot_capacity`."""

    slots: torch.Tensor
    tables: torch.Tensor
    rows: torch.Tensor
    global_rows: torch.Tensor
    entry_slots: torch.Tensor = None

    @property
    def n(self):
        """The number of hot (popular) rows."""
        return int(self.slots.numel())


@dataclass(eq=False)
class Schedule:
    """One fragmented working set (spec section 7; ``docs/driver.md``), from
    :meth:`HotlineDevice.schedule`. Every field equals the corresponding one of
    ``verif.golden.fragment`` on the same tag store and threshold.

    Device tensors (on the driver's ``device``): ``popular`` (bool ``[n_inputs]``),
    ``popular_micro_batches`` (list of int64 index tensors, input order, none empty),
    ``non_popular`` (int64 indices, input order), ``remapped`` (int64 ``[n_inputs, n_tables]``:
    each lookup's index into ``cat([hot_table, cold_rows])``), ``hit`` (bool
    ``[n_inputs, n_tables]``, the frozen-mode hits).

    Host tensors: ``cold_global_rows`` (int64 ``[n_cold]``: the gather list, host-table rows
    in first-seen order), ``cold_tables`` and ``cold_rows`` (its ``(table, row)`` pairs).

    ``n_inputs`` may be less than the inputs given: the de-dup table's bank-capacity rule
    (docs/spec.md section 7.5) ended the working set early (``ended_early``); the caller
    schedules the inputs from ``n_inputs`` on as the next working set.

    Counts (ints): ``n_inputs``, ``n_tables``, ``n_lookups`` (``n_inputs * n_tables``),
    ``n_hits``, ``n_popular``, ``n_cold``, ``n_unique`` (distinct ``(table, row)`` in the working
    set: distinct hot rows read + ``n_cold``), ``entries`` (hot-table rows, the offset of the
    cold rows in the working rows), ``micro_batch_size``.
    """

    popular: torch.Tensor
    popular_micro_batches: list
    non_popular: torch.Tensor
    cold_global_rows: torch.Tensor
    remapped: torch.Tensor
    hit: torch.Tensor
    cold_tables: torch.Tensor
    cold_rows: torch.Tensor
    n_inputs: int
    n_tables: int
    n_lookups: int
    n_hits: int
    n_popular: int
    n_cold: int
    n_unique: int
    entries: int
    micro_batch_size: int
    ended_early: bool = False
    #: schedules of bags (:meth:`HotlineDevice.schedule_bags`): int64 ``[n_inputs + 1]``,
    #: input ``i``'s lookups are ``remapped[lookup_offsets[i]:lookup_offsets[i + 1]]``
    lookup_offsets: object = None
    generation: int = field(default=0, repr=False)
    _owner: object = field(default=None, repr=False)
    _cold_keys: object = field(default=None, repr=False)   # the driver's key list, once made

    @property
    def n_working_rows(self):
        """Rows of the working-row concatenation ``[hot table; cold rows]``."""
        return self.entries + self.n_cold

    @property
    def hot_capacity(self):
        """Rows of the hot table this schedule was made for (= ``entries``: the EAL's
        entries with the ``"entry"`` layout, the freeze's hot capacity with ``"compact"``)."""
        return self.entries


def _check_int(value, what, minimum, error=ValueError):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise error(f"{what} must be an int >= {minimum}, not {value!r}")
    return int(value)


def _check_threshold(value, default):
    if value is None:
        return default
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or not 0 <= value <= RRPV_MAX:
        raise ValueError(f"popular_max_rrpv must be an int in 0..{RRPV_MAX}, not {value!r}")
    return int(value)


class HotlineDevice:
    """The host driver of one Hotline accelerator (``docs/driver.md``).

    Parameters
    ----------
    table_rows : sequence of int
        Rows of each embedding table; ``1 <= len <= 2**config.table_bits`` and
        ``1 <= table_rows[t] <= 2**config.row_bits`` (else :class:`TableSpecError`).
    dim : int
        Embedding dimension (>= 1).
    config : EALConfig or DeviceConfig
        The tag-store parameters, or the whole accelerator's (``hotline_spec/config.py``); an
        EALConfig means ``DeviceConfig(eal=config)``. ``self.config`` is the EALConfig,
        ``self.device_config`` the DeviceConfig.
    transport : str or Transport
        ``"model"`` (the golden model and CPU threads), ``"sim"`` (the simulated RTL, started
        by the device), ``"pcie"`` (not yet implemented), or an open
        :class:`~sw_driver.transport.Transport` for ``config`` (the device closes it).
    device : str or torch.device
        Where the slot map, the hot table and the schedules live (``"cpu"``, ``"cuda"``, ...).
    gather_threads : int
        CPU threads for the ``model`` row mover and the hot-table copies.
    close_transport : bool
        Whether :meth:`close` closes the transport (default); ``False`` lets several devices
        share one open transport in turn (e.g. one simulator for a test module).
    transport_options : dict, optional
        Keyword options for the transport opened by name (``sim``: ``shm_size``,
        ``latency``, ... see :class:`~sw_driver.sim_transport.SimTransport`).
    fragmenter : FragmenterConfig, optional
        The classifier/fragmenter whose de-dup table :meth:`schedule` follows (its
        bank-capacity rule ends a working set early, docs/spec.md section 7.5); default
        ``fragmenter_for_working_set(config, inputs, lookups)`` when ``working_set`` is
        given, else ``FragmenterConfig(eal=config)`` (the RTL's default, 24,576 cold rows).
        Its ``eal`` must be ``config``.
    working_set : int or (int, int), optional
        A size hint for the default ``fragmenter``: inputs per working set, or ``(inputs,
        lookups_per_input)`` (default lookups: ``n_tables``; for bags the widest input). The
        de-dup table is then sized (``hotline_spec.config.fragmenter_for_working_set``) so
        that a working set of that size whose every lookup is a distinct cold row fits with a
        6-sigma margin per bank: schedules (almost) never end early. Ignored when
        ``fragmenter`` is given.
    hot_slots : ``"entry"`` (default) or ``"compact"``
        Hot-table layout (:data:`HOT_SLOT_LAYOUTS`). ``"entry"``: the spec's, a hot row at its
        tag-store entry, a hot table of ``config.entries`` rows. ``"compact"``: hot rows at
        ``0..n_hot-1`` (entry order), a hot table of ``hot_capacity`` rows, sized at each
        :meth:`freeze` (``freeze(hot_capacity=C)``: ``max(C, n_hot)``); the schedules'
        cold rows then start at ``hot_capacity``. Which rows are hot, the cold lists and
        every count are the same in both layouts; only the hot slot numbers differ.

    States: *learning* (after opening or :meth:`clear`) -> :meth:`freeze` -> *frozen*
    (:meth:`schedule` allowed) -> :meth:`clear` / :meth:`unfreeze` -> *learning* ...;
    :meth:`close` (or leaving the ``with`` block) ends it. A call in the wrong state raises
    :class:`DeviceStateError`.
    """

    def __init__(self, table_rows, dim, config=DEFAULT_CONFIG, transport="model", device="cpu",
                 gather_threads=8, transport_options=None, close_transport=True,
                 fragmenter=None, working_set=None, hot_slots="entry"):
        self._state = _CLOSED  # until fully opened
        if not isinstance(config, (EALConfig, DeviceConfig)):
            raise TypeError(f"config must be an EALConfig or a DeviceConfig, not "
                            f"{type(config).__name__}")
        given_device = isinstance(config, DeviceConfig)
        config, dcfg = as_device_config(config)
        self.config = config
        self.device_config = dcfg
        if hot_slots not in HOT_SLOT_LAYOUTS:
            raise ValueError(f"hot_slots must be one of {HOT_SLOT_LAYOUTS}, not {hot_slots!r}")
        self.hot_slots = hot_slots
        self._hot_capacity = config.entries if hot_slots == "entry" else None
        self.working_set_hint = None
        if working_set is not None:
            if isinstance(working_set, (tuple, list)):
                if len(working_set) != 2:
                    raise ValueError(f"working_set must be inputs or (inputs, "
                                     f"lookups_per_input), not {working_set!r}")
                ws_in, ws_look = working_set
            else:
                ws_in, ws_look = working_set, None
            ws_in = _check_int(ws_in, "working_set inputs", 1)
            ws_look = None if ws_look is None else _check_int(ws_look,
                                                              "working_set lookups_per_input", 1)
            self.working_set_hint = (ws_in, ws_look)
        if fragmenter is not None and not isinstance(fragmenter, FragmenterConfig):
            raise TypeError(f"fragmenter must be a FragmenterConfig, not "
                            f"{type(fragmenter).__name__}")
        if fragmenter is not None and fragmenter.eal != config:
            raise ValueError(f"fragmenter.eal ({fragmenter.eal.describe()}) is not the "
                             f"device's EALConfig ({config.describe()})")
        self._table_rows = self._check_table_rows(table_rows, config)
        if fragmenter is None and self.working_set_hint is None:
            fragmenter = FragmenterConfig(eal=config)            # the RTL's default
        elif fragmenter is None:
            ws_in, ws_look = self.working_set_hint
            fragmenter = fragmenter_for_working_set(
                config, ws_in, ws_look if ws_look is not None else len(self._table_rows))
        self.fragmenter = fragmenter
        self.dim = _check_int(dim, "dim", 1, TableSpecError)
        gather_threads = _check_int(gather_threads, "gather_threads", 1)
        self.device = torch.device(device)
        rows = torch.tensor(self._table_rows, dtype=torch.int64)
        offsets = torch.zeros_like(rows)
        offsets[1:] = torch.cumsum(rows, 0)[:-1]
        self._rows_cpu, self._offsets_cpu = rows, offsets
        self.total_rows = int(rows.sum())
        self._rows_dev = rows.to(self.device)
        self._offsets_dev = offsets.to(self.device)
        self._tables_dev = torch.arange(len(self._table_rows), dtype=torch.int64,
                                        device=self.device)
        self._slot_dtype = torch.int32 if config.entries < 2 ** 31 else torch.int64
        self._slot_map = None
        self._hot = None
        self._threshold = None
        self._generation = 0
        self._counters = Counters()
        self._token = object()
        self._tables_key = None      # what set_tables was last called with, and
        self._tables_layout = None   # the transport's layout it made
        self._close_transport = bool(close_transport)
        if isinstance(transport, Transport):
            if transport.config != config:
                raise ValueError("the transport was opened for another EALConfig: "
                                 f"{transport.config.describe()} != {config.describe()}")
            if given_device and transport.device_config != dcfg:
                raise ValueError("the transport was opened for another DeviceConfig: "
                                 f"{transport.device_config.describe()} != {dcfg.describe()}")
            self._transport = transport
            self.device_config = transport.device_config
        else:
            options = dict(transport_options or {})
            if transport == "model":
                options.setdefault("threads", gather_threads)
            self._transport = open_transport(transport, dcfg if dcfg is not None else config,
                                             **options)
        self.gather_threads = gather_threads
        try:
            self._pool = make_pool(gather_threads)
        except BaseException:
            self._transport.close()
            raise
        self._state = _LEARNING

    # --- description ----------------------------------------------------------------
    @staticmethod
    def _check_table_rows(table_rows, cfg):
        if isinstance(table_rows, torch.Tensor):
            table_rows = table_rows.tolist()
        elif isinstance(table_rows, np.ndarray):
            table_rows = table_rows.tolist()
        if isinstance(table_rows, (str, bytes)) or not hasattr(table_rows, "__len__"):
            raise TableSpecError(f"table_rows must be a sequence of ints (rows per table), "
                                 f"not {type(table_rows).__name__}")
        table_rows = list(table_rows)
        if not table_rows:
            raise TableSpecError("table_rows is empty: a model needs at least one table")
        if len(table_rows) > cfg.max_tables:
            raise TableSpecError(f"{len(table_rows)} tables is more than the "
                                 f"{cfg.max_tables} (2**table_bits = 2**{cfg.table_bits}) "
                                 f"that the keys can name")
        out = []
        for t, r in enumerate(table_rows):
            if isinstance(r, (bool, np.bool_)) or not isinstance(r, (int, np.integer)):
                raise TableSpecError(f"table_rows[{t}] = {r!r} is not an int")
            if r < 1:
                raise TableSpecError(f"table_rows[{t}] = {r} rows: a table needs at least "
                                     f"one row")
            if r > cfg.max_rows:
                raise TableSpecError(f"table_rows[{t}] = {r} rows is more than the "
                                     f"{cfg.max_rows} (2**row_bits = 2**{cfg.row_bits}) that "
                                     f"the keys can name")
            out.append(int(r))
        return out

    @property
    def table_rows(self):
        """Rows per table (a tuple of ints)."""
        return tuple(self._table_rows)

    @property
    def n_tables(self):
        """Number of embedding tables."""
        return len(self._table_rows)

    @property
    def table_offsets(self):
        """int64 CPU tensor ``[n_tables]``: global row of each table's row 0."""
        return self._offsets_cpu.clone()

    @property
    def entries(self):
        """Tag-store entries (``config.entries``): the hot table's rows with the ``"entry"``
        layout."""
        return self.config.entries

    @property
    def hot_capacity(self):
        """Rows of the hot table (the offset of the cold rows in a schedule's ``remapped``):
        ``config.entries`` with the ``"entry"`` layout; with ``"compact"`` the capacity of the
        last :meth:`freeze` (``None`` before the first)."""
        return self._hot_capacity

    @property
    def transport(self):
        """The :class:`~sw_driver.transport.Transport` in use."""
        return self._transport

    @property
    def state(self):
        """``"learning"``, ``"frozen"`` or ``"closed"``."""
        return self._state

    @property
    def closed(self):
        """Whether :meth:`close` has run."""
        return self._state == _CLOSED

    @property
    def hot_rows(self):
        """The :class:`HotRows` of the last :meth:`freeze` while frozen, else ``None``."""
        self._need_open("hot_rows")
        return self._hot if self._state == _FROZEN else None

    @property
    def slot_map(self):
        """The slot map while frozen (``int32 [total_rows]`` on ``device``: hot slot of each
        global row or -1), else ``None``. Read it, do not change it."""
        self._need_open("slot_map")
        return self._slot_map if self._state == _FROZEN else None

    @property
    def popular_max_rrpv(self):
        """The threshold of the last :meth:`freeze` while frozen, else ``None``."""
        self._need_open("popular_max_rrpv")
        return self._threshold if self._state == _FROZEN else None

    def __repr__(self):
        return (f"HotlineDevice(tables={self.n_tables}, rows={self.total_rows}, dim={self.dim}, "
                f"entries={self.config.entries}, device={self.device}, state={self._state})")

    # --- state ------------------------------------------------------------------------
    def _need_open(self, what):
        if self._state == _CLOSED:
            raise DeviceStateError(f"HotlineDevice.{what}: the device is closed")

    def _need_frozen(self, what):
        self._need_open(what)
        if self._state != _FROZEN:
            raise DeviceStateError(f"HotlineDevice.{what}: the device is {self._state}; call "
                                   f"freeze() first")

    # --- input checks -----------------------------------------------------------------
    def _as_sparse(self, sparse, what, device):
        """int64 ``[n, n_tables]`` on ``device``, dtype and shape checked (not ranges)."""
        if not isinstance(sparse, torch.Tensor):
            arr = np.asarray(sparse)
            if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
                raise TypeError(f"{what} must hold integers, not {arr.dtype}")
            sparse = torch.from_numpy(np.ascontiguousarray(arr.astype(np.int64)))
        if sparse.dtype == torch.bool or sparse.dtype.is_floating_point \
                or sparse.dtype.is_complex:
            raise TypeError(f"{what} must be an integer tensor of row indices, not "
                            f"{sparse.dtype}")
        if sparse.dim() != 2 or sparse.shape[1] != self.n_tables:
            raise ValueError(f"{what} must be [n_inputs, n_tables={self.n_tables}] (one row per "
                             f"table per input), not shape {tuple(sparse.shape)}")
        return sparse.to(device=device, dtype=torch.int64)

    def _bad_lookups(self, sparse):
        """bool ``[n, n_tables]``: rows outside their table."""
        rows = self._rows_cpu if sparse.device.type == "cpu" else self._rows_dev
        return (sparse < 0) | (sparse >= rows)

    def _raise_first_bad(self, sparse, bad, what):
        i = int(torch.nonzero(bad.reshape(-1))[0])
        inp, t = divmod(i, self.n_tables)
        raise IndexOutOfRangeError(t, int(sparse[inp, t]), (inp, t), self._table_rows[t],
                                   what)

    def _as_bags(self, tables, rows, lookup_offsets, what, device):
        """``(tables, rows, lookup_offsets)`` as int64 tensors on ``device``, checked: 1-D,
        equal lengths, offsets from 0 to ``L`` and non-decreasing, tables in range (rows are
        checked by the caller, with positions)."""
        def as_int(x, name):
            t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
            if t.dtype == torch.bool or t.dtype.is_floating_point or t.dtype.is_complex:
                if t.numel() or t.dtype == torch.bool:
                    raise TypeError(f"{what}: {name} must hold integers, not {t.dtype}")
            if t.dim() != 1:
                raise ValueError(f"{what}: {name} must be 1-D, not shape {tuple(t.shape)}")
            return t.to(torch.int64)

        t, r = as_int(tables, "tables"), as_int(rows, "rows")
        offs = as_int(lookup_offsets, "lookup_offsets")
        if t.numel() != r.numel():
            raise ValueError(f"{what}: tables has {t.numel()} lookups, rows {r.numel()}")
        oc = offs.cpu()
        if oc.numel() < 1 or int(oc[0]) != 0 or int(oc[-1]) != r.numel():
            raise ValueError(f"{what}: lookup_offsets must run from 0 to the {r.numel()} "
                             f"lookups, not {oc[:1].tolist()}..{oc[-1:].tolist()}")
        if bool((oc[1:] < oc[:-1]).any()):
            i = int(torch.nonzero(oc[1:] < oc[:-1])[0])
            raise ValueError(f"{what}: lookup_offsets decreases at input {i} "
                             f"({int(oc[i])} -> {int(oc[i + 1])})")
        tc = t.cpu()
        bad_t = (tc < 0) | (tc >= self.n_tables)
        if bool(bad_t.any()):
            j = int(torch.nonzero(bad_t)[0])
            raise ValueError(f"{what}: lookup {j} names table {int(tc[j])}; the device has "
                             f"tables 0..{self.n_tables - 1}")
        return t.to(device), r.to(device), offs.to(device)

    def _bad_bag_lookups(self, tables, rows):
        """bool ``[L]``: rows outside their table (tables already checked)."""
        limit = (self._rows_cpu if rows.device.type == "cpu" else self._rows_dev)[tables]
        return (rows < 0) | (rows >= limit)

    def _raise_first_bad_bag(self, tables, rows, offs, bad, what):
        j = int(torch.nonzero(bad)[0])
        inp = int(torch.searchsorted(offs, torch.tensor(j), right=True)) - 1
        t = int(tables[j])
        raise IndexOutOfRangeError(t, int(rows[j]), (inp, j - int(offs[inp])),
                                   self._table_rows[t], what)

    def learn_bags(self, tables, rows):
        """Learn mode for lookups given one by one (multi-hot bags): lookup ``j`` is row
        ``rows[j]`` of table ``tables[j]`` (integer ``[L]``), learned in that order. Returns
        ``(hit, slot)`` ``[L]``. Range errors name the lookup; nothing is learned then."""
        self._need_open("learn_bags")
        if self._state != _LEARNING:
            raise DeviceStateError("HotlineDevice.learn_bags: the device is frozen; call "
                                   "clear() to re-learn from scratch or unfreeze() to "
                                   "continue learning")
        t, r = torch.as_tensor(tables), torch.as_tensor(rows)
        offs = torch.tensor([0, r.numel()], dtype=torch.int64)
        t, r, offs = self._as_bags(t, r, offs, "learn_bags", "cpu")
        bad = self._bad_bag_lookups(t, r)
        if bool(bad.any()):
            self._raise_first_bad_bag(t, r, offs, bad, "learn_bags")
        if r.numel() == 0:
            return torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.int64)
        return self._transport.learn(make_keys(t, r, self.config))

    # --- learn mode (spec section 4) ----------------------------------------------------
    def learn(self, sparse):
        """Learn mode (spec section 4): the lookups of ``sparse`` (integer ``[n, n_tables]``,
        row ``sparse[i, t]`` of table ``t``) go to the tag store in input order, each input's
        tables in table order.

        Returns ``(hit, slot)`` from the transport, ``[n, n_tables]`` CPU tensors. Raises
        :class:`IndexOutOfRangeError` for a row outside its table (nothing is learned then),
        :class:`DeviceStateError` while frozen (call :meth:`clear` or :meth:`unfreeze`) or
        closed.
        """
        self._need_open("learn")
        if self._state != _LEARNING:
            raise DeviceStateError("HotlineDevice.learn: the device is frozen; call clear() to "
                                   "re-learn from scratch or unfreeze() to continue learning")
        s = self._as_sparse(sparse, "sparse", "cpu")
        # One compiled pass: four torch ops over a mini-batch's lookups would fork the
        # intra-op threads each time, which is slow on a loaded machine.
        if first_bad_lookup(s, self._rows_cpu) >= 0:
            self._raise_first_bad(s, self._bad_lookups(s), "sparse")
        n = s.shape[0]
        keys = sparse_keys(s, self.config)
        hit, slot = self._transport.learn(keys.reshape(-1))
        return hit.reshape(n, self.n_tables), slot.reshape(n, self.n_tables)

    def clear(self):
        """Zero the tag store and drop the hot-table layout: back to learning from scratch
        (the trainer's periodic re-learn is ``clear(); learn(...); freeze()``, or
        :meth:`relearn`). Write the hot table back (:meth:`store_hot_table`) first."""
        self._need_open("clear")
        self._transport.clear()
        self._state = _LEARNING
        self._hot = None
        self._threshold = None

    def load_tag_store(self, dump):
        """Replace the tag store by ``dump`` (a :meth:`Transport.dump_tensors` dict, e.g. from
        a checkpoint) and check that reading it back gives the same entries. Leaves the device
        in the learning state: call :meth:`freeze` to lay out the hot table again."""
        self._need_open("load_tag_store")
        self.clear()
        self._transport.load_dump_tensors(dump)
        back = self._transport.dump_tensors()
        order = lambda d: torch.argsort(torch.as_tensor(d["bank"]).cpu() * self.config.sets
                                        + torch.as_tensor(d["set"]).cpu())
        want, got = order(dump), order(back)
        names = ["bank", "set", "valid", meta_name(self.config), "tag"]
        names += ["sketch"] if self.config.policy == "lfu" else []
        for name in names:
            a = torch.as_tensor(back[name]).cpu()[got]
            b = torch.as_tensor(dump[name]).cpu()[want].to(a.dtype)
            if not torch.equal(a, b):
                raise ScheduleError(f"the tag store did not load: field {name!r} differs "
                                    f"after the round trip")

    def unfreeze(self):
        """Back to learn mode without clearing the tag store (learning continues where it
        stopped, as the RTL ``learn`` input allows); the slot map is no longer used until the
        next :meth:`freeze` rebuilds it."""
        self._need_open("unfreeze")
        self._state = _LEARNING
        self._hot = None
        self._threshold = None

    def relearn(self, batches, popular_max_rrpv=None, hot_capacity=None):
        """``clear()``, ``learn`` each batch, ``freeze(popular_max_rrpv, hot_capacity)``;
        returns the new :class:`HotRows`. ``batches`` is one ``[n, n_tables]`` tensor/array
        or an iterable of them."""
        self._need_open("relearn")
        if isinstance(batches, (torch.Tensor, np.ndarray)):
            batches = [batches]
        self.clear()
        for b in batches:
            self.learn(b)
        return self.freeze(popular_max_rrpv, hot_capacity)

    # --- freeze: popular rows and the slot map (spec section 5) --------------------------
    def freeze(self, popular_max_rrpv=None, hot_capacity=None):
        """Switch to frozen mode with threshold ``popular_max_rrpv`` (default
        ``config.popular_max_rrpv``; 0..3): read the tag store out through the transport, lay
        out the hot table and build the slot map on ``device``.

        Returns :class:`HotRows` (sorted by slot; equals ``AccessLogger.popular_rows``).
        Calling it again while frozen re-reads the tag store (e.g. with another threshold).

        ``hot_capacity`` (``"compact"`` layout only): the hot table has at least this many
        rows (default 0), ``max(hot_capacity, n_hot)`` in all (:attr:`hot_capacity`): a
        caller that already holds a hot table of ``C`` rows passes
        ``C`` and reallocates only if the new hot set is larger.
        """
        self._need_open("freeze")
        if hot_capacity is not None:
            if self.hot_slots != "compact":
                raise ValueError("hot_capacity is for the compact hot-slot layout "
                                 "(HotlineDevice(..., hot_slots='compact')); the entry layout's "
                                 f"hot table has config.entries = {self.config.entries} rows")
            hot_capacity = _check_int(hot_capacity, "hot_capacity", 0)
        cfg = self.config
        if cfg.policy == "srrip":
            thr = _check_threshold(popular_max_rrpv, cfg.popular_max_rrpv)
        elif popular_max_rrpv is not None:
            raise ValueError("popular_max_rrpv is the srrip policy's threshold; this device's "
                             "EAL uses lfu (its threshold is EALConfig.popular_min_count)")
        else:
            thr = None
        d = self._transport.dump_tensors()
        valid = d["valid"].to(torch.bool)
        mask = (valid & (d["rrpv"] <= thr) if thr is not None
                else popular_entries(cfg, valid, d["count"]))
        beat, way = torch.nonzero(mask).unbind(1)
        bank, set_ = d["bank"][beat], d["set"][beat]
        tag = d["tag"][beat, way]
        slots = (bank * cfg.sets + set_) * cfg.ways + way
        order = torch.argsort(slots)
        slots, bank, set_, tag = slots[order], bank[order], set_[order], tag[order]
        tables, rows = split_keys(key_from_fields(bank, set_, tag, cfg), cfg)
        outside = tables >= self.n_tables
        if not bool(outside.any()):
            outside = rows >= self._rows_cpu[tables]
        if bool(outside.any()):
            i = int(torch.nonzero(outside)[0])
            raise DeviceStateError(
                f"HotlineDevice.freeze: the tag store holds table {int(tables[i])} row "
                f"{int(rows[i])} (slot {int(slots[i])}), outside the table description "
                f"{self.table_rows}; was the transport fed by someone else?")
        global_rows = self._offsets_cpu[tables] + rows
        if torch.unique(global_rows).numel() != global_rows.numel():
            raise DeviceStateError("HotlineDevice.freeze: the tag store holds a row twice; "
                                   "the transport's dump is inconsistent")
        if self._slot_map is None:
            self._slot_map = torch.empty(self.total_rows, dtype=self._slot_dtype,
                                         device=self.device)
        entry_slots = slots
        if self.hot_slots == "compact":
            slots = torch.arange(slots.numel(), dtype=torch.int64)
            self._hot_capacity = max(int(hot_capacity or 0), int(slots.numel()))
        self._slot_map.fill_(-1)
        self._slot_map[global_rows.to(self.device)] = slots.to(self.device, self._slot_dtype)
        self._hot = HotRows(slots, tables, rows, global_rows, entry_slots)
        self._threshold = thr
        self._generation += 1
        self._state = _FROZEN
        return self._hot

    # --- schedule (spec sections 6, 7) -------------------------------------------------
    def schedule(self, sparse_ws, micro_batch_size):
        """Classify and fragment one working set (spec sections 6 and 7) -> :class:`Schedule`.

        ``sparse_ws``: integer ``[n_inputs, n_tables]`` (moved to ``device``);
        ``micro_batch_size``: popular micro-batch size, >= 1. Pure tensor work on ``device``
        against the slot map; the cold list and a few counts are the only data copied back to
        the host (one copy). On CUDA that copy and ``torch.unique`` (whose output size depends
        on the data) are the two host synchronisations, both on the current stream. Equals ``verif.golden.fragment(sparse_ws, logger,
        micro_batch_size, popular_max_rrpv)`` on the same tag store.

        Raises :class:`DeviceStateError` unless frozen, :class:`IndexOutOfRangeError` for a row
        outside its table, ``ValueError``/``TypeError`` for a bad shape, dtype or
        ``micro_batch_size``.
        """
        self._need_frozen("schedule")
        mbs = _check_int(micro_batch_size, "micro_batch_size", 1)
        s = self._as_sparse(sparse_ws, "sparse_ws", self.device)
        n, T = s.shape
        bad = self._bad_lookups(s)
        # Out-of-range rows are clamped so that every kernel stays in bounds; the check is
        # reported after the one host copy (no extra synchronisation on a good input).
        g = (torch.where(bad, 0, s) + self._offsets_dev).reshape(-1)
        starts = torch.arange(0, n * T + 1, T, dtype=torch.int64, device=self.device)

        def report():
            self._raise_first_bad(s.cpu(), bad.cpu(), "sparse_ws")

        sched = self._schedule_flat(g, bad.any(), starts, n, T, T, mbs, report)
        sched.remapped = sched.remapped.view(sched.n_inputs, T)
        sched.hit = sched.hit.view(sched.n_inputs, T)
        return sched

    def schedule_bags(self, tables, rows, lookup_offsets, micro_batch_size):
        """:meth:`schedule` for inputs with any number of lookups (multi-hot bags; docs/spec.md
        section 7.6) -> :class:`Schedule` whose ``remapped`` and ``hit`` are flat ``[n_lookups]``
        and whose ``lookup_offsets`` (int64 ``[n_inputs + 1]``, device) bound each input's
        lookups.

        ``tables``, ``rows``: integer ``[L]``, lookup ``j`` is row ``rows[j]`` of table
        ``tables[j]``, in stream order (input order; within an input any fixed order, e.g.
        table then bag position); ``lookup_offsets``: int64 ``[n_inputs + 1]``, non-decreasing
        from 0 to ``L``: input ``i`` owns lookups ``lookup_offsets[i]:lookup_offsets[i+1]``
        (it may own none: an input without lookups is popular). With one lookup per table per
        input this is :meth:`schedule` exactly. The de-dup rule (spec 7.5) reserves room for
        the largest input of the working set instead of ``n_tables``. On CUDA, reading that
        largest input's size is a host synchronisation besides :meth:`schedule`'s two (the
        cold-list copy and ``torch.unique``); all three are once per working set, on the
        caller's (the schedule) stream.
        """
        self._need_frozen("schedule_bags")
        mbs = _check_int(micro_batch_size, "micro_batch_size", 1)
        t, r, offs = self._as_bags(tables, rows, lookup_offsets, "schedule_bags", self.device)
        n = offs.numel() - 1
        bad = self._bad_bag_lookups(t, r)
        tc = torch.where(bad, 0, t)
        g = torch.where(bad, 0, r) + self._offsets_dev[tc]
        widest = int((offs[1:] - offs[:-1]).max()) if n else 0

        def report():
            self._raise_first_bad_bag(t.cpu(), r.cpu(), offs.cpu(), bad.cpu(), "schedule_bags")

        sched = self._schedule_flat(g, bad.any(), offs, n, self.n_tables, max(1, widest), mbs,
                                    report)
        sched.lookup_offsets = offs[:sched.n_inputs + 1]
        return sched

    def _schedule_flat(self, g, bad_any, starts, n, T, widest, mbs, report_bad):
        """The schedule of ``n`` inputs whose lookups are the global rows ``g`` (int64 ``[L]``,
        device, in stream order; input ``i`` owns ``g[starts[i]:starts[i+1]]``). ``widest``:
        the most lookups one input may have (the de-dup rule's reserve); ``report_bad`` raises
        the range error when ``bad_any`` turns out true after the host copy."""
        dev = self.device
        entries = self._hot_capacity
        L = g.numel()
        lengths = starts[1:] - starts[:-1]
        input_of = torch.repeat_interleave(torch.arange(n, dtype=torch.int64, device=dev),
                                           lengths, output_size=L)
        slot = self._slot_map[g].to(torch.int64)                 # hot slot or -1
        hit = slot >= 0
        hit64 = hit.to(torch.int64)
        hits_in = torch.zeros(n, dtype=torch.int64, device=dev).index_add_(0, input_of, hit64)
        popular = hits_in == lengths                             # every lookup hits
        # Popular inputs first, then the non-popular ones, each in input order (a stable
        # partition by prefix sums): order[:n_popular] / order[n_popular:].
        idx = torch.arange(n, dtype=torch.int64, device=dev)
        pop64 = popular.to(torch.int64)
        c_pop = torch.cumsum(pop64, 0)                           # popular inputs in [0, i]
        n_pop_dev = pop64.sum()
        dest = torch.where(popular, c_pop - 1, n_pop_dev + idx - c_pop)
        order = torch.empty_like(idx)
        order[dest] = idx
        # Cold list: distinct missed global rows in first-use order, i.e. stream order (spec
        # 7.3). Hits are mapped to a sentinel above every global row, so torch.unique sees
        # every lookup and no mask has to be compacted first; the sentinel, if present, is
        # the largest unique and is forced to sort last.
        sentinel = self.total_rows
        key = torch.where(hit, sentinel, g)
        uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
        U = uniq.numel()
        pos = torch.arange(L, dtype=torch.int64, device=dev)
        first = torch.full((U,), L, dtype=torch.int64, device=dev)
        first = first.scatter_reduce(0, inverse, pos, reduce="amin", include_self=True)
        first = torch.where(uniq == sentinel, L, first)
        by_first = torch.argsort(first)                          # uniques by first use
        rank = torch.empty_like(by_first)
        rank[by_first] = torch.arange(U, dtype=torch.int64, device=dev)
        cold_all = uniq[by_first]                                # the sentinel last
        first_sorted = first[by_first]                           # their first lookups
        remapped = torch.where(hit, slot, entries + rank[inverse])
        # The de-dup table's bank-capacity rule (spec 7.5): the working set ends after the
        # input whose cold row makes a bank hold more than bank_capacity - widest rows.
        cut = self._dedup_cut(cold_all, first_sorted, sentinel, n, widest, input_of)
        in_ws = input_of < cut
        hits_before = torch.cat([torch.zeros(1, dtype=torch.int64, device=dev),
                                 torch.cumsum(hits_in, 0)])
        pops = torch.cat([torch.zeros(1, dtype=torch.int64, device=dev), c_pop])
        n_hits_dev = hits_before[cut]
        n_pop_cut_dev = pops[cut]
        lookups_cut = starts[cut]
        n_cold_dev = ((cold_all != sentinel) & (first_sorted < lookups_cut)).sum()
        # Distinct hot rows read (for Schedule.n_unique): mark the slots hit.
        seen = torch.zeros(entries + 1, dtype=torch.bool, device=dev)
        seen[torch.where(hit & in_ws, slot, entries)] = True
        n_hot_unique = seen[:entries].sum()
        host = torch.cat([cold_all, torch.stack([
            lookups_cut, n_hot_unique, bad_any.to(torch.int64), n_pop_dev, n_pop_cut_dev,
            n_hits_dev, n_cold_dev, cut.to(torch.int64)])]).cpu()
        if bool(host[-6]):
            report_bad()
        n_pop_all, n_popular, n_hits, n_cold, n_in = (int(v) for v in host[-5:])
        n_look = int(host[-8])
        cold_cpu = host[:n_cold]
        cold_tables = torch.searchsorted(self._offsets_cpu, cold_cpu, right=True) - 1
        cold_rows = cold_cpu - self._offsets_cpu[cold_tables]
        # The popular (non-popular) inputs below the cut are a prefix of each class's list.
        popular_idx = order[:n_popular]
        non_popular = order[n_pop_all:n_pop_all + n_in - n_popular]
        micro = list(torch.split(popular_idx, mbs)) if n_popular else []
        early = n_in < n
        if early:
            popular, remapped, hit = popular[:n_in], remapped[:n_look], hit[:n_look]
        sched = Schedule(
            popular=popular, popular_micro_batches=micro, non_popular=non_popular,
            cold_global_rows=cold_cpu, remapped=remapped, hit=hit, cold_tables=cold_tables,
            cold_rows=cold_rows, n_inputs=n_in, n_tables=T, n_lookups=n_look, n_hits=n_hits,
            n_popular=n_popular, n_cold=n_cold, n_unique=int(host[-7]) + n_cold,
            entries=entries, micro_batch_size=mbs, ended_early=early,
            generation=self._generation, _owner=self._token)
        c = self._counters
        c.lookups += n_look
        c.unique += sched.n_unique
        c.hits += n_hits
        c.popular_inputs += n_popular
        c.inputs += n_in
        c.cold_rows += n_cold
        c.working_sets += 1
        c.early_ends += int(early)
        return sched

    def _dedup_cut(self, cold_all, first_sorted, sentinel, n, widest, input_of):
        """Inputs in the working set under the de-dup bank-capacity rule (spec 7.5), as a
        0-dim device tensor: ``verif.golden.dedup_cut`` without leaving the device.
        ``cold_all``: distinct cold global rows by first use (the hits' sentinel last),
        ``first_sorted``: their first lookup positions, ``input_of``: each lookup's input,
        ``widest``: the reserve (``n_tables`` for one-hot inputs)."""
        fr = self.fragmenter
        dev = cold_all.device
        limit = fr.bank_capacity - widest
        valid = cold_all != sentinel
        if cold_all.numel() <= limit:          # no bank can reach the limit: no sync needed
            return torch.tensor(n, dtype=torch.int64, device=dev)
        g = torch.where(valid, cold_all, 0)
        tables = torch.searchsorted(self._offsets_dev, g, right=True) - 1
        keys = (tables << self.config.row_bits) | (g - self._offsets_dev[tables])
        bank = torch.where(valid, dedup_bank(keys, fr), fr.dedup_banks)
        by_bank = torch.sort(bank, stable=True).indices
        sorted_bank = bank[by_bank]
        starts = torch.searchsorted(sorted_bank, sorted_bank, right=False)
        ordinal = torch.empty_like(by_bank)
        ordinal[by_bank] = torch.arange(by_bank.numel(), device=dev) - starts
        tipping = valid & (ordinal == limit)
        first_input = input_of[torch.where(valid, first_sorted, 0)] + 1
        return torch.where(tipping, first_input, n).min().clamp(max=n)

    # --- gather / write back -------------------------------------------------------------
    def _check_schedule(self, sched, what):
        if not isinstance(sched, Schedule):
            raise ScheduleError(f"{what}: sched must be a Schedule, not {type(sched).__name__}")
        if sched._owner is not self._token:
            raise ScheduleError(f"{what}: the schedule was made by another HotlineDevice")

    def _check_host_table(self, host_table, what):
        if not isinstance(host_table, torch.Tensor):
            raise ScheduleError(f"{what}: host_table must be a torch.Tensor, not "
                                f"{type(host_table).__name__}")
        want = (self.total_rows, self.dim)
        if tuple(host_table.shape) != want:
            raise ScheduleError(f"{what}: host_table has shape {tuple(host_table.shape)}, "
                                f"expected [sum(table_rows), dim] = {list(want)}")
        if not host_table.dtype.is_floating_point:
            raise ScheduleError(f"{what}: host_table has dtype {host_table.dtype}, expected a "
                                f"floating-point table (float32)")
        if host_table.device.type != "cpu":
            raise ScheduleError(f"{what}: host_table must be in host memory, not on "
                                f"{host_table.device}")

    def _check_rows_buffer(self, buf, name, host_table, min_rows, exact, what):
        if not isinstance(buf, torch.Tensor):
            raise ScheduleError(f"{what}: {name} must be a torch.Tensor, not "
                                f"{type(buf).__name__}")
        if buf.dim() != 2 or buf.shape[1] != self.dim:
            raise ScheduleError(f"{what}: {name} has shape {tuple(buf.shape)}, expected "
                                f"[rows, dim={self.dim}]")
        if exact and buf.shape[0] != min_rows:
            raise ScheduleError(f"{what}: {name} has {buf.shape[0]} rows, the schedule has "
                                f"n_cold = {min_rows}")
        if buf.shape[0] < min_rows:
            raise ScheduleError(f"{what}: {name} has {buf.shape[0]} rows, fewer than the "
                                f"schedule's n_cold = {min_rows}")
        if buf.dtype != host_table.dtype:
            raise ScheduleError(f"{what}: {name} has dtype {buf.dtype}, host_table has "
                                f"{host_table.dtype}")

    def _host_copy(self, host_table):
        """Whether rows of ``host_table`` are copied by CPU threads in the driver instead of
        the transport's row mover: only for a transport that allows it (``model``) and a
        table whose rows the DMA engine cannot move (``ROW_BYTES`` not a multiple of
        ``bus_bytes`` or above ``max_row_bytes``, rows not contiguous)."""
        if not self._transport.host_copy:
            return False
        dcfg = self.device_config
        if dcfg is None:
            return True
        row_bytes = self.dim * host_table.element_size()
        return (row_bytes % dcfg.bus_bytes != 0 or row_bytes > dcfg.max_row_bytes
                or (self.dim > 1 and host_table.stride(1) != 1))

    def _need_visible(self, tensor, name, what):
        if not self._transport.is_device_visible(tensor):
            raise ScheduleError(
                f"{what}: {name} is not device-visible for the {self._transport.name} "
                f"transport: allocate it with HotlineDevice.alloc_host() (or new_staging())")

    def _program_tables(self, host_table, what):
        """``transport.set_tables`` for ``host_table`` unless it is already programmed."""
        self._need_visible(host_table, "host_table", what)
        key = (self._transport.bus_address(host_table), tuple(host_table.shape),
               tuple(host_table.stride()), host_table.dtype)
        layout = getattr(self._transport, "layout", None)
        if key != self._tables_key or layout is None or layout is not self._tables_layout:
            self._tables_key = None
            self._transport.set_tables(host_table, self._rows_cpu, self._offsets_cpu)
            self._tables_key = key
            self._tables_layout = getattr(self._transport, "layout", None)

    def _cold_keys(self, sched):
        """The GATHER / WRITE_BACK key list of ``sched``, built once per schedule (gather and
        write-back both use it)."""
        if sched._cold_keys is None:
            sched._cold_keys = (sched.cold_tables << self.config.row_bits) | sched.cold_rows
        return sched._cold_keys

    def gather(self, sched, host_table, staging):
        """Copy the schedule's cold rows ``host_table[sched.cold_global_rows]`` into
        ``staging[:n_cold]`` with the transport's ``GATHER`` commands (key list: the
        schedule's ``(cold_tables, cold_rows)``, at most ``max_count`` keys a command);
        returns ``staging[:n_cold]``.

        ``host_table``: ``[sum(table_rows), dim]`` floating tensor in device-visible host
        memory (any host tensor for ``model``; :meth:`alloc_host` for ``sim``);
        ``staging``: ``[>= n_cold, dim]`` device-visible host tensor of the same dtype with
        packed rows (see :meth:`new_staging`). Mismatches raise :class:`ScheduleError`; a
        command the device refuses raises :class:`~sw_driver.errors.DeviceCommandError`.
        """
        self._need_open("gather")
        what = "HotlineDevice.gather"
        self._check_schedule(sched, what)
        self._check_host_table(host_table, what)
        self._check_rows_buffer(staging, "staging", host_table, sched.n_cold, False, what)
        if staging.device.type != "cpu":
            raise ScheduleError(f"{what}: staging must be in host memory, not on "
                                f"{staging.device}")
        n = sched.n_cold
        if self._host_copy(host_table):
            out = gather_rows(host_table, sched.cold_global_rows, staging, self._pool)
        else:
            self._program_tables(host_table, what)
            self._need_visible(staging, "staging", what)
            out = staging[:n]
            keys = self._cold_keys(sched)
            for a, b in command_chunks(n, self.device_config.max_count):
                self._transport.gather(keys[a:b], out[a:b])
        self._counters.bytes_gathered += n * self.dim * host_table.element_size()
        return out

    def write_back(self, sched, rows, host_table):
        """Scatter updated cold rows back: ``host_table[sched.cold_global_rows] = rows``
        with the transport's ``WRITE_BACK`` commands; returns ``host_table``.

        ``rows``: ``[n_cold, dim]`` with ``host_table``'s dtype, anywhere: rows that are not
        device-visible host memory with packed rows (a GPU tensor, a plain tensor for
        ``sim``) are first copied into a device-visible buffer (a blocking copy).
        Mismatches raise :class:`ScheduleError`.
        """
        self._need_open("write_back")
        what = "HotlineDevice.write_back"
        self._check_schedule(sched, what)
        self._check_host_table(host_table, what)
        self._check_rows_buffer(rows, "rows", host_table, sched.n_cold, True, what)
        n = sched.n_cold
        if self._host_copy(host_table):
            if rows.device.type != "cpu":
                rows = rows.to("cpu")
            scatter_rows(host_table, sched.cold_global_rows, rows, self._pool)
        elif n:
            self._program_tables(host_table, what)
            packed = rows.dim() == 2 and (n < 2 or rows.stride(0) == self.dim) and (
                self.dim < 2 or rows.stride(1) == 1)
            if rows.device.type != "cpu" or not packed \
                    or not self._transport.is_device_visible(rows):
                bounce = self._transport.alloc((n, self.dim), host_table.dtype)
                bounce.copy_(rows)
                rows = bounce
            keys = self._cold_keys(sched)
            for a, b in command_chunks(n, self.device_config.max_count):
                self._transport.write_back(keys[a:b], rows[a:b])
        self._counters.bytes_written_back += n * self.dim * host_table.element_size()
        return host_table

    def alloc_host(self, shape, dtype=torch.float32):
        """A device-visible host buffer of ``shape`` (contents undefined) from the
        transport's allocator: a (pinned when CUDA is available) tensor for ``model``, a
        view into the simulated host DRAM for ``sim``. The host table must come from here
        for ``sim``."""
        self._need_open("alloc_host")
        return self._transport.alloc(shape, dtype)

    def new_staging(self, rows, dtype=torch.float32):
        """A device-visible staging buffer ``[rows, dim]`` (:meth:`alloc_host`; pinned for
        ``model`` when CUDA is available)."""
        self._need_open("new_staging")
        rows = _check_int(rows, "rows", 0)
        return self._transport.alloc((rows, self.dim), dtype)

    def device_counters(self):
        """The device's event counters (``transport.device_counters()``: the lower-case
        names of ``hotline_spec.registers.COUNTERS``)."""
        self._need_open("device_counters")
        return self._transport.device_counters()

    # --- hot table helpers ----------------------------------------------------------------
    def load_hot_table(self, host_table, hot_table=None):
        """The hot table of the current layout: ``[hot_capacity, dim]`` on ``device``
        (``hot_table`` is filled in place when given), row ``slots[i]`` =
        ``host_table[global_rows[i]]``, other rows zero. Requires the frozen state."""
        self._need_frozen("load_hot_table")
        what = "HotlineDevice.load_hot_table"
        self._check_host_table(host_table, what)
        hot = self._hot
        rows = torch.empty(hot.n, self.dim, dtype=host_table.dtype)
        gather_rows(host_table, hot.global_rows, rows, self._pool)
        if hot_table is None:
            hot_table = torch.zeros(self._hot_capacity, self.dim, dtype=host_table.dtype,
                                    device=self.device)
        else:
            self._check_rows_buffer(hot_table, "hot_table", host_table, self._hot_capacity,
                                    True, what)
            hot_table.zero_()
        hot_table[hot.slots.to(hot_table.device)] = rows.to(hot_table.device)
        return hot_table

    def store_hot_table(self, hot_table, host_table):
        """Write the hot rows of the current layout back to the host table
        (``host_table[global_rows] = hot_table[slots]``), e.g. before a re-learn. Requires
        the frozen state; returns ``host_table``."""
        self._need_frozen("store_hot_table")
        what = "HotlineDevice.store_hot_table"
        self._check_host_table(host_table, what)
        self._check_rows_buffer(hot_table, "hot_table", host_table, self._hot_capacity, True,
                                what)
        hot = self._hot
        rows = hot_table[hot.slots.to(hot_table.device)].to("cpu")
        scatter_rows(host_table, hot.global_rows, rows, self._pool)
        return host_table

    # --- counters ---------------------------------------------------------------------------
    def counters(self):
        """A snapshot of the :class:`~sw_driver.counters.Counters`."""
        self._need_open("counters")
        return self._counters.copy()

    def reset_counters(self):
        """Zero the counters."""
        self._need_open("reset_counters")
        self._counters.reset()

    # --- lifetime ---------------------------------------------------------------------------
    def close(self):
        """Release the transport, the gather threads and the slot map. Idempotent; every
        other call afterwards raises :class:`DeviceStateError`."""
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        self._slot_map = None
        self._hot = None
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        finally:
            if self._close_transport:
                self._transport.close()

    def __enter__(self):
        """Context manager: ``with HotlineDevice(...) as dev:`` closes it on exit."""
        self._need_open("__enter__")
        return self

    def __exit__(self, *exc):
        """Close the device; exceptions propagate."""
        self.close()
        return False

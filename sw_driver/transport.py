"""How the driver reaches the accelerator: its command set (``docs/driver.md``).

:class:`Transport` is the register/memory-level access to one Hotline accelerator that the
driver needs (``hotline_spec/commands.py``, ``hotline_spec/registers.py``):

* the tag store of the Embedding Access Logger (EAL): learn-mode lookups, frozen-mode
  lookups, a readout (``dump``) and a ``clear`` (``docs/spec.md`` sections 4, 5 and 8);
* device-visible host memory (:meth:`Transport.alloc`, :meth:`Transport.bus_address`);
* the row mover: :meth:`Transport.set_tables` programs the table registers,
  :meth:`Transport.gather` / :meth:`Transport.write_back` run ``GATHER`` / ``WRITE_BACK``
  commands on a key list, refused commands raise
  :class:`~sw_driver.errors.DeviceCommandError`;
* the device's event counters (:meth:`Transport.device_counters`).

A transport does not know about working sets; it speaks in EAL keys
``(table << row_bits) | row`` (spec section 2).

:func:`open_transport` builds one by name:

* ``"model"`` -- :class:`sw_driver.model_transport.ModelTransport`: the PyTorch golden model
  (``verif.golden.AccessLogger``) and CPU threads in this process, with the device's command
  checks (:mod:`sw_driver.device_checks`).
* ``"sim"`` -- :class:`sw_driver.sim_transport.SimTransport`: the Verilated RTL top level
  in a simulator subprocess that this process starts, with a shared-memory file as the
  simulated host DRAM.
* ``"pcie"`` -- the FPGA card over PCIe; not implemented yet.
"""

from abc import ABC, abstractmethod

import torch

from hotline_spec.config import SKETCH_ROWS, DeviceConfig, EALConfig
from verif.golden.access_logger import meta_name

__all__ = ["Transport", "open_transport", "register_transport", "TRANSPORTS",
           "as_device_config"]


def as_device_config(config, required=False):
    """``(eal_config, device_config)`` for an :class:`EALConfig` (wrapped as
    ``DeviceConfig(eal=config)``) or a :class:`DeviceConfig`. An EALConfig that no device can
    have (a tag too wide for the dump word) gives ``device_config = None``, or ``ValueError``
    when ``required``."""
    if isinstance(config, DeviceConfig):
        return config.eal, config
    if not isinstance(config, EALConfig):
        raise TypeError(f"config must be an EALConfig or a DeviceConfig, not "
                        f"{type(config).__name__}")
    try:
        return config, DeviceConfig(eal=config)
    except ValueError:
        if required:
            raise
        return config, None


class Transport(ABC):
    """Register/memory-level access to one Hotline accelerator (its command set).

    ``config`` is the :class:`EALConfig` of the tag store, ``device_config`` the whole
    :class:`DeviceConfig` (``None`` only for a model transport whose EALConfig no device can
    have, e.g. 64-bit keys: it then has no row mover).

    Keys are int64 tensors of EAL keys; they are processed in the flattened (row-major)
    order of the tensor, which is the spec's stream order. Results are int64/bool tensors of
    the keys' shape on the CPU.

    Subclasses implement :meth:`learn`, :meth:`lookup`, :meth:`dump`, :meth:`clear` and
    :meth:`close`; :meth:`dump_tensors` has a generic implementation on top of :meth:`dump`
    that a transport with a faster readout may override. The memory and row-mover methods
    (:meth:`alloc`, :meth:`bus_address`, :meth:`set_tables`, :meth:`gather`,
    :meth:`write_back`, :meth:`device_counters`) raise ``NotImplementedError`` unless a
    transport provides them.
    """

    #: The transport's registry name (``"model"``, ``"sim"``, ``"pcie"``).
    name = "abstract"
    #: Whether the driver may copy rows with CPU threads itself when a host table's rows do
    #: not fit the row mover (``ROW_BYTES`` not a multiple of ``bus_bytes``, ...): true for
    #: the in-process ``model``; a real or simulated device refuses such a table.
    host_copy = False

    def __init__(self, config):
        self.config, self.device_config = as_device_config(config)

    @abstractmethod
    def learn(self, keys):
        """Learn-mode lookups (spec section 4) of ``keys`` in stream order.

        Returns ``(hit, slot)``: bool and int64 tensors shaped like ``keys``; ``hit`` says
        whether the key was already present, ``slot`` where it now lives.
        """

    @abstractmethod
    def lookup(self, keys, popular_max_rrpv):
        """Frozen-mode lookups (spec section 4): read-only.

        Returns ``(hit, slot)``: ``hit`` iff the key's entry is valid with
        ``rrpv <= popular_max_rrpv``; ``slot`` is its hot-table slot on a hit (meaningless on
        a miss).
        """

    @abstractmethod
    def dump(self):
        """The whole tag store as the RTL ``dump`` stream's beats (spec section 8): a list
        of ``(bank, set, ways)`` with ``ways`` a tuple of ``config.ways`` triples
        ``(valid, rrpv, tag)`` (Python ints), set-major then bank (the RTL streams them
        bank-major, the entries' slot order)."""

    @abstractmethod
    def clear(self):
        """Zero the tag store (every entry ``{valid 0, rrpv 0, tag 0}``), spec section 4."""

    @abstractmethod
    def close(self):
        """Release the transport's resources; it is not used afterwards. Idempotent."""

    def dump_tensors(self):
        """The tag store as tensors: ``{"bank", "set"}`` int64 ``[beats]`` and
        ``{"valid", "rrpv" (srrip) or "count" (lfu), "tag"}`` int64/bool ``[beats, ways]``
        (and the lfu ``"sketch"`` ``[beats, 2, sketch_counters]``), one row per :meth:`dump`
        beat (any order, every (bank, set) once). Generic version built from :meth:`dump`;
        tags ``>= 2**63`` (64-bit keys) are folded to their int64 bit pattern."""
        cfg = self.config
        beats = self.dump()
        banks, sets, vals, sketches = [], [], [], []
        for beat in beats:
            bank, set_, ways = beat[:3]
            sketches.append(beat[3] if len(beat) > 3 else ())
            if len(ways) != cfg.ways:
                raise ValueError(f"dump beat for bank {bank} set {set_} has {len(ways)} ways, "
                                 f"expected {cfg.ways}")
            banks.append(int(bank))
            sets.append(int(set_))
            vals.append([(int(bool(v)), int(r), int(t) - (1 << 64) if int(t) >= 1 << 63
                          else int(t)) for v, r, t in ways])
        data = torch.tensor(vals, dtype=torch.int64).reshape(len(beats), cfg.ways, 3)
        out = {"bank": torch.tensor(banks, dtype=torch.int64),
               "set": torch.tensor(sets, dtype=torch.int64),
               "valid": data[..., 0].bool(), meta_name(cfg): data[..., 1], "tag": data[..., 2]}
        if cfg.policy == "lfu":
            out["sketch"] = torch.tensor(sketches, dtype=torch.int64).reshape(
                len(beats), SKETCH_ROWS, cfg.sketch_counters)
        return out

    # --- device-visible memory and the row mover --------------------------------------
    def alloc(self, shape, dtype=torch.float32):
        """A host buffer of ``shape``/``dtype`` that the device can reach by DMA (contents
        undefined). It stays valid while the tensor (or a view of it) lives."""
        raise NotImplementedError(f"{type(self).__name__} has no device-visible memory")

    def bus_address(self, tensor):
        """The bus address of ``tensor``'s first element; raises
        :class:`~sw_driver.errors.ScheduleError` for a tensor the device cannot reach."""
        raise NotImplementedError(f"{type(self).__name__} has no device-visible memory")

    def is_device_visible(self, tensor):
        """Whether :meth:`bus_address` accepts ``tensor``."""
        from .errors import ScheduleError
        try:
            self.bus_address(tensor)
        except (ScheduleError, NotImplementedError):
            return False
        return True

    def set_tables(self, host_table, table_rows, table_offsets):
        """Program the table registers: table ``t``'s row 0 is
        ``host_table[table_offsets[t]]``, its stride the host table's row stride, its
        ``TABLE_ROWS`` ``table_rows[t]``; ``ROW_BYTES`` = ``dim * element_size``. Unused
        slots get 0 rows. ``host_table`` must be device-visible."""
        raise NotImplementedError(f"{type(self).__name__} has no row mover")

    def gather(self, keys, out):
        """One ``GATHER`` command: row ``i`` of ``out`` (device-visible, ``[len(keys), dim]``,
        contiguous, the tables' dtype) = the table row of ``keys[i]``. Returns ``out``.
        A refused command raises :class:`~sw_driver.errors.DeviceCommandError` and moves
        nothing."""
        raise NotImplementedError(f"{type(self).__name__} has no row mover")

    def write_back(self, keys, rows):
        """One ``WRITE_BACK`` command: the table row of ``keys[i]`` = ``rows[i]``
        (device-visible, ``[len(keys), dim]``, contiguous)."""
        raise NotImplementedError(f"{type(self).__name__} has no row mover")

    def device_counters(self):
        """The device's event counters: ``{name: int}`` with the lower-case names of
        ``hotline_spec.registers.COUNTERS``, in that order."""
        raise NotImplementedError(f"{type(self).__name__} has no device counters")

    def load_dump_tensors(self, dump):
        """Replace the whole tag store by ``dump`` (the form :meth:`dump_tensors` returns,
        beats in any order), e.g. from a checkpoint. Transports that cannot write the tag
        store directly raise ``NotImplementedError``: their state is rebuilt by learning."""
        raise NotImplementedError(
            f"the {type(self).__name__} transport cannot load a tag store; learn again instead")

    def __enter__(self):
        """Context manager: ``with open_transport(...) as t:`` closes it on exit."""
        return self

    def __exit__(self, *exc):
        """Close the transport; exceptions propagate."""
        self.close()
        return False


def _not_yet(name):
    def factory(config, **options):
        raise NotImplementedError(
            f"transport {name!r} is not implemented yet: the card transport needs BAR0 "
            f"access and DMA-able host memory; use transport='model' (the golden model in "
            f"process) or transport='sim' (the simulated RTL)")
    return factory


def _model(config, **options):
    from .model_transport import ModelTransport
    return ModelTransport(config, **options)


def _sim(config, **options):
    from .sim_transport import SimTransport
    return SimTransport(config, **options)


#: name -> factory(config, **options) -> Transport
TRANSPORTS = {"model": _model, "sim": _sim, "pcie": _not_yet("pcie")}


def register_transport(name, factory):
    """Register ``factory(config, **options) -> Transport`` under ``name`` (replaces an
    existing entry; this is how other transports plug in)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"transport name must be a non-empty str, not {name!r}")
    if not callable(factory):
        raise TypeError(f"transport factory for {name!r} must be callable")
    TRANSPORTS[name] = factory


def open_transport(name, config, **options):
    """Open the transport registered as ``name`` (``"model"``, ``"sim"``, ``"pcie"``) for
    ``config``: a :class:`~hotline_spec.config.DeviceConfig`, or an
    :class:`~hotline_spec.config.EALConfig` (then ``DeviceConfig(eal=config)``, the default
    host interface). ``options`` go to the factory (``model``: ``threads``; ``sim``: see
    :class:`~sw_driver.sim_transport.SimTransport`).

    Raises ``ValueError`` for an unknown name and ``NotImplementedError`` for ``"pcie"``.
    """
    eal, dcfg = as_device_config(config)
    try:
        factory = TRANSPORTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown transport {name!r}: expected one of "
                         f"{', '.join(repr(n) for n in TRANSPORTS)}") from None
    arg = dcfg if dcfg is not None else eal
    transport = factory(arg, **options) if options else factory(arg)
    if not isinstance(transport, Transport):
        raise TypeError(f"transport factory {name!r} returned {type(transport).__name__}, "
                        f"not a Transport")
    return transport

"""How the driver reaches the tag store of the Embedding Access Logger (EAL).

:class:`Transport` is the register/memory-level access to the tag store that the driver needs
(``docs/driver.md``; the operations are those of the RTL lookup engine, ``docs/spec.md``
section 8): learn-mode lookups, frozen-mode lookups, a readout (``dump``) and a ``clear``.
A transport does not know about tables, offsets or working sets; it speaks in EAL keys
``(table << row_bits) | row`` (spec section 2).

:func:`open_transport` builds one by name:

* ``"model"`` -- :class:`sw_driver.model_transport.ModelTransport`, the PyTorch golden model
  (``verif.golden.AccessLogger``) in this process.
* ``"sim"`` -- the RTL in a simulator; not implemented yet.
* ``"pcie"`` -- the FPGA card over PCIe; not implemented yet.
"""

from abc import ABC, abstractmethod

import torch

from hotline_hw.config import EALConfig

__all__ = ["Transport", "open_transport", "register_transport", "TRANSPORTS"]


class Transport(ABC):
    """Register/memory-level access to one EAL tag store (spec sections 4, 5 and 8).

    Keys are int64 tensors of EAL keys; they are processed in the flattened (row-major)
    order of the tensor, which is the spec's stream order. Results are int64/bool tensors of
    the keys' shape on the CPU.

    Subclasses implement :meth:`learn`, :meth:`lookup`, :meth:`dump`, :meth:`clear` and
    :meth:`close`; :meth:`dump_tensors` has a generic implementation on top of :meth:`dump`
    that a transport with a faster readout may override.
    """

    #: The transport's registry name (``"model"``, ``"sim"``, ``"pcie"``).
    name = "abstract"

    def __init__(self, config):
        if not isinstance(config, EALConfig):
            raise TypeError(f"config must be an EALConfig, not {type(config).__name__}")
        self.config = config

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
        """The whole tag store as the RTL ``dump`` stream emits it (spec section 8): a list
        of ``(bank, set, ways)`` with ``ways`` a tuple of ``config.ways`` triples
        ``(valid, rrpv, tag)`` (Python ints), set-major then bank."""

    @abstractmethod
    def clear(self):
        """Zero the tag store (every entry ``{valid 0, rrpv 0, tag 0}``), spec section 4."""

    @abstractmethod
    def close(self):
        """Release the transport's resources; it is not used afterwards. Idempotent."""

    def dump_tensors(self):
        """The tag store as tensors: ``{"bank", "set"}`` int64 ``[beats]`` and
        ``{"valid", "rrpv", "tag"}`` int64/bool ``[beats, ways]``, one row per :meth:`dump`
        beat (any order, every (bank, set) once). Generic version built from :meth:`dump`;
        tags ``>= 2**63`` (64-bit keys) are folded to their int64 bit pattern."""
        cfg = self.config
        beats = self.dump()
        banks, sets, vals = [], [], []
        for bank, set_, ways in beats:
            if len(ways) != cfg.ways:
                raise ValueError(f"dump beat for bank {bank} set {set_} has {len(ways)} ways, "
                                 f"expected {cfg.ways}")
            banks.append(int(bank))
            sets.append(int(set_))
            vals.append([(int(bool(v)), int(r), int(t) - (1 << 64) if int(t) >= 1 << 63
                          else int(t)) for v, r, t in ways])
        data = torch.tensor(vals, dtype=torch.int64).reshape(len(beats), cfg.ways, 3)
        return {"bank": torch.tensor(banks, dtype=torch.int64),
                "set": torch.tensor(sets, dtype=torch.int64),
                "valid": data[..., 0].bool(), "rrpv": data[..., 1], "tag": data[..., 2]}

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
    def factory(config):
        raise NotImplementedError(
            f"transport {name!r} is not implemented yet: the sim/pcie transports land with the "
            f"register interface; use transport='model' (the golden AccessLogger) for now")
    return factory


def _model(config):
    from .model_transport import ModelTransport
    return ModelTransport(config)


#: name -> factory(config) -> Transport
TRANSPORTS = {"model": _model, "sim": _not_yet("sim"), "pcie": _not_yet("pcie")}


def register_transport(name, factory):
    """Register ``factory(config) -> Transport`` under ``name`` (replaces an existing entry;
    this is how the sim/pcie transports plug in)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"transport name must be a non-empty str, not {name!r}")
    if not callable(factory):
        raise TypeError(f"transport factory for {name!r} must be callable")
    TRANSPORTS[name] = factory


def open_transport(name, config):
    """Open the transport registered as ``name`` (``"model"``, ``"sim"``, ``"pcie"``) for
    ``config`` (an :class:`~hotline_hw.config.EALConfig`).

    Raises ``ValueError`` for an unknown name and ``NotImplementedError`` for ``"sim"`` and
    ``"pcie"``, which land with the register interface.
    """
    if not isinstance(config, EALConfig):
        raise TypeError(f"config must be an EALConfig, not {type(config).__name__}")
    try:
        factory = TRANSPORTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown transport {name!r}: expected one of "
                         f"{', '.join(repr(n) for n in TRANSPORTS)}") from None
    transport = factory(config)
    if not isinstance(transport, Transport):
        raise TypeError(f"transport factory {name!r} returned {type(transport).__name__}, "
                        f"not a Transport")
    return transport

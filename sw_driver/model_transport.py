"""The ``model`` transport: the tag store is the PyTorch golden model in this process.

:class:`ModelTransport` wraps :class:`verif.golden.AccessLogger` (``docs/spec.md`` sections
4, 5 and 8) behind the :class:`~sw_driver.transport.Transport` interface, so the driver runs
end to end, bit-exact with the RTL, without hardware.
"""

import torch

from verif.golden import AccessLogger

from .errors import DeviceStateError
from .transport import Transport

__all__ = ["ModelTransport"]


class ModelTransport(Transport):
    """A :class:`~sw_driver.transport.Transport` backed by the golden
    :class:`~verif.golden.AccessLogger` (``logger`` attribute, read it, do not change it
    behind the transport's back).

    ``ModelTransport(config)`` starts with a cleared tag store.
    """

    name = "model"

    def __init__(self, config):
        super().__init__(config)
        self.logger = AccessLogger(config)
        self._closed = False

    def _check_open(self, what):
        if self._closed:
            raise DeviceStateError(f"ModelTransport.{what}() after close()")

    @staticmethod
    def _keys(keys):
        keys = torch.as_tensor(keys)
        if keys.device.type != "cpu":
            keys = keys.cpu()
        return keys

    def learn(self, keys):
        """Learn-mode lookups in stream order (spec section 4) -> ``(hit, slot)``."""
        self._check_open("learn")
        res = self.logger.learn(self._keys(keys))
        return res.hit, res.slot

    def lookup(self, keys, popular_max_rrpv=None):
        """Frozen-mode lookups (spec section 4) -> ``(hit, slot)``; read-only. The threshold
        defaults to ``config.popular_max_rrpv``."""
        self._check_open("lookup")
        res = self.logger.lookup(self._keys(keys), popular_max_rrpv)
        return res.hit, res.slot

    def dump(self):
        """The tag store in RTL ``dump`` order (spec section 8): a list of
        ``DumpBeat(bank, set, ways)``."""
        self._check_open("dump")
        return self.logger.dump()

    def dump_tensors(self):
        """The tag store as tensors in ``dump`` order (fast path of
        :meth:`Transport.dump_tensors`)."""
        self._check_open("dump_tensors")
        return self.logger.dump_tensors()

    def load_dump_tensors(self, dump):
        """Replace the golden tag store by ``dump`` (:meth:`dump_tensors` form, any beat
        order); the logger checks ranges and duplicate tags."""
        self._check_open("load_dump_tensors")
        cfg = self.config
        bank = torch.as_tensor(dump["bank"], dtype=torch.int64)
        set_ = torch.as_tensor(dump["set"], dtype=torch.int64)
        state = {}
        for name, dtype in (("valid", torch.bool), ("rrpv", torch.int64), ("tag", torch.int64)):
            out = torch.zeros(cfg.banks, cfg.sets, cfg.ways, dtype=dtype)
            out[bank, set_] = torch.as_tensor(dump[name]).to(dtype)
            state[name] = out
        self.logger.load_state_dict(state)

    def clear(self):
        """Zero the tag store (spec section 4)."""
        self._check_open("clear")
        self.logger.clear()

    def close(self):
        """Mark the transport closed (idempotent); later calls raise
        :class:`~sw_driver.errors.DeviceStateError`."""
        self._closed = True

    def __repr__(self):
        state = "closed" if self._closed else repr(self.logger)
        return f"ModelTransport({state})"

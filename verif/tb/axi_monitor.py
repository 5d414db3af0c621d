"""A valid/ready handshake checker for cocotb benches: AXI4 / AXI4-Lite channels or any stream.

The rules (AMBA AXI4 A3.2.1, the same as Amaranth's ``lib.stream``): once ``valid`` is high it
stays high until the cycle in which ``ready`` is high too, and every payload signal keeps its
value over that time; optionally, payload signals must hold no X or Z while ``valid`` is high.
Whichever side breaks a rule (the DUT or a bus model of the bench) is reported.

:class:`ChannelChecker` is the rule itself, a plain-Python object fed one sample per cycle (so
it can be unit-tested without a simulator); :class:`HandshakeMonitor` samples any number of
channels in one coroutine (one wake-up per cycle for all of them: ten coroutines would cost
ten scheduler round trips per cycle)::

    mon = HandshakeMonitor(dut.clk, dut.rst)
    mon.add_axi(dut, "m_axi")                       # aw, w, b, ar, r
    mon.add_axi(dut, "s_axil")
    mon.start()
    ...
    mon.assert_clean()                              # names channel, cycle and signal
"""

from typing import NamedTuple

import cocotb
from cocotb.triggers import RisingEdge

__all__ = ["HandshakeMonitor", "ChannelChecker", "Violation", "HandshakeViolation",
           "AXI_PAYLOAD"]

# Payload signal suffixes per AXI channel (AXI4 and AXI4-Lite); absent ones are skipped.
AXI_PAYLOAD = {
    "aw": ("id", "addr", "len", "size", "burst", "lock", "cache", "prot", "qos", "region",
           "user"),
    "w": ("data", "strb", "last", "user"),
    "b": ("id", "resp", "user"),
    "ar": ("id", "addr", "len", "size", "burst", "lock", "cache", "prot", "qos", "region",
           "user"),
    "r": ("id", "data", "resp", "last", "user"),
}


class HandshakeViolation(AssertionError):
    """A valid/ready rule was broken (raised by :meth:`HandshakeMonitor.assert_clean`)."""


class Violation(NamedTuple):
    """One broken rule: ``kind`` is ``"valid_dropped"``, ``"payload_changed"`` or ``"xz"``."""
    channel: str
    cycle: int
    signal: str
    kind: str
    detail: str

    def __str__(self):
        return f"{self.channel} cycle {self.cycle}: {self.signal}: {self.detail}"


def _resolvable(value):
    """False when a sampled value holds an X, Z (or another non-0/1 state)."""
    ok = getattr(value, "is_resolvable", None)
    if ok is not None:
        return bool(ok)
    try:
        int(value)
    except (ValueError, TypeError):
        return False
    return True


class ChannelChecker:
    """The handshake rules of one channel, fed one sample per cycle.

    Parameters
    ----------
    name : str
        Channel name used in messages (e.g. ``"m_axi.aw"``).
    valid_name : str
        Name of the valid signal (messages).
    check_xz : bool
        Also report payload signals that are not 0/1 while ``valid`` is high.

    Attributes
    ----------
    violations : list of Violation
        Everything reported so far.
    transfers : int
        Handshakes seen (a sanity count: a checker that saw none checked nothing).
    """

    def __init__(self, name, valid_name="valid", check_xz=False):
        self.name = name
        self.valid_name = valid_name
        self.check_xz = check_xz
        self.violations = []
        self.transfers = 0
        self.reset()

    def reset(self):
        """Forget the beat being offered (a reset ends every handshake)."""
        self._held = None  # payload dict offered and not taken in the previous cycle

    @property
    def stalled(self):
        """True when the previous sample offered a beat that was not taken."""
        return self._held is not None

    def sample(self, cycle, valid, ready, payload):
        """Check cycle ``cycle``: ``valid``/``ready`` the values at the clock edge,
        ``payload`` a dict of signal name -> value (read only when needed: may be a callable
        returning that dict). Returns the violations found in this cycle."""
        found = []
        v = _resolvable(valid) and int(valid) == 1
        if not _resolvable(valid):
            found.append(Violation(self.name, cycle, self.valid_name, "xz",
                                   f"{self.valid_name} is {valid} (not 0/1)"))
        if not v:
            if self._held is not None:
                found.append(Violation(self.name, cycle, self.valid_name, "valid_dropped",
                                       f"{self.valid_name} fell before ready (beat offered "
                                       f"since cycle {self._held_since})"))
            self._held = None
            self.violations += found
            return found
        values = payload() if callable(payload) else payload
        if self._held is not None:
            for sig, old in self._held.items():
                new = values[sig]
                if new != old:
                    found.append(Violation(self.name, cycle, sig, "payload_changed",
                                           f"changed from {old} to {new} while valid and not "
                                           f"ready (offered since cycle {self._held_since})"))
        if self.check_xz:
            for sig, value in values.items():
                if not _resolvable(value):
                    found.append(Violation(self.name, cycle, sig, "xz",
                                           f"is {value} while valid"))
        r = _resolvable(ready) and int(ready) == 1
        if r:
            self.transfers += 1
            self._held = None
        else:
            if self._held is None:
                self._held_since = cycle
            self._held = dict(values)
        self.violations += found
        return found


class _Channel:
    __slots__ = ("checker", "valid", "ready", "payload")

    def __init__(self, checker, valid, ready, payload):
        self.checker, self.valid, self.ready, self.payload = checker, valid, ready, payload


class HandshakeMonitor:
    """Samples valid/ready channels at every rising clock edge and records violations.

    Parameters
    ----------
    clock : cocotb handle
    reset : cocotb handle, optional
        While it is at ``reset_active_level`` nothing is checked and every checker forgets
        its beat.
    check_xz : bool
        Report X/Z on a payload while valid (a 2-state simulator such as Verilator never
        shows any).
    max_violations : int
        Keep at most this many (the count in :attr:`n_violations` goes on).

    Attributes
    ----------
    violations : list of Violation
        In the order seen, across channels.
    cycle : int
        Rising edges seen since :meth:`start`.
    channels : dict of str -> ChannelChecker
    """

    def __init__(self, clock, reset=None, *, check_xz=False, reset_active_level=True,
                 max_violations=100):
        self.clock = clock
        self.reset = reset
        self.reset_level = int(reset_active_level)
        self.check_xz = check_xz
        self.max_violations = max_violations
        self.violations = []
        self.n_violations = 0
        self.cycle = 0
        self._channels = []
        self._task = None

    @property
    def channels(self):
        return {ch.checker.name: ch.checker for ch in self._channels}

    def add_channel(self, name, valid, ready, payload):
        """Watch one channel: ``valid``/``ready`` handles, ``payload`` a dict of signal name
        -> handle (or a list of handles, named by their ``_name``)."""
        if not isinstance(payload, dict):
            payload = {h._name: h for h in payload}
        checker = ChannelChecker(name, valid._name, self.check_xz)
        self._channels.append(_Channel(checker, valid, ready, dict(payload)))
        return checker

    def add_axi(self, dut, prefix, channels=("aw", "w", "b", "ar", "r")):
        """Watch the AXI channels ``<prefix>_<ch>valid``/``ready`` of ``dut`` with every
        payload signal of :data:`AXI_PAYLOAD` that exists."""
        for ch in channels:
            payload = {}
            for suffix in AXI_PAYLOAD[ch]:
                name = f"{prefix}_{ch}{suffix}"
                try:
                    payload[name] = getattr(dut, name)
                except AttributeError:
                    pass
            self.add_channel(f"{prefix}.{ch}", getattr(dut, f"{prefix}_{ch}valid"),
                             getattr(dut, f"{prefix}_{ch}ready"), payload)

    def start(self):
        if self._task is None:
            self._task = cocotb.start_soon(self._run())
        return self

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self):
        edge = RisingEdge(self.clock)
        channels = self._channels
        while True:
            await edge
            self.cycle += 1
            if self.reset is not None and int(self.reset.value) == self.reset_level:
                for ch in channels:
                    ch.checker.reset()
                continue
            for ch in channels:
                checker = ch.checker
                valid = ch.valid.value
                # The payload is read only while a beat is offered and not taken, or was in
                # the previous cycle: most cycles cost two reads per channel.
                if int(valid) if _resolvable(valid) else 1:
                    ready = ch.ready.value
                    if checker.stalled or self.check_xz or not (_resolvable(ready) and int(ready)):
                        payload = {n: h.value for n, h in ch.payload.items()}
                    else:
                        payload = {}
                        checker.transfers += 1
                        continue
                else:
                    ready, payload = 0, {}
                for v in checker.sample(self.cycle, valid, ready, payload):
                    self.n_violations += 1
                    if len(self.violations) < self.max_violations:
                        self.violations.append(v)

    def clear(self):
        """Forget the violations recorded so far (e.g. after a case that provokes them)."""
        self.violations.clear()
        self.n_violations = 0
        for ch in self._channels:
            ch.checker.violations.clear()

    def summary(self):
        """One line per channel: handshakes and violations."""
        return [f"{ch.checker.name}: {ch.checker.transfers} transfers, "
                f"{len(ch.checker.violations)} violations" for ch in self._channels]

    def assert_clean(self, what="handshake"):
        """Raise :class:`HandshakeViolation` naming channel, cycle and signal of the first
        violations, if any was seen."""
        if self.n_violations:
            first = "; ".join(str(v) for v in self.violations[:5])
            raise HandshakeViolation(f"{what}: {self.n_violations} valid/ready violation(s); "
                                     f"first: {first}")

"""cocotb test module: serve register accesses of the simulated accelerator to a driver.

The ``sim`` transport (:mod:`sw_driver.sim_transport`) runs this module in the Verilated
``hotline_accelerator`` top level (``python -m verif.tb.sim_server SPEC.json`` builds nothing:
it runs the simulator on a model built by :func:`verif.tb.runner.build_top`). The test
:func:`serve`

* starts the clock and resets the core;
* maps the shared-memory file ``HOTLINE_SIM_SHM`` and serves it as the host DRAM on the
  ``m_axi_*`` master (:class:`verif.tb.host_memory.HostMemory` when present, else
  cocotbext-axi's ``AxiRam``), so that host-memory words the driver writes are what the core
  reads and the other way round;
* drives ``s_axil_*`` with cocotbext-axi's ``AxiLiteMaster``;
* listens on the AF_UNIX socket ``HOTLINE_SIM_SOCKET`` and answers requests until ``quit``
  or until the driver hangs up. Simulation time advances only while a request is served.

A request is a list of operations, answered by ``("ok", [result per operation])`` or
``("error", "one-line message")``:

``("r", offset)``
    register read -> ``(value, resp)`` (``resp``: the AXI response, 0 OKAY, 2 SLVERR, ...).
``("w", offset, value)``
    register write -> ``resp``.
``("wait", conditions, max_cycles, poll)``
    read the registers of ``conditions`` (a list of ``(offset, mask, value, kind)``, kind
    ``"eq"``, ``"ne"`` or ``"ge"`` -- ``(reg & mask) - value`` as a wrapping 32-bit number is
    below ``2**31``) every ``poll`` cycles until one holds or ``max_cycles`` have passed ->
    ``(index of the condition that held or -1, [last value per condition], cycles)``.
``("cycles", n)``
    advance ``n`` clock cycles -> the cycle count.
``("time",)``
    -> the cycle count since the start.
``("violations",)``
    -> the AXI protocol violations the host-memory model recorded (a list of strings;
    always empty with ``AxiRam``).
``("quit",)``
    -> ``None``, then the simulation ends.

Options (JSON in ``HOTLINE_SIM_OPTIONS``): ``clock_ns`` (10), ``read_latency``,
``write_latency`` (host-memory latency in cycles, HostMemory only), ``reset_cycles`` (4),
``bus_log_level`` (the bus models' log level, ``"WARNING"``; ``"DEBUG"`` logs every beat),
``memory`` (``"host_memory"``: :class:`verif.tb.host_memory.HostMemory`, the default when it
exists; ``"axiram"``: cocotbext-axi's ``AxiRam``),
``accept_timeout`` (seconds to wait for the driver to connect, 300).
"""

import json
import logging
import mmap
import os
import socket
import sys
from multiprocessing.connection import Connection

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, RisingEdge, Timer

__all__ = ["serve"]

_RESP = {"OKAY": 0, "EXOKAY": 1, "SLVERR": 2, "DECERR": 3}


def _resp(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return _RESP.get(getattr(value, "name", str(value)), 2)


def _holds(reg, mask, value, kind):
    v = reg & mask
    if kind == "eq":
        return v == value
    if kind == "ne":
        return v != value
    if kind == "ge":
        return ((v - value) & 0xFFFF_FFFF) < 0x8000_0000
    raise ValueError(f"unknown wait condition {kind!r}")


class _Server:
    def __init__(self, dut, options):
        self.dut = dut
        self.clock_ns = float(options.get("clock_ns", 10))
        self.options = options
        self.axil = None
        self.memory = None

    def cycle(self):
        return int(get_sim_time("ns") // self.clock_ns)

    async def start(self, mem):
        from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, self.clock_ns, unit="ns").start())
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        o = self.options
        try:
            from verif.tb.host_memory import HostMemory
        except ImportError:
            HostMemory = None
        if o.get("memory", "host_memory") == "axiram":
            HostMemory = None
        if HostMemory is not None:
            kwargs = {k: int(o[k]) for k in ("read_latency", "write_latency") if k in o}
            self.memory = HostMemory(dut, "m_axi", dut.clk, dut.rst, mem=mem, **kwargs)
        else:
            self.memory = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, mem=mem)
        # cocotbext-axi logs every transfer at INFO: far too much for a long session.
        logging.getLogger(f"cocotb.{dut._name}").setLevel(
            getattr(logging, str(o.get("bus_log_level", "WARNING")).upper()))
        dut.rst.value = 1
        await ClockCycles(dut.clk, int(o.get("reset_cycles", 4)))
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    async def read(self, offset):
        r = await self.axil.read(int(offset), 4)
        return int.from_bytes(bytes(r.data), "little"), _resp(r.resp)

    async def write(self, offset, value):
        r = await self.axil.write(int(offset), (int(value) & 0xFFFF_FFFF).to_bytes(4, "little"))
        return _resp(r.resp)

    async def advance(self, n):
        n = int(n)
        if n > 0:
            await Timer(n * self.clock_ns, unit="ns")
            await RisingEdge(self.dut.clk)
        return self.cycle()

    async def wait(self, conditions, max_cycles, poll):
        start = self.cycle()
        poll = max(1, int(poll))
        while True:
            values = []
            for i, (offset, mask, value, kind) in enumerate(conditions):
                reg, resp = await self.read(offset)
                if resp:
                    raise RuntimeError(f"wait: read of {int(offset):#x} answered resp {resp}")
                values.append(reg)
                if _holds(reg, int(mask), int(value), kind):
                    return i, values, self.cycle() - start
            if self.cycle() - start >= max_cycles:
                return -1, values, self.cycle() - start
            await self.advance(poll)

    async def do(self, op):
        kind = op[0]
        if kind == "r":
            return await self.read(op[1])
        if kind == "w":
            return await self.write(op[1], op[2])
        if kind == "wait":
            return await self.wait(op[1], int(op[2]), int(op[3]))
        if kind == "cycles":
            return await self.advance(op[1])
        if kind == "time":
            return self.cycle()
        if kind == "violations":
            return [str(v) for v in getattr(self.memory, "violations", [])]
        if kind == "quit":
            return None
        raise ValueError(f"unknown request {kind!r}")


def _listen(path, timeout):
    """Accept one connection on the AF_UNIX socket ``path`` (blocking the simulator, which is
    what we want before the first request) -> a ``multiprocessing`` Connection."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(1)
        sock.settimeout(timeout)
        conn, _ = sock.accept()
    finally:
        sock.close()
    conn.settimeout(None)
    return Connection(conn.detach())


@cocotb.test()
async def serve(dut):
    """Serve the driver's requests (module docstring) until ``quit`` or hang-up."""
    options = json.loads(os.environ.get("HOTLINE_SIM_OPTIONS", "{}"))
    shm_path = os.environ["HOTLINE_SIM_SHM"]
    sock_path = os.environ["HOTLINE_SIM_SOCKET"]
    fd = os.open(shm_path, os.O_RDWR)
    try:
        mem = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    server = _Server(dut, options)
    await server.start(mem)
    conn = _listen(sock_path, float(options.get("accept_timeout", 300)))
    try:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                dut._log.info("driver hung up: ending the simulation")
                break
            quit_ = False
            try:
                replies = []
                for op in request:
                    replies.append(await server.do(op))
                    quit_ = quit_ or op[0] == "quit"
                reply = ("ok", replies)
            except Exception as exc:  # report to the driver, keep serving
                reply = ("error", f"{type(exc).__name__}: {exc}".replace("\n", " "))
            try:
                conn.send(reply)
            except (EOFError, OSError):
                break
            if quit_:
                break
    finally:
        conn.close()


def main(argv=None):
    """``python -m verif.tb.sim_server SPEC.json``: run the simulator on a built model.

    ``SPEC.json``: ``{"build_dir", "tag", "top", "env", "name", "waves"}``. The caller has
    built the model with :func:`verif.tb.runner.build_top` (``tag``); this process calls it
    again on the same Verilog (``<build_dir>/<top>.v``), which only re-checks the build (well
    under a second), then runs :mod:`verif.tb.sim_server` with
    :func:`verif.tb.runner.run_cocotb`."""
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = json.load(f)
    from pathlib import Path
    from verif.tb import runner as tb_runner
    build_dir = Path(spec["build_dir"])
    text = (build_dir / f"{spec['top']}.v").read_text()
    runner, _ = tb_runner.build_top(spec["top"], text, spec["tag"],
                                    waves=bool(spec.get("waves")))
    work = tb_runner.run_cocotb(runner, build_dir, spec["top"], "verif.tb.sim_server",
                                Path(__file__), spec["env"], spec.get("name", "sim_server"),
                                waves=bool(spec.get("waves")))
    print(f"sim_server: simulation ended, work folder {work}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

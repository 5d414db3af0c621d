"""The ``sim`` transport: the Verilated RTL top level, driven from any Python process.

:class:`SimTransport` (``open_transport("sim", config, **options)``, or
``HotlineDevice(..., transport="sim")``) starts the simulator itself:

1. it builds (or reuses) the Verilator model of ``hotline_accelerator`` for its
   :class:`~hotline_spec.config.DeviceConfig` (``hotline_hw.generate.accelerator_verilog``,
   ``verif.tb.runner.build_top``; cached under ``sim_build/``);
2. it creates a shared-memory file (under ``/dev/shm``) and maps it: that file **is** the
   simulated host DRAM. :meth:`SimTransport.alloc` hands out tensors that are views into it,
   and a bus address is an offset in it;
3. it starts a subprocess (``python -m verif.tb.sim_server``) that runs the cocotb test
   module :mod:`verif.tb.sim_server` in the simulator; the server maps the same file as the
   memory behind the core's ``m_axi_*`` master and serves register accesses (cocotbext-axi
   ``AxiLiteMaster`` on ``s_axil_*``) over an AF_UNIX socket;
4. it reads the ID block and refuses a core whose ``ID_MAGIC`` / ``ID_VERSION`` / ``P_*``
   parameters differ from its configuration (:class:`~sw_driver.errors.DeviceMismatchError`).

Every operation is registers and commands from ``hotline_spec/registers.py`` and
``hotline_spec/commands.py``: key lists and result words live in the shared memory; a command
is staged in ``CMD_*``, pushed with ``CMD_SUBMIT`` and waited for on ``CMD_COMPLETED``; a
failed one is read from ``ERR_CAUSE`` / ``ERR_COMMAND`` / ``ERR_ADDR``, acknowledged with
``ERR_ACK`` and raised as :class:`~sw_driver.errors.DeviceCommandError`.

:meth:`SimTransport.close` (also run by a finalizer, at interpreter exit and on errors while
opening) ends the simulation, stops the subprocess group and removes the files. A simulator
that does not build, crashes or stops answering raises
:class:`~sw_driver.errors.TransportError`: one line naming the log to read.
"""

import json
import mmap
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from multiprocessing.connection import Client
from pathlib import Path

import numpy as np
import torch

from hotline_spec.commands import KEY_WORD_BYTES, MAGIC, VERSION, Engine, ErrorCause, Opcode
from hotline_spec.registers import COUNTERS, ID_PARAMETERS, register_map

from .device_checks import Fault, decode_dump, decode_results, raise_fault, table_layout
from .errors import (DeviceCommandError, DeviceMismatchError, DeviceStateError, ScheduleError,
                     TransportError)
from .model_transport import check_row_buffer, command_chunks
from .transport import Transport, as_device_config

__all__ = ["SimTransport", "DEFAULT_SHM_SIZE"]

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Default size of the simulated host DRAM.
DEFAULT_SHM_SIZE = 64 << 20
#: Allocations are aligned to this many bytes (>= every bus width).
ALIGN = 64
#: Bytes at the start of the memory never handed out (bus address 0 stays unused).
RESERVED = 4096
RESP_OKAY = 0
_KEY_CAUSES = (ErrorCause.BAD_KEY, ErrorCause.BAD_TABLE, ErrorCause.ROW_OUT_OF_RANGE)


class _Heap:
    """First-fit allocator of ``[RESERVED, size)`` in ``ALIGN``-byte units. Frees may come
    from finalizers at any time (any thread, inside an allocation): they are queued and
    applied under the lock by the next call."""

    def __init__(self, size):
        self.size = size
        self.free_list = [(RESERVED, size - RESERVED)]    # sorted (start, length)
        self.used = {}
        self.pending = deque()
        self.lock = threading.Lock()

    def release(self, offset):
        self.pending.append(offset)

    def _drain(self):
        while self.pending:
            off = self.pending.popleft()
            length = self.used.pop(off)
            self.free_list.append((off, length))
        self.free_list.sort()
        merged = []
        for start, length in self.free_list:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + length)
            else:
                merged.append((start, length))
        self.free_list = merged

    def alloc(self, nbytes):
        need = max(ALIGN, -(-nbytes // ALIGN) * ALIGN)
        with self.lock:
            self._drain()
            for i, (start, length) in enumerate(self.free_list):
                if length >= need:
                    if length == need:
                        del self.free_list[i]
                    else:
                        self.free_list[i] = (start + need, length - need)
                    self.used[start] = need
                    return start
        free = sum(length for _, length in self.free_list)
        raise MemoryError(f"sim host memory: no {need} contiguous bytes left of "
                          f"{self.size} ({free} free in {len(self.free_list)} pieces); open "
                          f"the transport with a larger shm_size")

    def in_use(self):
        with self.lock:
            self._drain()
            return sum(self.used.values())


class _Session:
    """What the finalizer needs to shut a simulator down (no reference to the transport)."""

    def __init__(self):
        self.proc = None
        self.conn = None
        self.mm = None
        self.base_array = None
        self.shm_path = None
        self.work_dir = None
        self.sim_dirs = ()
        self.keep_logs = False

    def shutdown(self):
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.send([("quit",)])
                if conn.poll(5):
                    conn.recv()
            except (OSError, EOFError):
                pass
            try:
                conn.close()
            except OSError:
                pass
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(proc.pid, sig)    # the group this transport started
                    except ProcessLookupError:
                        break
                    try:
                        proc.wait(timeout=5)
                        break
                    except subprocess.TimeoutExpired:
                        continue
        self.base_array = None
        mm, self.mm = self.mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass   # tensors from alloc() still map it; the mapping goes with them
        if self.shm_path is not None:
            try:
                os.unlink(self.shm_path)
            except FileNotFoundError:
                pass
            self.shm_path = None
        if not self.keep_logs:
            for d in (self.work_dir, *self.sim_dirs):
                if d is not None:
                    shutil.rmtree(d, ignore_errors=True)
            self.work_dir, self.sim_dirs = None, ()


class SimTransport(Transport):
    """A :class:`~sw_driver.transport.Transport` that drives the simulated RTL top level.

    Parameters (keyword options of ``open_transport("sim", config, ...)``)
    ----------
    config : DeviceConfig or EALConfig
        The core to build and the configuration its ID block must report.
    shm_size : int
        Bytes of simulated host DRAM (the shared-memory file), default 64 MiB.
    read_latency, write_latency : int, optional
        Host-memory latency in cycles (``verif.tb.host_memory.HostMemory``; the default is
        its own).
    shm_dir : str
        Where the shared-memory file is made (``/dev/shm`` when it exists, else the temp
        folder).
    command_cycles : int
        Most cycles one command may take before :class:`TransportError` (default 50 M).
    poll_cycles : int
        Cycles between two reads of ``CMD_COMPLETED`` while waiting (default 16).
    start_timeout, reply_timeout : float
        Seconds to wait for the simulator to start / for one reply (default 300 / 600).
    expect : DeviceConfig, optional
        The configuration the ID block must report (default ``config``); a different one
        makes opening fail with :class:`DeviceMismatchError` (how the ID check is tested).
    keep_files : bool
        Keep the work folder (logs) after close.
    waves : bool
        Build with tracing and write a waveform.
    memory : str
        The host-memory model: ``"host_memory"`` (``verif.tb.host_memory.HostMemory``,
        which also checks the core's AXI bursts) or ``"axiram"`` (cocotbext-axi
        ``AxiRam``).
    bus_log_level : str
        Log level of the simulator's bus models (``"DEBUG"``: every AXI beat in the
        simulator's log, with ``keep_files``).
    """

    name = "sim"
    host_copy = False

    def __init__(self, config, *, shm_size=DEFAULT_SHM_SIZE, read_latency=None,
                 write_latency=None, shm_dir=None, command_cycles=50_000_000, poll_cycles=16,
                 start_timeout=300.0, reply_timeout=600.0, expect=None, keep_files=False,
                 waves=False, bus_log_level="WARNING", memory="host_memory"):
        eal, dcfg = as_device_config(config, required=True)
        super().__init__(dcfg)
        self.rmap = register_map(dcfg)
        self.command_cycles = int(command_cycles)
        self.poll_cycles = int(poll_cycles)
        self.reply_timeout = float(reply_timeout)
        self._closed = True
        self._threshold = None
        self._layout = None
        self._sequence = 0
        self._session = _Session()
        self._session.keep_logs = bool(keep_files)
        # one request at a time on the link, one command at a time on the device (a
        # training loop may gather from a background thread)
        self._lock = threading.RLock()
        self._finalizer = weakref.finalize(self, self._session.shutdown)
        shm_size = int(shm_size)
        if shm_size < 2 * RESERVED:
            raise ValueError(f"shm_size must be at least {2 * RESERVED} bytes, not {shm_size}")
        self.log_path = None
        try:
            self._open(shm_size, read_latency, write_latency, shm_dir, float(start_timeout),
                       waves, bus_log_level, memory)
            self._closed = False
            self.check_id(expect if expect is not None else dcfg)
            self._wait_init()
        except BaseException:
            self._session.keep_logs = True
            self._closed = True
            self._finalizer()
            raise

    # --- start-up ---------------------------------------------------------------------------
    def _open(self, shm_size, read_latency, write_latency, shm_dir, start_timeout, waves,
              bus_log_level, memory):
        from hotline_hw.generate import ACCELERATOR_NAME
        from verif.tb import runner as tb_runner
        s = self._session
        dcfg = self.device_config
        try:
            _, build_dir = tb_runner.build_accelerator(dcfg, waves=waves)
        except Exception as exc:
            raise TransportError(f"sim: the Verilator build of {ACCELERATOR_NAME} for "
                                 f"{dcfg.describe()} failed: {str(exc).splitlines()[0]}",
                                 tb_runner.SIM_BUILD / "build.log") from exc
        tag = build_dir.name[:-len("_waves")] if waves else build_dir.name
        s.work_dir = tempfile.mkdtemp(prefix="hotline-sim-")
        work = Path(s.work_dir)
        if shm_dir is None:
            shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else s.work_dir
        fd, s.shm_path = tempfile.mkstemp(prefix="hotline-sim-", suffix=".mem", dir=shm_dir)
        try:
            os.ftruncate(fd, shm_size)
            s.mm = mmap.mmap(fd, shm_size)
        finally:
            os.close(fd)
        s.base_array = np.frombuffer(s.mm, dtype=np.uint8)
        self._base = int(s.base_array.ctypes.data)
        self._size = shm_size
        self._heap = _Heap(shm_size)
        sock = str(work / "sim.sock")
        options = {"clock_ns": 10, "bus_log_level": str(bus_log_level), "memory": memory}
        if read_latency is not None:
            options["read_latency"] = int(read_latency)
        if write_latency is not None:
            options["write_latency"] = int(write_latency)
        name = f"sim_server_{os.getpid()}_{id(self):x}"
        spec = {"build_dir": str(build_dir), "tag": tag, "top": ACCELERATOR_NAME,
                "name": name, "waves": bool(waves),
                "env": {"HOTLINE_SIM_SHM": s.shm_path, "HOTLINE_SIM_SOCKET": sock,
                        "HOTLINE_SIM_OPTIONS": json.dumps(options)}}
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        launcher_log = work / "launcher.log"
        self._build_dir, self._run_name = build_dir, name
        self.log_path = launcher_log
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [
            p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        with open(launcher_log, "wb") as log:
            s.proc = subprocess.Popen([sys.executable, "-m", "verif.tb.sim_server",
                                       str(spec_path)], cwd=str(REPO_ROOT), env=env,
                                      stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + start_timeout
        while True:
            self._find_sim_log()
            code = s.proc.poll()
            if code is not None:
                raise TransportError(f"sim: the simulator exited with code {code} before it "
                                     f"answered", self.log_path)
            if os.path.exists(sock):
                try:
                    s.conn = Client(sock, family="AF_UNIX")
                    break
                except (ConnectionRefusedError, FileNotFoundError):
                    pass
            if time.monotonic() > deadline:
                raise TransportError(f"sim: the simulator did not start within "
                                     f"{start_timeout:.0f} s", self.log_path)
            time.sleep(0.05)
        self._find_sim_log()

    def _find_sim_log(self):
        """The simulator's own log (``<build_dir>/<name>_*/sim.log``) once it exists."""
        runs = sorted(self._build_dir.glob(f"{self._run_name}_*"))
        if runs:
            self._session.sim_dirs = tuple(str(r) for r in runs)
            log = runs[-1] / "sim.log"
            if log.exists():
                self.log_path = log

    def check_id(self, expect=None):
        """Read the ID block and raise :class:`DeviceMismatchError` unless it is the one of
        ``expect`` (default: this transport's DeviceConfig): ``ID_MAGIC``, ``ID_VERSION``
        (same major, minor not older) and every ``P_*`` parameter."""
        self._check_open("check_id")
        expect = self.device_config if expect is None else expect
        want = register_map(expect).id_values()
        names = list(want)
        values = self._read_many(names)
        got = dict(zip(names, values))
        magic = got["ID_MAGIC"]
        if magic != MAGIC:
            raise DeviceMismatchError(f"sim: ID_MAGIC is {magic:#010x}, expected {MAGIC:#010x}: "
                                      f"not a Hotline core", self.log_path)
        version = got["ID_VERSION"]
        reg = self.rmap["ID_VERSION"]
        major, minor, patch = ((version >> reg.field(f).lsb) & ((1 << reg.field(f).width) - 1)
                               for f in ("major", "minor", "patch"))
        if major != VERSION[0] or minor < VERSION[1]:
            raise DeviceMismatchError(
                f"sim: ID_VERSION is {major}.{minor}.{patch} ({version:#x}), the "
                f"driver speaks {VERSION[0]}.{VERSION[1]}.{VERSION[2]} "
                f"({want['ID_VERSION']:#x})", self.log_path)
        bad = [f"{n} = {got[n]} (expected {want[n]})" for n, _, _ in ID_PARAMETERS
               if got[n] != want[n]]
        if bad:
            raise DeviceMismatchError(f"sim: the core differs from the DeviceConfig: "
                                      f"{'; '.join(bad)}", self.log_path)

    def _wait_init(self):
        status = self.rmap["STATUS"]
        init = status.field("init")
        held, values, cycles = self._call([("wait", [(status.offset, init.mask, 0, "eq")],
                                            self.command_cycles, self.poll_cycles)])[0]
        if held < 0:
            raise TransportError(f"sim: STATUS.init still set after {cycles} cycles (the "
                                 f"reset clear of the tag store did not end)", self.log_path)

    # --- the link ---------------------------------------------------------------------------
    def _check_open(self, what):
        if self._closed:
            raise DeviceStateError(f"SimTransport.{what}() after close()")

    def _fail(self, message):
        self._find_sim_log()
        self._session.keep_logs = True
        return TransportError(f"sim: {message}", self.log_path)

    def _call(self, ops):
        """Send one request (a list of operations) and return its replies."""
        with self._lock:
            return self._call_locked(ops)

    def _call_locked(self, ops):
        conn = self._session.conn
        if conn is None:
            raise DeviceStateError("SimTransport: the simulator is not running")
        try:
            conn.send(ops)
            if not conn.poll(self.reply_timeout):
                raise self._fail(f"the simulator did not answer within "
                                 f"{self.reply_timeout:.0f} s")
            status, payload = conn.recv()
        except (EOFError, OSError) as exc:
            proc = self._session.proc
            code = proc.poll() if proc is not None else None
            raise self._fail(f"the simulator went away ({type(exc).__name__}; exit code "
                             f"{code})") from None
        if status != "ok":
            raise self._fail(f"the simulation server failed: {payload}")
        return payload

    def _off(self, name):
        return self.rmap.offset(name)

    def _read_many(self, names):
        replies = self._call([("r", self._off(n)) for n in names])
        out = []
        for n, (value, resp) in zip(names, replies):
            if resp != RESP_OKAY:
                raise self._fail(f"read of {n} answered resp {resp} (SLVERR/DECERR)")
            out.append(value)
        return out

    def read_register(self, name):
        """Read register ``name`` -> ``(value, resp)`` (resp 0 OKAY, 2 SLVERR, ...)."""
        self._check_open("read_register")
        return tuple(self._call([("r", self._off(name))])[0])

    def write_register(self, name, value):
        """Write register ``name`` -> the AXI response (0 OKAY, 2 SLVERR, ...)."""
        self._check_open("write_register")
        return self._call([("w", self._off(name), int(value))])[0]

    def _writes(self, pairs):
        """Write ``(name, value)`` pairs in one request; every write must answer OKAY."""
        replies = self._call([("w", self._off(n), int(v) & 0xFFFF_FFFF) for n, v in pairs])
        for (n, _), resp in zip(pairs, replies):
            if resp != RESP_OKAY:
                raise self._fail(f"write of {n} answered resp {resp} (SLVERR/DECERR)")

    def bus_violations(self):
        """The AXI protocol violations of the core's DMA master that the host-memory model
        recorded so far (``verif.tb.host_memory.HostMemory``: bursts crossing 4 KiB, narrow
        or unaligned bursts, ...), a list of strings."""
        self._check_open("bus_violations")
        return self._call([("violations",)])[0]

    def cycles(self):
        """The simulation's cycle count."""
        self._check_open("cycles")
        return self._call([("time",)])[0]

    # --- commands ---------------------------------------------------------------------------
    def _command(self, opcode, count=0, addr0=0, addr1=0, key_list_addr=None, keys=None):
        """Stage, submit and wait for one command; raises DeviceCommandError when it
        fails. Returns its sequence number."""
        with self._lock:
            return self._command_locked(opcode, count, addr0, addr1, key_list_addr, keys)

    def _command_locked(self, opcode, count, addr0, addr1, key_list_addr, keys):
        r = self.rmap
        ctrl = r["CMD_CTRL"].field("opcode")
        status = r["STATUS"]
        halted = status.field("halted")
        writes = [("CMD_CTRL", int(opcode) << ctrl.lsb), ("CMD_COUNT", count),
                  ("CMD_ADDR0_LO", addr0 & 0xFFFF_FFFF), ("CMD_ADDR0_HI", addr0 >> 32),
                  ("CMD_ADDR1_LO", addr1 & 0xFFFF_FFFF), ("CMD_ADDR1_HI", addr1 >> 32)]
        ops = [("w", self._off(n), v) for n, v in writes]
        ops.append(("r", self._off("CMD_SUBMITTED")))
        ops.append(("w", self._off("CMD_SUBMIT"), 1))
        replies = self._call(ops)
        for (n, _), resp in zip(writes, replies):
            if resp != RESP_OKAY:
                raise self._fail(f"write of {n} answered resp {resp}")
        seq, resp = replies[len(writes)]
        if resp != RESP_OKAY:
            raise self._fail(f"read of CMD_SUBMITTED answered resp {resp}")
        if replies[-1] != RESP_OKAY:
            raise self._fail(f"CMD_SUBMIT answered resp {replies[-1]} (command FIFO full?)")
        self._sequence = seq
        conditions = [(self._off("CMD_COMPLETED"), 0xFFFF_FFFF, (seq + 1) & 0xFFFF_FFFF, "ge")]
        (held, values, cycles), (st, st_resp) = self._call([
            ("wait", conditions, self.command_cycles, self.poll_cycles),
            ("r", status.offset)])
        if held < 0:
            raise self._fail(f"command {Opcode(opcode).name} (sequence {seq}) did not complete "
                             f"within {cycles} cycles (CMD_COMPLETED = {values[0]}, STATUS = "
                             f"{st:#x})")
        if st & halted.mask:
            self._raise_error(opcode, key_list_addr, keys)
        return seq

    def _raise_error(self, opcode, key_list_addr, keys=None):
        r = self.rmap
        cause_reg, seq, lo, hi = self._read_many(["ERR_CAUSE", "ERR_COMMAND", "ERR_ADDR_LO",
                                                  "ERR_ADDR_HI"])
        fc, fe = r["ERR_CAUSE"].field("cause"), r["ERR_CAUSE"].field("engine")
        cause = (cause_reg & fc.mask) >> fc.lsb
        engine = (cause_reg & fe.mask) >> fe.lsb
        address = lo | hi << 32
        status = r["STATUS"]
        self._writes([("ERR_ACK", 1 << r["ERR_ACK"].field("ack").lsb)])
        held, _, cycles = self._call([("wait", [(status.offset, status.field("halted").mask, 0,
                                                 "eq")], 100_000, 4)])[0]
        if held < 0:
            raise self._fail("STATUS.halted did not fall after ERR_ACK")
        index = None
        if cause in [int(c) for c in _KEY_CAUSES] and key_list_addr is not None:
            index = (address - key_list_addr) // KEY_WORD_BYTES
        try:
            fault = Fault(ErrorCause(cause), Engine(engine), address, index)
        except ValueError:     # a cause or engine this driver does not know
            raise DeviceCommandError(cause, engine, opcode, seq, address, index) from None
        raise_fault(fault, opcode, seq, keys, self._layout, self.device_config)

    # --- memory -----------------------------------------------------------------------------
    def alloc(self, shape, dtype=torch.float32):
        """A tensor of ``shape``/``dtype`` that is a view into the simulated host DRAM
        (``ALIGN``-byte aligned; contents undefined). Its memory returns to the allocator
        when the tensor and all its views are gone."""
        self._check_open("alloc")
        shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list, torch.Size))
                                       else (shape,)))
        esize = torch.empty((), dtype=dtype).element_size()
        numel = 1
        for s in shape:
            if s < 0:
                raise ValueError(f"alloc: negative dimension in shape {shape}")
            numel *= s
        nbytes = numel * esize
        off = self._heap.alloc(nbytes)
        arr = np.frombuffer(self._session.mm, dtype=np.uint8, count=max(nbytes, ALIGN),
                            offset=off)
        weakref.finalize(arr, self._heap.release, off)
        t = torch.from_numpy(arr)[:nbytes]
        return t.view(dtype).reshape(shape)

    def bus_address(self, tensor):
        """The offset of ``tensor``'s first element in the simulated host DRAM;
        :class:`ScheduleError` for a tensor outside it (not from :meth:`alloc`)."""
        if not isinstance(tensor, torch.Tensor):
            raise ScheduleError(f"bus_address: expected a torch.Tensor, not "
                                f"{type(tensor).__name__}")
        if tensor.device.type == "cpu" and not self._closed:
            addr = tensor.data_ptr()
            extent = 1 + sum((n - 1) * st for n, st in zip(tensor.shape, tensor.stride())
                             if n > 0)
            end = addr + (extent if tensor.numel() else 0) * tensor.element_size()
            if self._base <= addr and end <= self._base + self._size:
                return addr - self._base
        raise ScheduleError(
            "bus_address: the tensor is not device-visible for the sim transport (not in its "
            "simulated host DRAM): allocate it with transport.alloc() / "
            "HotlineDevice.alloc_host()")

    def memory_in_use(self):
        """Bytes of simulated host DRAM handed out and not yet returned."""
        return self._heap.in_use()

    def _words(self, values):
        buf = self.alloc((len(values),), torch.int64)
        buf.copy_(values)
        return buf

    # --- tag store ----------------------------------------------------------------------------
    def _lookups(self, keys, opcode):
        keys = torch.as_tensor(keys)
        shape = keys.shape
        flat = keys.reshape(-1).to(device="cpu", dtype=torch.int64)
        hits, slots = [], []
        for a, b in command_chunks(flat.numel(), self.device_config.max_count):
            klist = self._words(flat[a:b])
            res = self.alloc((b - a,), torch.int64)
            k_addr = self.bus_address(klist)
            self._command(opcode, b - a, k_addr, self.bus_address(res), k_addr, flat[a:b])
            hit, slot = decode_results(res.clone())
            hits.append(hit)
            slots.append(slot)
        if not hits:
            return torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.int64)
        return torch.cat(hits).reshape(shape), torch.cat(slots).reshape(shape)

    def learn(self, keys):
        """Learn-mode lookups: ``LEARN`` commands (at most ``max_count`` keys each), result
        words decoded -> ``(hit, slot)``."""
        self._check_open("learn")
        return self._lookups(keys, Opcode.LEARN)

    def lookup(self, keys, popular_max_rrpv=None):
        """Frozen-mode lookups: ``POPULAR_MAX_RRPV`` (written when it changes), then
        ``LOOKUP`` commands -> ``(hit, slot)``."""
        self._check_open("lookup")
        if self.config.policy != "srrip" and popular_max_rrpv is not None:
            raise ValueError("popular_max_rrpv is the srrip policy's threshold; this EAL uses "
                             "lfu (its threshold is EALConfig.popular_min_count)")
        thr = self.config.popular_max_rrpv if popular_max_rrpv is None else int(popular_max_rrpv)
        if not 0 <= thr <= 3:
            raise ValueError(f"popular_max_rrpv must be an int in 0..3, not {popular_max_rrpv!r}")
        with self._lock:
            if thr != self._threshold:
                f = self.rmap["POPULAR_MAX_RRPV"].field("value")
                self._writes([("POPULAR_MAX_RRPV", thr << f.lsb)])
                self._threshold = thr
            return self._lookups(keys, Opcode.LOOKUP)

    def _dump_words(self):
        n = self.config.entries
        buf = self.alloc((n,), torch.int64)
        self._command(Opcode.DUMP, n, 0, self.bus_address(buf))
        return buf.clone()

    def dump_tensors(self):
        """The tag store from one ``DUMP`` command (entry ``slot`` at ``addr1 + 8 * slot``),
        as tensors in RTL dump order."""
        self._check_open("dump_tensors")
        return decode_dump(self._dump_words(), self.config)

    def dump(self):
        """The tag store as ``(bank, set, ways)`` beats in RTL dump order (from one
        ``DUMP`` command)."""
        self._check_open("dump")
        from verif.golden.access_logger import DumpBeat
        d = decode_dump(self._dump_words(), self.config)
        v, t = d["valid"].to(torch.int64).tolist(), d["tag"].tolist()
        r = d[self.config.meta_name].tolist()
        return [DumpBeat(b, s, tuple(zip(vv, rr, tt)))
                for b, s, vv, rr, tt in zip(d["bank"].tolist(), d["set"].tolist(), v, r, t)]

    def clear(self):
        """Zero the tag store: one ``CLEAR`` command."""
        self._check_open("clear")
        self._command(Opcode.CLEAR)

    # --- the row mover --------------------------------------------------------------------------
    def set_tables(self, host_table, table_rows, table_offsets):
        """Program ``ROW_BYTES`` and every table slot's ``BASE``/``STRIDE``/``ROWS`` for
        ``host_table`` (which must come from :meth:`alloc`)."""
        self._check_open("set_tables")
        layout = table_layout(self.device_config, host_table, table_rows, table_offsets,
                              self.bus_address)
        r = self.rmap
        pairs = [("ROW_BYTES", layout.row_bytes << r["ROW_BYTES"].field("value").lsb)]
        for t in range(self.device_config.max_tables):
            pairs += [(r.table(t, "BASE_LO"), layout.base[t] & 0xFFFF_FFFF),
                      (r.table(t, "BASE_HI"), layout.base[t] >> 32),
                      (r.table(t, "STRIDE"), layout.stride[t]),
                      (r.table(t, "ROWS"), layout.rows[t])]
        with self._lock:
            self._layout = None
            self._writes(pairs)
            self._layout = layout

    @property
    def layout(self):
        """The :class:`~sw_driver.device_checks.TableLayout` last programmed (or ``None``)."""
        return self._layout

    def _rows_command(self, opcode, keys, buf, name, what):
        self._check_open(what.split(".")[-1])
        if self._layout is None:
            raise DeviceStateError(f"{what}: call set_tables() first")
        keys = torch.as_tensor(keys).reshape(-1).to(device="cpu", dtype=torch.int64)
        n = keys.numel()
        check_row_buffer(buf, n, self._layout, name, what)
        addr1 = self.bus_address(buf) if n else 0
        klist = self._words(keys) if n else None
        k_addr = self.bus_address(klist) if n else 0
        self._command(opcode, n, k_addr, addr1, k_addr, keys)

    def gather(self, keys, out):
        """One ``GATHER`` command: the rows of ``keys`` into ``out`` (from :meth:`alloc`)."""
        self._rows_command(Opcode.GATHER, keys, out, "out", "SimTransport.gather")
        return out

    def write_back(self, keys, rows):
        """One ``WRITE_BACK`` command: ``rows`` (from :meth:`alloc`) to the rows of
        ``keys``."""
        self._rows_command(Opcode.WRITE_BACK, keys, rows, "rows", "SimTransport.write_back")

    # --- counters ---------------------------------------------------------------------------------
    def device_counters(self):
        """The 64-bit event counters (``COUNTERS``; HI, LO, HI read until HI is stable),
        ``{lower-case name: int}``."""
        self._check_open("device_counters")
        names = []
        for n, _ in COUNTERS:
            names += [f"{n}_HI", f"{n}_LO", f"{n}_HI"]
        while True:
            values = self._read_many(names)
            out, stable = {}, True
            for i, (n, _) in enumerate(COUNTERS):
                hi, lo, hi2 = values[3 * i:3 * i + 3]
                stable = stable and hi == hi2
                out[n.lower()] = hi << 32 | lo
            if stable:
                return out

    def reset_device_counters(self):
        """Zero the device counters (``COUNTER_RESET``)."""
        self._check_open("reset_device_counters")
        f = self.rmap["COUNTER_RESET"].field("reset")
        self._writes([("COUNTER_RESET", 1 << f.lsb)])

    # --- lifetime -----------------------------------------------------------------------------
    def close(self):
        """End the simulation, stop the simulator subprocess and remove the shared-memory
        file and the work folder. Idempotent; tensors from :meth:`alloc` keep their
        memory (the mapping lives as long as they do) but the device is gone."""
        self._closed = True
        self._finalizer()

    def __repr__(self):
        state = "closed" if self._closed else f"pid {self._session.proc.pid}"
        return f"SimTransport({self.device_config.describe()}, {state})"

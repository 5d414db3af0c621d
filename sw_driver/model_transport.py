"""The ``model`` transport: the accelerator is the PyTorch golden model in this process.

:class:`ModelTransport` wraps :class:`verif.golden.AccessLogger` (``docs/spec.md`` sections
4, 5 and 8) behind the :class:`~sw_driver.transport.Transport` interface, so the driver runs
end to end, bit-exact with the RTL, without hardware. Its row mover copies rows with CPU
threads (:mod:`sw_driver.gather`) after the same command checks the RTL makes
(:mod:`sw_driver.device_checks`), so a bad key list raises the same
:class:`~sw_driver.errors.DeviceCommandError` (cause, engine, opcode, key index) on ``model``
and ``sim``. Device-visible memory is ordinary host memory (pinned when CUDA is available);
a bus address is a ``data_ptr``.
"""

import numpy as np
import torch

from hotline_spec.commands import KEY_WORD_BYTES, SINGLE_PASS_OPCODES, Engine, ErrorCause, Opcode
from hotline_spec.registers import COUNTERS
from hotline_spec.config import SKETCH_ROWS
from verif.golden import AccessLogger
from verif.golden.access_logger import meta_name

from .device_checks import (Fault, check_command, check_command_rows, raise_fault, slot_arrays,
                            table_layout)
from .errors import DeviceStateError, ScheduleError
from .gather import checked_copy, gather_rows, make_pool, scatter_rows
from .transport import Transport

__all__ = ["ModelTransport", "check_row_buffer", "command_chunks"]


def command_chunks(n, max_count):
    """``[(start, stop), ...]``: a list of ``n`` entries cut into commands of at most
    ``max_count`` entries (none for ``n == 0``). Every transport cuts the same way."""
    return [(a, min(n, a + max_count)) for a in range(0, n, max_count)]


def check_row_buffer(buf, n, layout, name, what):
    """Check a row buffer of a ``GATHER`` / ``WRITE_BACK`` command: a CPU tensor
    ``[n, dim]`` of the tables' dtype whose rows are packed (``addr1 + i * ROW_BYTES``);
    raises :class:`ScheduleError` naming ``name``."""
    if not isinstance(buf, torch.Tensor):
        raise ScheduleError(f"{what}: {name} must be a torch.Tensor, not {type(buf).__name__}")
    if buf.device.type != "cpu":
        raise ScheduleError(f"{what}: {name} must be in host memory, not on {buf.device}")
    if buf.dim() != 2 or tuple(buf.shape) != (n, layout.dim):
        raise ScheduleError(f"{what}: {name} has shape {tuple(buf.shape)}, expected "
                            f"[{n}, dim={layout.dim}] (one row per key)")
    if buf.dtype != layout.dtype:
        raise ScheduleError(f"{what}: {name} has dtype {buf.dtype}, the tables have "
                            f"{layout.dtype}")
    if n > 1 and buf.stride(0) != layout.dim or layout.dim > 1 and buf.stride(1) != 1:
        raise ScheduleError(f"{what}: {name} rows must be packed (strides ({layout.dim}, 1)), "
                            f"not {buf.stride()}")


class ModelTransport(Transport):
    """A :class:`~sw_driver.transport.Transport` backed by the golden
    :class:`~verif.golden.AccessLogger` (``logger`` attribute, read it, do not change it
    behind the transport's back) and CPU threads.

    ``ModelTransport(config, threads=1)`` starts with a cleared tag store; ``config`` is an
    :class:`~hotline_spec.config.EALConfig` or a :class:`~hotline_spec.config.DeviceConfig`;
    ``threads`` is the size of the row mover's thread pool.
    """

    name = "model"
    host_copy = True

    def __init__(self, config, threads=1):
        super().__init__(config)
        self.logger = AccessLogger(self.config)
        self._pool = make_pool(threads)
        self._layout = None
        self._host_table = None
        self._global_base = None     # int64 [max_tables]: host-table row of each table's row 0
        self._sequence = 0           # CMD_SUBMITTED
        self._counters = {name.lower(): 0 for name, _ in COUNTERS}
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

    # --- commands ----------------------------------------------------------------------
    def _list_bytes(self, n):
        """Bytes of read data for one pass over a list of ``n`` words that starts on a beat
        boundary (whole bus beats, as the RTL's ``BYTES_READ`` counts them)."""
        bus = self.device_config.bus_bytes if self.device_config is not None else 8
        return -(-8 * n // bus) * bus

    def _submit(self, opcode, count, addr0=0, addr1=0, keys=None, rows=False, key_pass=None,
                prefix=None):
        """Run the command checks of one command; returns its sequence number or raises
        DeviceCommandError (the command completes with an error, counted). A refused command
        (decoder, or WRITE_BACK's check pass) moves nothing; LEARN, LOOKUP and GATHER read
        their list once and a bad key ends them after the keys before it: ``prefix(i)`` does
        that part (``i`` keys) before the error is raised (``docs/device.md``, "Errors").
        With ``rows`` (GATHER / WRITE_BACK) returns ``(sequence, host-table rows of the
        keys)``, mapped in the same compiled pass as the checks. With ``key_pass`` the
        decoder checks run here and the key-list pass is ``key_pass()`` (it returns the
        first bad key's ``(index, cause)`` or ``(-1, 0)``, and moves the rows only then)."""
        seq = self._sequence
        self._sequence = (seq + 1) & 0xFFFF_FFFF
        dcfg = self.device_config
        global_rows = None
        if dcfg is not None:
            layout = self._layout
            row_bytes = layout.row_bytes if layout else None
            if key_pass is not None:
                fault = check_command(dcfg, opcode, count, addr0, addr1, row_bytes, None,
                                      layout)
                if fault is None:
                    i, cause = key_pass()
                    if i >= 0:
                        fault = Fault(ErrorCause(cause), Engine.LIST_CHECK,
                                      addr0 + KEY_WORD_BYTES * i, i)
            elif rows:
                fault, global_rows = check_command_rows(dcfg, opcode, count, addr0, addr1,
                                                        row_bytes, keys, layout,
                                                        self._global_base)
            else:
                fault = check_command(dcfg, opcode, count, addr0, addr1, row_bytes, keys,
                                      layout)
            if fault is not None:
                self._counters["commands_completed"] += 1
                self._counters["errors"] += 1
                if fault.engine == Engine.LIST_CHECK:   # the list was read (once)
                    self._counters["bytes_read"] += self._list_bytes(count)
                    if prefix is not None and opcode in SINGLE_PASS_OPCODES:
                        prefix(fault.index)
                raise_fault(fault, opcode, seq, keys, layout, dcfg)
        self._counters["commands_completed"] += 1
        return (seq, global_rows) if rows else seq

    def _max_count(self):
        dcfg = self.device_config
        return dcfg.max_count if dcfg is not None else 1 << 62

    def _lookups(self, keys, opcode, run):
        keys = self._keys(keys)
        flat = keys.reshape(-1)
        if flat.dtype != torch.int64:
            flat = flat.to(torch.int64)
        hits, slots = [], []
        for a, b in command_chunks(flat.numel(), self._max_count()):
            chunk = flat[a:b]

            def looked_up(part):
                res = run(part)
                self._counters["lookups"] += part.numel()
                # numpy's count is one thread: no intra-op fork on the lookups
                self._counters["hits"] += int(np.count_nonzero(res.hit.numpy()))
                self._counters["bytes_written"] += 8 * part.numel()
                return res

            self._submit(opcode, b - a, chunk.data_ptr(), 0, chunk,
                         prefix=lambda i: looked_up(chunk[:i]) if i else None)
            res = looked_up(chunk)
            hits.append(res.hit)
            slots.append(res.slot)
            self._counters["bytes_read"] += self._list_bytes(b - a)
        if not hits:
            return (torch.zeros(keys.shape, dtype=torch.bool),
                    torch.zeros(keys.shape, dtype=torch.int64))
        if len(hits) == 1:
            return hits[0].reshape(keys.shape), slots[0].reshape(keys.shape)
        return torch.cat(hits).reshape(keys.shape), torch.cat(slots).reshape(keys.shape)

    def learn(self, keys):
        """Learn-mode lookups in stream order (spec section 4) -> ``(hit, slot)``; one
        ``LEARN`` command per ``max_count`` keys (a key with bits above ``key_bits`` raises
        :class:`~sw_driver.errors.DeviceCommandError` ``BAD_KEY`` after the keys before it
        were learned, as the RTL does)."""
        self._check_open("learn")
        return self._lookups(keys, Opcode.LEARN, self.logger.learn)

    def lookup(self, keys, popular_max_rrpv=None):
        """Frozen-mode lookups (spec section 4) -> ``(hit, slot)``; read-only. The threshold
        defaults to ``config.popular_max_rrpv``."""
        self._check_open("lookup")
        return self._lookups(keys, Opcode.LOOKUP,
                             lambda k: self.logger.lookup(k, popular_max_rrpv))

    def dump(self):
        """The tag store in RTL ``dump`` order (spec section 8): a list of
        ``DumpBeat(bank, set, ways)``."""
        self._check_open("dump")
        self._dump_command()
        return self.logger.dump()

    def _dump_command(self):
        self._submit(Opcode.DUMP, self.config.entries)
        self._counters["bytes_written"] += 8 * self.config.entries

    def dump_tensors(self):
        """The tag store as tensors in ``dump`` order (fast path of
        :meth:`Transport.dump_tensors`)."""
        self._check_open("dump_tensors")
        self._dump_command()
        return self.logger.dump_tensors()

    def load_dump_tensors(self, dump):
        """Replace the golden tag store by ``dump`` (:meth:`dump_tensors` form, any beat
        order); the logger checks ranges and duplicate tags."""
        self._check_open("load_dump_tensors")
        cfg = self.config
        bank = torch.as_tensor(dump["bank"], dtype=torch.int64)
        set_ = torch.as_tensor(dump["set"], dtype=torch.int64)
        state = {}
        fields = [("valid", torch.bool, ()), (meta_name(cfg), torch.int64, ()),
                  ("tag", torch.int64, ())]
        if cfg.policy == "lfu":
            fields.append(("sketch", torch.int64, (SKETCH_ROWS, cfg.sketch_counters)))
        for name, dtype, extra in fields:
            if name not in dump:
                raise ValueError(f"the dump has no {name!r} (this EAL uses the {cfg.policy} "
                                 f"policy)")
            per_beat = (cfg.ways,) if not extra else extra
            out = torch.zeros(cfg.banks, cfg.sets, *per_beat, dtype=dtype)
            out[bank, set_] = torch.as_tensor(dump[name]).to(dtype)
            state[name] = out
        self.logger.load_state_dict(state)

    def clear(self):
        """Zero the tag store (spec section 4): one ``CLEAR`` command."""
        self._check_open("clear")
        self._submit(Opcode.CLEAR, 0)
        self.logger.clear()

    # --- memory and the row mover ----------------------------------------------------------
    def alloc(self, shape, dtype=torch.float32):
        """A host tensor (pinned when CUDA is available); every CPU tensor is
        device-visible to the model."""
        self._check_open("alloc")
        return torch.empty(shape, dtype=dtype, pin_memory=torch.cuda.is_available())

    def bus_address(self, tensor):
        """``tensor.data_ptr()`` for a CPU tensor; :class:`ScheduleError` otherwise."""
        if not isinstance(tensor, torch.Tensor):
            raise ScheduleError(f"bus_address: expected a torch.Tensor, not "
                                f"{type(tensor).__name__}")
        if tensor.device.type != "cpu":
            raise ScheduleError(f"bus_address: a tensor on {tensor.device} is not "
                                f"device-visible: the device reaches host memory only")
        return tensor.data_ptr()

    def _need_mover(self, what):
        self._check_open(what)
        if self.device_config is None:
            raise NotImplementedError(
                f"ModelTransport.{what}: {self.config.describe()} is no device configuration "
                f"(keys too wide for a dump word), so there is no row mover")
        if self._layout is None and what != "set_tables":
            raise DeviceStateError(f"ModelTransport.{what}: call set_tables() first")

    def set_tables(self, host_table, table_rows, table_offsets):
        """Program the table registers for ``host_table`` (see
        :meth:`Transport.set_tables`)."""
        self._need_mover("set_tables")
        layout = table_layout(self.device_config, host_table, table_rows, table_offsets,
                              self.bus_address)
        offsets = torch.as_tensor(table_offsets, dtype=torch.int64).reshape(-1)
        base = torch.zeros(self.device_config.max_tables, dtype=torch.int64)
        base[:offsets.numel()] = offsets
        self._layout, self._host_table, self._global_base = layout, host_table, base

    @property
    def layout(self):
        """The :class:`~sw_driver.device_checks.TableLayout` of the last
        :meth:`set_tables` (``None`` before)."""
        return self._layout

    def _rows_command(self, opcode, keys, buf, name, what):
        """Check one ``GATHER`` / ``WRITE_BACK`` command and move its rows. Fast path
        (float32/float64 rows, keys below 64 bits): the key-list checks and the copy
        straight from the keys in one compiled call
        (:func:`~sw_driver.gather.checked_copy`); else the checks map the keys to host rows
        and :func:`~sw_driver.gather.gather_rows` / ``scatter_rows`` copy. Returns the number
        of rows."""
        self._need_mover(what.rsplit(".", 1)[-1])   # what: "ModelTransport.gather"
        keys = self._keys(keys).reshape(-1).to(torch.int64)
        n = keys.numel()
        layout = self._layout
        check_row_buffer(buf, n, layout, name, what)
        addr1 = self.bus_address(buf)
        dcfg = self.device_config
        scatter = opcode == Opcode.WRITE_BACK
        done = []

        def key_pass():
            res = checked_copy(scatter, self._host_table, keys, dcfg.eal.key_bits,
                               dcfg.eal.row_bits, *slot_arrays(dcfg, layout),
                               self._global_base, buf, self._pool)
            if res is None:          # not for the compiled copy: checks only, rows below
                fault, global_rows = check_command_rows(dcfg, opcode, n, keys.data_ptr(),
                                                        addr1, layout.row_bytes, keys, layout,
                                                        self._global_base)
                if fault is not None:
                    return fault.index, int(fault.cause)
                done.append(global_rows)
                return -1, 0
            return res

        c = self._counters

        def gathered(i):
            """A GATHER cut short by its i-th key: the rows before it are in the buffer."""
            if not i:
                return
            fault, part = check_command_rows(dcfg, opcode, i, keys.data_ptr(), addr1,
                                             layout.row_bytes, keys[:i], layout,
                                             self._global_base)
            assert fault is None, fault
            gather_rows(self._host_table, part, buf[:i], self._pool)
            c["bytes_read"] += i * layout.row_bytes
            c["bytes_written"] += i * layout.row_bytes

        if n and dcfg.eal.key_bits < 64:
            self._submit(opcode, n, keys.data_ptr(), addr1, keys, key_pass=key_pass,
                         prefix=gathered)
            global_rows = done[0] if done else None
        else:
            _, global_rows = self._submit(opcode, n, keys.data_ptr(), addr1, keys, rows=True,
                                          prefix=gathered)
        if global_rows is not None:
            if scatter:
                scatter_rows(self._host_table, global_rows, buf, self._pool)
            else:
                gather_rows(self._host_table, global_rows, buf, self._pool)
        passes = 2 if scatter else 1          # WRITE_BACK: the check pass, then the move
        c["bytes_read"] += passes * self._list_bytes(n) + n * layout.row_bytes
        c["bytes_written"] += n * layout.row_bytes
        return n

    def gather(self, keys, out):
        """One ``GATHER`` command (checked as the RTL checks it), rows copied with the
        thread pool; returns ``out``."""
        n = self._rows_command(Opcode.GATHER, keys, out, "out", "ModelTransport.gather")
        self._counters["rows_gathered"] += n
        return out

    def write_back(self, keys, rows):
        """One ``WRITE_BACK`` command (checked as the RTL checks it), rows copied with the
        thread pool."""
        n = self._rows_command(Opcode.WRITE_BACK, keys, rows, "rows",
                               "ModelTransport.write_back")
        self._counters["rows_written"] += n

    def device_counters(self):
        """The model's copy of the device counters (``hotline_spec.registers.COUNTERS``,
        lower case), counted as the RTL counts them: the RTL reads a command's key list
        once (WRITE_BACK twice: the check pass, then the move pass), ``bytes_read`` counts whole bus beats
        (the model assumes lists that start on a beat boundary, as ``alloc`` gives them),
        ``bytes_written`` enabled strobes. The cycle counters (``read_stall_cycles``,
        ``write_stall_cycles``, ``cycles``) stay 0."""
        self._check_open("device_counters")
        return dict(self._counters)

    def reset_device_counters(self):
        """Zero the device counters (``COUNTER_RESET``)."""
        self._check_open("reset_device_counters")
        for k in self._counters:
            self._counters[k] = 0

    def close(self):
        """Mark the transport closed (idempotent); later calls raise
        :class:`~sw_driver.errors.DeviceStateError`."""
        self._closed = True
        self._host_table = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __repr__(self):
        state = "closed" if self._closed else repr(self.logger)
        return f"ModelTransport({state})"

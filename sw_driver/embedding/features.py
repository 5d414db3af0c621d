"""Sparse features: a ``KeyedJaggedTensor``-like batch of bags, one bag per table per sample.

TorchRec's layout: ``values`` hold every key's bags for the whole batch, key after key
(key-major), and ``lengths[t * B + b]`` is the length of sample ``b``'s bag of key ``t``. The
Hotline schedule needs the stream order instead (sample after sample, each sample's tables in
order): :meth:`SparseFeatures.input_major` gives it once, and the module works on that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SparseFeatures", "InputMajor"]


@dataclass(eq=False)
class InputMajor:
    """The lookups of ``n`` samples in stream order: lookup ``j`` is row ``rows[j]`` of table
    ``tables[j]`` in bag ``bags[j]`` (``sample * T + table``); sample ``i`` owns lookups
    ``offsets[i]:offsets[i + 1]``. ``dense`` is the ``[n, T]`` row matrix when every bag holds
    exactly one lookup (the one-hot case, scheduled by ``HotlineDevice.schedule``).
    ``offsets_host``: a host copy of ``offsets`` when those are on a GPU (so that slicing
    reads no device memory), else ``None``."""

    tables: torch.Tensor
    rows: torch.Tensor
    bags: torch.Tensor
    offsets: torch.Tensor
    n: int
    n_tables: int
    dense: torch.Tensor | None = None
    offsets_host: torch.Tensor | None = None

    def host_offsets(self):
        """``offsets`` on the host (a device read only when there is no host copy)."""
        if self.offsets.device.type == "cpu":
            return self.offsets
        if self.offsets_host is None:
            self.offsets_host = self.offsets.cpu()
        return self.offsets_host

    def slice(self, a, b):
        """Samples ``a..b-1`` (their bags renumbered from 0). Reads only host memory."""
        if self.dense is not None:
            return InputMajor.from_dense(self.dense[a:b])
        oh = self.host_offsets()
        la, lb = int(oh[a]), int(oh[b])
        on_host = self.offsets.device.type == "cpu"
        return InputMajor(self.tables[la:lb], self.rows[la:lb],
                          self.bags[la:lb] - a * self.n_tables, self.offsets[a:b + 1] - la,
                          b - a, self.n_tables,
                          offsets_host=None if on_host else oh[a:b + 1] - la)

    def to_device(self, device):
        """The lookups on ``device``: host tensors through pinned memory, non-blocking (on
        the current stream); the host offsets are kept for slicing."""
        if self.rows.device == torch.device(device):
            return self

        def up(t):
            if t is None or t.device.type != "cpu":
                return t
            return t.pin_memory().to(device, non_blocking=True)

        if self.dense is not None:
            return InputMajor.from_dense(up(self.dense))
        return InputMajor(up(self.tables), up(self.rows), up(self.bags), up(self.offsets),
                          self.n, self.n_tables, up(self.dense),
                          offsets_host=self.host_offsets() if self.dense is None else None)

    @staticmethod
    def from_dense(sparse):
        n, T = sparse.shape
        dev = sparse.device
        return InputMajor(torch.arange(T, device=dev).repeat(n), sparse.reshape(-1),
                          torch.arange(n * T, device=dev),
                          torch.arange(0, n * T + 1, T, device=dev), n, T, dense=sparse)

    @staticmethod
    def cat(parts):
        """Samples of ``parts`` one after the other."""
        parts = [p for p in parts if p.n]
        if len(parts) == 1:
            return parts[0]
        T = parts[0].n_tables
        if all(p.dense is not None for p in parts):
            return InputMajor.from_dense(torch.cat([p.dense for p in parts]))
        tables, rows, bags, offs = [], [], [], [torch.zeros(1, dtype=torch.int64,
                                                            device=parts[0].rows.device)]
        on_host = parts[0].offsets.device.type == "cpu"
        offs_h = None if on_host else [torch.zeros(1, dtype=torch.int64)]
        n = base = 0
        for p in parts:
            tables.append(p.tables)
            rows.append(p.rows)
            bags.append(p.bags + n * T)
            offs.append(p.offsets[1:] + base)
            if offs_h is not None:
                offs_h.append(p.host_offsets()[1:] + base)
            n += p.n
            base += p.rows.numel()
        return InputMajor(torch.cat(tables), torch.cat(rows), torch.cat(bags), torch.cat(offs),
                          n, T, offsets_host=None if offs_h is None else torch.cat(offs_h))

    def select(self, samples, total=None):
        """The lookups of ``samples`` (int64 index tensor), in that order: ``(positions``
        into this object's lookups``, bags`` renumbered to ``k * T + table`` for the ``k``-th
        sample``)``. ``total``: how many lookups the samples own, when known on the host
        (otherwise read from the device: a synchronisation on a GPU)."""
        T = self.n_tables
        if self.dense is not None:
            pos = (samples.unsqueeze(1) * T + torch.arange(T, device=samples.device)).reshape(-1)
            return pos, torch.arange(pos.numel(), device=samples.device)
        offs = self.offsets.to(samples.device)
        starts, lens = offs[samples], offs[samples + 1] - offs[samples]
        if total is None:
            total = int(lens.sum())
        first = torch.repeat_interleave(torch.cumsum(lens, 0) - lens, lens, output_size=total)
        pos = torch.repeat_interleave(starts, lens, output_size=total) + (
            torch.arange(total, device=samples.device) - first)
        k = torch.repeat_interleave(torch.arange(samples.numel(), device=samples.device), lens,
                                    output_size=total)
        return pos, k * T + self.tables.to(samples.device)[pos]


def check_index_dtype(dtype, what):
    """Indices (rows, lengths, offsets) are integers: a float (1.9 would be truncated to 1)
    or a bool (True would read row 1) is refused with a ``TypeError`` naming ``what``."""
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise TypeError(f"{what} must be integers, not {dtype} (it would be truncated; "
                        f"convert whole-number values with .long())")


class SparseFeatures:
    """A batch of sparse features in ``KeyedJaggedTensor`` layout.

    Parameters
    ----------
    keys : sequence of str
        Table (feature) names, in the collection's table order.
    values : int64 ``[L]``
        Row indices, key-major: all of key 0's bags for the batch, then key 1's, ...
    lengths : int64 ``[len(keys) * batch_size]``
        ``lengths[t * B + b]``: how many of ``values`` belong to sample ``b``'s bag of key
        ``t`` (0 for an empty bag). Give ``lengths`` or ``offsets`` (``[T * B + 1]``).

    ``SparseFeatures.from_dense(sparse, keys)`` builds one-hot features from an ``[B, T]``
    matrix, ``from_bags({key: list of lists})`` from Python lists.
    """

    def __init__(self, keys, values, lengths=None, offsets=None):
        self.keys = tuple(str(k) for k in keys)
        self.values = torch.as_tensor(values)
        if self.values.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"SparseFeatures: values must be int64 or int32, not "
                            f"{self.values.dtype}")
        self.values = self.values.to(torch.int64).reshape(-1)
        if (lengths is None) == (offsets is None):
            raise ValueError("SparseFeatures: give lengths or offsets (one of them)")
        for name, v in (("lengths", lengths), ("offsets", offsets)):
            if v is not None:
                check_index_dtype(torch.as_tensor(v).dtype, f"SparseFeatures: {name}")
        if lengths is None:
            offsets = torch.as_tensor(offsets, dtype=torch.int64).reshape(-1)
            if offsets.numel() < 1 or int(offsets[0]) != 0:
                raise ValueError("SparseFeatures: offsets must start at 0")
            lengths = offsets[1:] - offsets[:-1]
        self.lengths = torch.as_tensor(lengths, dtype=torch.int64).reshape(-1).to(
            self.values.device)
        T = len(self.keys)
        if T == 0:
            raise ValueError("SparseFeatures: at least one key is needed")
        if self.lengths.numel() % T:
            raise ValueError(f"SparseFeatures: {self.lengths.numel()} lengths do not split "
                             f"into {T} keys")
        if bool((self.lengths < 0).any()):
            raise ValueError("SparseFeatures: a bag length is negative")
        if int(self.lengths.sum()) != self.values.numel():
            raise ValueError(f"SparseFeatures: the lengths add up to {int(self.lengths.sum())} "
                             f"but there are {self.values.numel()} values")
        self.batch_size = self.lengths.numel() // T
        self._dense = None

    @classmethod
    def from_dense(cls, sparse, keys=None):
        """One lookup per table per sample: ``sparse[b, t]`` is sample ``b``'s row of table
        ``t`` (``keys`` default ``t0, t1, ...``)."""
        sparse = torch.as_tensor(sparse)
        if sparse.dim() != 2:
            raise ValueError(f"from_dense: sparse must be [batch, tables], not "
                             f"{tuple(sparse.shape)}")
        B, T = sparse.shape
        keys = keys or [f"t{t}" for t in range(T)]
        f = cls(keys, sparse.t().reshape(-1), torch.ones(B * T, dtype=torch.int64,
                                                          device=sparse.device))
        f._dense = sparse.to(torch.int64)
        return f

    @classmethod
    def from_bags(cls, bags):
        """``{key: [[rows of sample 0], [rows of sample 1], ...]}`` (every key the same number
        of samples)."""
        keys = list(bags)
        sizes = {len(v) for v in bags.values()}
        if len(sizes) != 1:
            raise ValueError(f"from_bags: keys have different sample counts {sorted(sizes)}")
        values = [r for k in keys for bag in bags[k] for r in bag]
        lengths = [len(bag) for k in keys for bag in bags[k]]
        return cls(keys, torch.tensor(values, dtype=torch.int64),
                   torch.tensor(lengths, dtype=torch.int64))

    @property
    def offsets(self):
        """int64 ``[T * B + 1]``: bag ``t * B + b`` is ``values[offsets[i]:offsets[i+1]]``."""
        return torch.cat([self.lengths.new_zeros(1), torch.cumsum(self.lengths, 0)])

    def to_dict(self):
        """``{key: (values, lengths)}`` per key."""
        B, out, off = self.batch_size, {}, self.offsets
        for t, k in enumerate(self.keys):
            a, b = int(off[t * B]), int(off[(t + 1) * B])
            out[k] = (self.values[a:b], self.lengths[t * B:(t + 1) * B])
        return out

    def to(self, device, non_blocking=False):
        """The features on ``device`` (not validated again: they were when built). The
        lengths stay known on the host too, so that a working set can cut and schedule
        them without reading device memory."""
        f = object.__new__(SparseFeatures)
        f.keys, f.batch_size = self.keys, self.batch_size
        f.values = self.values.to(device, non_blocking=non_blocking)
        f.lengths = self.lengths.to(device, non_blocking=non_blocking)
        f._dense = None if self._dense is None else self._dense.to(device,
                                                                   non_blocking=non_blocking)
        f._lengths_host = self._host_lengths()
        return f

    def _host_lengths(self):
        if self.lengths.device.type == "cpu":
            return self.lengths
        return getattr(self, "_lengths_host", None)

    def input_major(self):
        """The lookups in stream order (:class:`InputMajor`)."""
        B, T = self.batch_size, len(self.keys)
        if self._dense is not None:
            return InputMajor.from_dense(self._dense)
        dev = self.values.device
        km_bag = torch.repeat_interleave(torch.arange(T * B, device=dev), self.lengths,
                                         output_size=self.values.numel())
        im_bag = (km_bag % B) * T + km_bag // B
        order = torch.sort(im_bag, stable=True).indices
        per_sample = self.lengths.view(T, B).sum(0)
        offsets = torch.cat([per_sample.new_zeros(1), torch.cumsum(per_sample, 0)])
        bags = im_bag[order]
        host = None
        lh = self._host_lengths()
        if dev.type != "cpu" and lh is not None:
            ph = lh.view(T, B).sum(0)
            host = torch.cat([ph.new_zeros(1), torch.cumsum(ph, 0)])
        return InputMajor(bags % T, self.values[order], bags, offsets, B, T,
                          offsets_host=host)

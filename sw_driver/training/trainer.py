"""The DLRM trainer with three embedding-storage modes (``docs/training.md``).

```python
tr = Trainer(table_sizes, n_dense=13, mode="hotline", device="cuda", dim=64,
             batch_size=4096, working_set=4, hot_budget=2**21, lr=0.1)
tr.train_epoch(train_set)              # learns popularity on the first sample_rate share
auc, logloss = tr.evaluate(dev_set)
print(tr.step_timings())               # per-phase means (CUDA events / perf_counter)
tr.save_checkpoint("ckpt.pt")          # resume: Trainer(..., resume="ckpt.pt")
tr.close()
```

Options beyond the basics: ``relearn_every=K`` (hotline: re-learn popularity every ``K``
working sets), ``distributed=True`` (data parallel over ``torch.distributed``), checkpoints
(:meth:`Trainer.save_checkpoint` / :meth:`Trainer.load_checkpoint`), and ``stop=`` in
:meth:`Trainer.train_epoch` (train part of an epoch; the next call continues it).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .dlrm import DLRM
from .metrics import log_loss, roc_auc
from .modes import (DEFAULT_POLICY, MODES, EmbeddingStore, eal_config_for_budget, init_table,
                    memory_budget, table_offsets)

#: ``format`` field of a checkpoint written by :meth:`Trainer.save_checkpoint`
CHECKPOINT_FORMAT = "hotline-dlrm-trainer"
CHECKPOINT_VERSION = 1
from .timing import PhaseTimer

__all__ = ["Trainer", "EpochStats", "DeviceData", "CHECKPOINT_FORMAT"]


@dataclass
class EpochStats:
    """What :meth:`Trainer.train_epoch` returns."""

    epoch: int
    samples: int
    seconds: float
    #: the mode's throughput. hotline: the samples trained as working sets over their wall
    #: time (``seconds - learn_seconds - freeze_seconds``); the learning mini-batches, which
    #: train the hybrid way, are not Hotline's and are not counted (0.0 when the call trained
    #: no working set). Other modes: ``samples / seconds``
    samples_per_s: float
    train_loss: float          #: mean BCE over the epoch's micro-batches, sample-weighted
    learn_batches: int         #: mini-batches trained the hybrid way while the EAL learned
    complete: bool = True      #: False when ``stop`` ended the call inside the epoch
    position: int = 0          #: where the epoch continues (0 once it is complete)
    #: wall seconds of this call's learning phases (hybrid steps + EAL learning, hotline)
    learn_seconds: float = 0.0
    #: the part of ``learn_seconds`` spent in ``HotlineDevice.learn`` (the EAL itself)
    eal_learn_seconds: float = 0.0
    #: wall seconds of this call's freezes (popular set + hot table fill)
    freeze_seconds: float = 0.0
    #: samples of this call trained in learning phases (hotline: hybrid-way mini-batches)
    learn_samples: int = 0
    #: ``samples / seconds``: everything this call trained, learning mini-batches included
    end_to_end_samples_per_s: float = 0.0


class DeviceData:
    """A :class:`~sw_driver.data.ClickDataset` staged for training on ``device``: ``labels``,
    ``dense`` and ``sparse`` on the device (one pinned non-blocking copy each), and
    ``sparse_cpu`` (the host copy, for host-table gathers and the EAL)."""

    def __init__(self, dataset, device):
        device = torch.device(device)
        self.n = len(dataset)
        self.sparse_cpu = dataset.sparse.contiguous()
        if device.type == "cuda":
            def up(t):
                return t.contiguous().pin_memory().to(device, non_blocking=True)
        else:
            def up(t):
                return t.contiguous()
        self.labels = up(dataset.labels)
        self.dense = up(dataset.dense)
        self.sparse = up(dataset.sparse)
        self.table_sizes = tuple(dataset.table_sizes)
        if device.type == "cuda":
            # Once per data set: the uploads ran on the current stream, and Hotline's
            # schedule stream reads `sparse` too.
            torch.cuda.synchronize(device)


class Trainer:
    """DLRM training in one of three embedding-storage modes.

    Parameters
    ----------
    table_sizes : sequence of int
        Rows per embedding table (one lookup per table per sample).
    n_dense : int
        Dense features per sample.
    mode : ``"gpu-only"``, ``"hybrid"`` or ``"hotline"``
    device : training device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``)
    dim : embedding dimension
    bottom, top : hidden sizes of the DLRM MLPs
    lr : SGD learning rate of the MLPs (and of the embeddings unless ``embedding_lr``)
    embedding_optimizer : ``"sgd"`` (default: ``row -= lr * grad``) or ``"rowwise_adagrad"``
        (FBGEMM's exact row-wise Adagrad, TorchRec's default; one accumulator per row that
        travels with the row through gathers, the hot table and write-backs)
    embedding_lr : the embedding optimizer's learning rate (default ``lr``)
    batch_size : mini-batch size ``N`` (and the popular micro-batch size)
    working_set : ``W``, mini-batches per Hotline working set
    hot_budget : rows the hot table may hold; the EAL gets ``eal_config_for_budget``
        (``entries`` = next power of two >= budget) unless ``eal_config`` is given
    sample_rate : share of the first epoch's mini-batches (the first ones) whose lookups the
        EAL learns from, trained meanwhile the hybrid way; then the EAL is frozen
    policy : the EAL policy (hotline), ``"lfu"`` (default, ``modes.DEFAULT_POLICY``: the best
        oracle ratio in docs/benchmarks.md "EAL policies") or ``"srrip"`` (the paper's)
    seed : fixes the MLP init and the table init (identical across modes)
    gather_threads : CPU threads of the driver's gather/write-back
    max_cold_rows : cold-row buffer size (default: the smaller of ``W * N * T`` and the
        fragmenter's ``cold_capacity``, always enough)
    fragmenter : ``FragmenterConfig`` whose de-dup table the schedules follow (default
        ``modes.fragmenter_for``: sized for ``W * N`` inputs of ``T`` cold lookups, so
        working sets do not end early; never smaller than ``FragmenterConfig(eal=eal_config)``):
        a working set whose cold rows fill a de-dup bank ends early and the next one starts at
        the first input left (docs/spec.md 7.5)
    record_timings : record per-step phase timings (CUDA events / perf_counter)
    np_micro_batch_size : the non-popular micro-batch of a working set is trained in SGD steps
        of at most this many inputs (default ``batch_size``; ``0``: one step for all of it),
        all reading the same gathered cold rows. With few popular inputs a single step would
        cut the number of SGD steps by up to ``W`` and cost quality (docs/training.md)
    trace_working_set : index (within each hotline ``train`` call) of the working set whose
        timeline is kept for plots; it starts after a device synchronisation (``None``: no
        tracing, no extra synchronisation)
    host_table : optional pre-initialised ``float32 [sum(table_sizes), dim]`` host tensor
        (need not be pinned: nothing DMAs from it), used in place instead of a fresh DLRM init (saves time and
        memory when several trainers share a start point; it is modified by training)
    relearn_every : hotline only: every this many working sets (counted since the last
        freeze, across epochs) the hot rows are flushed to the host table, the EAL is cleared
        and learns again from the next ``relearn_batches`` mini-batches (trained the hybrid
        way meanwhile, like the first learning phase), then it is frozen and the hot table
        refilled. ``0`` (default): learn once
    relearn_batches : mini-batches each re-learn learns from (default
        ``ceil(sample_rate * relearn_every * working_set)``: the same share of the stream as
        the first learning phase), cut short by the end of an epoch
    distributed : ``False`` (default); ``True`` for data parallelism over the default
        ``torch.distributed`` process group, or a process group. Every rank must build the
        trainer with the same arguments and train the same data (checked); each trains its
        share of every (micro-)batch (:mod:`.distributed`)
    resume : path of a checkpoint (:meth:`save_checkpoint`) to continue from
    annotate : name every timed phase as a ``torch.profiler.record_function`` range (and an
        NVTX range on CUDA) for ``torch.profiler`` / Nsight Systems traces
    """

    def __init__(self, table_sizes, n_dense, mode="hotline", device="cpu", *, dim=16,
                 bottom=(512, 256), top=(512, 256), lr=0.1, batch_size=128, working_set=4,
                 hot_budget=4096, sample_rate=0.05, seed=0, gather_threads=4,
                 max_cold_rows=None, eal_config=None, fragmenter=None, record_timings=True,
                 trace_working_set=1, host_table=None, np_micro_batch_size=None,
                 relearn_every=0, relearn_batches=None, distributed=False, resume=None,
                 annotate=False, policy=None, embedding_optimizer="sgd", embedding_lr=None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        for name, v in (("batch_size", batch_size), ("working_set", working_set),
                        ("dim", dim)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        relearn_every = int(relearn_every or 0)
        if relearn_every < 0:
            raise ValueError(f"relearn_every must be >= 0, got {relearn_every}")
        if relearn_every and mode != "hotline":
            raise ValueError(f"relearn_every is for hotline mode, not {mode}")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        if relearn_batches is not None and int(relearn_batches) < 1:
            raise ValueError(f"relearn_batches must be >= 1, got {relearn_batches}")
        self.mode = mode
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.table_sizes = tuple(int(s) for s in table_sizes)
        self.n_tables = len(self.table_sizes)
        self.n_dense = int(n_dense)
        self.dim = int(dim)
        self.lr = float(lr)
        from sw_driver.embedding import make_optimizer
        self.embedding_optimizer = make_optimizer(
            {"name": embedding_optimizer, "lr": self.lr if embedding_lr is None
             else embedding_lr})
        #: floats per stored row: the embedding, then the optimizer's state
        self.row_width = self.dim + self.embedding_optimizer.state_width
        self.batch_size = int(batch_size)
        self.working_set = int(working_set)
        self.sample_rate = float(sample_rate)
        self.seed = int(seed)
        self.max_cold_rows = max_cold_rows
        # SGD step size of the non-popular micro-batch: N by default; 0 = one step for all.
        self.np_micro_batch_size = (self.batch_size if np_micro_batch_size is None
                                    else int(np_micro_batch_size))
        self.trace_working_set = trace_working_set
        self.relearn_every = relearn_every
        self.relearn_batches = (
            None if not relearn_every else int(relearn_batches) if relearn_batches else
            max(1, math.ceil(self.sample_rate * relearn_every * self.working_set)))
        self.offsets = table_offsets(self.table_sizes)
        self.timer = PhaseTimer(self.device, record_timings, annotate=annotate)
        self._arch = (tuple(int(h) for h in bottom), tuple(int(h) for h in top))
        # Data parallelism: None, or the DataParallel helper (rank, world size, exchanges).
        self.dp = None
        if distributed is not False and distributed is not None:
            from .distributed import DataParallel
            self.dp = DataParallel(None if distributed is True else distributed)
        self.rank = self.dp.rank if self.dp else 0
        self.world_size = self.dp.world_size if self.dp else 1

        # Where training stands (all of it goes into a checkpoint).
        self.epoch = 0                 #: completed epochs
        self.position = 0              #: next sample of the current epoch (0: a new epoch)
        self._learn_left = None        # learning mini-batches left (None: not decided yet)
        self._phase_s = {}             # this call's learn / eal_learn / freeze wall seconds
        self._learn_samples = 0        # this call's samples trained in learning phases
        self._ws_since_freeze = 0      # working sets since the last freeze
        self._working_sets = 0         # working sets trained, all epochs
        self._relearn_due = False
        self._epoch_learn = 0          # learning mini-batches of the current epoch
        self._data_len = None          # samples of the epoch's data set (mid-epoch check)
        self.freeze_log = []           #: one dict per freeze (hotline), see _freeze
        self._last_hot = None          # global rows of the previous hot set
        self._counter_base = {}        # driver counters before a resume

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = DLRM(self.n_dense, self.n_tables, self.dim, bottom, top)
        self.model = model.to(self.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=self.lr)

        if host_table is None:
            # Not pinned: nothing DMAs from the host table (copies go through the pinned
            # staging buffers; gathers and write-backs are CPU copies), and the pinned
            # allocator rounds every block up to a power of two and keeps it cached, so a
            # pinned 8.6 GB table would lock 16 GiB for the rest of the process.
            host_table = torch.empty(sum(self.table_sizes), self.row_width)
            init_table(self.table_sizes, self.dim, self.seed, out=host_table[:, :self.dim])
        elif tuple(host_table.shape) != (sum(self.table_sizes), self.row_width):
            raise ValueError(f"host_table must be [{sum(self.table_sizes)}, {self.row_width}] "
                             f"(dim + the embedding optimizer's state), got "
                             f"{tuple(host_table.shape)}")
        hotline_options = None
        if mode == "hotline":
            if eal_config is not None and policy is not None and eal_config.policy != policy:
                raise ValueError(f"policy {policy!r} contradicts eal_config.policy "
                                 f"{eal_config.policy!r}; give one of them")
            self.eal_config = eal_config or eal_config_for_budget(
                hot_budget, self.table_sizes, policy=policy or DEFAULT_POLICY)
            hotline_options = {"eal_config": self.eal_config, "fragmenter": fragmenter,
                               "gather_threads": gather_threads,
                               "max_cold_rows": max_cold_rows}
        self.store = EmbeddingStore(self, host_table, mode, hotline_options)
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._loss_n = 0
        self._data_cache = []
        self._params = list(self.model.parameters())
        try:
            if self.dp is not None:
                self.dp.all_equal(self._fingerprint(), "the trainer settings", self.device)
            if resume is not None:
                self.load_checkpoint(resume)
        except BaseException:
            self.close()
            raise

    def _fingerprint(self):
        """Integers that every rank of a distributed run must agree on."""
        arch = sum((h + 1) * 1009 ** i for i, h in enumerate(self._arch[0] + (0,) + self._arch[1]))
        return [MODES.index(self.mode), self.seed, self.batch_size, self.working_set, self.dim,
                self.n_dense, self.n_tables, hash(self.table_sizes) % 2**61, arch % 2**61,
                round(self.lr * 1e9), round(self.embedding_optimizer.lr * 1e9),
                self.embedding_optimizer.state_width, round(self.sample_rate * 1e9), self.relearn_every,
                self.relearn_batches or 0, self.np_micro_batch_size]

    # --- the one micro-batch step shared by all modes ------------------------------------
    def _step(self, dense, labels, rows):
        """Forward, backward and an SGD step of the MLPs on one (micro-)batch whose embedding
        rows ``rows [B, T, dim]`` were gathered by the mode; returns ``d loss / d rows``.
        ``loss = sum of the samples' binary cross-entropy / batch_size``.

        Distributed: this rank computes its share of the ``B`` inputs, the MLP gradients
        are all-reduced and the row gradients all-gathered, so every rank takes the same MLP
        step and gets the whole ``[B, T, dim]`` row gradient (:mod:`.distributed`)."""
        if self.dp is not None:
            return self._step_dp(dense, labels, rows)
        rows = rows.detach().requires_grad_(True)
        logits = self.model(dense, rows)
        total = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
        # Sum over the micro-batch divided by the mini-batch size N (not by its own size):
        # each sample weighs lr / N whatever micro-batch it lands in, as in the baseline
        # order. A mean over a 10-input popular micro-batch would weigh its samples 13x more
        # (N = 128) and cost quality (docs/training.md).
        loss = total / self.batch_size
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self._loss_sum += total.detach()                      # stays on the device: no sync
        self._loss_n += labels.shape[0]
        return rows.grad

    def _step_dp(self, dense, labels, rows):
        n = labels.shape[0]
        a, b = self.dp.share(n)
        mine = rows[a:b].detach().requires_grad_(True)
        logits = self.model(dense[a:b], mine)
        total = F.binary_cross_entropy_with_logits(logits, labels[a:b], reduction="sum")
        loss = total / self.batch_size            # global N: shares' gradients add up
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        rows_x = self.dp.start_rows(mine.grad, n)             # row gradients, in flight
        total_all = self.dp.all_reduce_grads(self._params, total)   # MLP grads + loss
        self.opt.step()
        self._loss_sum += total_all
        self._loss_n += n
        return rows_x.result()

    # --- data -----------------------------------------------------------------------------
    def stage(self, dataset):
        """The dataset staged on the device (:class:`DeviceData`); the two most recent ones
        (typically the training and the evaluation set) stay cached."""
        if isinstance(dataset, DeviceData):
            return dataset
        for i, (ds, staged) in enumerate(self._data_cache):
            if ds is dataset:
                self._data_cache.insert(0, self._data_cache.pop(i))
                return staged
        if tuple(dataset.table_sizes) != self.table_sizes:
            raise ValueError(f"dataset table sizes {tuple(dataset.table_sizes)} differ from "
                             f"the trainer's {self.table_sizes}")
        if dataset.n_dense != self.n_dense:
            raise ValueError(f"dataset has {dataset.n_dense} dense features, the model "
                             f"{self.n_dense}")
        staged = DeviceData(dataset, self.device)
        if self.dp is not None:
            # Every rank must schedule and train the same data.
            self.dp.all_equal([staged.n, int(staged.sparse_cpu.sum()),
                               int(dataset.labels.double().sum()),
                               round(float(dataset.dense.double().sum()) * 1e3)],
                              "the data set (size and checksums)", self.device)
        self._data_cache = [(dataset, staged)] + self._data_cache[:1]
        return staged

    # --- popularity (hotline) ---------------------------------------------------------------
    @property
    def frozen(self):
        """Whether the EAL is frozen (always true outside hotline mode)."""
        return self.mode != "hotline" or self.store.frozen

    def learn(self, sparse):
        """Feed lookups ``int64 [n, T]`` to the EAL without training (hotline only)."""
        self._need_hotline("learn")
        self.store.learn(torch.as_tensor(sparse).cpu())

    def freeze(self):
        """Freeze the EAL and fill the hot table (hotline only)."""
        self._need_hotline("freeze")
        self._freeze()

    def _freeze(self, relearn=False):
        """Freeze, refill the hot table, log the change of the hot set, restart the count."""
        hot = self.store.freeze()
        new = hot.global_rows
        kept = 0 if self._last_hot is None else int(torch.isin(new, self._last_hot).sum())
        old_n = 0 if self._last_hot is None else int(self._last_hot.numel())
        self.freeze_log.append({"epoch": self.epoch, "position": self.position,
                                "working_sets": self._working_sets, "relearn": bool(relearn),
                                "hot_rows": int(new.numel()), "kept": kept,
                                "moved_in": int(new.numel()) - kept,
                                "moved_out": old_n - kept})
        self._last_hot = new.clone()
        self._learn_left = None
        self._ws_since_freeze = 0
        self._relearn_due = False

    def flush(self):
        """Write the hot rows back to the host table (hotline; no-op otherwise)."""
        if self.mode == "hotline":
            self.store.flush()

    def _need_hotline(self, what):
        if self.mode != "hotline":
            raise RuntimeError(f"{what}() is for hotline mode, not {self.mode}")

    # --- training -------------------------------------------------------------------------
    def train_epoch(self, dataset, progress=None, stop=None):
        """One pass over ``dataset`` in mini-batches of ``batch_size``, in order.

        ``hotline``: while the EAL is not frozen, the first ``ceil(sample_rate * n_batches)``
        mini-batches are trained the hybrid way while the EAL learns their lookups; then it is
        frozen and the rest runs as working sets of ``working_set`` mini-batches. With
        ``relearn_every = K`` every ``K`` working sets start a re-learn (hot rows flushed,
        EAL cleared, ``relearn_batches`` learning mini-batches, freeze, hot table refilled).
        ``progress(n_samples)`` is called after each mini-batch / working set.

        ``stop``: train only up to sample ``stop`` of the epoch, rounded up to the end of the
        mini-batch (gpu-only, hybrid, learning phases) or working set (hotline) it falls in;
        the epoch then stays open (:attr:`position`) and the next call continues it, exactly
        as if it had not stopped (e.g. around a checkpoint). The returned stats count this
        call's samples and seconds, and the epoch's loss and learning mini-batches so far.
        """
        data = self.stage(dataset)
        if self.position == 0:
            self._loss_sum.zero_()
            self._loss_n = 0
            self._epoch_learn = 0
        elif data.n != self._data_len:
            raise ValueError(f"the epoch stopped at sample {self.position} of a {self._data_len}"
                             f"-sample data set; it cannot continue on {data.n} samples")
        self._data_len = data.n
        stop = data.n if stop is None else max(0, min(int(stop), data.n))
        if self.cuda:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        first = self.position
        self._phase_s = {"learn": 0.0, "eal_learn": 0.0, "freeze": 0.0}
        self._learn_samples = 0
        self._run(data, stop, progress)
        if self.cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        samples = self.position - first
        complete = self.position >= data.n
        epoch = self.epoch + 1
        if complete:
            self.epoch += 1
            self.position = 0
        loss = float(self._loss_sum) / max(1, self._loss_n)
        ph = self._phase_s
        end_to_end = samples / seconds if seconds else 0.0
        if self.mode == "hotline":
            # Hotline's own throughput: the working sets only. The learning mini-batches are
            # hybrid steps (and the freezes a one-off), reported on their own.
            ws_samples = samples - self._learn_samples
            ws_seconds = seconds - ph["learn"] - ph["freeze"]
            sps = ws_samples / ws_seconds if ws_samples > 0 and ws_seconds > 0 else 0.0
        else:
            sps = end_to_end
        return EpochStats(epoch, samples, seconds, sps,
                          loss, self._epoch_learn, complete, self.position,
                          learn_seconds=ph["learn"], eal_learn_seconds=ph["eal_learn"],
                          freeze_seconds=ph["freeze"], learn_samples=self._learn_samples,
                          end_to_end_samples_per_s=end_to_end)

    def _run(self, data, stop, progress):
        """Train from :attr:`position` to ``stop`` (rounded up to the unit it falls in).

        The loop is a function of the saved state only (position, learning mini-batches left,
        working sets since the last freeze, re-learn due), so a run that stops at a unit
        boundary and continues -- in this trainer or in one resumed from a checkpoint --
        trains the same units in the same order as one that does not stop."""
        N, n = self.batch_size, data.n
        if self.mode != "hotline":
            pos = self.position
            end = min(n, pos + math.ceil((stop - pos) / N) * N)
            if end > pos:
                self.store.train(data, pos, end, progress, first_index=pos // N)
            self.position = max(pos, end)
            return
        st, step = self.store, self.working_set * N
        while self.position < stop:
            pos = self.position
            if not st.frozen:
                if self._learn_left is None:       # the first learning phase
                    n_batches = math.ceil(n / N)
                    self._learn_left = min(n_batches,
                                           max(1, math.ceil(self.sample_rate * n_batches)))
                t_learn = self._wall()
                while self._learn_left > 0 and self.position < stop:
                    a = self.position
                    b = min(a + N, n)
                    t_eal = time.perf_counter()
                    st.learn(data.sparse_cpu[a:b])
                    self._phase_s["eal_learn"] += time.perf_counter() - t_eal
                    st.step(data, a, b, "learn_step", self._epoch_learn)
                    self._learn_samples += b - a
                    self.position = b
                    self._learn_left -= 1
                    self._epoch_learn += 1
                    if progress:
                        progress(b - a)
                t_freeze = self._wall()
                self._phase_s["learn"] += t_freeze - t_learn
                # Frozen when the learning mini-batches are done, or at the end of the epoch
                # (a re-learn cut short by it).
                if self._learn_left == 0 or self.position >= n:
                    self._freeze(relearn=bool(self.freeze_log))
                    self._phase_s["freeze"] += self._wall() - t_freeze
                continue
            if self._relearn_due:
                st.begin_relearn()
                self._learn_left = self.relearn_batches
                self._relearn_due = False
                continue
            end = min(n, pos + math.ceil((stop - pos) / step) * step)
            if self.relearn_every:
                left = max(1, self.relearn_every - self._ws_since_freeze)
                end = min(end, pos + left * step)
            st.train(data, pos, end, progress)
            k = math.ceil((end - pos) / step)
            self._ws_since_freeze += k
            self._working_sets += k
            self.position = end
            if self.relearn_every and self._ws_since_freeze >= self.relearn_every:
                self._relearn_due = True

    def _wall(self):
        """``perf_counter`` after the device's queued work (phase boundaries of the epoch
        statistics: a few per learning phase, none per working set)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def train_range(self, dataset, start, stop, progress=None):
        """Train samples ``start..stop-1`` of ``dataset`` in the mode's order, without the
        learning phase (hotline needs :meth:`freeze` first). For benchmarks: time it with
        ``torch.cuda.synchronize()`` around it, or read :meth:`step_timings`."""
        data = self.stage(dataset)
        self.store.train(data, start, min(stop, data.n), progress)

    # --- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, dataset, batch_size=16384):
        """Logits ``float32 [n]`` on the device (hot rows flushed first)."""
        self.flush()
        data = self.stage(dataset)
        out = []
        was_training = self.model.training
        self.model.eval()
        for a in range(0, data.n, batch_size):
            b = min(a + batch_size, data.n)
            out.append(self.model(data.dense[a:b], self.store.eval_rows(data, a, b)))
        self.model.train(was_training)
        return torch.cat(out) if out else torch.empty(0, device=self.device)

    def evaluate(self, dataset, batch_size=16384):
        """``(auc, logloss)`` on ``dataset``: ROC AUC by ranks (ties averaged) and mean
        binary cross-entropy, both in float64."""
        logits = self.predict(dataset, batch_size)
        labels = self.stage(dataset).labels
        return roc_auc(logits, labels), log_loss(logits, labels)

    # --- state ----------------------------------------------------------------------------
    def embedding_table(self):
        """The complete embedding table in host memory (hot rows flushed first)."""
        return self.store.full_table()

    def _config(self):
        """The settings a checkpoint records (and checks on load)."""
        cfg = {"mode": self.mode, "table_sizes": list(self.table_sizes), "n_dense": self.n_dense,
               "dim": self.dim, "bottom": list(self._arch[0]), "top": list(self._arch[1]),
               "lr": self.lr, "batch_size": self.batch_size, "working_set": self.working_set,
               "sample_rate": self.sample_rate, "seed": self.seed,
               "np_micro_batch_size": self.np_micro_batch_size,
               "relearn_every": self.relearn_every, "relearn_batches": self.relearn_batches,
               "embedding_optimizer": self.embedding_optimizer.config()}
        if self.mode == "hotline":
            e = self.eal_config
            cfg["eal"] = {k: int(getattr(e, k)) for k in
                          ("banks", "sets", "ways", "table_bits", "row_bits")}
        return cfg

    def state_dict(self, copy=True):
        """A complete checkpoint, on the CPU (hot rows flushed first, so ``table`` is the
        complete embedding table):

        * ``model``, ``optimizer``: MLP parameters and ``torch.optim.SGD`` state;
        * ``table``: ``float32 [sum(table_sizes), dim]``; ``table_state``: the embedding
          optimizer's per-row state ``[sum(table_sizes), state_width]`` (``None`` for SGD);
        * ``epoch`` (completed epochs), ``position`` and ``progress`` (where the current epoch
          stands: learning mini-batches left, working sets since the last freeze, re-learn
          due, the epoch's loss sums, the data set's size);
        * ``rng``: torch's CPU (and CUDA) generator states (the trainer itself draws no
          random numbers after its seeded initialisation; restored for code that does);
        * ``hotline`` (hotline mode): the EAL tag store as ``Transport.dump_tensors`` tensors,
          ``frozen`` and the freeze threshold, the driver counters and the freeze log;
        * ``config``, ``mode``, ``table_sizes``, ``dim``, ``format``, ``version``.

        ``copy=False`` lets ``table`` share memory with the host table (for saving at once).
        """
        table = self.embedding_table()
        if copy or self.mode == "gpu-only" or not table.is_contiguous():
            table = table.detach().to("cpu", copy=True).contiguous()
        opt = self.opt.state_dict()
        opt = {"state": {k: {n: (v.detach().cpu().clone() if torch.is_tensor(v) else v)
                             for n, v in st.items()} for k, st in opt["state"].items()},
               "param_groups": opt["param_groups"]}
        sd = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
              "mode": self.mode, "table_sizes": self.table_sizes, "dim": self.dim,
              "config": self._config(),
              "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
              "optimizer": opt, "table": table,
              "table_state": self.store.optimizer_state(),
              "epoch": self.epoch, "position": self.position,
              "progress": {"learn_left": self._learn_left,
                           "ws_since_freeze": self._ws_since_freeze,
                           "working_sets": self._working_sets,
                           "relearn_due": self._relearn_due, "epoch_learn": self._epoch_learn,
                           "data_len": self._data_len, "loss_sum": float(self._loss_sum),
                           "loss_n": self._loss_n},
              "rng": {"torch": torch.get_rng_state(),
                      "cuda": torch.cuda.get_rng_state(self.device) if self.cuda else None},
              "hotline": None}
        if self.mode == "hotline":
            st = self.store
            sd["hotline"] = {
                "frozen": bool(st.frozen),
                "popular_max_rrpv": st.dev.popular_max_rrpv if st.frozen else None,
                "tag_store": st.tag_store(), "counters": self.counters(),
                "freeze_log": [dict(e) for e in self.freeze_log],
                "last_hot": None if self._last_hot is None else self._last_hot.clone()}
        return sd

    def load_state_dict(self, sd, restore_rng=True):
        """Continue from a checkpoint (:meth:`state_dict` / :meth:`save_checkpoint`): MLPs,
        optimizer, table, epoch and position, and in hotline mode the EAL (tag store, frozen
        or learning) with the hot table refilled from the checkpoint's table, so the resumed
        run schedules and trains exactly as the saved one would have.

        The table sizes, ``dim``, ``n_dense`` and MLP shapes must match (``ValueError``);
        other settings may differ (a mid-epoch position assumes the same ``batch_size``
        and ``working_set``). A hotline checkpoint loaded into another mode drops the EAL; a
        gpu-only / hybrid one loaded into hotline mode starts learning afresh; a hotline one
        needs the same EAL geometry."""
        if sd.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a trainer checkpoint (format {sd.get('format')!r})")
        if int(sd.get("version", 0)) > CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {sd['version']} is newer than this code's "
                             f"{CHECKPOINT_VERSION}")
        cfg = sd["config"]
        for key, mine in (("table_sizes", list(self.table_sizes)), ("dim", self.dim),
                          ("n_dense", self.n_dense)):
            got = list(cfg[key]) if key == "table_sizes" else cfg[key]
            if got != mine:
                raise ValueError(f"checkpoint {key} = {cfg[key]} differs from the trainer's "
                                 f"{mine}")
        hl = sd.get("hotline") if self.mode == "hotline" else None
        if hl is not None and cfg.get("eal") != self._config()["eal"]:
            raise ValueError(f"checkpoint EAL geometry {cfg.get('eal')} differs from the "
                             f"trainer's {self._config()['eal']}")
        self.model.load_state_dict(sd["model"])
        self.opt.load_state_dict(sd["optimizer"])
        mine = self.embedding_optimizer.config()
        theirs = cfg.get("embedding_optimizer", {"name": "sgd"})
        if theirs["name"] != mine["name"]:
            raise ValueError(f"checkpoint embedding optimizer {theirs['name']!r} differs from "
                             f"the trainer's {mine['name']!r}")
        self.store.load_table(sd["table"], sd.get("table_state"))
        pr = sd["progress"]
        self.epoch, self.position = int(sd["epoch"]), int(sd["position"])
        self._working_sets = int(pr["working_sets"])
        self._epoch_learn = int(pr["epoch_learn"])
        self._data_len = pr["data_len"]
        self._loss_sum.fill_(float(pr["loss_sum"]))
        self._loss_n = int(pr["loss_n"])
        if restore_rng and sd.get("rng") is not None:
            torch.set_rng_state(sd["rng"]["torch"])
            if self.cuda and sd["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(sd["rng"]["cuda"], self.device)
        self.freeze_log, self._last_hot, self._counter_base = [], None, {}
        self._learn_left, self._ws_since_freeze, self._relearn_due = None, 0, False
        if hl is not None:
            self._learn_left = pr["learn_left"]
            self._ws_since_freeze = int(pr["ws_since_freeze"])
            self._relearn_due = bool(pr["relearn_due"])
            self.store.restore(hl["tag_store"], hl["frozen"], hl["popular_max_rrpv"])
            self.freeze_log = [dict(e) for e in hl["freeze_log"]]
            self._last_hot = hl["last_hot"]
            now = self.store.dev.counters().as_dict()
            self._counter_base = {k: int(v) - now.get(k, 0) for k, v in hl["counters"].items()}
        elif self.mode == "hotline":      # e.g. a gpu-only checkpoint: learn from scratch
            self.store.begin_relearn(flush=False)
        return self

    def save_checkpoint(self, path):
        """Write :meth:`state_dict` to ``path`` (atomically: a temporary file, then a
        rename). Distributed: every rank must call it (the hot rows are flushed everywhere),
        rank 0 writes (the replicas are identical), and all wait until the file exists."""
        sd = self.state_dict(copy=False)
        path = os.fspath(path)
        if self.rank == 0:
            tmp = f"{path}.tmp{os.getpid()}"
            torch.save(sd, tmp)
            os.replace(tmp, path)
        if self.dp is not None:
            self.dp.barrier()
        return path

    def load_checkpoint(self, path, restore_rng=True):
        """:meth:`load_state_dict` of the checkpoint at ``path`` (every rank reads it)."""
        sd = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        return self.load_state_dict(sd, restore_rng)

    def memory_budget(self):
        """Bytes this trainer's embedding storage allocates, item by item, with the totals
        per memory kind (:func:`~sw_driver.training.modes.memory_budget` for its settings;
        docs/training.md, "Memory budget")."""
        kw = {}
        if self.mode == "hotline":
            ebc = self.store.ebc
            # The hot table holds the popular rows (compact slots) once frozen; before the
            # first freeze nothing is allocated on the device yet.
            kw = {"eal_config": self.eal_config, "fragmenter": ebc.dev.fragmenter,
                  "max_cold_rows": ebc.cap, "hot_rows": ebc.entries}
        return memory_budget(self.table_sizes, self.dim, self.mode,
                             batch_size=self.batch_size, working_set=self.working_set,
                             state_width=self.row_width - self.dim, cuda=self.cuda, **kw)

    def counters(self):
        """The driver's counters as a dict (hotline), else ``{}``; after a resume they
        continue from the checkpoint's."""
        if self.mode != "hotline":
            return {}
        c = self.store.dev.counters()
        c = c.as_dict() if hasattr(c, "as_dict") else dict(c)
        return {k: v + self._counter_base.get(k, 0) for k, v in c.items()}

    def step_timings(self):
        """Phase timings so far: ``{kind: {"count": n, "phases": {phase: {"total_ms",
        "mean_ms"}}}}``. Kinds: ``"step"`` (a mini-batch of gpu-only / hybrid), ``"learn_step"``
        (hybrid steps of the hotline learning phase), ``"working_set"`` (one pipelined
        hotline iteration), ``"drain"``. Phases: ``compute`` (gpu-only); ``gather``, ``h2d``,
        ``compute``, ``d2h``, ``update`` (hybrid); ``schedule``, ``popular``, ``gather``,
        ``h2d``, ``non_popular``, ``d2h``, ``write_back`` (hotline). Device phases are CUDA
        event intervals on their stream; host phases perf_counter intervals. Synchronises."""
        return self.timer.summary()

    def timeline(self):
        """``{phase: [(start_ms, end_ms), ...]}`` of the traced hotline working set, or
        ``None``."""
        self.timer.summary()
        rec = self.timer.traced
        return None if rec is None else rec.intervals

    def reset_timings(self):
        """Forget recorded timings (e.g. after warm-up)."""
        self.timer.reset()

    def close(self):
        """Release the driver, the background thread and the memory the store holds (device
        table, hot table, pinned buffers, staged data sets); the trainer cannot train after
        this. Idempotent."""
        self.store.close()
        self._data_cache = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

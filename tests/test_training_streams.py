"""CUDA stream and device hand-offs of the trainer (docs/training.md, "Streams and events").

``torch.cuda.Event.record()`` without a stream and ``torch.cuda.synchronize()`` without a
device act on the *current* device. Training on ``cuda:1`` while ``cuda:0`` is current, such a
call waits for (or times) the wrong GPU: the hotline device-to-host copy would not wait for the
non-popular step and stale rows would be written back, silently. Three kinds of check:

* a fake CUDA layer (no GPU needed) that records, for every event, the device of the stream it
  was recorded on, and runs the embedding module's copy hand-offs and the phase timer with the training
  device set to ``cuda:1``;
* a source check over ``sw_driver/`` that no call leaves the stream or device to the current
  device;
* real CUDA runs (skipped without a GPU): a non-current device when two GPUs exist, and a
  non-default current stream on one.
"""

import ast
import contextlib
import types
from pathlib import Path

import pytest
import torch

from sw_driver.embedding import EmbeddingSGD, HotlineEmbeddingBagCollection
from sw_driver.embedding.collection import _NULL_RECORD
from sw_driver.embedding.pipeline import WorkingSetPipeline
from sw_driver.training import timing
from sw_driver.training.timing import PhaseTimer

ROOT = Path(__file__).resolve().parents[1]


# --- a fake torch.cuda: streams know their device, events the stream they were recorded on -----
class FakeStream:
    def __init__(self, device=None, priority=0):
        self.device_index = FakeCuda.index(device)
        self.waited = []

    def wait_event(self, event):
        self.waited.append(event)

    def wait_stream(self, stream):
        self.waited.append(stream)

    def __repr__(self):
        return f"FakeStream(cuda:{self.device_index})"


class FakeEvent:
    def __init__(self, enable_timing=False):
        self.stream = None

    def record(self, stream=None):
        self.stream = stream if stream is not None else FakeCuda.current_stream()

    def synchronize(self):
        assert self.stream is not None, "synchronize() on an event never recorded"

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0


class FakeCuda:
    """The few ``torch.cuda`` calls the trainer's hand-offs make; device 0 is current."""

    current = 0
    streams = {}
    synchronized = []

    @staticmethod
    def index(device):
        if device is None:
            return FakeCuda.current
        if isinstance(device, int):
            return device
        d = torch.device(device)
        return FakeCuda.current if d.index is None else d.index

    @staticmethod
    def current_stream(device=None):
        i = FakeCuda.index(device)
        if i not in FakeCuda.streams:
            FakeCuda.streams[i] = FakeStream(i)
        return FakeCuda.streams[i]

    @staticmethod
    def synchronize(device=None):
        FakeCuda.synchronized.append(FakeCuda.index(device))

    @staticmethod
    @contextlib.contextmanager
    def stream(s):
        saved = FakeCuda.current_stream(s.device_index)
        FakeCuda.streams[s.device_index] = s
        try:
            yield
        finally:
            FakeCuda.streams[s.device_index] = saved


@pytest.fixture
def fake_cuda(monkeypatch):
    FakeCuda.streams, FakeCuda.synchronized = {}, []
    for name in ("current_stream", "synchronize", "stream"):
        monkeypatch.setattr(torch.cuda, name, getattr(FakeCuda, name))
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    return FakeCuda


CUDA1 = torch.device("cuda", 1)


def test_phase_timer_records_and_synchronises_on_the_training_device(fake_cuda):
    timer = PhaseTimer(CUDA1)
    rec = timer.record("step", 0, sync=True)
    tok = rec.dev_begin("compute")
    rec.dev_end(tok)
    events = [rec.base] + [e for pairs in rec._dev.values() for p in pairs for e in p]
    assert len(events) == 3
    assert {e.stream.device_index for e in events} == {1}
    timer.close(rec)
    timer.summary()
    assert fake_cuda.synchronized and set(fake_cuda.synchronized) == {1}


def _hybrid_module(**extra):
    """A collection with just the state its host-path hand-offs use, training on ``cuda:1``
    (tensors stay on the CPU: only the stream/event calls are checked)."""
    m = types.SimpleNamespace(device=CUDA1, cuda=True, dim=4, width=4, mode="hybrid",
                              optimizer=EmbeddingSGD(0.5), table=torch.zeros(10, 4),
                              _pin_grad=torch.zeros(8, 4), _pin_rows=torch.zeros(8, 4),
                              _grad_done=torch.cuda.Event(), _read_done=None, **extra)
    m._upload = lambda staged: staged.clone()          # the one real CUDA call, stubbed
    return m


def test_hybrid_gradient_copy_event_is_on_the_training_device(fake_cuda):
    m = _hybrid_module()
    plan = types.SimpleNamespace(n_bags=5, one_hot=True, target="table", rec=_NULL_RECORD,
                                 idx=torch.tensor([0, 1, 2, 2, 9]))
    grad = torch.randn(5, 4)
    HotlineEmbeddingBagCollection.apply_gradient(m, plan, grad)
    assert m._grad_done.stream is fake_cuda.current_stream(1)
    want = torch.zeros(10, 4).index_add_(0, plan.idx, grad * -0.5)
    assert torch.equal(m.table, want)


def test_hybrid_row_copy_event_is_on_the_training_device(fake_cuda):
    m = _hybrid_module()
    m.table = torch.randn(10, 4)
    rows = HotlineEmbeddingBagCollection._read_rows(m, torch.tensor([3, 1]), _NULL_RECORD)
    assert torch.equal(rows, m.table[[3, 1]])
    assert m._read_done.stream is fake_cuda.current_stream(1)
    # The next gather into the pinned buffer first waits for that copy.
    HotlineEmbeddingBagCollection._read_rows(m, torch.tensor([0]), _NULL_RECORD)


def _pipeline():
    """A working-set pipeline with just the state its copy hand-offs use, on ``cuda:1``."""
    p = object.__new__(WorkingSetPipeline)
    p.device, p.cuda = CUDA1, True
    p.ebc = types.SimpleNamespace(entries=2, working=torch.randn(10, 4))
    p.staging_out = torch.zeros(8, 4)
    p.side = FakeStream(1)
    p._last_h2d = None
    return p


def test_hotline_d2h_waits_for_non_popular_on_the_training_device(fake_cuda):
    p = _pipeline()
    ws = types.SimpleNamespace(n_cold=3)
    p.d2h(ws, timing._NullRecord())
    # The side stream waits for an event recorded on the main stream of cuda:1 (where the
    # non-popular step ran), then records its own completion.
    (np_done,) = p.side.waited
    assert np_done.stream is fake_cuda.current_stream(1)
    assert ws.d2h_done.stream is p.side
    assert torch.equal(p.staging_out[:3], p.ebc.working[2:5])


def test_hotline_h2d_event_is_on_the_side_stream(fake_cuda):
    p = _pipeline()
    p.ebc.working.zero_()
    staged = torch.randn(3, 4)
    ws = types.SimpleNamespace(n_cold=3)
    p.h2d(ws, staged, timing._NullRecord())
    assert ws.h2d_done.stream is p.side and p._last_h2d is ws.h2d_done
    assert torch.equal(p.ebc.working[2:5], staged)


def test_device_features_are_kept_for_the_schedule_stream(fake_cuda, monkeypatch):
    """Features the caller made on the device are read by the schedule stream: it waits for
    the caller's stream of the training device, and their memory is marked as used by it
    (record_stream), so that a caller dropping them cannot have its next allocation
    overwrite them before the schedule's kernels read them."""
    from sw_driver.embedding import SparseFeatures

    p = _pipeline()
    p.sched_stream = FakeStream(1)
    multi = SparseFeatures(("a", "b"), torch.tensor([1, 2, 3]), torch.tensor([1, 0, 2, 0]))
    dense = torch.tensor([[1, 2], [3, 4]])
    marked = []
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda t: True))
    monkeypatch.setattr(torch.Tensor, "record_stream",
                        lambda t, s: marked.append((t.data_ptr(), s)))
    p._order_after_caller(multi)
    assert p.sched_stream.waited == [fake_cuda.current_stream(1)]
    assert marked == [(multi.values.data_ptr(), p.sched_stream),
                      (multi.lengths.data_ptr(), p.sched_stream)]
    marked.clear()
    p._order_after_caller(dense)
    assert marked == [(dense.data_ptr(), p.sched_stream)]


# --- source check ------------------------------------------------------------------------------
def _current_device_calls(tree):
    """``(line, text)`` of calls that act on the current CUDA device implicitly."""
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = ast.unparse(f)
        nargs = len(node.args) + len(node.keywords)
        if name in ("torch.cuda.synchronize", "torch.cuda.current_stream",
                    "torch.cuda.Stream", "torch.cuda.default_stream") and nargs == 0:
            bad.append((node.lineno, name + "()"))
        elif isinstance(f, ast.Attribute) and f.attr == "record" and nargs == 0:
            bad.append((node.lineno, name + "()"))      # Event.record() on the current stream
        elif name == "torch.cuda.set_device" and nargs:
            bad.append((node.lineno, name))
    return bad


#: the one place that may pick the process's device: the command line, once per rank
SET_DEVICE_ALLOWED = {"sw_driver/train.py"}


def test_no_cuda_call_leaves_the_device_to_the_current_one():
    found = []
    for path in sorted((ROOT / "sw_driver").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for line, text in _current_device_calls(ast.parse(path.read_text())):
            if text == "torch.cuda.set_device" and rel in SET_DEVICE_ALLOWED:
                continue
            found.append(f"{rel}:{line}: {text}")
    assert not found, "calls on the current CUDA device instead of the training device:\n" + \
        "\n".join(found)


def test_source_check_finds_the_patterns():
    src = ("import torch\nev = torch.cuda.Event()\nev.record()\ntorch.cuda.synchronize()\n"
           "s = torch.cuda.current_stream()\nok = torch.cuda.current_stream(dev)\n"
           "ev.record(s)\ntorch.cuda.synchronize(dev)\nev.synchronize()\n")
    assert [t for _, t in _current_device_calls(ast.parse(src))] == [
        "ev.record()", "torch.cuda.synchronize()", "torch.cuda.current_stream()"]


# --- real CUDA runs ----------------------------------------------------------------------------
def _train_and_compare(device, stream_ctx=contextlib.nullcontext):
    from sw_driver.data import SyntheticClickGenerator
    from sw_driver.training import Trainer

    sizes = (300, 200, 50, 1000)
    data = SyntheticClickGenerator(sizes, n_dense=4, p_hot=0.8, head_rows=8, seed=3).batch(3000)
    kw = dict(dim=8, bottom=(16,), top=(16,), batch_size=64, working_set=4, hot_budget=64,
              sample_rate=0.1, lr=0.1, gather_threads=2, seed=1)
    ref = Trainer(sizes, 4, "hotline", "cpu", **kw)
    ref.train_epoch(data)
    want = ref.embedding_table().clone()
    ref.close()
    with stream_ctx():
        tr = Trainer(sizes, 4, "hotline", device, **kw)
        try:
            tr.train_epoch(data)
            got = tr.embedding_table().clone()
            assert tr.step_timings()["working_set"]["count"] > 0
        finally:
            tr.close()
    # Atomics make CUDA sums inexact; a stale write-back differs by whole updates.
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_hotline_on_a_non_current_device():
    torch.cuda.set_device(0)
    _train_and_compare("cuda:1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_hotline_inside_a_user_stream():
    def user_stream():
        return torch.cuda.stream(torch.cuda.Stream(torch.device("cuda")))
    _train_and_compare("cuda", user_stream)

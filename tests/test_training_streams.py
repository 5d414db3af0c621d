"""CUDA stream and device hand-offs of the trainer (docs/training.md, "Streams and events").

``torch.cuda.Event.record()`` without a stream and ``torch.cuda.synchronize()`` without a
device act on the *current* device. Training on ``cuda:1`` while ``cuda:0`` is current, such a
call waits for (or times) the wrong GPU: the hotline device-to-host copy would not wait for the
non-popular step and stale rows would be written back, silently. Three kinds of check:

* a fake CUDA layer (no GPU needed) that records, for every event, the device of the stream it
  was recorded on, and runs the stores' copy hand-offs and the phase timer with the training
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

from sw_driver.training import modes, timing
from sw_driver.training.timing import PhaseTimer

ROOT = Path(__file__).resolve().parents[1]


# --- a fake torch.cuda: streams know their device, events the stream they were recorded on -----
class FakeStream:
    def __init__(self, device=None, priority=0):
        self.device_index = FakeCuda.index(device)
        self.waited = []

    def wait_event(self, event):
        self.waited.append(event)

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


def _host_store(cls):
    """A store object with just the state its copy hand-offs use, training on ``cuda:1``
    (tensors stay on the CPU: only the stream/event calls are checked)."""
    st = object.__new__(cls)
    st.device, st.cuda, st.dim = CUDA1, True, 4
    st._grad_pin = torch.zeros(8, 4)
    st._staging_out = torch.zeros(8, 4)
    st._d2h_done = torch.cuda.Event()
    return st


def test_hybrid_update_copy_event_is_on_the_training_device(fake_cuda):
    st = _host_store(modes.HybridStore)
    upd = torch.randn(5, 4)
    host = st._grad_to_host(upd, 5)
    assert torch.equal(host, upd)
    assert st._d2h_done.stream is fake_cuda.current_stream(1)
    st._wait_grad()


def test_hotline_d2h_waits_for_non_popular_on_the_training_device(fake_cuda):
    st = _host_store(modes.HotlineStore)
    st.entries = 2
    st.working = torch.randn(10, 4)
    st.side = FakeStream(1)
    p = types.SimpleNamespace(n_cold=3)
    st._d2h(p, timing._NullRecord())
    # The side stream waits for an event recorded on the main stream of cuda:1 (where the
    # non-popular step ran), then records its own completion.
    (np_done,) = st.side.waited
    assert np_done.stream is fake_cuda.current_stream(1)
    assert p.d2h_done.stream is st.side
    assert torch.equal(st._staging_out[:3], st.working[2:5])


def test_hotline_h2d_event_is_on_the_side_stream(fake_cuda):
    st = _host_store(modes.HotlineStore)
    st.entries = 2
    st.working = torch.zeros(10, 4)
    st.side = FakeStream(1)
    staged = torch.randn(3, 4)
    p = types.SimpleNamespace(n_cold=3)
    st._h2d(p, staged, timing._NullRecord())
    assert p.h2d_done.stream is st.side and st._last_h2d is p.h2d_done
    assert torch.equal(st.working[2:5], staged)


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

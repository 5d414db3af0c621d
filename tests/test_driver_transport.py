"""Driver: the transport registry and the model transport against the golden AccessLogger."""

import pytest
import torch

from hotline_spec.config import EALConfig
from verif.golden import AccessLogger, make_keys, sparse_keys
from sw_driver.driver import HotlineDevice
from sw_driver.errors import DeviceStateError
from sw_driver.model_transport import ModelTransport
from sw_driver.transport import (TRANSPORTS, Transport, open_transport, register_transport)

CFG = EALConfig(banks=2, sets=4, ways=2, table_bits=2, row_bits=6)


def _keys(n, seed):
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 4, (n,), generator=gen)
    r = (torch.rand(n, generator=gen) ** 3 * 64).long()
    return make_keys(t, r, CFG)


def test_open_transport_names():
    t = open_transport("model", CFG)
    assert isinstance(t, ModelTransport) and isinstance(t, Transport) and t.name == "model"
    t.close()
    # "sim" starts a simulator (tests/test_driver_sim.py); "pcie" is not there yet.
    with pytest.raises(NotImplementedError) as ei:
        open_transport("pcie", CFG)
    assert "'pcie'" in str(ei.value)
    with pytest.raises(ValueError, match=r"unknown transport 'usb': expected one of 'model'"):
        open_transport("usb", CFG)
    with pytest.raises(ValueError, match="unknown transport"):
        open_transport(["model"], CFG)
    with pytest.raises(TypeError, match="config must be an EALConfig"):
        open_transport("model", None)


def test_register_transport():
    class Logged(ModelTransport):
        calls = 0

        def learn(self, keys):
            Logged.calls += 1
            return super().learn(keys)

    register_transport("logged-test", Logged)
    try:
        with HotlineDevice([10], 2, config=CFG, transport="logged-test") as dev:
            dev.learn(torch.tensor([[1], [2]]))
            assert isinstance(dev.transport, Logged) and Logged.calls == 1
        register_transport("bad-test", lambda cfg: object())
        with pytest.raises(TypeError, match="returned object, not a Transport"):
            open_transport("bad-test", CFG)
    finally:
        TRANSPORTS.pop("logged-test", None)
        TRANSPORTS.pop("bad-test", None)
    with pytest.raises(TypeError, match="must be callable"):
        register_transport("x", 3)


def test_abstract_transport():
    with pytest.raises(TypeError):
        Transport(CFG)  # abstract


def test_model_transport_matches_access_logger():
    mt = ModelTransport(CFG)
    lg = AccessLogger(CFG)
    for seed in range(3):
        k = _keys(200, seed)
        hit, slot = mt.learn(k)
        want = lg.learn(k)
        assert torch.equal(hit, want.hit) and torch.equal(slot, want.slot)
    probe = _keys(300, 99)
    for thr in (0, 1, 2, 3):
        hit, slot = mt.lookup(probe, thr)
        want = lg.lookup(probe, thr)
        assert torch.equal(hit, want.hit) and torch.equal(slot, want.slot)
    hit, _ = mt.lookup(probe, None)
    assert torch.equal(hit, lg.lookup(probe).hit)
    assert mt.dump() == lg.dump()
    d, w = mt.dump_tensors(), lg.dump_tensors()
    assert d.keys() == w.keys() and all(torch.equal(d[k], w[k]) for k in d)
    # the generic dump_tensors (from dump beats) equals the golden one
    g = Transport.dump_tensors(mt)
    for k in w:
        assert torch.equal(g[k].to(w[k].dtype), w[k]), k
    mt.clear()
    assert not bool(mt.logger.valid.any())
    mt.close()
    mt.close()
    for call in (lambda: mt.learn(probe), lambda: mt.lookup(probe, 1), mt.dump, mt.clear):
        with pytest.raises(DeviceStateError, match="after close"):
            call()


class BeatsOnly(ModelTransport):
    """A transport that only offers the RTL-style dump stream (generic dump_tensors), like
    the sim/pcie transports will."""

    def dump_tensors(self):
        return Transport.dump_tensors(self)


def test_driver_with_beats_only_transport_and_64bit_keys():
    # one bank, one set: 64-bit tags, so tags >= 2**63 appear as negative int64 patterns
    cfg = EALConfig(banks=1, sets=1, ways=16, table_bits=4, row_bits=60, hash_rounds=5)
    gen = torch.Generator().manual_seed(4)
    table_rows = [50, 80, 30]
    learn = torch.stack([(torch.rand(400, generator=gen) ** 4 * r).long() for r in table_rows],
                        1)
    lg = AccessLogger(cfg)
    lg.learn(make_keys(torch.arange(3).expand(400, 3), learn, cfg))
    assert bool((lg.tag < 0).any()), "want tags >= 2**63 in this test"
    with HotlineDevice(table_rows, 2, config=cfg, transport=BeatsOnly(cfg)) as dev:
        dev.learn(learn)
        for thr in (1, 3):
            hot = dev.freeze(thr)
            slots, tables, rows = lg.popular_rows(thr)
            assert torch.equal(hot.slots, slots) and torch.equal(hot.tables, tables)
            assert torch.equal(hot.rows, rows)
            assert hot.n > 0 and bool((lg.tag.reshape(-1)[hot.slots] < 0).any())


def test_transport_config_mismatch():
    t = ModelTransport(CFG)
    with pytest.raises(ValueError, match="opened for another EALConfig"):
        HotlineDevice([4], 2, config=CFG.replace(ways=4), transport=t)


def test_tag_store_load_round_trip_and_refusal():
    """A tag store saved from one device loads into another (the checkpoint path): the new
    device then freezes to exactly the same hot rows; a transport that cannot write its tag
    store says so."""
    cfg = EALConfig(banks=4, sets=8, ways=2)
    rows = (50, 70, 30)
    sparse = torch.stack([torch.randint(0, n, (400,), generator=torch.Generator().manual_seed(t))
                          for t, n in enumerate(rows)], 1)
    with HotlineDevice(rows, 4, config=cfg) as a, HotlineDevice(rows, 4, config=cfg) as b:
        a.learn(sparse)
        dump = a.transport.dump_tensors()
        b.load_tag_store(dump)
        hot_a, hot_b = a.freeze(), b.freeze()
        assert hot_a.slots.numel() > 0
        for x, y in zip(hot_a, hot_b):
            assert torch.equal(x, y)

    class ReadOnly(Transport):
        def learn(self, keys): raise AssertionError
        def lookup(self, keys, popular_max_rrpv=None): raise AssertionError
        def dump(self): return []
        def clear(self): pass
        def close(self): pass

    with pytest.raises(NotImplementedError, match="cannot load a tag store"):
        ReadOnly.load_dump_tensors(object.__new__(ReadOnly), dump)


def test_driver_with_lfu_policy_matches_golden_and_round_trips():
    cfg = CFG.replace(policy="lfu", sketch_counters=4, popular_min_count=3)
    lg = AccessLogger(cfg)
    sparse = torch.stack([_keys(40, 7) % 64, _keys(40, 8) % 64], 1)
    with HotlineDevice([64, 64], 2, config=cfg) as dev:
        dev.learn(sparse)
        lg.learn(sparse_keys(sparse, cfg))
        hot = dev.freeze()
        slots, tables, rows = lg.popular_rows()
        assert torch.equal(hot.slots, slots) and torch.equal(hot.tables, tables)
        assert 0 < slots.numel() < cfg.entries
        assert dev.popular_max_rrpv is None
        with pytest.raises(ValueError, match="popular_max_rrpv is the srrip policy's threshold"):
            dev.freeze(popular_max_rrpv=1)
        # The generic (beat-by-beat) dump carries the sketch too, and the store reloads.
        d = Transport.dump_tensors(dev.transport)
        assert torch.equal(d["sketch"], lg.dump_tensors()["sketch"])
        dump = dev.transport.dump_tensors()
        dev.load_tag_store(dump)
        assert torch.equal(dev.transport.logger.sketch, lg.sketch)


@pytest.mark.parametrize("op", ["gather", "write_back"])
def test_row_command_before_set_tables_names_the_call_once(op):
    from hotline_spec.config import DEFAULT_DEVICE
    t = ModelTransport(DEFAULT_DEVICE)
    with pytest.raises(DeviceStateError) as e:
        getattr(t, op)(torch.zeros(1, dtype=torch.int64), torch.zeros(1, 16))
    assert str(e.value) == f"ModelTransport.{op}: call set_tables() first"

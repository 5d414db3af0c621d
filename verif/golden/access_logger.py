"""The Embedding Access Logger (EAL) golden model (``docs/spec.md`` sections 4, 5 and 8).

The tag store is three tensors of shape ``[banks, sets, ways]``: ``valid`` (bool), the
replacement state (``rrpv`` 0..3 for the srrip policy, ``count`` for lfu; int64) and ``tag``
(int64), plus for lfu the per-set sketch ``[banks, sets, 2, sketch_counters]``. Learn mode
(spec section 4) is defined one lookup at a time; :meth:`AccessLogger.learn` computes it with
the compiled learner of ``verif.golden.learner`` and can run the key-by-key Python reference
instead (the same result). Frozen mode (:meth:`AccessLogger.lookup`) is read-only and
fully vectorised.
"""

from collections import namedtuple
from dataclasses import dataclass

import torch

from hotline_spec.config import DEFAULT_CONFIG, EALConfig, RRPV_MAX, SKETCH_ROWS

from .feistel import _as_int64, _compilable, hash_fields, key_from_fields, split_keys
from .learner import learn_compiled, learn_keys_compiled, learn_sequential

__all__ = ["AccessLogger", "EAL", "LookupResult", "DumpBeat", "meta_name"]


@dataclass
class LookupResult:
    """The results of a batch of lookups (spec section 4), tensors shaped like the keys.

    ``hit`` (bool), ``way`` (int64; 0 on a frozen-mode miss), ``slot`` (int64 hot-table slot
    ``(bank * sets + set) * ways + way``), and the lookup's hash fields ``bank``, ``set``,
    ``tag`` (int64).
    """

    hit: torch.Tensor
    way: torch.Tensor
    slot: torch.Tensor
    bank: torch.Tensor
    set: torch.Tensor
    tag: torch.Tensor

    def __len__(self):
        """The number of lookups."""
        return self.hit.numel()


DumpBeat = namedtuple("DumpBeat", ["bank", "set", "ways", "sketch"], defaults=((),))
DumpBeat.__doc__ = """One beat of the RTL ``dump`` stream (spec section 8): ``bank``, ``set``,
``ways``, a tuple of ``ways`` triples ``(valid, rrpv or count, tag)`` (Python ints), and for the
lfu policy ``sketch``, a tuple of 2 tuples of ``sketch_counters`` counts (empty for srrip)."""


def meta_name(cfg):
    """The name of an entry's replacement state: ``"rrpv"`` (srrip) or ``"count"`` (lfu)."""
    return cfg.meta_name


def _check_threshold(value, default):
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= RRPV_MAX:
        raise ValueError(f"popular_max_rrpv must be an int in 0..{RRPV_MAX}, not {value!r}")
    return value


def popular_entries(cfg, valid, meta, popular_max_rrpv=None, popular_min_count=None):
    """bool like ``valid``: the popular entries (spec section 5) for either policy: srrip
    ``valid and rrpv <= popular_max_rrpv``, lfu ``valid and count >= popular_min_count``
    (defaults from ``cfg``); the other policy's threshold must be left ``None``."""
    if cfg.policy == "srrip":
        if popular_min_count is not None:
            raise ValueError("popular_min_count is a threshold of the lfu policy; this EAL "
                             "uses srrip (set popular_max_rrpv)")
        return valid & (meta <= _check_threshold(popular_max_rrpv, cfg.popular_max_rrpv))
    if popular_max_rrpv is not None:
        raise ValueError("popular_max_rrpv is a threshold of the srrip policy; this EAL uses "
                         "lfu (set popular_min_count)")
    thr = cfg.popular_min_count if popular_min_count is None else popular_min_count
    if isinstance(thr, bool) or not isinstance(thr, int) or not 1 <= thr <= cfg.count_max:
        raise ValueError(f"popular_min_count must be an int in 1..{cfg.count_max}, not {thr!r}")
    return valid & (meta >= thr)


class AccessLogger:
    """Golden model of the EAL tag store (spec sections 4 and 5).

    ``AccessLogger(cfg)`` starts cleared (every entry ``{valid 0, rrpv/count 0, tag 0}``,
    every sketch counter 0).
    :meth:`learn` applies learn mode in stream order, :meth:`lookup` is frozen mode,
    :meth:`popular_rows` reads out the hot-table layout and :meth:`dump` the tag store in the
    order of the RTL ``dump`` stream (spec section 8).
    """

    def __init__(self, cfg=DEFAULT_CONFIG):
        if not isinstance(cfg, EALConfig):
            raise TypeError(f"cfg must be an EALConfig, not {type(cfg).__name__}")
        self.cfg = cfg
        n = cfg.banks * cfg.sets
        # Internally [banks * sets, ways], row index = flat set id = bank * sets + set.
        self._valid = torch.zeros(n, cfg.ways, dtype=torch.bool)
        self._meta = torch.zeros(n, cfg.ways, dtype=torch.int64)
        self._tag = torch.zeros(n, cfg.ways, dtype=torch.int64)
        self._sketch = (torch.zeros(n, SKETCH_ROWS, cfg.sketch_counters, dtype=torch.int64)
                        if cfg.policy == "lfu" else None)

    # --- state -------------------------------------------------------------------------
    def _shape3(self, t):
        return t.view(self.cfg.banks, self.cfg.sets, self.cfg.ways)

    @property
    def valid(self):
        """Entry valid bits (spec section 4), bool ``[banks, sets, ways]`` (a view: read it,
        change the state only through the methods)."""
        return self._shape3(self._valid)

    @property
    def rrpv(self):
        """srrip: entry RRPVs 0..3 (spec section 4), int64 ``[banks, sets, ways]`` (a view)."""
        if self.cfg.policy != "srrip":
            raise AttributeError("this EAL uses the lfu policy: its entries have a count")
        return self._shape3(self._meta)

    @property
    def count(self):
        """lfu: entry counts (spec section 4.2), int64 ``[banks, sets, ways]`` (a view)."""
        if self.cfg.policy != "lfu":
            raise AttributeError("this EAL uses the srrip policy: its entries have an rrpv")
        return self._shape3(self._meta)

    @property
    def sketch(self):
        """lfu: the per-set sketches, int64 ``[banks, sets, 2, sketch_counters]`` (a view);
        ``None`` for srrip."""
        if self._sketch is None:
            return None
        return self._sketch.view(self.cfg.banks, self.cfg.sets, SKETCH_ROWS, -1)

    @property
    def meta(self):
        """The replacement state of either policy (``rrpv`` or ``count``), a view."""
        return self._shape3(self._meta)

    @property
    def tag(self):
        """Entry tags (spec sections 1 and 4), int64 ``[banks, sets, ways]`` (a view)."""
        return self._shape3(self._tag)

    @property
    def state(self):
        """The tag-store readout the driver lays out the hot table from (spec section 5,
        ``EAL.state``): a copy, as :meth:`state_dict`."""
        return self.state_dict()

    def clear(self):
        """Zero the tag store, as after reset or the RTL ``clear`` pulse (spec sections 4, 8)."""
        self._valid.zero_()
        self._meta.zero_()
        self._tag.zero_()
        if self._sketch is not None:
            self._sketch.zero_()

    def state_dict(self):
        """A copy of the tag store: ``{"valid", "rrpv" (or "count"), "tag"}``, each
        ``[banks, sets, ways]``, and for lfu ``"sketch"`` ``[banks, sets, 2, counters]``."""
        out = {"valid": self.valid.clone(), meta_name(self.cfg): self.meta.clone(),
               "tag": self.tag.clone()}
        if self._sketch is not None:
            out["sketch"] = self.sketch.clone()
        return out

    def load_state_dict(self, state):
        """Replace the tag store by ``state`` (as from :meth:`state_dict`); validates shapes,
        ranges (RRPV 0..3, tags < 2**tag_bits) and that valid tags are unique per set (spec
        section 1, "tags are exact")."""
        cfg = self.cfg
        shape = (cfg.banks, cfg.sets, cfg.ways)
        got = {}
        mname = meta_name(cfg)
        for name in ("valid", mname, "tag"):
            if name not in state:
                raise ValueError(f"state has no {name!r} (this EAL uses the {cfg.policy} "
                                 f"policy)")
            t = torch.as_tensor(state[name])
            if tuple(t.shape) != shape:
                raise ValueError(f"state[{name!r}] has shape {tuple(t.shape)}, expected {shape}")
            got[name] = t
        valid = got["valid"].to(torch.bool).reshape(-1, cfg.ways)
        meta = _as_int64(got[mname], cfg.meta_bits, mname).reshape(-1, cfg.ways)
        sketch = None
        if cfg.policy == "lfu":
            sshape = (cfg.banks, cfg.sets, SKETCH_ROWS, cfg.sketch_counters)
            sk = torch.as_tensor(state.get("sketch", torch.zeros(sshape, dtype=torch.int64)))
            if tuple(sk.shape) != sshape:
                raise ValueError(f"state['sketch'] has shape {tuple(sk.shape)}, expected {sshape}")
            sketch = _as_int64(sk, cfg.count_bits, "sketch").reshape(-1, SKETCH_ROWS,
                                                                     cfg.sketch_counters)
        tag = _as_int64(got["tag"], cfg.tag_bits, "tag").reshape(-1, cfg.ways)
        same = (tag[:, :, None] == tag[:, None, :]) & valid[:, :, None] & valid[:, None, :]
        same &= ~torch.eye(cfg.ways, dtype=torch.bool)
        if bool(same.any()):
            fs = int(torch.nonzero(same.any(2).any(1))[0])
            raise ValueError(f"bank {fs // cfg.sets} set {fs % cfg.sets} holds a valid tag twice")
        self._valid = valid.clone()
        self._meta = meta.clone()
        self._tag = tag.clone()
        self._sketch = None if sketch is None else sketch.clone()

    # --- learn mode (spec section 4) ---------------------------------------------------
    def learn(self, keys, reference=False):
        """Learn mode (spec section 4): the policy's updates applied one lookup at a time in
        stream order (the flattened order of ``keys``). Returns a :class:`LookupResult`;
        ``hit`` says whether the key was already present, ``way`` where it now lives (for an
        lfu key that was not admitted: the way it would have replaced).

        The compiled learner (``verif.golden.learner``) computes it; ``reference=True`` runs
        the key-by-key Python reference instead (same result, about 50 times slower), with
        the torch version of the hash."""
        cfg = self.cfg
        if not reference:
            k = _as_int64(keys, cfg.key_bits, "key")
            if _compilable(k):      # hash, learn and slots in one compiled call
                shape = k.shape
                hit, way, slot, bank, set_, tag = learn_keys_compiled(
                    cfg, self._valid, self._meta, self._tag, self._sketch, k)
                return LookupResult(hit=hit.reshape(shape), way=way.reshape(shape),
                                    slot=slot.reshape(shape), bank=bank.reshape(shape),
                                    set=set_.reshape(shape), tag=tag.reshape(shape))
            keys = k
        bank, set_, tag = hash_fields(keys, cfg, reference=reference)
        flat = (bank * cfg.sets + set_).reshape(-1)
        run = learn_sequential if reference else learn_compiled
        hit, way = run(cfg, self._valid, self._meta, self._tag, self._sketch, flat,
                       tag.reshape(-1))
        shape = bank.shape
        return LookupResult(hit=hit.reshape(shape), way=way.reshape(shape),
                            slot=(flat * cfg.ways + way).reshape(shape),
                            bank=bank, set=set_, tag=tag)

    # --- frozen mode (spec section 4) --------------------------------------------------
    def lookup(self, keys, popular_max_rrpv=None, popular_min_count=None):
        """Frozen mode (spec section 4), read-only and vectorised: ``hit`` iff the key's entry
        is present and popular (srrip: ``rrpv <= popular_max_rrpv``, lfu: ``count >=
        popular_min_count``; defaults from the config); ``way`` is its way on a hit and 0
        otherwise."""
        cfg = self.cfg
        popular = popular_entries(cfg, self._valid, self._meta, popular_max_rrpv,
                                  popular_min_count)
        bank, set_, tag = hash_fields(keys, cfg)
        shape = bank.shape
        flat = (bank * cfg.sets + set_).reshape(-1)
        t = tag.reshape(-1)
        match = self._valid[flat] & (self._tag[flat] == t[:, None])
        present = match.any(1)
        way = match.to(torch.uint8).argmax(1) if flat.numel() else flat.clone()
        hit = present & popular[flat].gather(1, way[:, None])[:, 0]
        way = torch.where(hit, way, torch.zeros_like(way))
        return LookupResult(hit=hit.reshape(shape), way=way.reshape(shape),
                            slot=(flat * cfg.ways + way).reshape(shape),
                            bank=bank, set=set_, tag=tag)

    def access(self, keys, learn, popular_max_rrpv=None):
        """Learn (``learn`` true) or frozen lookups, mirroring the RTL ``learn`` input."""
        return self.learn(keys) if learn else self.lookup(keys, popular_max_rrpv)

    # --- popular rows (spec section 5) -------------------------------------------------
    def popular_mask(self, popular_max_rrpv=None, popular_min_count=None):
        """bool ``[banks, sets, ways]``: the popular entries (spec section 5)."""
        return popular_entries(self.cfg, self.valid, self.meta, popular_max_rrpv,
                               popular_min_count)

    def popular_rows(self, popular_max_rrpv=None, popular_min_count=None):
        """The hot-table layout (spec section 5): ``(slots, tables, rows)``, int64 tensors
        sorted by slot; the popular entry at slot ``s`` holds row ``rows[i]`` of table
        ``tables[i]``, recovered with the inverse hash."""
        cfg = self.cfg
        mask = self.popular_mask(popular_max_rrpv, popular_min_count)
        slots = torch.nonzero(mask.reshape(-1))[:, 0]
        fs = slots // cfg.ways
        keys = key_from_fields(fs // cfg.sets, fs % cfg.sets, self._tag.reshape(-1)[slots], cfg)
        tables, rows = split_keys(keys, cfg)
        return slots, tables, rows

    # --- dump (spec section 8) ---------------------------------------------------------
    def dump_tensors(self):
        """The tag store set-major (for each set, for each bank: the order of every
        transport's dump; the RTL ``dump`` stream is bank-major, the entries' slot order,
        spec section 8), as tensors: ``{"bank", "set"}`` int64 ``[sets * banks]``,
        ``{"valid", "rrpv" (or "count"), "tag"}`` ``[sets * banks, ways]`` and for lfu
        ``"sketch"`` ``[sets * banks, 2, sketch_counters]``."""
        cfg = self.cfg
        sets, banks = torch.meshgrid(torch.arange(cfg.sets), torch.arange(cfg.banks),
                                     indexing="ij")
        out = {"bank": banks.reshape(-1), "set": sets.reshape(-1)}
        for name, t in (("valid", self.valid), (meta_name(cfg), self.meta), ("tag", self.tag)):
            out[name] = t.permute(1, 0, 2).reshape(-1, cfg.ways).clone()
        if self._sketch is not None:
            out["sketch"] = self.sketch.permute(1, 0, 2, 3).reshape(
                -1, SKETCH_ROWS, cfg.sketch_counters).clone()
        return out

    def dump(self):
        """The tag store as the RTL ``dump`` stream's beats (spec section 8): a list of
        :class:`DumpBeat` ``(bank, set, ways)``, set-major then bank (the order of every
        transport's dump; the RTL streams them bank-major: sort by ``(bank, set)`` to
        compare), each with ``ways`` triples ``(valid, rrpv or count, tag)`` of Python ints
        (and the lfu sketch)."""
        d = self.dump_tensors()
        v, t = d["valid"].to(torch.int64).tolist(), d["tag"].tolist()
        r = d[meta_name(self.cfg)].tolist()
        sk = ([tuple(map(tuple, x)) for x in d["sketch"].tolist()] if "sketch" in d
              else [()] * len(v))
        return [DumpBeat(b, s, tuple(zip(vv, rr, tt)), kk)
                for b, s, vv, rr, tt, kk in zip(d["bank"].tolist(), d["set"].tolist(), v, r, t,
                                                sk)]

    def load_dump(self, beats):
        """Rebuild the tag store from a full ``dump`` stream (any order; every (bank, set)
        exactly once), e.g. one read from the RTL or the driver."""
        cfg = self.cfg
        n = cfg.banks * cfg.sets
        order, vals, sketches = [], [], []
        lfu = cfg.policy == "lfu"
        seen = set()
        for beat in beats:
            b, s, ways = beat[:3]
            sketches.append(beat[3] if len(beat) > 3 else ())
            b, s = int(b), int(s)
            if not (0 <= b < cfg.banks and 0 <= s < cfg.sets) or (b, s) in seen:
                raise ValueError(f"dump beat for bank {b} set {s} is out of range or repeated")
            if len(ways) != cfg.ways:
                raise ValueError(f"dump beat for bank {b} set {s} has {len(ways)} ways, "
                                 f"expected {cfg.ways}")
            seen.add((b, s))
            order.append(b * cfg.sets + s)
            vals.append([(int(bool(v)), int(r), int(t) - (1 << 64) if int(t) >= 1 << 63
                          else int(t)) for v, r, t in ways])
        if len(seen) != n:
            raise ValueError(f"dump has {len(seen)} beats, expected {n}")
        data = torch.tensor(vals, dtype=torch.int64).reshape(n, cfg.ways, 3)
        inv = torch.empty(n, dtype=torch.int64)
        inv[torch.tensor(order, dtype=torch.int64)] = torch.arange(n)
        data = data[inv].reshape(cfg.banks, cfg.sets, cfg.ways, 3)
        state = {"valid": data[..., 0].bool(), meta_name(cfg): data[..., 1],
                 "tag": data[..., 2]}
        if lfu:
            shape = (SKETCH_ROWS, cfg.sketch_counters)
            if any(torch.tensor(x).shape != shape for x in sketches):
                raise ValueError(f"every lfu dump beat needs a sketch of shape {shape}")
            sk = torch.tensor(sketches, dtype=torch.int64)[inv]
            state["sketch"] = sk.reshape(cfg.banks, cfg.sets, *shape)
        self.load_state_dict(state)

    def __repr__(self):
        return (f"AccessLogger({self.cfg.describe()}, valid={int(self._valid.sum())}, "
                f"popular={int(self.popular_mask().sum())})")


EAL = AccessLogger
"""Alias: docs/spec.md section 5 calls the golden tag store ``EAL``."""

"""The Embedding Access Logger (EAL) golden model (``docs/spec.md`` sections 4, 5 and 8).

The tag store is three tensors of shape ``[banks, sets, ways]``: ``valid`` (bool), ``rrpv``
(int64, 0..3) and ``tag`` (int64). Learn mode (SRRIP, spec section 4) is inherently
sequential: :meth:`AccessLogger.learn` hashes the whole batch at once, then runs the
per-lookup update on plain Python lists of the sets the batch touches, and writes those sets
back to the tensors when the batch is done. Frozen mode (:meth:`AccessLogger.lookup`) is
read-only and fully vectorised.
"""

from collections import namedtuple
from dataclasses import dataclass

import torch

from hotline_hw.config import DEFAULT_CONFIG, EALConfig, RRPV_INSERT, RRPV_MAX

from .feistel import _as_int64, hash_fields, key_from_fields, split_keys

__all__ = ["AccessLogger", "EAL", "LookupResult", "DumpBeat"]


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


DumpBeat = namedtuple("DumpBeat", ["bank", "set", "ways"])
DumpBeat.__doc__ = """One beat of the RTL ``dump`` stream (spec section 8): ``bank``, ``set`` and
``ways``, a tuple of ``ways`` triples ``(valid, rrpv, tag)`` (Python ints)."""


def _check_threshold(value, default):
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= RRPV_MAX:
        raise ValueError(f"popular_max_rrpv must be an int in 0..{RRPV_MAX}, not {value!r}")
    return value


class AccessLogger:
    """Golden model of the EAL tag store (spec sections 4 and 5).

    ``AccessLogger(cfg)`` starts cleared (every entry ``{valid 0, rrpv 0, tag 0}``).
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
        self._rrpv = torch.zeros(n, cfg.ways, dtype=torch.int64)
        self._tag = torch.zeros(n, cfg.ways, dtype=torch.int64)

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
        """Entry RRPVs 0..3 (spec section 4), int64 ``[banks, sets, ways]`` (a view)."""
        return self._shape3(self._rrpv)

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
        self._rrpv.zero_()
        self._tag.zero_()

    def state_dict(self):
        """A copy of the tag store: ``{"valid", "rrpv", "tag"}``, each ``[banks, sets, ways]``."""
        return {"valid": self.valid.clone(), "rrpv": self.rrpv.clone(), "tag": self.tag.clone()}

    def load_state_dict(self, state):
        """Replace the tag store by ``state`` (as from :meth:`state_dict`); validates shapes,
        ranges (RRPV 0..3, tags < 2**tag_bits) and that valid tags are unique per set (spec
        section 1, "tags are exact")."""
        cfg = self.cfg
        shape = (cfg.banks, cfg.sets, cfg.ways)
        got = {}
        for name in ("valid", "rrpv", "tag"):
            t = torch.as_tensor(state[name])
            if tuple(t.shape) != shape:
                raise ValueError(f"state[{name!r}] has shape {tuple(t.shape)}, expected {shape}")
            got[name] = t
        valid = got["valid"].to(torch.bool).reshape(-1, cfg.ways)
        rrpv = _as_int64(got["rrpv"], 2, "rrpv").reshape(-1, cfg.ways)
        tag = _as_int64(got["tag"], cfg.tag_bits, "tag").reshape(-1, cfg.ways)
        same = (tag[:, :, None] == tag[:, None, :]) & valid[:, :, None] & valid[:, None, :]
        same &= ~torch.eye(cfg.ways, dtype=torch.bool)
        if bool(same.any()):
            fs = int(torch.nonzero(same.any(2).any(1))[0])
            raise ValueError(f"bank {fs // cfg.sets} set {fs % cfg.sets} holds a valid tag twice")
        self._valid = valid.clone()
        self._rrpv = rrpv.clone()
        self._tag = tag.clone()

    # --- learn mode (spec section 4) ---------------------------------------------------
    def learn(self, keys):
        """Learn mode (spec section 4): SRRIP updates applied one lookup at a time in stream
        order (the flattened order of ``keys``). Returns a :class:`LookupResult`; ``hit`` says
        whether the key was already present, ``way``/``slot`` where it now lives."""
        cfg = self.cfg
        ways = cfg.ways
        bank, set_, tag = hash_fields(keys, cfg)
        shape = bank.shape
        flat = (bank * cfg.sets + set_).reshape(-1)
        n = flat.numel()
        if n == 0:
            z = torch.zeros(shape, dtype=torch.int64)
            return LookupResult(torch.zeros(shape, dtype=torch.bool), z, z.clone(), bank,
                                set_, tag)
        touched = torch.unique(flat)
        t_list = touched.tolist()
        # Per touched set: [tags with None for invalid ways, rrpvs] as Python lists.
        cache = {}
        for fs, v, r, tg in zip(t_list, self._valid[touched].tolist(),
                                self._rrpv[touched].tolist(), self._tag[touched].tolist()):
            cache[fs] = ([tg[w] if v[w] else None for w in range(ways)], r)
        hits, out_way = [], []
        hit_append, way_append = hits.append, out_way.append
        insert, top = RRPV_INSERT, RRPV_MAX
        for fs, tg in zip(flat.tolist(), tag.reshape(-1).tolist()):
            tags, r = cache[fs]
            if tg in tags:                      # 1. hit: RRPV <- 0
                w = tags.index(tg)
                r[w] = 0
                hit_append(True)
            else:
                hit_append(False)
                if None in tags:                # 2. miss, free way: the lowest numbered
                    w = tags.index(None)
                else:                           # 3. miss, set full: age by 3 - max(RRPV),
                    if top not in r:            #    evict the lowest way at RRPV 3
                        d = top - max(r)
                        r[:] = [x + d for x in r]
                    w = r.index(top)
                tags[w] = tg
                r[w] = insert
            way_append(w)
        # Write the touched sets back.
        new_tags = [cache[fs][0] for fs in t_list]
        new_valid = torch.tensor([[x is not None for x in tags] for tags in new_tags],
                                 dtype=torch.bool).reshape(-1, ways)
        new_tag = torch.tensor([[0 if x is None else x for x in tags] for tags in new_tags],
                               dtype=torch.int64).reshape(-1, ways)
        self._rrpv[touched] = torch.tensor([cache[fs][1] for fs in t_list],
                                           dtype=torch.int64).reshape(-1, ways)
        self._tag[touched] = torch.where(new_valid, new_tag, self._tag[touched])
        self._valid[touched] = new_valid
        way = torch.tensor(out_way, dtype=torch.int64)
        return LookupResult(hit=torch.tensor(hits, dtype=torch.bool).reshape(shape),
                            way=way.reshape(shape), slot=(flat * ways + way).reshape(shape),
                            bank=bank, set=set_, tag=tag)

    # --- frozen mode (spec section 4) --------------------------------------------------
    def lookup(self, keys, popular_max_rrpv=None):
        """Frozen mode (spec section 4), read-only and vectorised: ``hit`` iff the key's entry
        is present with ``rrpv <= popular_max_rrpv`` (default ``cfg.popular_max_rrpv``);
        ``way`` is its way on a hit and 0 otherwise."""
        cfg = self.cfg
        thr = _check_threshold(popular_max_rrpv, cfg.popular_max_rrpv)
        bank, set_, tag = hash_fields(keys, cfg)
        shape = bank.shape
        flat = (bank * cfg.sets + set_).reshape(-1)
        t = tag.reshape(-1)
        match = self._valid[flat] & (self._tag[flat] == t[:, None])
        present = match.any(1)
        way = match.to(torch.uint8).argmax(1) if flat.numel() else flat.clone()
        rr = self._rrpv[flat].gather(1, way[:, None])[:, 0]
        hit = present & (rr <= thr)
        way = torch.where(hit, way, torch.zeros_like(way))
        return LookupResult(hit=hit.reshape(shape), way=way.reshape(shape),
                            slot=(flat * cfg.ways + way).reshape(shape),
                            bank=bank, set=set_, tag=tag)

    def access(self, keys, learn, popular_max_rrpv=None):
        """Learn (``learn`` true) or frozen lookups, mirroring the RTL ``learn`` input."""
        return self.learn(keys) if learn else self.lookup(keys, popular_max_rrpv)

    # --- popular rows (spec section 5) -------------------------------------------------
    def popular_mask(self, popular_max_rrpv=None):
        """bool ``[banks, sets, ways]``: ``valid and rrpv <= popular_max_rrpv`` (spec 5)."""
        thr = _check_threshold(popular_max_rrpv, self.cfg.popular_max_rrpv)
        return self.valid & (self.rrpv <= thr)

    def popular_rows(self, popular_max_rrpv=None):
        """The hot-table layout (spec section 5): ``(slots, tables, rows)``, int64 tensors
        sorted by slot; the popular entry at slot ``s`` holds row ``rows[i]`` of table
        ``tables[i]``, recovered with the inverse hash."""
        cfg = self.cfg
        slots = torch.nonzero(self.popular_mask(popular_max_rrpv).reshape(-1))[:, 0]
        fs = slots // cfg.ways
        keys = key_from_fields(fs // cfg.sets, fs % cfg.sets, self._tag.reshape(-1)[slots], cfg)
        tables, rows = split_keys(keys, cfg)
        return slots, tables, rows

    # --- dump (spec section 8) ---------------------------------------------------------
    def dump_tensors(self):
        """The tag store in RTL ``dump`` order (spec section 8: for each set, for each bank),
        as tensors: ``{"bank", "set"}`` int64 ``[sets * banks]`` and ``{"valid", "rrpv",
        "tag"}`` ``[sets * banks, ways]``."""
        cfg = self.cfg
        sets, banks = torch.meshgrid(torch.arange(cfg.sets), torch.arange(cfg.banks),
                                     indexing="ij")
        out = {"bank": banks.reshape(-1), "set": sets.reshape(-1)}
        for name in ("valid", "rrpv", "tag"):
            out[name] = getattr(self, name).permute(1, 0, 2).reshape(-1, cfg.ways).clone()
        return out

    def dump(self):
        """The tag store as the RTL ``dump`` stream emits it (spec section 8): a list of
        :class:`DumpBeat` ``(bank, set, ways)``, set-major then bank, each with ``ways``
        triples ``(valid, rrpv, tag)`` of Python ints."""
        d = self.dump_tensors()
        v, r, t = d["valid"].to(torch.int64).tolist(), d["rrpv"].tolist(), d["tag"].tolist()
        return [DumpBeat(b, s, tuple(zip(vv, rr, tt)))
                for b, s, vv, rr, tt in zip(d["bank"].tolist(), d["set"].tolist(), v, r, t)]

    def load_dump(self, beats):
        """Rebuild the tag store from a full ``dump`` stream (any order; every (bank, set)
        exactly once), e.g. one read from the RTL or the driver."""
        cfg = self.cfg
        n = cfg.banks * cfg.sets
        order, vals = [], []
        seen = set()
        for beat in beats:
            b, s, ways = beat
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
        self.load_state_dict({"valid": data[..., 0].bool(), "rrpv": data[..., 1],
                              "tag": data[..., 2]})

    def __repr__(self):
        return (f"AccessLogger({self.cfg.describe()}, valid={int(self._valid.sum())}, "
                f"popular={int(self.popular_mask().sum())})")


EAL = AccessLogger
"""Alias: docs/spec.md section 5 calls the golden tag store ``EAL``."""

"""Learn mode of the EAL (docs/spec.md section 4), two ways that give the same result.

:func:`learn_sequential` is the reference: one lookup at a time in stream order, in plain
Python lists, exactly as the spec reads (about 1 us a lookup). :func:`learn_compiled` is the
same loop compiled by numba (about 10 to 30 ns a lookup); the golden model and the driver's
``model`` transport use it. The tests compare the two on random, adversarial and real inputs.

A set-parallel learner (all sets at once, jumping from miss to miss within a set) was built
and measured first: 57 to 110 ms for 4096 x 26 keys on this machine's CPU, because its number
of rounds is set by the busiest set, and on the Criteo sample one set receives 3,751 of a
mini-batch's 106,496 lookups (a table with few values). The compiled loop does it in 1 to 3 ms.

Both functions take the state as tensors of all sets (flat set index ``bank * sets + set``)
and update them in place: ``valid`` bool ``[S, ways]``, ``meta`` int64 ``[S, ways]`` (RRPV or
count), ``tag`` int64 ``[S, ways]``, ``sketch`` int64 ``[S, 2, sketch_counters]`` (lfu; ``None``
for srrip); and the lookups as ``sets`` and ``tags``, int64 ``[n]`` in stream order. They
return ``(hit, way)`` per lookup (bool, int64 ``[n]``).
"""

import numba
import numpy as np
import torch

from hotline_spec.config import RRPV_INSERT, RRPV_MAX, SKETCH_MULTIPLIER

from .feistel import _hash_u64, _split_u64, hash_params

__all__ = ["learn_sequential", "learn_compiled", "learn_keys_compiled", "sketch_index"]


def sketch_index(tag, cfg):
    """The two sketch counters a tag uses (spec section 4.2), for a Python int or an int64
    tensor: ``i0 = tag mod C``; ``i1 = ((tag mod 2**32) * SKETCH_MULTIPLIER mod 2**32) >>
    (32 - log2 C)`` (an int64 product may wrap; its low 32 bits are still right)."""
    low = tag & 0xFFFFFFFF
    i0 = tag & (cfg.sketch_counters - 1)
    i1 = ((low * SKETCH_MULTIPLIER) & 0xFFFFFFFF) >> (32 - cfg.sketch_bits)
    return i0, i1


def learn_sequential(cfg, valid, meta, tag, sketch, sets, tags):
    """The key-by-key reference of learn mode (spec section 4), in stream order."""
    ways = cfg.ways
    lfu = cfg.policy == "lfu"
    cmax = cfg.count_max
    touched = torch.unique(sets).tolist()
    st = {}
    for s in touched:
        v, m, t = valid[s].tolist(), meta[s].tolist(), tag[s].tolist()
        sk = sketch[s].tolist() if lfu else None
        st[s] = ([t[w] if v[w] else None for w in range(ways)], m, sk)
    hits, out_way = [], []
    for s, tg in zip(sets.tolist(), tags.tolist()):
        tg_list, m, sk = st[s]
        if tg in tg_list:                               # hit
            w = tg_list.index(tg)
            m[w] = 0 if not lfu else min(cmax, m[w] + 1)
            hits.append(True)
            out_way.append(w)
            continue
        hits.append(False)
        if not lfu:
            if None in tg_list:                         # free way: the lowest
                w = tg_list.index(None)
            else:                                       # age, evict the lowest at RRPV 3
                if RRPV_MAX not in m:
                    d = RRPV_MAX - max(m)
                    m[:] = [x + d for x in m]
                w = m.index(RRPV_MAX)
            tg_list[w], m[w] = tg, RRPV_INSERT
        else:
            i0, i1 = sketch_index(tg, cfg)
            est = min(sk[0][i0], sk[1][i1])
            if sk[0][i0] == est:                        # conservative update
                sk[0][i0] = min(cmax, est + 1)
            if sk[1][i1] == est:
                sk[1][i1] = min(cmax, est + 1)
            count = min(cmax, est + 1)
            if None in tg_list:
                w = tg_list.index(None)
                tg_list[w], m[w] = tg, count
            else:
                w = m.index(min(m))                     # victim: lowest way of least count
                if count > m[w]:                        # admitted
                    tg_list[w], m[w] = tg, count
        out_way.append(w)
    for s in touched:
        tg_list, m, sk = st[s]
        now_valid = torch.tensor([x is not None for x in tg_list], dtype=torch.bool)
        tag[s] = torch.where(now_valid, torch.tensor([x or 0 for x in tg_list],
                                                     dtype=torch.int64), tag[s])
        valid[s] = now_valid
        meta[s] = torch.tensor(m, dtype=torch.int64)
        if lfu:
            sketch[s] = torch.tensor(sk, dtype=torch.int64)
    return (torch.tensor(hits, dtype=torch.bool),
            torch.tensor(out_way, dtype=torch.int64).reshape(-1))


@numba.njit(cache=True, nogil=True)
def _learn_kernel(lfu, cmax, c_bits, mult, insert, top_rrpv, valid, meta, tag, sketch, sets, tags, hit_out, way_out):
    # The spec's per-lookup rules (section 4), compiled; arrays are updated in place.
    ways = valid.shape[1]
    c_mask = (1 << c_bits) - 1
    for i in range(sets.shape[0]):
        s = sets[i]
        tg = tags[i]
        w = -1
        free = -1
        for x in range(ways):
            if valid[s, x]:
                if tag[s, x] == tg:
                    w = x
                    break
            elif free < 0:
                free = x
        if w >= 0:                                      # hit
            hit_out[i] = True
            way_out[i] = w
            if lfu:
                if meta[s, w] < cmax:
                    meta[s, w] += 1
            else:
                meta[s, w] = 0
            continue
        hit_out[i] = False
        if not lfu:
            if free >= 0:
                w = free
            else:
                top = meta[s, 0]
                for x in range(1, ways):
                    top = max(top, meta[s, x])
                d = top_rrpv - top
                for x in range(ways):
                    meta[s, x] += d
                    if w < 0 and meta[s, x] == top_rrpv:
                        w = x
            valid[s, w] = True
            tag[s, w] = tg
            meta[s, w] = insert
        else:
            i0 = tg & c_mask
            i1 = (((tg & 0xFFFFFFFF) * mult) & 0xFFFFFFFF) >> (32 - c_bits)
            e0 = sketch[s, 0, i0]
            e1 = sketch[s, 1, i1]
            est = min(e0, e1)
            count = min(est + 1, cmax)
            if e0 == est:
                sketch[s, 0, i0] = count
            if e1 == est:
                sketch[s, 1, i1] = count
            if free >= 0:
                w = free
                valid[s, w] = True
                tag[s, w] = tg
                meta[s, w] = count
            else:
                w = 0
                for x in range(1, ways):
                    if meta[s, x] < meta[s, w]:
                        w = x
                if count > meta[s, w]:
                    tag[s, w] = tg
                    meta[s, w] = count
        way_out[i] = w


def learn_compiled(cfg, valid, meta, tag, sketch, sets, tags):
    """Learn mode as compiled code (numba): the spec's loop one lookup at a time, about 10 ns
    per lookup. The same result as :func:`learn_sequential`; the state tensors must be
    contiguous CPU tensors (they are updated in place through NumPy views)."""
    n = sets.numel()
    hit = torch.zeros(n, dtype=torch.bool)
    way = torch.zeros(n, dtype=torch.int64)
    if n == 0:
        return hit, way
    lfu = cfg.policy == "lfu"
    sk = sketch.numpy() if lfu else np.zeros((1, 2, 2), dtype=np.int64)
    _learn_kernel(lfu, cfg.count_max, cfg.sketch_bits, SKETCH_MULTIPLIER, RRPV_INSERT, RRPV_MAX,
                  valid.numpy(), meta.numpy(),
                  tag.numpy(), sk, sets.contiguous().numpy(), tags.contiguous().numpy(),
                  hit.numpy(), way.numpy())
    return hit, way


@numba.njit(cache=True, nogil=True)
def _learn_keys_kernel(lfu, cmax, c_bits, mult, insert, top_rrpv, valid, meta, tag, sketch,
                       keys, a, b, round_keys, mults, bank_bits, set_bits, sets_per_bank,
                       bank_out, set_out, tag_out, flat_out, hit_out, way_out, slot_out):
    # hash -> (bank, set, tag) of every key, the learn loop, then the slots: one call.
    for i in range(keys.shape[0]):
        h = _hash_u64(np.uint64(keys[i]), a, b, round_keys, mults)
        bk, st, tg = _split_u64(h, bank_bits, set_bits)
        bank_out[i] = bk
        set_out[i] = st
        tag_out[i] = tg
        flat_out[i] = bk * sets_per_bank + st
    _learn_kernel(lfu, cmax, c_bits, mult, insert, top_rrpv, valid, meta, tag, sketch,
                  flat_out, tag_out, hit_out, way_out)
    ways = valid.shape[1]
    for i in range(keys.shape[0]):
        slot_out[i] = flat_out[i] * ways + way_out[i]


def learn_keys_compiled(cfg, valid, meta, tag, sketch, keys):
    """Hash and learn in one compiled call: ``keys`` (contiguous CPU int64, already checked
    to be ``key_bits`` wide) are hashed (:func:`verif.golden.feistel.hash_fields`, the same
    bits), learned as :func:`learn_compiled` learns them, and the slots computed. Returns
    ``(hit, way, slot, bank, set, tag)``, each ``[n]`` (bool, then int64). No torch op runs
    on the lookups, so a loaded machine with several intra-op threads costs nothing extra."""
    n = keys.numel()
    hit = torch.empty(n, dtype=torch.bool)      # empty, not zeros: a fill would fork threads
    way, slot, bank, set_, tg, flat = (torch.empty(n, dtype=torch.int64) for _ in range(6))
    if n == 0:
        return hit, way, slot, bank, set_, tg
    lfu = cfg.policy == "lfu"
    sk = sketch.numpy() if lfu else np.zeros((1, 2, 2), dtype=np.int64)
    a, b, rk, mu = hash_params(cfg)
    _learn_keys_kernel(lfu, cfg.count_max, cfg.sketch_bits, SKETCH_MULTIPLIER, RRPV_INSERT,
                       RRPV_MAX, valid.numpy(), meta.numpy(), tag.numpy(), sk,
                       keys.reshape(-1).numpy(), a, b, rk, mu, cfg.bank_bits, cfg.set_bits,
                       cfg.sets, bank.numpy(), set_.numpy(), tg.numpy(), flat.numpy(),
                       hit.numpy(), way.numpy(), slot.numpy())
    return hit, way, slot, bank, set_, tg

"""The lookup-engine benchmark's own logic: the bank bound, key streams, overrides, and a
short run through the Amaranth simulator (the path used for the 64-lane configurations)."""

import pytest
import torch

from hotline_spec.config import EALConfig
from verif import bench_lookup
from verif.golden import hash_fields

CFG = EALConfig(lanes=4, banks=4, sets=2, ways=2, table_bits=2, row_bits=10)


def _same_set_keys(n):
    """``n`` distinct keys that hash to one bank and set of CFG."""
    keys = torch.arange(4000)
    bank, set_, _ = hash_fields(keys, CFG)
    chosen = keys[(bank == bank[0]) & (set_ == set_[0])][:n].tolist()
    assert len(chosen) == n
    return chosen


def test_bank_bound_folds_repeats_of_one_key_within_a_beat_only_for_srrip():
    a, b = _same_set_keys(2)
    # Two beats of one key: one access each (srrip) or four (lfu).
    assert bench_lookup.bank_bound([a] * 8, CFG) == 1.0
    assert bench_lookup.bank_bound([a] * 8, CFG.replace(policy="lfu")) == 0.25
    # A, B, A, B on one set: nothing repeats its set's nearest earlier lookup.
    assert bench_lookup.bank_bound([a, b, a, b] * 2, CFG) == 0.25
    # A, A, B, B: two accesses per beat.
    assert bench_lookup.bank_bound([a, a, b, b] * 2, CFG) == 0.5


def test_key_streams_have_the_asked_length_and_zipf_is_skewed():
    cfg = EALConfig(lanes=4, banks=4, sets=2)              # 5 table bits: Criteo's 26 tables
    for kind in bench_lookup.KEY_STREAMS:
        keys = bench_lookup.stream_keys(kind, cfg, 500, 1 << 10, 1.2)
        assert len(keys) == 500 and all(0 <= k < 1 << cfg.key_bits for k in keys)
    zipf = bench_lookup.stream_keys("zipf", cfg, 2000, 1 << 10, 1.2)
    assert max(zipf.count(k) for k in set(zipf)) > 100     # a hot key
    with pytest.raises(SystemExit, match="criteo keys do not fit"):
        bench_lookup.main(["--configs", "lanes1", "--set", "table_bits=2", "--set",
                           "row_bits=27", "--keys", "criteo", "--amaranth", "--lookups", "8"])


def test_overrides_are_checked_with_a_one_line_error():
    assert bench_lookup.configured("lanes1", ["queue_depth=8"]).queue_depth == 8
    with pytest.raises(SystemExit, match="expected FIELD=VALUE"):
        bench_lookup.configured("lanes1", ["depth=8"])
    with pytest.raises(SystemExit, match="queue_depth must be >= 2"):
        bench_lookup.configured("lanes1", ["queue_depth=1"])


def test_amaranth_run_matches_the_golden_model_and_reports_a_rate(capsys):
    assert bench_lookup.main(["--configs", "lanes1", "--keys", "random,criteo",
                              "--lookups", "60", "--amaranth"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("| lanes1")]
    assert len(table) == 2
    per_lane = float(table[0].split("|")[7])
    assert 0.9 <= per_lane <= 1.0

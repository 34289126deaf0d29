# Two entry points for a newcomer: `make demo` and `make test` (each creates .venv when missing).
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first and pinned here (not in pyproject) so a user can pick the build for their machine.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
# `make demo`: the lab's statistical detectors (calibrated p-values) beside the strongest fast
# baselines of the committed results (results/tables/results.md): multi-layer MultiMahalanobis
# (best baseline on far OOD), RMD (best baseline on near OOD), ViM (best single-layer on far OOD),
# Mahalanobis and MSP (the classic references); OpenOOD's RMDS (its best on near OOD) and
# MDS ensemble (its best on far OOD) when it is installed (their ViM needs detector.params.dim).
DEMO_STAT      ?= stat_maha_energy,stat_masf,stat_drood,stat_masf_classref,stat_maha_cauchy,stat_knn_classcond
DEMO_BASELINES ?= pood_multimahalanobis,pood_rmd,pood_vim,pood_mahalanobis,pood_msp
DEMO_OPENOOD   ?= openood_rmds,openood_mds_ensemble
DEMO_DIR ?= outputs/demo
# threads per process for the demo's jobs: the digits CNN and the detectors are too small to gain
# from more, and on a busy 2-core machine two torch threads trained the backbone 3x slower (33 s
# vs 9.6 s at load 6)
DEMO_THREADS ?= 1

# `make openood`: OpenOOD (not on the package index) from OPENOOD_SRC — a tarball, a folder or a
# URL; default: the pinned commit on GitHub. Offline: OPENOOD_SRC=../shared/vendor/OpenOOD-3c35632ee91b.tar.gz
OPENOOD_SRC ?= https://github.com/Jingkang50/OpenOOD/archive/3c35632ee91b54b09d1f085d04f94744cece7d0b.tar.gz
OPENOOD_DIR ?= .openood
# the CIFAR-10 backbone `make paper` trains once (conf/backbone/cifar_cnn.yaml) and OpenOOD's
# strongest postprocessors on it
CIFAR_CKPT    ?= checkpoints/cifar_cnn_cifar10_offline_s0.pt
# the calibration-leak check: the same CIFAR-10 jobs calibrated on images the backbone trained on
# (outside results/raw: the tables average calib sources of one job together)
LEAK_DETECTORS ?= stat_maha_energy,stat_drood,stat_knn_classcond,stat_masf_classref,stat_maha_cauchy
CIFAR_OPENOOD ?= openood_knn,openood_rmds,openood_ash,openood_scale

# A multirun exits 1 when a job failed (its summary names each failed job and why) unless
# allow_failures=true: every sweep below says which it wants. Sweeps with expected refusals
# (options that cannot apply: pytorch-ood's MCD/MCM on digits_cnn, OpenOOD's training-time
# methods) allow them; the others must have none.
EXPECTED_FAILURES := allow_failures=true
NO_FAILURES       := allow_failures=false

.PHONY: venv demo test test-slow test-openood test-browser lint paper report clean openood novelty

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# OpenOOD without its requirements file (--no-deps: it pins old packages the adapter does not need;
# pip then reports them as missing, harmless, see docs/openood.md), plus what the adapter imports:
# faiss-cpu (KNN), statsmodels, and libmr (OpenMax; built here without build isolation, its sdist
# needs Cython and numpy at build time).
openood: venv
	rm -rf $(OPENOOD_DIR)/src && mkdir -p $(OPENOOD_DIR)/src $(OPENOOD_DIR)/wheels
	src="$(OPENOOD_SRC)"; \
	if [ -d "$$src" ]; then cp -r "$$src"/. $(OPENOOD_DIR)/src/; \
	else case "$$src" in http*) curl -fsSL "$$src" -o $(OPENOOD_DIR)/openood.tar.gz; \
	  src=$(OPENOOD_DIR)/openood.tar.gz;; esac; \
	  tar -xzf "$$src" -C $(OPENOOD_DIR)/src --strip-components=1; fi
	$(PY) -m pip install --quiet --no-deps -e $(OPENOOD_DIR)/src
	$(PY) -m pip install --quiet faiss-cpu statsmodels Cython
	$(PY) -m pip wheel --quiet --no-build-isolation --no-deps libmr==0.1.9 -w $(OPENOOD_DIR)/wheels
	$(PY) -m pip install --quiet --no-deps $(OPENOOD_DIR)/wheels/libmr-*.whl
	$(PY) -c "import openood, faiss, libmr; print('OpenOOD installed from $(OPENOOD_SRC)')"

# a fresh sweep each time (backbones and features stay cached); PYTHONPATH: this checkout's
# ood_bench even when VENV's editable install points to another one
demo: venv
	rm -rf $(DEMO_DIR)
	dets="$(DEMO_STAT),$(DEMO_BASELINES)"; \
	if ! $(PY) -c "import openood" 2>/dev/null; then \
	  echo "OpenOOD is not installed: the demo runs without its postprocessors"; \
	elif [ -n "$(DEMO_OPENOOD)" ]; then dets="$$dets,$(DEMO_OPENOOD)"; fi; \
	OMP_NUM_THREADS=$(DEMO_THREADS) PYTHONPATH=$(CURDIR) \
	  $(PY) -m ood_bench.run -m benchmark=digits,digits_open \
	  detector=$$dets rerun=true hydra.sweep.dir=$(DEMO_DIR) $(NO_FAILURES)
	PYTHONPATH=$(CURDIR) $(PY) scripts/collect.py $(DEMO_DIR) --out $(DEMO_DIR)/results.csv
	PYTHONPATH=$(CURDIR) $(PY) scripts/make_tables.py $(DEMO_DIR)/results.csv \
	  --out $(DEMO_DIR)/tables --quiet
	@echo "every table: $(DEMO_DIR)/tables/results.md"
	@PYTHONPATH=$(CURDIR) $(PY) scripts/demo_summary.py $(DEMO_DIR)/results.csv \
	  --out $(DEMO_DIR)/summary.md

test: venv
	$(PY) -m pytest

# the slow tests (kill-and-resume of a sweep, submitit's local executor): run by CI after `test`
test-slow: venv
	$(PY) -m pytest -m slow

# the results site in headless Chromium (Debian's chromium + chromium-driver, selenium from the dev
# extras); they skip, naming the install command, where the browser is missing
test-browser: venv
	$(PY) -m pytest -m browser tests/test_site_browser.py

test-slurm: venv  # a running cluster (scripts/slurm_cluster.sh start; .ci/run does it)
	$(PY) -m pytest -m slurm tests/test_slurm.py

# the tests that need OpenOOD (slow ones included): run by CI after `make openood`
OPENOOD_TESTS ?= tests/test_openood.py tests/test_report.py tests/test_libcompare.py
test-openood: venv
	$(PY) -c "import openood" || { echo "OpenOOD is not installed: make openood"; exit 2; }
	$(PY) -m pytest -m "slow or not slow" $(OPENOOD_TESTS)

# every table and figure of the paper from sweeps this machine can run (real-data sweeps only
# when OOD_BENCH_DATA holds MNIST and FashionMNIST)
# refuses to run from uncommitted code unless ALLOW_DIRTY=1 (then the rows carry git_sha +dirty)
# the library comparison: scripts/compare_libraries.py with its study scripts/libcompare/
# (outside the package; it needs the dev extras)
export ALLOW_DIRTY
paper: venv
	$(PY) -c "from ood_bench.environment import require_clean_tree as r; r('results', 'make paper')"
	$(PY) -m ood_bench.run -m experiment=digits_all $(EXPECTED_FAILURES)
	$(PY) -m ood_bench.run -m experiment=robustness_digits hydra/launcher=local_parallel $(NO_FAILURES)
	$(PY) scripts/collect.py outputs/digits_all --out results/raw/digits_all.csv
	$(PY) scripts/collect.py outputs/robustness_digits --out results/raw/robustness_digits.csv
	if [ -d "$$OOD_BENCH_DATA/MNIST" ] && [ -d "$$OOD_BENCH_DATA/FashionMNIST" ]; then \
	  $(PY) -m ood_bench.run -m experiment=mnist_fashion $(NO_FAILURES) && \
	  $(PY) scripts/collect.py outputs/mnist_fashion --out results/raw/mnist_fashion.csv; \
	else echo "OOD_BENCH_DATA lacks MNIST/FashionMNIST: skipping the mnist_fashion sweep"; fi
	$(PY) -m ood_bench.run -m benchmark=digits,digits_open detector=stat_maha_energy seed=0,1,2 \
	  hydra.sweep.dir=outputs/recommended $(NO_FAILURES)
	if [ -d "$$OOD_BENCH_DATA/MNIST" ] && [ -d "$$OOD_BENCH_DATA/FashionMNIST" ]; then \
	  $(PY) -m ood_bench.run -m benchmark=mnist_fashion backbone=lenet detector=stat_maha_energy \
	    seed=0,1,2 hydra.sweep.dir=outputs/recommended $(NO_FAILURES) && \
	  $(PY) -m ood_bench.run -m experiment=mnist_split $(NO_FAILURES) && \
	  $(PY) scripts/collect.py outputs/mnist_split --out results/raw/mnist_split.csv; fi
	$(PY) scripts/collect.py outputs/recommended --out results/raw/recommended.csv
	if [ -f "$$OOD_BENCH_DATA/cifar10/train.npz" ]; then \
	  test -f $(CIFAR_CKPT) || $(PY) scripts/train_backbone.py benchmark=cifar10_offline \
	    backbone=cifar_cnn seed=0 out_dir=checkpoints && \
	  mkdir -p results/backbones && cp $(CIFAR_CKPT:.pt=.json) results/backbones/ && \
	  $(PY) -m ood_bench.run -m experiment=cifar10_offline $(NO_FAILURES) && \
	  if $(PY) -c "import openood" 2>/dev/null; then \
	    $(PY) -m ood_bench.run -m experiment=cifar10_offline detector=$(CIFAR_OPENOOD) \
	      $(NO_FAILURES); fi && \
	  $(PY) scripts/collect.py outputs/cifar10_offline --out results/raw/cifar10_offline.csv && \
	  $(PY) -m ood_bench.run -m experiment=cifar10_offline seed=1,2 calib_source=train \
	    detector=$(LEAK_DETECTORS) hydra.sweep.dir=outputs/cifar10_leak $(NO_FAILURES) && \
	  $(PY) scripts/collect.py outputs/cifar10_leak --out results/calib_leak/cifar10_leak.csv; \
	else echo "OOD_BENCH_DATA lacks cifar10/*.npz: skipping the CIFAR-10 sweep"; fi
	$(PY) scripts/ablate_detector.py --detector stat_maha_energy
	if $(PY) -c "import openood" 2>/dev/null; then \
	  $(PY) -m ood_bench.run -m experiment=openood_all $(EXPECTED_FAILURES) && \
	  $(PY) -m ood_bench.run -m experiment=openood_seeds $(NO_FAILURES) && \
	  $(PY) -m ood_bench.run -m experiment=robustness_openood hydra/launcher=local_parallel \
	    $(NO_FAILURES) && \
	  $(PY) scripts/collect.py outputs/openood_all --out results/raw/openood_all.csv && \
	  $(PY) scripts/collect.py outputs/openood_seeds --out results/raw/openood_seeds.csv && \
	  $(PY) scripts/collect.py outputs/robustness_openood --out results/raw/robustness_openood.csv && \
	  $(PY) scripts/openood_crosscheck.py benchmark=digits \
	    --csv results/crosscheck/openood_crosscheck_digits.csv && \
	  $(PY) scripts/openood_crosscheck.py benchmark=digits_open \
	    --csv results/crosscheck/openood_crosscheck_digits_open.csv; \
	else echo "OpenOOD is not installed: skipping its sweeps (docs/openood.md)"; fi
	$(MAKE) novelty
	$(PY) scripts/analyze_detector.py --detector stat_masf
	$(PY) scripts/make_tables.py results/raw --out results/tables --quiet
	$(PY) scripts/make_figures.py results/raw --out results/figures \
	  --roc digits:stat_maha_cauchy,stat_masf,pood_mahalanobis,pood_msp
	$(PY) scripts/compare_libraries.py results/raw --out results/libraries --run-tests --quiet
	$(MAKE) report
	$(PY) scripts/sync_docs.py

# novelty detection (docs/novelty.md): the recommended detector with the default method
# (same-domain novelty, union certification), another domain counted as new (any_domain) and the
# former per-cluster certification, 3 seeds x NOVELTY_TRIALS trials per scenario, on the digits
# split, MNIST 0-4 vs 5-9 (LeNet) and CIFAR-10 0-5 vs 6-9 (cifar_cnn trained on the six classes
# once) when OOD_BENCH_DATA has the data; then the report, the certification's null simulation
NOVELTY_TRIALS  ?= 100
NOVELTY_METHODS ?= hdbscan,hdbscan_any_domain,hdbscan_per_cluster
NOVELTY_RUN      = $(PY) -m ood_bench.run_novelty -m seed=0,1,2 trials=$(NOVELTY_TRIALS) $(NO_FAILURES)
NOVELTY_DEFAULT  = detector=stat_maha_energy novelty=$(NOVELTY_METHODS)
CIFAR_SPLIT_CKPT ?= checkpoints/cifar_cnn_cifar10_split_s0.pt
# CIFAR-10 0-5 vs 6-9 is near OOD for a small CNN: the detectors' AUROC on the unseen classes
# (results/raw/cifar10_split.csv) picks the one the near_ood novelty option runs on
CIFAR_SPLIT_DETECTORS ?= stat_maha_energy,stat_knn_classcond,stat_masf_classref,pood_msp,pood_energy,pood_rmd
# the default method and near_ood on it, same scenarios and sweep folder
CIFAR_SPLIT_NOVELTY = benchmark=cifar10_split backbone=cifar_cnn \
  backbone.checkpoint=$(CIFAR_SPLIT_CKPT) hydra.sweep.dir=outputs/novelty_cifar10_split \
  'novelty/scenario@scenarios=[cifar10_split,control_id,control_noise,control_photos]'
novelty: venv
	$(NOVELTY_RUN) $(NOVELTY_DEFAULT) benchmark=digits_open \
	  hydra.sweep.dir=outputs/novelty_digits_open \
	  'novelty/scenario@scenarios=[digits_open,stream,control_id,control_noise,control_photos]'
	$(PY) scripts/collect.py outputs/novelty_digits_open --out results/novelty/digits_open.csv
	if [ -d "$$OOD_BENCH_DATA/MNIST" ] && [ -d "$$OOD_BENCH_DATA/FashionMNIST" ]; then \
	  $(NOVELTY_RUN) $(NOVELTY_DEFAULT) benchmark=mnist_split backbone=lenet \
	    'novelty/scenario@scenarios=[mnist_split,cross_domain,control_id]' \
	    hydra.sweep.dir=outputs/novelty_mnist_split && \
	  $(PY) scripts/collect.py outputs/novelty_mnist_split --out results/novelty/mnist_split.csv; \
	else echo "OOD_BENCH_DATA lacks MNIST/FashionMNIST: skipping the mnist_split novelty sweep"; fi
	if [ -f "$$OOD_BENCH_DATA/cifar10/train.npz" ]; then \
	  test -f $(CIFAR_SPLIT_CKPT) || $(PY) scripts/train_backbone.py benchmark=cifar10_split \
	    backbone=cifar_cnn seed=0 out_dir=checkpoints && \
	  mkdir -p results/backbones && cp $(CIFAR_SPLIT_CKPT:.pt=.json) results/backbones/ && \
	  $(PY) -m ood_bench.run -m benchmark=cifar10_split backbone=cifar_cnn \
	    backbone.checkpoint=$(CIFAR_SPLIT_CKPT) detector=$(CIFAR_SPLIT_DETECTORS) seed=0,1,2 \
	    hydra.sweep.dir=outputs/cifar10_split $(NO_FAILURES) && \
	  $(PY) scripts/collect.py outputs/cifar10_split --out results/raw/cifar10_split.csv && \
	  $(NOVELTY_RUN) detector=stat_maha_energy novelty=hdbscan $(CIFAR_SPLIT_NOVELTY) && \
	  $(NOVELTY_RUN) detector=pood_rmd novelty=near_ood $(CIFAR_SPLIT_NOVELTY) && \
	  $(PY) scripts/collect.py outputs/novelty_cifar10_split \
	    --out results/novelty/cifar10_split.csv; \
	else echo "OOD_BENCH_DATA lacks cifar10/*.npz: skipping the cifar10_split novelty sweep"; fi
	$(PY) scripts/novelty_report.py results/novelty/*.csv --samples outputs/novelty_digits_open \
	  outputs/novelty_mnist_split outputs/novelty_cifar10_split --out results/novelty --quiet \
	  --methods hdbscan hdbscan_any_domain near_ood
	$(PY) scripts/novelty_certification.py --out results/novelty/certification/certification.csv

# the results site (docs/site.md): static HTML from the CSVs under results/; open
# results/site/index.html
report: venv
	PYTHONPATH=$(CURDIR) $(PY) scripts/make_report.py results --out results/site

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf outputs .cache

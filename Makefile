# Two commands do all set-up:  `make lab` (open the course)  and  `make test` (run every check).
# Both create .venv on first use and refresh it when pyproject.toml changes.

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
# Which PyTorch wheel to install first (see README, "Choosing a PyTorch build").
# Linux laptop without a GPU:  make lab TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_ARGS  := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
LAB_PORT    ?= 8888
LAB_ARGS    ?=
PYTEST      := $(PY) -m pytest
NBGRADER_SITE := $(VENV)/nbgrader-site
# nbgrader lives in its own --target folder: its scripts (and alembic, which it runs as a command) need
# that folder's bin/ on PATH and the folder itself on PYTHONPATH.
NBGRADER_ENV := PATH="$(abspath $(NBGRADER_SITE))/bin:$(abspath $(VENV))/bin:$$PATH" PYTHONPATH="$(abspath $(NBGRADER_SITE))"
SANDBOX     ?= auto
# Every notebook runs on one thread (THREADS = 1: bit-identical numbers), so nbval runs NB_WORKERS
# notebooks at once, each whole notebook in one worker (its cells share one kernel) -- except the
# notebooks that time models: they assert latency ratios, which a second busy kernel would skew,
# so they run one after another on a machine to themselves.
NB_WORKERS  ?= 2
NOTEBOOKS   := $(sort $(wildcard notebooks/*.ipynb solutions/*.ipynb))
LPAREN      := (
TIMING_CALLS := measure_latency|compare_latency|latency_samples|paired_comparison|summary\$(LPAREN)|benchmark\.Timer
TIMED_NOTEBOOKS := $(shell grep -lE "$(TIMING_CALLS)" $(NOTEBOOKS))
# The notebooks run under kernels other than this CPU's own (README, "Checks that hold on every
# machine"): ATen's scalar kernels and oneDNN capped at AVX2 round float32 sums differently from
# what wrote the committed outputs, so every nbval-compared output and every claim band is checked
# on "another machine" at each run. `make test NB_KERNELS=native` runs them on this CPU's own.
NB_KERNELS  ?= portable
KERNEL_ENV_portable := ATEN_CPU_CAPABILITY=default DNNL_MAX_CPU_ISA=AVX2
KERNEL_ENV_native   :=
NBVAL       := $(KERNEL_ENV_$(NB_KERNELS)) PRUNEKIT_DEVICE=cpu PRUNEKIT_CLAIMS=strict $(PYTEST) --nbval-lax -p no:cacheprovider
# The library's tests run NB_WORKERS files at a time (each file in one worker, its fixtures shared);
# the grader's tests run alone after them: they time kernels against a CPU quota and a busy
# neighbour, which a second worker would skew.
GRADER_TESTS := tests/test_grade_*.py
define run_unit_tests
	$(PYTEST) tests -n $(NB_WORKERS) --dist loadfile --ignore-glob='tests/test_grade_*' --durations=15
	$(PYTEST) $(GRADER_TESTS) --durations=15
endef
define run_notebooks
	$(NBVAL) -n $(NB_WORKERS) --dist loadfile $(filter-out $(TIMED_NOTEBOOKS),$(NOTEBOOKS))
	$(NBVAL) $(TIMED_NOTEBOOKS)
endef

.PHONY: grade lab lab-reset lint test test-unit test-notebooks test-solutions test-e2e test-gpu e2e-deps sandbox-deps nbgrader exercises bench venv clean

# JupyterLab defaults for this venv only (never the user's ~/.jupyter): no news pop-up; widgets save
# their state, so a notebook you ran and reopen shows its sliders as they were (not an error).
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json

venv: $(VENV)/.installed $(LAB_SETTINGS)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)" $(TORCH_ARGS)
	$(PY) -m pip install -q -e ".[test]"
	# nbgrader (for its own validation of our exercise format) lives beside the venv, not in
	# it: it adds JupyterLab extensions that students should not see.
	$(PY) -m pip install -q --target $(NBGRADER_SITE) "nbgrader>=0.9"
	touch $@

## `make lab` opens YOUR working copy, WORK (git-ignored): notebooks/ and exercises/ copied there on
## the first run and never overwritten, so running the course leaves the repository clean
## (prunekit/workcopy.py; README, "Your working copy"). LAB_PORT / LAB_ARGS go to `jupyter lab`.
WORK        ?= work

lab: venv
	$(PY) -m prunekit.workcopy sync --course . --work $(WORK)
	$(VENV)/bin/jupyter lab --notebook-dir=$(WORK) --port=$(LAB_PORT) $(if $(filter 0,$(shell id -u)),--allow-root,) \
	    $(LAB_ARGS) $(WORK)/notebooks/00_setup_and_tour.ipynb

## Take the course's version of a file of your working copy (yours moves to WORK/replaced/):
##   make lab-reset FILE=notebooks/02_l1_norm_channel_pruning.ipynb     (no FILE: every file)
lab-reset: venv
	$(PY) -m prunekit.workcopy reset --course . --work $(WORK) $(FILE)

$(LAB_SETTINGS): lab-settings/overrides.json $(VENV)/.installed
	mkdir -p $(dir $@)
	cp $< $@

## The whole suite: unit tests, lecture notebooks, solutions, and the browser check.
test: venv e2e-deps sandbox-deps
	$(VENV)/bin/ruff check .
	$(run_unit_tests)
	$(NBGRADER_ENV) PRUNEKIT_REQUIRE_NBGRADER=1 $(PYTEST) tests/test_grade_units.py -k nbgrader -p no:cacheprovider
	$(run_notebooks)

## Static checks only (the rule set is in pyproject.toml, [tool.ruff]).
lint: venv
	$(VENV)/bin/ruff check .

test-unit: venv
	$(PYTEST) tests -m "not e2e" -n $(NB_WORKERS) --dist loadfile

test-notebooks: venv
	$(run_notebooks)

test-e2e: venv e2e-deps
	$(PYTEST) tests -m e2e

## On a machine with a CUDA GPU: the unit tests (tests/test_device.py then runs every library
## entry point on the GPU too) and every lecture with PRUNEKIT_DEVICE=cuda, executed without
## comparing the committed CPU outputs (benchmarks/run_lectures.py). Skipped where there is no GPU.
test-gpu: venv
	@if ! $(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
	  echo "make test-gpu: SKIPPED -- no CUDA GPU here: torch.cuda.is_available() is False with" \
	       "torch $$($(PY) -c 'import torch; print(torch.__version__)'). Run it on a machine with an" \
	       "NVIDIA GPU and a CUDA build of PyTorch (README: Choosing a PyTorch build)."; \
	else \
	  PRUNEKIT_DEVICE=cuda $(PYTEST) tests -m "not e2e" -p no:cacheprovider && \
	  PRUNEKIT_DEVICE=cuda $(PY) benchmarks/run_lectures.py notebooks; \
	fi

## Debian's chromium (Playwright's own browser download does not work offline), and a CJK font
## (fonts-noto-cjk) so that the glossary's Chinese headings render instead of empty boxes.
e2e-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "WARNING: could not install chromium; the browser test will fail in CI, skip elsewhere"; }
	@fc-list :lang=zh 2>/dev/null | grep -q . || { \
	  echo "installing Debian fonts-noto-cjk (Chinese headings)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk >/dev/null) \
	  || echo "WARNING: could not install fonts-noto-cjk; Chinese text shows as boxes"; }

## Debian's bubblewrap: the sandbox every grading kernel runs in (README, "For instructors").
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  echo "installing Debian bubblewrap for the grader's sandbox"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
	  || echo "WARNING: could not install bubblewrap; grading and its tests fail in CI, warn elsewhere"; }

## nbgrader itself, scripts on PATH:  make nbgrader ARGS="generate_assignment ex02 --force"
nbgrader: venv
	$(NBGRADER_ENV) nbgrader $(ARGS)

## Regenerate the student notebooks from solutions/ (the single source of truth).
exercises: venv
	$(PY) -m prunekit.grade.generate solutions exercises

## Benchmarks (printed tables; not part of make test). torchvision's classification models are
## installed without dependencies so that pip keeps your torch; 0.28.0 is the match for torch 2.13.
TORCHVISION_SPEC ?= torchvision==0.28.0
bench: venv
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m pip install -q --no-deps "$(TORCHVISION_SPEC)"
	$(PY) benchmarks/bench_prune.py
	$(PY) benchmarks/bench_archs.py --threads 1

clean:
	rm -rf $(VENV) .pytest_cache

## Grade a folder of submissions:  make grade SUBMISSIONS=submissions/ex02 EXERCISE=ex02_l1_norm
## writes GRADE_OUT/grades-ex02.csv and GRADE_OUT/feedback-ex02/, named after the folder, so every
## exercise keeps its own gradebook; GRADE_JOBS notebooks at a time; GRADE_ARGS go to the grader
## (e.g. --cell-timeout 120). SANDBOX=none only for trusted notebooks (README, "For instructors").
GRADE_JOBS  ?= 2
GRADE_OUT   ?= .
GRADE_ARGS  ?=
GRADE_NAME   = $(notdir $(patsubst %/,%,$(SUBMISSIONS)))
GRADEBOOK    = $(GRADE_OUT)/grades-$(GRADE_NAME).csv
FEEDBACK     = $(GRADE_OUT)/feedback-$(GRADE_NAME)/
grade: venv sandbox-deps
	@test -n "$(GRADE_NAME)" || { echo "make grade: name the folder, e.g. make grade SUBMISSIONS=submissions/ex02 EXERCISE=ex02_l1_norm"; exit 2; }
	mkdir -p $(GRADE_OUT)
	$(PY) -m prunekit.grade $(SUBMISSIONS) $(if $(EXERCISE),--exercise $(EXERCISE),) \
	    --gradebook $(GRADEBOOK) --feedback $(FEEDBACK) -j $(GRADE_JOBS) --sandbox $(SANDBOX) $(GRADE_ARGS)
	@echo "gradebook: $(GRADEBOOK:./%=%)   feedback: $(FEEDBACK:./%=%)"

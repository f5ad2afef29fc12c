# Two commands on a fresh machine: `make reproduce` (every table, PROFILE=quick by default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
# Empty: reuse every finished run; stale: retrain the runs recorded by another version of the training code.
RETRAIN ?=
# Empty: train what the run cache lacks; never: refuse to (the tables of a profile farmed out by paraformer.tools.farm).
TRAIN ?=
# Exact versions of every package (`make constraints` writes them). `CONSTRAINTS=` (on every call, or exported)
# installs the newest versions pip finds instead.
CONSTRAINTS ?= constraints.txt
# Per-cell limit for papermill (seconds); the paper profile trains for hours per cell on a GPU.
CELL_TIMEOUT ?= 172800
BIN := $(VENV)/bin
JUPYTER_HOOK := $(VENV)/etc/jupyter/jupyter_server_config.d/paraformer.json
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# PARAFORMER_RESULTS names this root; the library itself puts every profile but quick (the committed results) in
# <root>/<profile>/. RESULTS is where a profile's files end up, for the executed notebooks and clean-runs.
ROOT := results
RESULTS := $(if $(filter quick,$(PROFILE)),$(ROOT),$(ROOT)/$(PROFILE))

ifeq ($(strip $(CONSTRAINTS)),)
# so that tests/test_environment.py does not hold the installed versions to constraints.txt
export PARAFORMER_UNPINNED := 1
endif

.PHONY: env constraints reproduce test bench throughput gpu-check numerics lab refresh-notebooks clean-runs cluster-test-env FORCE

env: $(VENV)/.installed $(JUPYTER_HOOK)

# The Jupyter server extension that keeps Run All's outputs out of the source notebooks (docs/notebooks.md): enabled
# for every Jupyter server of the environment. Another environment: JUPYTER_CONFIG_PATH=$PWD/jupyter-config.
$(JUPYTER_HOOK): jupyter-config/jupyter_server_config.d/paraformer.json
	@mkdir -p $(dir $@)
	cp $< $@

# One pip call resolves torch and torchvision together so that they match.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) $(VENV)/.constraints
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(if $(strip $(CONSTRAINTS)),-c $(CONSTRAINTS)) \
	  -e ".[all]"
	$(BIN)/python -c "import torch, torchvision, papermill, nbval; print('torch', torch.__version__, '| torchvision', torchvision.__version__)"
	touch $@

# Which CONSTRAINTS the environment was installed with: touched only when that changes, so that going from pinned
# to unpinned or back reinstalls, and nothing else does.
$(VENV)/.constraints: FORCE
	@mkdir -p $(VENV)
	@echo '$(CONSTRAINTS)' | cmp -s - $@ || echo '$(CONSTRAINTS)' > $@

# Pin the current environment's versions (after `make env CONSTRAINTS=`, to move to newer ones), then review the diff.
constraints:
	@test -x $(BIN)/python || { echo "error: no environment at $(VENV); run make env first"; exit 2; }
	@{ echo "# Exact versions of every package of the environment that make env installs, with"; \
	  echo "# pip install -c constraints.txt -e \".[all]\". Constraints install nothing themselves: they fix the version"; \
	  echo "# of whatever the project needs, so pins that a platform does not need (nvidia-*, cuda-*, triton outside"; \
	  echo "# Linux) are ignored there."; \
	  echo "# Made $$(date -u +%F) by make constraints: pip freeze --all --exclude-editable of $(VENV) ($$($(BIN)/python -c \
	    'import platform; print("Python", platform.python_version(), platform.system(), platform.machine())'))."; \
	  echo "# Regenerate: make constraints (after make env CONSTRAINTS= to take the newest versions pip finds)."; \
	  $(BIN)/python -m pip freeze --all --exclude-editable --disable-pip-version-check; } > constraints.txt.tmp
	@mv constraints.txt.tmp constraints.txt
	@echo "wrote constraints.txt ($$(grep -vc '^#' constraints.txt) packages)"

# The estimate comes first: it refuses an unknown profile in one line before any notebook starts.
reproduce: env
	@PARAFORMER_RESULTS=$(abspath $(ROOT)) $(BIN)/python -m paraformer.tools.estimate --profile $(PROFILE)
	@mkdir -p $(RESULTS)/notebooks
	@selected="$$($(BIN)/python -m paraformer.tools.estimate --profile $(PROFILE) --list-notebooks)"; \
	for nb in $(NOTEBOOKS); do \
	  case " $$(echo $$selected) " in *" $$nb "*) ;; *) echo "== $$nb: not run at profile $(PROFILE) (Profile.notebooks)"; continue;; esac; \
	  out=$(RESULTS)/notebooks/$$(basename $$nb); partial=$(RESULTS)/notebooks/.$$(basename $$nb .ipynb).partial.ipynb; \
	  echo "== $$nb (profile $(PROFILE)) -> $$out"; \
	  PARAFORMER_RESULTS=$(abspath $(ROOT)) PARAFORMER_RETRAIN=$(RETRAIN) PARAFORMER_TRAIN=$(TRAIN) PARAFORMER_PROGRESS=text \
	  $(BIN)/python -m papermill "$$nb" "$$partial" \
	    -p profile $(PROFILE) -k python3 --cwd notebooks --execution-timeout $(CELL_TIMEOUT) --log-output --no-progress-bar \
	    && $(BIN)/python -m paraformer.tools.notebooks finish "$$partial" \
	    && mv "$$partial" "$$out" || { echo "FAILED: $$nb (its partial output is $$partial)"; exit 1; }; \
	done
	@PARAFORMER_RESULTS=$(abspath $(ROOT)) $(BIN)/python -m paraformer.tools.train --report-stale --profile $(PROFILE)

# Unit tests, then every notebook at the ci profile under nbval. The notebooks write into a throw-away
# results folder so that the test run neither reads cached runs nor overwrites committed results.
test: env
	@tmp=$$(mktemp -d); \
	PARAFORMER_RESULTS=$$tmp PARAFORMER_PROGRESS=text $(BIN)/python -m pytest tests $(NOTEBOOKS) \
	  --nbval-lax --nbval-current-env -p no:cacheprovider; status=$$?; rm -rf $$tmp; exit $$status

# Speed benchmarks into bench/$(PROFILE)/ of the profile's results folder (results/bench/quick/ for quick):
# single-device strategies and layers, then the multi-process step times through torchrun (one process per device)
# at each process count in NPROC; empty: 1 and 2, as far as the machine has devices (the others: not measured here).
NPROC ?=
bench: env
	PARAFORMER_RESULTS=$(abspath $(ROOT)) $(BIN)/python -m paraformer.tools.bench --profile $(PROFILE) \
	  $(if $(strip $(NPROC)),--processes $(NPROC))

# Images/s of a training step, ours against timm's VisionTransformer of the same shape, with model FLOP
# utilisation: into bench/$(PROFILE)/throughput.csv of the profile's results folder (profiles ci, quick, gpu).
throughput: env
	PARAFORMER_RESULTS=$(abspath $(ROOT)) $(BIN)/python -m paraformer.tools.bench --profile $(PROFILE) --only throughput

# What a lent GPU has to answer, in one command that fits its few minutes of device time (docs/gpu.md): the CUDA tests'
# checks, the gpu profile's estimate at the FLOP rate measured there, the throughput against timm, and a short run of
# every training method and solver, compiled and not; into gpu-check.json and gpu-check.md under results/gpu-check/
# (results/gpu-check/cpu/ with DEVICE=cpu, which runs the same checks on the CPU, the CUDA-only ones skipped). Exit
# code 1 when a step failed. GPU_CHECK: more options, e.g. --quick or --time-budget 200 (seconds; default 240).
# No env prerequisite: the lent machine has no internet to install from, so without $(VENV) its own $(PYTHON) runs
# the package from lib/ (nothing beyond what the package imports: no papermill, no pytest).
DEVICE ?= cuda
GPU_CHECK ?=
gpu-check:
	PARAFORMER_RESULTS=$(abspath $(ROOT)) PYTHONPATH=$(abspath lib)$(if $(PYTHONPATH),:$(PYTHONPATH)) \
	  $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m paraformer.tools.gpu_check --device $(DEVICE) $(GPU_CHECK)

# After an edit of the training code: run the numerics canary and record the code in numerics.json. It says whether
# the edit changed a number (then the finished runs are stale) or not (then they stay current); the tests hold
# numerics.json to the code.
numerics: env
	$(BIN)/python -m paraformer.tools.numerics --update

lab: env
	$(BIN)/jupyter lab notebooks/

# Re-execute the notebooks in place at their default profile, ci, and keep only the outputs of their
# regression-check cells: what nbval compares against (tools.notebooks clean; the source notebooks carry no other
# output). Without -p, papermill adds no injected-parameters cell, which would override the parameters cell for
# anyone who opens the notebook (tests/test_notebooks.py fails if one is committed).
refresh-notebooks: env
	@tmp=$$(mktemp -d); for nb in $(NOTEBOOKS); do \
	  PARAFORMER_RESULTS=$$tmp PARAFORMER_PROGRESS=text $(BIN)/python -m papermill "$$nb" "$$nb" \
	    -k python3 --cwd notebooks --execution-timeout 600 --no-progress-bar \
	    && $(BIN)/python -m paraformer.tools.notebooks clean "$$nb" || exit 1; \
	done; rm -rf $$tmp

# Debian's slurm-wlm and munge, for the farm's real one-node Slurm test (tests/test_farm.py; skipped without them).
cluster-test-env:
	tools/cluster/one_node_slurm.sh install

# Forget finished runs, checkpoints and cached linear baselines of a profile, so that `make reproduce` trains
# everything again (the benchmark CSVs stay: notebook 06 re-measures those of another kind of device).
clean-runs:
	rm -rf $(RESULTS)/runs $(RESULTS)/checkpoints $(RESULTS)/models $(RESULTS)/baselines

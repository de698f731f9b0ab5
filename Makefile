# Everything a fresh Debian machine needs, as root: `make demo`, `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv
BENCH_APT_PACKAGES := borgbackup restic python3-pyfuse3  # python3-pyfuse3: borg mount

.PHONY: setup apt demo test bench protos clean

setup: apt $(VENV)/.installed

apt:
	@./.ci/apt-install $(APT_PACKAGES)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" ./examples/demo.sh

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	@./.ci/apt-install $(BENCH_APT_PACKAGES)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/ingest.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/read.py

protos: setup
	$(BIN)/python protos/generate.py

clean:
	rm -rf $(VENV) build *.egg-info

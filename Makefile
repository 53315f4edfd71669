# snap: `make demo` runs a throwaway fleet on loopback, `make test` runs every
# test. Both install what they need first (`make install`), which is
# idempotent and quick when nothing changed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMPS := .stamps
DIST := dist
# The master serves the wheel to the fleet from the salt file tree (state snap.core).
SALT_DIST := salt/snap/files/dist

# System packages the project and its tests use (Debian names). radosgw,
# ceph-mon and ceph-osd: a one-node Ceph RADOS Gateway, the real S3 server
# the off-site tests run against (tests/support/ceph.py; ~70 MB download).
APT_PACKAGES := rsync rsnapshot openssh-server openssh-client cron \
	squashfs-tools squashfs-tools-ng libsquashfs-dev libclang-dev clang pkg-config \
	gnupg acl attr util-linux procps time iproute2 \
	python3-venv python3-dev gcc make \
	radosgw ceph-mon ceph-osd

CORE_SOURCES := $(shell find rust python -type f \( -name '*.rs' -o -name '*.toml' -o -name '*.py' -o -name '*.pyi' -o -name 'build.rs' -o -name '*.h' \) 2>/dev/null) \
	Cargo.toml pyproject.toml $(wildcard Cargo.lock)

export SNAP_TEST_PYTHON := $(abspath $(VPY))

.PHONY: help install test test-rust test-python demo bench clean

help:
	@echo "make demo     install, then run the main job on a throwaway fleet on loopback"
	@echo "make test     install, then run every test (cargo test + pytest)"
	@echo "make install  system packages, .venv (Salt 3008.3, pytest-salt-factories), the built core"
	@echo "make bench    benchmarks against the reference tools (results: docs/BENCHMARKS.md)"

install: $(STAMPS)/apt $(STAMPS)/venv $(STAMPS)/core $(STAMPS)/localstack

$(STAMPS):
	@mkdir -p $@

# Install only what is missing; `apt-get update` only when something is.
$(STAMPS)/apt: Makefile | $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		[ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
		$$SUDO apt-get update -q; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v cargo >/dev/null || { echo "Rust (cargo) is required: install it with rustup" >&2; exit 1; }
	@touch $@

$(STAMPS)/venv: requirements-dev.txt | $(STAMPS)
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-dev.txt
	@touch $@

# Build the abi3 wheel once; install it into .venv and hand it to the salt file tree.
$(STAMPS)/core: $(CORE_SOURCES) $(STAMPS)/venv
	rm -rf $(DIST)
	$(VENV)/bin/maturin build --release --quiet --out $(DIST)
	$(VPY) -m pip install -q --no-deps --force-reinstall $(DIST)/snap_backup-*.whl
	rm -rf $(SALT_DIST) && mkdir -p $(SALT_DIST) && cp $(DIST)/snap_backup-*.whl $(SALT_DIST)/
	@touch $@

# LocalStack judges Object Lock semantics moto cannot; it needs Python >= 3.13,
# which only the machine image can bring (no registry serves a CPython). Without
# one, the LocalStack test is skipped and says why.
$(STAMPS)/localstack: tests/support/localstack_venv.sh | $(STAMPS)
	@if tests/support/localstack_venv.sh .venv-localstack > $(STAMPS)/localstack.python; then \
		echo "LocalStack: $$(cat $(STAMPS)/localstack.python)"; else rm -f $(STAMPS)/localstack.python; fi
	@touch $@

test: install test-rust test-python

# --release shares every dependency build with the wheel's.
test-rust: install
	cargo test --release --workspace

test-python: install
	SNAP_LOCALSTACK_PYTHON=$$(cat $(STAMPS)/localstack.python 2>/dev/null) $(VPY) -m pytest

demo: install
	$(VPY) -m demo

bench: install
	$(VPY) bench/run.py

clean:
	rm -rf $(STAMPS) $(DIST) $(SALT_DIST) target .venv-localstack

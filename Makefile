# mirrorfleet — every entry point. `make demo` and `make test` are the quick start.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Build products live outside the clone so repeated clones and CI runs reuse them.
export CARGO_TARGET_DIR ?= /var/tmp/mirrorfleet/target
export PATH := $(CURDIR)/.venv/bin:$(HOME)/.cargo/bin:$(PATH)
export AWS_DEFAULT_REGION ?= us-east-1
CARGO ?= cargo
FUZZ_SMOKE_RUNS ?= 20000
FUZZ_RUNS ?= 1000000
SOAK_MINUTES ?= 10

.PHONY: help setup test lint fmt-check clippy unit fuzz-smoke template-check demo bench fuzz soak build deploy clean

help:
	@echo "make demo   - set up and run the whole pipeline locally (no AWS account)"
	@echo "make test   - set up and run every check and test (what CI runs)"
	@echo "make bench  - benchmarks (release builds)"
	@echo "make fuzz   - every fuzz target for FUZZ_RUNS executions (default 1,000,000)"
	@echo "make soak   - rebuilder run under steady load for SOAK_MINUTES (default 10)"
	@echo "make lint   - rustfmt + clippy"
	@echo "make build  - release artifacts: Lambda bundles (cargo lambda) and the rebuilder tarball"
	@echo "make deploy - sam build && sam deploy --guided"
	@echo "make clean  - remove build products and the local venv"

setup:
	@bash scripts/setup.sh

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

lint: fmt-check clippy

# System tests fail (instead of skipping) when root, namespaces, tshark or moto are missing.
unit: export MIRRORFLEET_REQUIRE_SYSTEM := 1
unit: fuzz-smoke
	@# --all-targets: plain binaries (the system tests run them) built with the same feature set as
	@# the tests, so the SDK crates are compiled once.
	$(CARGO) build --workspace --all-targets --locked
	$(CARGO) nextest run --workspace --locked --no-tests=fail

# A short run of every fuzz target (its own workspace, cargo-fuzz); output only on failure.
fuzz-smoke:
	@echo "fuzz smoke: scripts/fuzz.sh $(FUZZ_SMOKE_RUNS) (output shown only on failure)"
	@log=$$(mktemp); if bash scripts/fuzz.sh $(FUZZ_SMOKE_RUNS) >"$$log" 2>&1; then grep -h "^fuzz.sh" "$$log" || true; rm -f "$$log"; else cat "$$log"; rm -f "$$log"; exit 1; fi

# Silent on success so that the test runner's summary stays the last thing `make test` prints.
template-check:
	@bash scripts/template-check.sh

test: setup lint unit template-check

demo: setup
	@bash scripts/demo.sh

bench: setup
	@bash scripts/bench.sh

fuzz: setup
	bash scripts/fuzz.sh $(FUZZ_RUNS)

soak: setup
	bash scripts/soak.sh $(SOAK_MINUTES)

build: setup
	cargo lambda build --release --locked --bin onboard-eni --bin reconcile-mirrors --bin size-fleet
	$(CARGO) build --release --locked -p rebuilder
	bash scripts/package-rebuilder.sh --no-build

deploy: setup
	sam build
	sam deploy --guided

clean:
	$(CARGO) clean
	rm -rf .venv .tmp

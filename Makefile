# mirrorfleet — every entry point. `make demo` and `make test` are the quick start.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Build products live outside the clone so repeated clones and CI runs reuse them.
export CARGO_TARGET_DIR ?= /var/tmp/mirrorfleet/target
export PATH := $(CURDIR)/.venv/bin:$(HOME)/.cargo/bin:$(PATH)
# No AWS region or profile here: `make deploy` uses the caller's (AWS_PROFILE, AWS_REGION, the
# profile's region), the tests and the demo set their own.
CARGO ?= cargo
FUZZ_SMOKE_RUNS ?= 20000
FUZZ_RUNS ?= 1000000
SOAK_MINUTES ?= 10

.PHONY: help setup test lint fmt-check clippy unit fuzz-smoke template-check demo bench fuzz soak build lambdas deploy clean

# The Lambda functions: one binary each, deployed from dist/lambda/<name>/bootstrap (the
# template's CodeUri), built together by `make lambdas`.
LAMBDAS := onboard-eni reconcile-mirrors size-fleet teardown
LAMBDA_DIST := dist/lambda

help:
	@echo "make demo   - set up and run the whole pipeline locally (no AWS account)"
	@echo "make test   - set up and run every check and test (what CI runs)"
	@echo "make bench  - benchmarks (release builds)"
	@echo "make fuzz   - every fuzz target for FUZZ_RUNS executions (default 1,000,000)"
	@echo "make soak   - rebuilder run under steady load for SOAK_MINUTES (default 10)"
	@echo "make lint   - rustfmt + clippy"
	@echo "make build  - release artifacts: the Lambda bundles (one cargo lambda build) and the rebuilder tarball"
	@echo "make deploy - make build, then sam deploy of exactly those bundles (ARGS=... for sam deploy;"
	@echo "              default --guided; e.g. ARGS='--no-confirm-changeset' non-interactively)"
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

# One cargo lambda build of every function: the dependencies (the AWS SDK) are compiled once and
# shared. Each bundle is then copied where the template's CodeUri points; SAM never builds
# (there is no `sam build` step), so what `make build` produced is exactly what is deployed, and
# a failed build stops before anything is copied.
lambdas:
	cargo lambda build --profile lambda-bundle --locked $(addprefix --bin ,$(LAMBDAS))
	rm -rf $(LAMBDA_DIST)
	@for f in $(LAMBDAS); do \
	  install -D -m 0755 "$(CARGO_TARGET_DIR)/lambda/$$f/bootstrap" "$(LAMBDA_DIST)/$$f/bootstrap"; \
	  echo "$(LAMBDA_DIST)/$$f/bootstrap"; \
	done

build: setup lambdas
	$(CARGO) build --release --locked -p rebuilder
	bash scripts/package-rebuilder.sh --no-build

# `sam deploy` of template.yaml itself (never a stale .aws-sam/build), with the caller's AWS
# credentials, profile and region. First time: `make deploy` (guided, answers saved in
# samconfig.toml); then e.g. `make deploy ARGS=--no-confirm-changeset`.
deploy: build
	sam deploy --template-file template.yaml $(if $(ARGS),$(ARGS),--guided)

clean:
	$(CARGO) clean
	rm -rf dist .aws-sam
	rm -rf .venv .tmp

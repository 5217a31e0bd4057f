#!/usr/bin/env bash
# `make bench` — not there yet: the benchmarks land with the engine, daemon and control-plane work.
echo "make bench: no benchmarks yet." >&2
exit 1

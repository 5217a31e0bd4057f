#!/usr/bin/env bash
# `make demo` — not there yet: the end-to-end demo lands with the demo issue.
echo "make demo: the end-to-end demo is not implemented yet." >&2
exit 1

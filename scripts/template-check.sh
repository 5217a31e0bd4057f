#!/usr/bin/env bash
# Offline checks of template.yaml: cfn-lint, sam validate --lint, checkov. Prints nothing when all
# pass (so `make test` still ends with the test summary); prints the failing tool's output otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f template.yaml ] || exit 0
export SAM_CLI_TELEMETRY=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() {
  if ! "$@" >"$log" 2>&1; then
    echo "template-check: FAILED: $*" >&2
    cat "$log" >&2
    exit 1
  fi
}
run cfn-lint template.yaml
run sam validate --lint --template-file template.yaml --region "${AWS_DEFAULT_REGION:-us-east-1}"
checkov_args=(-f template.yaml --framework cloudformation --quiet --compact)
[ -f .checkov.yaml ] && checkov_args+=(--config-file .checkov.yaml)
run checkov "${checkov_args[@]}"

#!/usr/bin/env bash
# Offline checks of template.yaml: cfn-lint, sam validate --lint, checkov. Prints nothing when all
# pass (so `make test` still ends with the test summary); prints the failing tool's output otherwise.
#
# Both mirror target modes and the optional layers are checked: checkov (and parts of cfn-lint)
# evaluate conditions with the parameters' defaults, so resources behind a false condition would
# never be scanned. Each variant is a copy of the template with other defaults:
#   default   MirrorTargetType=nlb, no analyzer, AWS APIs through VPC endpoints
#   nlb       + DeployAnalyzer=true, AllowVxlanFromVpcCidrs=true
#   gwlb      MirrorTargetType=gwlb, DeployAnalyzer=true, AwsApiEgress=https-anywhere
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f template.yaml ] || exit 0
export SAM_CLI_TELEMETRY=0
# The tools live in the project's virtualenv (scripts/setup.sh); make exports this PATH too.
if [ -d .venv/bin ]; then PATH="$PWD/.venv/bin:$PATH"; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$work/log"

run() {
  if ! "$@" >"$log" 2>&1; then
    echo "template-check: FAILED: $*" >&2
    cat "$log" >&2
    exit 1
  fi
}

# with_defaults OUT PARAM=VALUE...: template.yaml with those parameters' Default replaced; fails
# when a parameter has no Default line to replace.
with_defaults() {
  local out=$1
  shift
  local IFS=,
  awk -v set="$*" '
    BEGIN { n = split(set, pairs, ","); for (i = 1; i <= n; i++) { split(pairs[i], kv, "="); want[kv[1]] = kv[2] } }
    /^[A-Za-z]/ { section = $1 }
    section == "Parameters:" && /^  [A-Za-z0-9]+:$/ { param = substr($1, 1, length($1) - 1) }
    section == "Parameters:" && /^    Default: / && (param in want) {
      print "    Default: '\''" want[param] "'\''"; done[param] = 1; next
    }
    { print }
    END { for (p in want) if (!(p in done)) { print "template-check: no Default for " p > "/dev/stderr"; exit 1 } }
  ' template.yaml >"$out"
}

with_defaults "$work/nlb.yaml" DeployAnalyzer=true AllowVxlanFromVpcCidrs=true
with_defaults "$work/gwlb.yaml" MirrorTargetType=gwlb DeployAnalyzer=true AwsApiEgress=https-anywhere

checkov_args=(--framework cloudformation --quiet --compact)
[ -f .checkov.yaml ] && checkov_args+=(--config-file .checkov.yaml)
for t in template.yaml "$work/nlb.yaml" "$work/gwlb.yaml"; do
  run cfn-lint "$t"
  run sam validate --lint --template-file "$t" --region "${AWS_DEFAULT_REGION:-us-east-1}"
  run checkov -f "$t" "${checkov_args[@]}"
done

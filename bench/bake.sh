#!/usr/bin/env bash
# One bake as plain bash: packer validate + build with the layered var files, the same commands the
# bake-image flow runs. Used by rollout.sh (comparison 1) and bakes.sh (comparison 3).
# Inputs (environment): REPO, TEMPLATE (the template without provisioners: communicator none, as the flow
# derives it), HOST (a var file of infra/packer/vars/host), ENV_TAG, AWS_ENDPOINT_URL, AWS_DEFAULT_REGION,
# AWS credentials. Prints BENCH_AMI=<id> at the end.
set -euo pipefail
: "${REPO:?}" "${TEMPLATE:?}" "${HOST:?}" "${ENV_TAG:?}" "${AWS_ENDPOINT_URL:?}"
P="$REPO/infra/packer"
log=$(mktemp /tmp/devops-bench-packer-XXXXXX.log)
trap 'rm -f "$log"' EXIT
export PACKER_NO_COLOR=1 CHECKPOINT_DISABLE=1 AWS_REGION="$AWS_DEFAULT_REGION"
vars=(
  "-var-file=$P/vars/common.json" "-var-file=$P/vars/os/ubuntu-18.04.json" "-var-file=$P/vars/mode/build.json"
  "-var-file=$P/vars/host/$HOST.json" "-var-file=$P/vars/sandbox.json"
  -var mode=build -var "environment=$ENV_TAG" -var "ec2_endpoint=$AWS_ENDPOINT_URL"
  -var "region=$AWS_DEFAULT_REGION" -var "content_hash=$ENV_TAG" -var "ami_name_suffix=$ENV_TAG" -var "git_commit=$(git -C "$REPO" rev-parse HEAD)"
)
cd "$P"
packer validate "${vars[@]}" "$TEMPLATE" >&2
packer build -machine-readable -color=false "${vars[@]}" "$TEMPLATE" > "$log" || { tail -40 "$log" >&2; exit 1; }
ami=$(awk -F, '$3 == "artifact" && $5 == "id" { n = split($6, a, ":"); print a[n] }' "$log")
[ -n "$ami" ] || { tail -40 "$log" >&2; exit 1; }
echo "BENCH_AMI=$ami"

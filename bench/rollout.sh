#!/usr/bin/env bash
# The bash side of comparison 1: the devops-packer-xwiki Jenkins job as a plain script, in a fresh copy of
# the stack, with the same inputs as the ami-rollout flow and no orchestration:
#   JOB=original (default): what the article's job runs: the bake (bake.sh: packer validate + build), then
#                           `./apply`: terraform init + terraform apply -auto-approve;
#   JOB=copy:               the flow's own commands: bake, init / plan -out / show -json / apply / output.
# Inputs (environment): what bake.sh needs but HOST (xwiki), NAME (stack variable), STATE_KEY,
# DEVOPS_TF_STATE_BUCKET, TF_CLI_CONFIG_FILE. Prints BENCH_AMI=<id> at the end.
set -euo pipefail
: "${REPO:?}" "${TEMPLATE:?}" "${ENV_TAG:?}" "${NAME:?}" "${STATE_KEY:?}" "${AWS_ENDPOINT_URL:?}"
work=$(mktemp -d /tmp/devops-bench-bash-XXXXXX)
trap 'rm -rf "$work"' EXIT
ami=$(HOST=xwiki bash "$REPO/bench/bake.sh" | sed -n 's/^BENCH_AMI=//p')
[ -n "$ami" ] || exit 1

cp -r "$REPO/infra/terraform" "$work/terraform"
find "$work/terraform" -name .terraform -prune -exec rm -rf {} + -o -name '*.tfstate*' -exec rm -f {} +
cd "$work/terraform/scalac/internal-prod/xwiki"
export TF_IN_AUTOMATION=1 TF_INPUT=0 TF_VAR_aws_region="$AWS_DEFAULT_REGION" TF_VAR_aws_endpoint="$AWS_ENDPOINT_URL"
export TF_VAR_ami_id="$ami" TF_VAR_name="$NAME"
terraform init -input=false -no-color -reconfigure -lock-timeout=30s \
  -backend-config="bucket=$DEVOPS_TF_STATE_BUCKET" -backend-config="key=$STATE_KEY" \
  -backend-config="region=$AWS_DEFAULT_REGION" -backend-config=use_lockfile=true -backend-config=encrypt=true \
  -backend-config="endpoints={s3=\"$AWS_ENDPOINT_URL\"}" -backend-config=use_path_style=true \
  -backend-config=skip_credentials_validation=true -backend-config=skip_requesting_account_id=true \
  -backend-config=skip_region_validation=true -backend-config=skip_metadata_api_check=true \
  -backend-config=skip_s3_checksum=true
if [ "${JOB:-original}" = original ]; then
  terraform apply -input=false -no-color -auto-approve -lock-timeout=30s
  echo "BENCH_AMI=$ami"
  exit 0
fi
rc=0
terraform plan -input=false -no-color -detailed-exitcode -out=devops.tfplan -lock-timeout=30s || rc=$?
[ "$rc" = 0 ] || [ "$rc" = 2 ] || exit "$rc"
terraform show -no-color -json devops.tfplan > "$work/plan.json"
if [ "$rc" = 2 ]; then
  terraform apply -input=false -no-color -lock-timeout=30s devops.tfplan
fi
terraform output -no-color -json > "$work/outputs.json"
echo "BENCH_AMI=$ami"

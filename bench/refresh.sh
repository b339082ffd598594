#!/usr/bin/env bash
# The bash side of comparison 4: the article's devops-refresh-servers job as plain bash, the same
# ansible-playbook command the refresh-servers flow runs through ansible-runner (playbook, inventory,
# forks, ansible.cfg, vault password file).
# Inputs (environment): REPO, ANSIBLE_PLAYBOOK (the venv's), INVENTORY, FORKS, VAULT_PASSWORD_FILE.
set -euo pipefail
: "${REPO:?}" "${ANSIBLE_PLAYBOOK:?}" "${INVENTORY:?}" "${FORKS:?}" "${VAULT_PASSWORD_FILE:?}"
export ANSIBLE_CONFIG="$REPO/infra/ansible/ansible.cfg" ANSIBLE_NOCOLOR=1
cd "$REPO/infra/ansible"
exec "$ANSIBLE_PLAYBOOK" -i "$INVENTORY" --forks "$FORKS" --vault-password-file "$VAULT_PASSWORD_FILE" internal_hosts.yml

#!/usr/bin/env bash
# The bash side of comparison 3: several bakes (bake.sh each), all at once (PARALLEL=1: `&` and `wait`,
# the physical limit of a fan-out on this machine) or one after the other (PARALLEL=0).
# Inputs (environment): BAKES="host:env_tag host:env_tag ...", PARALLEL, and what bake.sh needs.
set -euo pipefail
: "${BAKES:?}" "${PARALLEL:?}"
pids=()
for spec in $BAKES; do
  if [ "$PARALLEL" = 1 ]; then
    HOST="${spec%%:*}" ENV_TAG="${spec#*:}" bash "$REPO/bench/bake.sh" &
    pids+=("$!")
  else
    HOST="${spec%%:*}" ENV_TAG="${spec#*:}" bash "$REPO/bench/bake.sh"
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done

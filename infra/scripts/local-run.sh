#!/usr/bin/env bash
# The README's first command: the whole pipeline on this machine. Installs what is missing, starts moto,
# then runs the local runner (Brex + IFS simulators, the webhook and poster functions, a day of spend).
# Pass --keep to leave it running.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
infra/scripts/bootstrap.sh
# shellcheck source=infra/scripts/moto.sh
. infra/scripts/moto.sh
start_moto
cargo build -p connector-tests --bin local-run
mkdir -p target
log="target/local-run.log"
echo "JSON logs of the functions: $log" >&2
status=0
target/debug/local-run "$@" 2>"$log" || status=$?
if [ "$status" -ne 0 ]; then
  echo "local run failed (exit $status); last log lines:" >&2
  tail -n 20 "$log" >&2
fi
exit "$status"

#!/usr/bin/env bash
# The chaos run (README "Reliability"): N records by webhook and poller at once, several posters, faults at
# every boundary, on moto + the Brex and IFS simulators; prints the table and exits non-zero unless exactly one
# voucher per postable record, no duplicates and nothing lost.
#   infra/scripts/chaos.sh [N] [SEED] [extra chaos flags, e.g. --posters 6 --kills 3]
# CHAOS_PROFILE=release builds optimised (the `bench` profile: release without LTO; faster run, slower build);
# the default is the debug build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

n="${1:-1000}"
seed="${2:-7}"
shift $(( $# < 2 ? $# : 2 ))

infra/scripts/bootstrap.sh

# shellcheck source=infra/scripts/moto.sh
. infra/scripts/moto.sh
start_moto

profile=()
if [ "${CHAOS_PROFILE:-debug}" = release ]; then profile=(--profile bench); fi
cargo run -q -p connector-tests "${profile[@]}" --bin chaos -- --n "$n" --seed "$seed" --time-limit-secs "${CHAOS_TIME_LIMIT:-3600}" "$@"

#!/usr/bin/env bash
# The README's test command: installs what is missing, starts one moto AWS emulator for the whole run, and
# runs every test of the workspace against it (the Brex and IFS simulators start inside the tests).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

infra/scripts/bootstrap.sh

# shellcheck source=infra/scripts/moto.sh
. infra/scripts/moto.sh
start_moto
cargo test --workspace --all-targets "$@"

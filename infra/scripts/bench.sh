#!/usr/bin/env bash
# Prints the performance table of the README ("Performance"): IFS requests per record ($batch vs step by step),
# the shared IFS budget under 4 concurrent posters, cold starts of the three Lambda binaries beside a
# hello-world lambda_runtime binary, binary sizes and peak RSS, webhook → voucher latency, signature verification.
#
#   infra/scripts/bench.sh           release build (the Lambda profile: opt-level s, fat LTO, stripped), full runs: the figures
#   infra/scripts/bench.sh --quick   debug build, short runs: what CI runs so the script cannot rot (the numbers
#                                    mean nothing)
#
# Needs only what the project already uses: cargo, and the moto venv from infra/scripts/bootstrap.sh (run here).
# Honours CARGO_TARGET_DIR.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac

infra/scripts/bootstrap.sh

target="${CARGO_TARGET_DIR:-$root/target}"
# The three functions and the hello-world baseline, in one cargo run so they share the dependency build.
select=(-p webhook -p poller -p poster -p shared --bins --example hello_lambda)
if [ "$quick" = 1 ]; then
  profile=dev
  harness_profile=dev
  bin_dir="$target/debug"
  cargo build "${select[@]}"
else
  profile=release
  # The harness (simulators, moto client, in-process pipeline) counts requests and times them: the bench
  # profile (release without LTO) builds it in minutes; the binaries measured are the release ones.
  harness_profile=bench
  bin_dir="$target/release"
  cargo build --release "${select[@]}"
fi

echo
echo "machine: $(uname -sm), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
echo "toolchain: $(rustc --version)"
echo "build: profile $profile; load average $(cut -d' ' -f1-3 /proc/loadavg)"

args=(--bin-dir "$bin_dir" --hello "$bin_dir/examples/hello_lambda")
[ "$quick" = 1 ] && args+=(--quick)
cargo bench --profile "$harness_profile" -p connector-tests --bench figures -- "${args[@]}"

#!/usr/bin/env bash
# Fuzzes the connector's outside-input parsers with libFuzzer:
#   infra/scripts/fuzz.sh [SECONDS_PER_TARGET]   # default 60; needs nightly (installed here if missing)
#   infra/scripts/fuzz.sh --smoke [INPUTS]       # stable: the same target bodies, seeded random + mutated
#                                                # inputs (default 20000 per target); what CI runs
# Targets (fuzz/src/lib.rs): signature, webhook_body, brex_record, ifs_error, mapping_toml. cargo-fuzz is
# installed into .local/cargo-fuzz (pinned), never taken from the machine. Prints executions per target and
# the total; exits non-zero on the first crash (the input is left in fuzz/artifacts/<target>/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
targets=(signature webhook_body brex_record ifs_error mapping_toml)

if [[ "${1:-}" == "--smoke" ]]; then
  exec cargo run --quiet --manifest-path fuzz/Cargo.toml --no-default-features --features smoke --bin smoke -- "${2:-20000}"
fi

seconds="${1:-60}"
cargo_fuzz_version=0.13.2
tools="$root/.local/cargo-fuzz"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
if ! "$tools/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --root "$tools"
fi
export PATH="$tools/bin:$PATH"

# No sanitizer: the code under test is safe Rust (ASan would only halve the speed); debug assertions on, so
# integer overflow is a crash.
flags=(--fuzz-dir fuzz -s none --debug-assertions)
cargo +nightly fuzz build "${flags[@]}"
total=0
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  log="$(mktemp)"
  if ! cargo +nightly fuzz run "${flags[@]}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "$target: CRASH (see fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)"
  rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)"
  printf '%-14s %12s executions (%s/s), corpus %s files, no crash\n' "$target" "${execs:-?}" "${rate:-?}" \
    "$(find "fuzz/corpus/$target" -type f | wc -l)"
  total=$((total + ${execs:-0}))
  rm -f "$log"
done
printf '%-14s %12s executions in %s s per target\n' total "$total" "$seconds"

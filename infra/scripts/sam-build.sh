#!/usr/bin/env bash
# Proves the SAM side: installs the deploy tools into .venv-deploy (pinned aws-sam-cli + cargo-lambda with
# zig, kept apart from the moto venv whose boto3 pins clash with SAM's), then `sam validate --lint` and, unless
# --validate-only, `sam build` (cargo-lambda cross-compiles the three arm64 bootstraps; ~15 min on 2 cores).
# CI runs --validate-only; the full build is run by hand (see README).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
venv="$root/.venv-deploy"
SAM_VERSION="1.170.0"
CARGO_LAMBDA_VERSION="1.9.2"

if ! "$venv/bin/sam" --version 2>/dev/null | grep -q "$SAM_VERSION" ||
   ! "$venv/bin/cargo-lambda" lambda --version 2>/dev/null | grep -q "$CARGO_LAMBDA_VERSION"; then
  echo "sam-build: installing aws-sam-cli==$SAM_VERSION cargo-lambda==$CARGO_LAMBDA_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "aws-sam-cli==$SAM_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION"
fi
export PATH="$venv/bin:$PATH" SAM_CLI_TELEMETRY=0 AWS_REGION="${AWS_REGION:-us-east-1}"

sam validate --lint --template-file template.yaml
if [ "${1:-}" = "--validate-only" ]; then
  exit 0
fi
rustup target add aarch64-unknown-linux-gnu
sam build --template-file template.yaml
ls -l .aws-sam/build/*/bootstrap

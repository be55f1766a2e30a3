#!/usr/bin/env bash
# Installs everything the tests and the local run need that is not Rust: a project-local Python venv with the
# pinned moto server (the AWS emulator) and cfn-lint (template checks). Idempotent; safe to run on every CI start.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/.venv"
MOTO_VERSION="5.2.5"
CFN_LINT_VERSION="1.58.0"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "bootstrap: python3 is required to run the moto AWS emulator (apt-get install python3 python3-venv)" >&2
  exit 1
fi

installed() {
  [ -x "$venv/bin/moto_server" ] &&
    "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null &&
    "$venv/bin/cfn-lint" --version 2>/dev/null | grep -q "$CFN_LINT_VERSION"
}

if ! installed; then
  echo "bootstrap: installing moto[server]==$MOTO_VERSION cfn-lint==$CFN_LINT_VERSION into $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" "cfn-lint==$CFN_LINT_VERSION"
  installed || { echo "bootstrap: install did not produce moto $MOTO_VERSION + cfn-lint $CFN_LINT_VERSION" >&2; exit 1; }
fi
"$venv/bin/moto_server" --help >/dev/null
echo "bootstrap: moto $MOTO_VERSION and cfn-lint $CFN_LINT_VERSION ready in $venv" >&2

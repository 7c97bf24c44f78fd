#!/bin/sh
# The project's test command (the README's second command). It sets up what the tests need
# besides Rust, then runs every suite of the workspace, even when one fails:
#
#   Python 3 with pip      the example servers; schemathesis (PyPI) for the API test
#   Node.js with npm       the editor grammar test and the inbox's browser test
#   Chromium               the inbox's browser test (Debian's /usr/bin/chromium, or CHROMIUM)
#
# Debian packages are installed with apt-get when this runs as root (as on CI: .ci/run calls
# this script); otherwise a missing one is named, with the command that installs it, before
# and after the tests, and the tests that need it fail with the same advice. PostgreSQL is
# optional: with FLOW_TEST_POSTGRES set the runtime's tests run on it too (.ci/run starts one).
set -u
cd "$(dirname "$0")"

missing=""
note_missing() { missing="${missing}  - $1: $2
"; }

# Installs Debian packages when we may (root, apt-get); true when it did.
apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  if [ -z "${apt_updated:-}" ]; then
    apt-get update -qq >/dev/null 2>&1 || return 1
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

# `need COMMAND PACKAGE…`: COMMAND is on the PATH, or its packages are installed, or it is noted.
need() {
  cmd="$1"
  shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  apt_install "$@" && command -v "$cmd" >/dev/null 2>&1 && return 0
  note_missing "$cmd" "apt-get install -y $*"
  return 1
}

need python3 python3 || true
if command -v python3 >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
  apt_install python3-pip || note_missing "pip" "apt-get install -y python3-pip"
fi
if need npm nodejs npm; then
  # The editor grammar test tokenizes every example with the VS Code extension's grammar.
  if [ ! -d editors/vscode/node_modules ]; then
    npm ci --prefix editors/vscode --no-audit --no-fund >/dev/null \
      || note_missing "editors/vscode/node_modules" "npm ci --prefix editors/vscode"
  fi
  # The web inbox's browser test drives Chromium with playwright-core.
  if [ ! -d e2e/node_modules ]; then
    npm ci --prefix e2e --no-audit --no-fund >/dev/null \
      || note_missing "e2e/node_modules" "npm ci --prefix e2e"
  fi
fi
if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  apt_install chromium || true
  [ -x /usr/bin/chromium ] \
    || note_missing "chromium" "apt-get install -y chromium (or set CHROMIUM to a Chromium binary)"
fi
# The server's API test generates requests with schemathesis.
if ! command -v schemathesis >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
  python3 -m pip install --quiet schemathesis >/dev/null 2>&1 \
    || python3 -m pip install --quiet --break-system-packages schemathesis >/dev/null 2>&1 || true
  command -v schemathesis >/dev/null 2>&1 \
    || note_missing "schemathesis" "python3 -m pip install schemathesis"
fi

report_missing() {
  [ -n "$missing" ] || return 0
  printf '\ntest.sh: missing prerequisites (the tests that need them fail):\n%s' "$missing" >&2
}
report_missing
# --no-fail-fast: every test binary runs even when an earlier one fails; the exit status
# still says whether any failed.
cargo test --workspace --no-fail-fast "$@"
status=$?
report_missing
exit $status

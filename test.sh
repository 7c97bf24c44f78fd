#!/bin/sh
# The project's test command (the README's second command): installs what the tests need
# besides Rust — the VS Code extension's npm dev dependencies for the editor grammar test,
# e2e/'s for the web inbox's browser test and schemathesis (PyPI) for the API test — then runs
# every test of the workspace. Python 3
# (example servers), Node.js with npm and Chromium (the inbox test) are expected on the
# machine; .ci/run installs them when they are missing.
set -eu
cd "$(dirname "$0")"
if [ ! -d editors/vscode/node_modules ]; then
  npm ci --prefix editors/vscode --no-audit --no-fund
fi
# The web inbox's browser test (runtime/tests/inbox_e2e.rs) drives Chromium with playwright-core.
if [ ! -d e2e/node_modules ]; then
  npm ci --prefix e2e --no-audit --no-fund
fi
# The server's API test (runtime/tests/server_api.rs) generates requests with schemathesis.
if ! command -v schemathesis >/dev/null 2>&1; then
  python3 -m pip install --quiet schemathesis \
    || python3 -m pip install --quiet --break-system-packages schemathesis
fi
# --no-fail-fast: every test binary runs even when an earlier one fails; the exit status
# still says whether any failed.
exec cargo test --workspace --no-fail-fast "$@"

#!/bin/sh
# Runs every example end to end, offline: starts the stand-in systems and model
# (examples/servers/example_systems.py), runs each scenario with flowrt, decides its approval
# and input gates as the users of flow.toml, prints each run's output, checks it, and stops
# the server.
#
#   sh examples/run.sh
#
# Needs python3 (standard library only) and builds flowrt with cargo unless FLOWRT names a
# binary. Environment:
#   FLOWRT               the flowrt binary to use (default: cargo build --release)
#   FLOW_EXAMPLES_PORT   the server's port (default 8711, as in flow.toml; 0 picks a free one)
#   FLOW_DB              the database (default .flow/examples.db, recreated on every run)
# Exit status 0 when every run ended as expected, 1 otherwise.
set -u
cd "$(dirname "$0")/.." || exit 1

port=${FLOW_EXAMPLES_PORT:-8711}
if ! command -v python3 >/dev/null 2>&1; then
  echo "examples/run.sh: python3 is needed for the example servers (apt-get install -y python3)" >&2
  exit 1
fi

if [ -z "${FLOWRT:-}" ]; then
  echo "building flowrt (cargo build --release) ..."
  cargo build --release --quiet -p flow-runtime --bin flowrt || exit 1
  FLOWRT="${CARGO_TARGET_DIR:-target}/release/flowrt"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/flow-examples.XXXXXX") || exit 1
server=
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null
    wait "$server" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM

if [ -z "${FLOW_DB:-}" ]; then
  mkdir -p .flow
  FLOW_DB=.flow/examples.db
  rm -f "$FLOW_DB" "$FLOW_DB-wal" "$FLOW_DB-shm"
fi
export FLOW_DB NO_COLOR=1

# --- The server ----------------------------------------------------------------------------

python3 examples/servers/example_systems.py "$port" >"$work/server.out" 2>"$work/server.log" &
server=$!
tries=0
until grep -q '^listening on' "$work/server.out" 2>/dev/null; do
  if ! kill -0 "$server" 2>/dev/null; then
    server=
    echo "examples/run.sh: the example server did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  tries=$((tries + 1))
  if [ "$tries" -gt 100 ]; then
    echo "examples/run.sh: the example server did not start within 10 seconds" >&2
    exit 1
  fi
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$work/server.out")
port=${url##*:}
echo "example systems and model: $url"

# flow.toml points at port 8711; on another port, run with a copy that points there.
if [ "$port" != 8711 ]; then
  sed "s|127\.0\.0\.1:8711|127.0.0.1:$port|g" flow.toml >"$work/flow.toml"
  FLOW_CONFIG="$work/flow.toml"
  export FLOW_CONFIG
fi

# --- Helpers -------------------------------------------------------------------------------

failures=0
run=

# start FILE INPUT: starts the file's workflow of the same name as ines (the intake clerk) and
# drives it as far as it goes; sets $run.
start() {
  workflow=$(basename "$1" .flow)
  printf "\n\$ flowrt run %s --workflow %s --as ines --input '%s'\n" "$1" "$workflow" "$2"
  out=$("$FLOWRT" run "$1" --workflow "$workflow" --as ines --input "$2" --json 2>"$work/err")
  code=$?
  run=$(printf '%s' "$out" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
  if [ -z "$run" ]; then
    echo "  FAILED to start (exit $code):" >&2
    cat "$work/err" >&2
    failures=$((failures + 1))
    return 1
  fi
  status=$(printf '%s' "$out" | sed -n 's/.*"status":"\([^"]*\)".*/\1/p')
  waiting=$(printf '%s' "$out" | sed -n 's/.*"waiting_on":"\([^"]*\)".*/\1/p')
  if [ "$status" = waiting ]; then
    echo "  run $run is waiting ($waiting)"
  else
    echo "  run $run is $status"
  fi
}

# decide approve|reject|input ARGS…: a person decides at the gate the run waits on.
decide() {
  [ -n "$run" ] || return 1
  what=$1
  shift
  line="\$ flowrt $what $run"
  for arg in "$@"; do
    case "$arg" in
      *[!A-Za-z0-9_.-]*) line="$line '$arg'" ;;
      *) line="$line $arg" ;;
    esac
  done
  echo "$line"
  if ! "$FLOWRT" "$what" "$run" "$@" >"$work/out" 2>"$work/err"; then
    echo "  FAILED:" >&2
    cat "$work/out" "$work/err" >&2
    failures=$((failures + 1))
    return 1
  fi
  sed 's/^/  /' "$work/out"
}

# expect PATTERN: the run completed with an output matching the shell PATTERN.
expect() {
  [ -n "$run" ] || return 1
  "$FLOWRT" status "$run" >"$work/status" 2>&1
  status=$(sed -n 's/^status  *//p' "$work/status")
  output=$(sed -n 's/^output  *//p' "$work/status")
  echo "  => $status: $output"
  case "$status:$output" in
    completed:$1) ;;
    *)
      echo "  FAILED: expected completed with $1" >&2
      "$FLOWRT" history "$run" >&2
      failures=$((failures + 1))
      ;;
  esac
  run=
}

# --- refund.flow: exec tools; small refunds are credited, larger ones need finance ------------

echo
echo "== refund.flow"
start examples/refund.flow '{"request": {"order_id": "A-1001", "amount_eur": 40, "reason": "damaged"}}'
expect '{"Credited":{"receipt":"credit-*"}}'

start examples/refund.flow '{"request": {"order_id": "A-1002", "amount_eur": 90, "reason": "never arrived"}}'
decide approve finance_refund --as fatima --comment "carrier confirmed the loss"
expect '{"Refunded":{"receipt":"refund-*"}}'

# --- cargo_release.flow: customs document check (http), sign-off, release (exec) -------------

echo
echo "== cargo_release.flow"
docs='[{"id": "D-1", "kind": "bill_of_lading", "url": "https://docs.example.com/D-1.pdf"}, {"id": "D-2", "kind": "invoice", "url": "https://docs.example.com/D-2.pdf"}, {"id": "D-3", "kind": "certificate_of_origin", "url": "https://docs.example.com/D-3.pdf"}]'
start examples/cargo_release.flow "{\"s\": {\"id\": \"S-2041\", \"container\": \"MSCU4471235\", \"value_eur\": 84000, \"docs\": $docs}}"
decide approve release_signoff --as ana --comment "documents complete"
expect '{"Released":{"receipt":"REL-MSCU4471235"}}'

docs='[{"id": "D-4", "kind": "bill_of_lading", "url": "https://docs.example.com/D-4.pdf"}, {"id": "D-5", "kind": "invoice", "url": "https://docs.example.com/D-5.pdf"}]'
start examples/cargo_release.flow "{\"s\": {\"id\": \"S-2042\", \"container\": \"TGHU8812004\", \"value_eur\": 310000, \"docs\": $docs, \"note\": \"urgent\"}}"
decide reject release_signoff --as ana --comment "certificate of origin missing"
expect '{"Held":{"reason":"certificate of origin missing"}}'

# --- kyc_review.flow: model extraction (llm), sanctions screening and core banking (http) ----

echo
echo "== kyc_review.flow"
start examples/kyc_review.flow '{"upload": {"id": "U-71", "customer_id": "C-501", "department": "retail", "file_url": "https://uploads.example.com/passport-lena.pdf"}, "current_year": 2026}'
decide approve kyc_signoff --as ana --comment "passport checked"
expect '{"Accepted":{"account":"DE89 *"}}'

start examples/kyc_review.flow '{"upload": {"id": "U-72", "customer_id": "C-502", "department": "retail", "file_url": "https://uploads.example.com/passport-viktor.pdf"}, "current_year": 2026}'
decide reject kyc_signoff --as ben --comment "confirmed sanctions list match"
expect '{"Rejected":{"reason":"confirmed sanctions list match"}}'

# The model cannot read this scan: two invalid answers, then the customer is asked again.
start examples/kyc_review.flow '{"upload": {"id": "U-73", "customer_id": "C-503", "department": "retail", "file_url": "https://uploads.example.com/scan-blurry.jpg"}, "current_year": 2026}'
expect '{"NeedsDocuments":{"missing":"a clearer scan of your identity document"}}'

# --- support_triage.flow: classification and drafts (llm), CRM and helpdesk (http) -----------

echo
echo "== support_triage.flow"
start examples/support_triage.flow '{"t": {"id": "T-1001", "customer_id": "C-100", "subject": "CSV export fails", "body": "Exporting the March report fails with error 500.", "area": "reports"}}'
decide input review_reply --as kim --value '{"body": "Thanks! We found the cause of the failing export and fixed it; please try again.", "escalate": false, "tags": ["export"]}'
expect '{"Answered":{"message_id":"msg-T-1001"}}'

start examples/support_triage.flow '{"t": {"id": "T-1002", "customer_id": "C-200", "subject": "Dashboard is down", "body": "Since 9:00 the dashboard is down for all our users."}}'
expect '{"Escalated":{"incident":"INC-T-1002"}}'

# Not in the CRM: the history is caught as unavailable and the ticket goes to tier 1.
start examples/support_triage.flow '{"t": {"id": "T-1003", "customer_id": "C-999", "subject": "Invoice address", "body": "How do I change the address on my invoices?"}}'
decide input review_reply --as sam --value '{"body": "You can change it under Settings > Billing.", "escalate": false, "tags": ["billing"]}'
expect '{"Answered":{"message_id":"msg-T-1003"}}'

echo
if [ "$failures" -gt 0 ]; then
  echo "$failures step(s) FAILED; the server's log:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
echo "every example ran as expected (database: $FLOW_DB; try: flowrt --db $FLOW_DB runs)"

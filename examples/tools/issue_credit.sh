#!/bin/sh
# Tool `issue_credit` of examples/refund.flow: records a store credit and prints a receipt.
# FLOW_IDEMPOTENCY_KEY is stable across retries and crashes: a real system would use it to
# never credit twice.
cat > /dev/null
printf '{"id": "credit-%s"}\n' "$(printf '%s' "$FLOW_IDEMPOTENCY_KEY" | tr ':.' '--')"

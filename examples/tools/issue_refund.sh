#!/bin/sh
# Tool `issue_refund` of examples/refund.flow: refunds the card payment (sensitive).
cat > /dev/null
printf '{"id": "refund-%s"}\n' "$(printf '%s' "$FLOW_IDEMPOTENCY_KEY" | tr ':.' '--')"

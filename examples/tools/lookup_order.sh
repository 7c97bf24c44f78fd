#!/bin/sh
# Tool `lookup_order` of examples/refund.flow: reads {"order_id": "..."} on stdin and prints
# the order as JSON. A stand-in for a real order system.
input=$(cat)
order=$(printf '%s' "$input" | sed -n 's/.*"order_id" *: *"\([^"]*\)".*/\1/p')
case "$order" in
  A-*) printf '{"order_id": "%s", "customer": "ana@example.com", "paid_eur": 120, "days_since_delivery": 4}\n' "$order" ;;
  *) echo "no order $order" >&2; exit 4 ;;
esac

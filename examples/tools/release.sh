#!/bin/sh
# Tool `release` of examples/cargo_release.flow: tells the terminal operating system to let a
# container out (sensitive: only after a customs sign-off). Reads {"container": "..."} on stdin
# and prints the receipt. A stand-in for the terminal's real interface.
input=$(cat)
container=$(printf '%s' "$input" | sed -n 's/.*"container" *: *"\([^"]*\)".*/\1/p')
if [ -z "$container" ]; then
  echo "no container in the request" >&2
  exit 4
fi
printf '{"id": "REL-%s", "gate": "Gate 4"}\n' "$container"

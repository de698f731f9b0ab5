#!/usr/bin/env bash
# The demo: an embedded pfs server, a repo of sales, and two chained pipelines that run on every commit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT

pfs server --data-dir "$work/data" --port 0 2>"$work/server.log" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server.log" && break; sleep 0.1; done
export PFS_ADDRESS=$(sed -n 's/.*listening on \([^,]*\),.*/\1/p' "$work/server.log")
export PFS_TOKEN_FILE="$work/data/token"  # the server made it at start: only its owner may call
echo "== pfs server at $PFS_ADDRESS"

run() { echo "\$ $*"; "$@"; }
for i in $(seq 1 20000); do echo "$i,widget-$((i % 7)),$((i * 37 % 1000))"; done > "$work/sales.csv"

echo "== data in a repo, as commits"
run pfs create-repo sales
run pfs put-file sales master monday.csv -c -f "$work/sales.csv"
run pfs list-commit sales

echo "== two pipelines: big-sales (map over sales, 2 workers), then totals (over big-sales)"
run cat "$here/filter.json"
run pfs create-pipeline -f "$here/filter.json"
run pfs create-pipeline -f "$here/sum.json"
run pfs flush-commit sales/master
run pfs get-file totals master totals

echo "== a new commit: big-sales sees only what it added, totals is computed again"
printf '20001,gizmo,999\n20002,gizmo,950\n' > "$work/more.csv"
run pfs put-file sales master tuesday.csv -c -f "$work/more.csv"
run pfs flush-commit sales/master
run pfs get-file totals master totals
run pfs list-job
run pfs list-commit totals
echo "\$ pfs get-file totals master^ totals   # the first output is still there"
pfs get-file totals master^ totals

#!/usr/bin/env bash
# The demo: an embedded pfs server, a repo, two commits of sample data, and what the store made of them.
set -euo pipefail
work=$(mktemp -d)
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT

pfs server --data-dir "$work/data" --port 0 2>"$work/server.log" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/server.log" && break; sleep 0.1; done
export PFS_ADDRESS=$(sed -n 's/.*listening on \([^,]*\),.*/\1/p' "$work/server.log")
echo "== pfs server at $PFS_ADDRESS"

run() { echo "\$ $*"; "$@"; }
for i in $(seq 1 20000); do echo "$i,widget-$((i % 7)),$((i * 37 % 1000))"; done > "$work/sales.csv"

run pfs create-repo sales
run pfs put-file sales master sales.csv -c -f "$work/sales.csv"
run pfs list-commit sales
echo "1,gizmo,999" > "$work/more.csv"
run pfs put-file sales master sales.csv -c -f "$work/more.csv"   # appends, as in Pachyderm 1.x
run pfs list-file sales master
run pfs inspect-file sales master sales.csv
echo "\$ pfs get-file sales master sales.csv | tail -n 2"
pfs get-file sales master sales.csv | tail -n 2
echo "\$ pfs get-file sales master^ sales.csv | wc -l   # the first commit is unchanged"
pfs get-file sales master^ sales.csv | wc -l
run pfs list-repo

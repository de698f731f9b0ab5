#!/usr/bin/env bash
# The demo: an embedded pfs server, a repo of sales, and two chained pipelines that run on every commit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/demo-lib.sh"
work=$(mktemp -d)
trap 'stop_servers; rm -rf "$work"' EXIT

serve data
export PFS_ADDRESS=$address
export PFS_TOKEN_FILE="$work/data/token"  # the server made it at start: only its owner may call
echo "== pfs server at $PFS_ADDRESS"

demo_steps

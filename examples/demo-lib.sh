# What demo.sh (one embedded server) and demo-cluster.sh (two servers of a cluster) share, sourced by both: starting
# and stopping pfs servers, and the demo's steps. The caller sets $work (a scratch dir it removes) and $here (this
# dir), and calls stop_servers on exit.

servers=()  # the pids of the pfs servers started here
# Ctrl-C, or a SIGTERM, ends the script through its EXIT trap, which stops what it started
trap 'exit 130' INT
trap 'exit 143' TERM

run() { echo "\$ $*"; "$@"; }

# serve NAME [OPTION...]: starts `pfs server OPTION...` with its data in $work/NAME on a free port, and waits until it
# serves: it says so on a pipe (--ready-fd), one JSON line with its address, which is left in $address; a pipe closed
# without that line means it failed, and its log in $work/NAME.log says why.
serve() {
  local name=$1 line
  shift
  mkfifo "$work/$name.ready"
  pfs server --port 0 --data-dir "$work/$name" "$@" --ready-fd 3 3>"$work/$name.ready" 2>"$work/$name.log" &
  servers+=($!)
  if ! read -r -t 60 line <"$work/$name.ready" || ! [[ $line =~ \"address\":\ \"([^\"]+)\" ]]; then
    echo "pfs server $name did not start: $(cat "$work/$name.log")" >&2
    exit 1
  fi
  address=${BASH_REMATCH[1]}
}

# stop_servers: SIGTERM to every server started here, and waits for each to stop (its workers with it); one still
# there after STOP_LIMIT seconds (a server exits within about 10, whatever is in flight) is killed.
STOP_LIMIT=20
stop_servers() {
  trap '' INT TERM  # from here on the stopping goes to its end
  local pid state i
  [ ${#servers[@]} -gt 0 ] || return 0  # (and `wait` with no pid would wait for every child: weed, say)
  kill "${servers[@]}" 2>/dev/null || true
  for pid in "${servers[@]}"; do
    for ((i = 0; i < STOP_LIMIT * 10; i++)); do
      read -r _ _ state _ 2>/dev/null </proc/"$pid"/stat || continue 2  # gone
      [ "$state" = Z ] && continue 2  # ended, not yet waited for
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait "${servers[@]}" 2>/dev/null || true
}

# demo_steps: a repo of sales, and two chained pipelines that run on every commit, through the servers that
# PFS_ADDRESS and PFS_TOKEN_FILE name.
demo_steps() {
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
}

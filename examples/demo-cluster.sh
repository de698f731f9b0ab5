#!/usr/bin/env bash
# The demo on a cluster: a PostgreSQL (metadata) and a SeaweedFS (chunks, in an S3 bucket), two pfs servers over
# both, and the same steps as demo.sh through them; then the server running a pipeline's controller is killed and the
# other one runs its next job. All on loopback, in one scratch dir; what it starts is stopped on exit, failure or
# Ctrl-C. tests/postgres.py and tests/seaweed.py start the same servers for the tests and say why each flag is there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/demo-lib.sh"
pg_bin=/usr/lib/postgresql/15/bin
as_postgres=()
[ "$(id -u)" = 0 ] && as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups)  # it refuses root
weed_pid=
weed_ports=()
work=$(mktemp -d)
chmod 711 "$work"  # the postgres user reaches its own dir in it

stop_all() {
  set +e
  stop_servers
  if [ -n "$weed_pid" ]; then
    kill -KILL "$weed_pid" 2>/dev/null  # its data is thrown away: SIGKILL is instant, SIGTERM takes 4-14 s
    wait "$weed_pid" 2>/dev/null
  fi
  for port in "${weed_ports[@]}"; do  # its gRPC sockets, made in /tmp whatever TMPDIR says
    rm -f /tmp/seaweedfs-*-grpc-$((port + 10000)).sock
  done
  if [ -f "$work/pg/data/postmaster.pid" ]; then
    "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null
  fi
  rm -rf "$work"
}
trap stop_all EXIT

quiet() { echo "\$ $* >/dev/null"; "$@" >/dev/null; }  # its progress is not the demo's; its errors are

# each port P with P + 10000 free too (weed's services listen on both), as the tests pick them
ports=$(python3 -c "import sys; sys.path.insert(0, sys.argv[1]); from seaweed import free_ports; print(*free_ports(7))" \
  "$here/../tests")
read -r pg_port s3_port master_port volume_port filer_port admin_port metrics_port <<<"$ports"

echo "== PostgreSQL 15 on 127.0.0.1:$pg_port, for the metadata"
mkdir "$work/pg"
[ ${#as_postgres[@]} = 0 ] || chown postgres: "$work/pg"
# a password (scram), not trust: a pipeline's command shares this machine's loopback, and must not reach the
# metadata; the servers have it in PGPASSWORD, which their workers, and so the commands, are not given
export PGPASSWORD=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
echo "$PGPASSWORD" >"$work/pg/password"
[ ${#as_postgres[@]} = 0 ] || chown postgres: "$work/pg/password"
quiet "${as_postgres[@]}" "$pg_bin/initdb" -D "$work/pg/data" -A scram-sha-256 --pwfile="$work/pg/password" -U pfs \
  -E UTF8 --no-locale
rm "$work/pg/password"
quiet "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/postgres.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $work/pg" start
run "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U pfs pfs
meta=postgresql://pfs@127.0.0.1:$pg_port/pfs

echo "== SeaweedFS on 127.0.0.1, S3 on port $s3_port, for the chunks"
export AWS_ACCESS_KEY_ID=$(od -An -tx1 -N10 /dev/urandom | tr -d ' \n') AWS_REGION=us-east-1
export AWS_SECRET_ACCESS_KEY=$(od -An -tx1 -N20 /dev/urandom | tr -d ' \n')
mkdir -p "$work/weed/data" "$work/weed/log"
cat >"$work/weed/keys.json" <<EOF
{"identities": [{"name": "admin", "credentials": [{"accessKey": "$AWS_ACCESS_KEY_ID", "secretKey": "$AWS_SECRET_ACCESS_KEY"}],
                 "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
weed=(weed "-logdir=$work/weed/log" mini "-dir=$work/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1
      "-s3.port=$s3_port" "-master.port=$master_port" "-volume.port=$volume_port" "-filer.port=$filer_port"
      "-admin.port=$admin_port" "-metricsPort=$metrics_port" "-s3.config=$work/weed/keys.json"
      -master.telemetry=false -s3.autoCreateBucket=false -s3.allowDeleteBucketNotEmpty=false
      -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0
      "-filer.localSocket=$work/weed/filer.sock" "-s3.localSocket=$work/weed/s3.sock")
echo "\$ ${weed[*]} &"
weed_ports=("$s3_port" "$master_port" "$volume_port" "$filer_port" "$admin_port")
TMPDIR="$work/weed" "${weed[@]}" >"$work/weed/weed.out" 2>&1 </dev/null &
weed_pid=$!
s3=http://127.0.0.1:$s3_port
echo "   and a bucket, pfs, made with boto3 once S3 answers"
python3 - "$s3" "$weed_pid" "$work/weed/weed.out" <<'EOF'
import sys, time
import boto3, botocore.exceptions
s3, deadline = boto3.client("s3", endpoint_url=sys.argv[1]), time.monotonic() + 60
while True:
    try:
        s3.create_bucket(Bucket="pfs")
        break
    except botocore.exceptions.EndpointConnectionError:  # not up yet (about a second)
        try:
            with open(f"/proc/{sys.argv[2]}/stat") as stat:
                ended = stat.read().split()[2] == "Z"  # not yet waited for
        except FileNotFoundError:
            ended = True
        if ended:
            with open(sys.argv[3]) as out:
                sys.exit(f"weed exited at start: {out.read()[-2000:]}")
        if time.monotonic() > deadline:
            sys.exit(f"SeaweedFS's S3 did not answer at {sys.argv[1]} within 60 s")
        time.sleep(0.1)
EOF

echo "== two pfs servers, each with a data dir of its own (a cache, its token file, its id), as one cluster"
cluster=(--meta "$meta" --storage s3://pfs/demo --s3-endpoint "$s3")
echo "\$ pfs server --port 0 --data-dir $work/a ${cluster[*]} &   # and the same with $work/b"
addresses=()
for name in a b; do
  serve "$name" "${cluster[@]}"
  addresses+=("$address")
done
export PFS_ADDRESS=$(IFS=,; echo "${addresses[*]}")  # a client uses the first it reaches
export PFS_TOKEN_FILE="$work/a/token"  # the cluster's one token, which each server wrote to its data dir
echo "== pfs servers at $PFS_ADDRESS"

demo_steps

echo "== the cluster: each pipeline's controller runs on one server, under a lease in the database"
run pfs inspect-pipeline totals
held=$(pfs inspect-pipeline totals --raw | python3 -c 'import json, sys; print(json.load(sys.stdin)["controller"])')
case $held in
  "$(cat "$work/a/server-id")") doomed=0 ;;  # servers[0] is a's
  "$(cat "$work/b/server-id")") doomed=1 ;;
  *) echo "no server of this cluster holds totals's lease (controller: '$held')" >&2; exit 1 ;;
esac
echo "\$ kill -9 ${servers[doomed]}   # the pfs server $held, running totals's controller"
kill -KILL "${servers[doomed]}"
wait "${servers[doomed]}" 2>/dev/null || true
unset 'servers[doomed]'  # gone: its pid is no longer ours to signal
echo "== a commit through the cluster: the other server takes the lease (within about 10 s) and runs the job"
printf '20003,gizmo,901\n' > "$work/wednesday.csv"
run pfs put-file sales master wednesday.csv -c -f "$work/wednesday.csv"
run pfs flush-commit sales/master
run pfs get-file totals master totals
echo "\$ pfs inspect-pipeline totals | grep Controller"
pfs inspect-pipeline totals | grep Controller

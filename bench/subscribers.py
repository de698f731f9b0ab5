"""Subscribers benchmark: how long a pipeline's job takes beside 500 idle subscribers, against alone.

What it measures, in one run against one pfs server with the local runner: bench/pipeline.py's trivial
pipeline (`cp -r /pfs/in/. /pfs/out/`, map, parallelism 1, over one tiny file that each commit rewrites).
After one untimed job, K jobs alone (default 5, one after another), then N SubscribeCommit streams (default
500, raw gRPC spread over 5 channels, as tests/test_streams.py opens them) on the pipeline's output repo,
each read up to the repo's head so that it is open and idle, then K jobs beside them. Each job is timed as
in bench/pipeline.py: from `finish-commit` returning to its output commit's finish (polled every 10 ms).
Every job wakes every subscriber (a shard's report and the output commit are news), which looks at the store
in the server's pool of threads; the goal is that the job beside them takes at most 2x its time alone. The
server's thread count (/proc/PID/status) with the subscribers open shows that a waiting call holds no thread.
The check: every subscriber gets every output commit, in order.

Run from the repo root, as root:  .venv/bin/python bench/subscribers.py [--subscribers 500] [--jobs 5] [--keep]
"""

import argparse
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import print_machine, scratch  # noqa: E402
from pipeline import (  # noqa: E402
    COPY, LATENCY_INPUT, LATENCY_PIPELINE, OUTPUT_TIMEOUT, POLL_LATENCY, SHIM, TINY_NAME, Server, commit_and_wait,
    compile_bytecode, create_pipeline,
)

from pfs.client import Client, auth  # noqa: E402
from pfs.proto import pfs_pb2 as pb  # noqa: E402
from pfs.proto import pfs_pb2_grpc  # noqa: E402

CHANNELS = 5
GOAL_RATIO = 2.0


def timed_jobs(server: Server, client: Client, data_dir: Path, count: int, label: str, calls: list) -> list[float]:
    """COUNT jobs, each output commit then read from every one of CALLS (subscriber streams); the job times."""
    times = []
    for k in range(count):
        (data_dir / TINY_NAME).write_text(f"{label} {k}\n")
        r = commit_and_wait(server, client, LATENCY_INPUT, LATENCY_PIPELINE, [TINY_NAME, "-o", "-f", TINY_NAME],
                            data_dir, warm_store=False, poll=POLL_LATENCY)
        print(f"  {label}, job {k + 1}: {r.seconds:6.3f} s", flush=True)
        times.append(r.seconds)
        got = {next(call).id for call in calls}
        if calls and got != {r.output.id}:
            raise SystemExit(f"the subscribers got {sorted(got)}, not the output commit {r.output.id}")
    return times


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise SystemExit(f"no thread count for pid {pid}")


def bench(work: Path, args: argparse.Namespace) -> None:
    data_dir = work / "data"
    data_dir.mkdir()
    print("bringing the bytecode of pfs's own modules up to date (untimed) ...", flush=True)
    compile_bytecode()
    with Server(work / "pfs") as server, server.client() as client, ExitStack() as stack:
        create_pipeline(server, work, LATENCY_PIPELINE, LATENCY_INPUT, COPY, 1, "map")
        print(f"pipeline {LATENCY_PIPELINE} ({COPY}) over repo {LATENCY_INPUT}; one untimed job first", flush=True)
        timed_jobs(server, client, data_dir, 1, "warm-up", [])
        alone = timed_jobs(server, client, data_dir, args.jobs, "alone", [])
        token = auth.read_token(Path(server.env["PFS_TOKEN_FILE"]))
        channels = [stack.enter_context(auth.channel(server.env["PFS_ADDRESS"], token)) for _ in range(CHANNELS)]
        request = pb.SubscribeCommitRequest(repo=LATENCY_PIPELINE, branch="master")
        calls = [pfs_pb2_grpc.APIStub(channels[i % CHANNELS]).SubscribeCommit(request, timeout=OUTPUT_TIMEOUT)
                 for i in range(args.subscribers)]
        stack.callback(lambda: [c.cancel() for c in calls])
        commits = 1 + args.jobs  # the output commits so far: each stream gives them all first
        for call in calls:
            for _ in range(commits):
                next(call)
        count = threads(server.server.pid)
        print(f"{args.subscribers} subscribers open and idle on repo {LATENCY_PIPELINE}; the server runs "
              f"{count} threads", flush=True)
        beside = timed_jobs(server, client, data_dir, args.jobs, f"beside {args.subscribers}", calls)
        count = max(count, threads(server.server.pid))
    a, b = statistics.median(alone), statistics.median(beside)
    print(f"\njob time, median of {args.jobs}: alone {a:.3f} s (min {min(alone):.3f}, max {max(alone):.3f}); "
          f"beside {args.subscribers} subscribers {b:.3f} s (min {min(beside):.3f}, max {max(beside):.3f})")
    print(f"ratio {b / a:.2f} (goal: at most {GOAL_RATIO:.0f}): {'met' if b / a <= GOAL_RATIO else 'NOT met'}; "
          f"server threads with the subscribers: at most {count}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subscribers", type=int, default=500, help="idle subscribe-commit streams (default 500)")
    p.add_argument("--jobs", type=int, default=5, help="jobs timed alone, and then beside them (default 5)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (store, server log)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if not Path(SHIM).exists():
        raise SystemExit(f"job-shim not found at {SHIM}; run `make setup`")
    with scratch("pfs-bench-subscribers-", args.keep) as work:
        print_machine()
        bench(work, args)


if __name__ == "__main__":
    main()

"""S3 benchmark: the chunk store in a bucket (SeaweedFS) next to the local store, on the same data.

What it measures, in one run on the same machine and the same data (the data of bench/ingest.py: one large
"mixed" file, default 1 GiB, and a tree of small files, default 10,000 files of 1-4 KiB in 100 directories),
with one pfs server on the local store (chunks in its data dir) and one on a bucket of a SeaweedFS started here
(`pfs server --storage s3://BUCKET/pfs --s3-endpoint URL`):

1. Ingest: the time of `pfs put-file -c` of the large file and of the tree (MB/s, 1 MB = 1e6 bytes, and
   files/s) on each store, and the ratio of the speeds, S3 ÷ local; next to it the CPU seconds the put-file
   client, the pfs server and SeaweedFS spent on it (on this machine they share the cores).
2. S3 requests: those the server made of the bucket for each dataset (by operation, retries included), and the
   bytes and objects the dataset added to the bucket; the requests and PUTs per GiB stored, and the MiB stored
   per PUT.
3. Reads through `pfs mount` on each store, cold and warm, with the local disk ("native") as the baseline: the
   large file read sequentially (`cat FILE > /dev/null`) and every small file read, each as bench/read.py does
   it (cold: the mount made anew, its server restarted with its chunk cache DATA_DIR/cache removed, the kernel's
   page, dentry and inode caches dropped; warm: the best of three re-reads at once on the same mount), with the
   GETs the server made of the bucket meanwhile.
4. The server's CPU per GiB read: the large file read cold through a new mount on each store with direct reads
   on (the mount reads chunks where the server says they are: the data dir on this machine for the local
   store, presigned URLs of the bucket for S3) and off (`pfs mount --no-direct`: every chunk through the
   server); the CPU seconds (utime + stime, /proc/PID/stat) of the server, of the mount and of SeaweedFS
   across the read, and the server's share of the mount's. Whether a mount did read directly is taken from
   what it says when it mounts ("chunks read from ..."); where this pfs cannot read a store directly, "on"
   falls back to reading through the server and is shown so.

How: the data is generated deterministically under /tmp and read once (warm page cache) and `sync`ed before
each timed put-file, as bench/ingest.py does; each dataset is put on the local store, then on S3, into repo
`bench`, branch master, one commit each. Every phase (each put-file, each cold read, each CPU measurement) runs
on a server started for it on the store's data dir and stopped (SIGTERM) at its end: at a clean stop a server on
S3 logs the requests it made ("S3 requests: N (PutObject A, ...)"), read here from its log. The S3 keys are in
this process's environment, which the servers inherit; the mounts get an environment without them. Everything
runs on this machine: SeaweedFS (`weed mini` from the venv, tests/seaweed.py) and the pfs servers share the
cores with the clients, and the load average is shown at the start and the end.

Goals (from the issue): ingest to S3 at least 0.8x as fast as to the local store; the small files in at most
1 PUT per 4 MiB stored; with direct reads, the server spends under 5% of the reader's (the mount's) CPU.

Run from the repo root, as root:  .venv/bin/python bench/s3.py [--size-mib 1024] [--files 10000] [--keep]
"""

import math
import os
import re
import resource
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))  # tests/seaweed.py: no pytest in it
from ingest import MB, PFS, Dataset, du, print_machine, timed, warm  # noqa: E402
from read import (  # noqa: E402
    BRANCH, READ_BODY, REPO, PfsMount, PfsServer, Source, Timing, check_sizes, cold_then_warm, drop_caches,
    in_scratch, make_data, parse_args, read_big, small_files,
)
import seaweed  # noqa: E402

GIB = 1 << 30
MIB = 1 << 20
PREFIX = "pfs"  # the chunks' prefix in the bucket
STORES = ("local", "s3")
REQUESTS_LINE = re.compile(r"S3 requests: (\d+) \((.*)\)\s*$", re.MULTILINE)
DIRECT_SAID = "chunks read from"  # what `pfs mount` says when it reads the store directly
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GOAL_INGEST = 0.8
GOAL_MIB_PER_PUT = 4
GOAL_SERVER_SHARE = 0.05


# ---------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process PID (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of proc(5)


def children_cpu() -> float:
    """CPU seconds of the child processes this one has waited for: a timed command's, as a difference."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class StoreServer(PfsServer):
    """bench/read.py's restartable pfs server, on the local store or on a bucket (OPTIONS), started cold each time
    (its chunk cache removed); each run's S3 requests are read from its log when it stops."""

    label: str = "local"
    options: tuple[str, ...] = ()
    log: Path = Path()

    @property
    def on_s3(self) -> bool:
        return "--storage" in self.options

    @property
    def pid(self) -> int:
        return self.server.pid

    def start(self) -> None:
        shutil.rmtree(self.store / "cache", ignore_errors=True)
        self.starts += 1
        self.log = self.store.with_name(f"{self.store.name}-{self.starts}.log")
        self.start_server(self.log, *self.options)

    def stop(self) -> dict[str, int]:
        """Stops the server (SIGTERM: a clean shutdown); the S3 requests of this run, by operation."""
        if self.server is None:
            return {}
        self.__exit__()
        self.server = None
        counts = s3_requests(self.log)
        if counts is None and self.on_s3:
            raise SystemExit(f"pfs server on S3 logged no 'S3 requests' line at its stop (log: {self.log})")
        return counts or {}

    def restart(self) -> None:
        self.stop()
        self.start()


def s3_requests(log: Path) -> dict[str, int] | None:
    """The requests by operation that a server's log says it made of its bucket (None: it says nothing)."""
    found = REQUESTS_LINE.findall(log.read_text())
    if not found:
        return None
    total, ops = found[-1]
    counts = {op: int(n) for op, n in (item.rsplit(" ", 1) for item in ops.split(", ") if item != "none")}
    if sum(counts.values()) != int(total):
        raise SystemExit(f"{log}: the S3 requests line does not add up: {total} ({ops})")
    return counts


@dataclass
class StoreMount(PfsMount):
    """bench/read.py's pfs mount of one StoreServer, reading chunks directly where it can (DIRECT) or always
    through the server (--no-direct)."""

    direct: bool = True
    log: Path = Path()

    @property
    def name(self) -> str:
        return mount_name(self.server.label, self.direct)

    def command(self) -> list[str]:
        return super().command() + ([] if self.direct else ["--no-direct"])

    def start(self, out: TextIO) -> None:
        self.log = Path(out.name)
        super().start(out)

    def reads_directly(self) -> bool:
        return DIRECT_SAID in self.log.read_text()


def mount_name(store: str, direct: bool) -> str:
    return store + ("" if direct else "-no-direct")


def new_mount(server: StoreServer, work: Path, direct: bool = True) -> StoreMount:
    """A mount (not mounted yet) of SERVER's repo, in an environment without the S3 keys."""
    point = work / f"mnt-{mount_name(server.label, direct)}"
    point.mkdir()
    env = {k: v for k, v in server.env.items() if not k.startswith("AWS_")}
    return StoreMount(point / REPO / BRANCH, point, work, env, server=server, direct=direct)


# ---------------------------------------------------------------- the bucket


@dataclass(frozen=True)
class Usage:
    objects: int
    nbytes: int

    def __sub__(self, other: "Usage") -> "Usage":
        return Usage(self.objects - other.objects, self.nbytes - other.nbytes)


def bucket_usage(weed: seaweed.SeaweedFS, bucket: str) -> Usage:
    """The objects under PREFIX in BUCKET and their bytes."""
    objects = nbytes = 0
    for page in weed.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/"):
        for o in page.get("Contents", []):
            objects += 1
            nbytes += o["Size"]
    return Usage(objects, nbytes)


# ---------------------------------------------------------------- measuring


@dataclass
class Ingest:
    seconds: float
    client_cpu: float
    server_cpu: float
    weed_cpu: float | None  # None for the local store: SeaweedFS takes no part
    stored: int             # local: the data dir's growth (du -sb); S3: the bucket's
    requests: dict[str, int] = field(default_factory=dict)
    objects: int = 0        # objects the bucket gained


def ingest(server: StoreServer, data: Dataset, data_dir: Path, weed: seaweed.SeaweedFS, bucket: str) -> Ingest:
    """Times `pfs put-file` of DATA on a server started for it; what it cost, and what it stored."""
    server.restart()
    warm(data_dir / data.name)
    stored = bucket_usage(weed, bucket) if server.on_s3 else Usage(0, du(server.store))
    pids = (server.pid, weed.proc.pid)
    cpu = [children_cpu(), *map(cpu_seconds, pids)]
    seconds = timed(server.command(data, 1), server.env, data_dir)
    client, busy, weed_cpu = (now - then for now, then in zip([children_cpu(), *map(cpu_seconds, pids)], cpu))
    requests = server.stop()
    if not server.on_s3:
        return Ingest(seconds, client, busy, None, du(server.store) - stored.nbytes)
    added = bucket_usage(weed, bucket) - stored
    return Ingest(seconds, client, busy, weed_cpu, added.nbytes, requests, added.objects)


@dataclass
class Reading:
    timing: Timing
    requests: dict[str, int]  # the server's, cold and warm reads (empty: the local store, or native)


def read_all(title: str, sources: list[Source], measure) -> dict[str, Reading]:
    """MEASURE on each source cold, then warm (bench/read.py's cold_then_warm); each pfs server stopped after."""
    print(f"{title}:", flush=True)
    results = {}
    for s in sources:
        timing = cold_then_warm(s, measure)
        requests = {}
        if isinstance(s, StoreMount):
            s.unmount()
            requests = s.server.stop()
        results[s.name] = Reading(timing, requests)
        print(f"  {s.name:<7} cold {timing.cold:8.3f} s   warm {timing.warm:8.3f} s", flush=True)
    return results


@dataclass
class CpuRun:
    direct: bool       # asked for
    direct_used: bool  # what the mount said it did
    seconds: float
    server: float
    mount: float
    weed: float | None
    requests: dict[str, int]


def cpu_of_read(mnt: StoreMount, weed: seaweed.SeaweedFS) -> CpuRun:
    """The CPU seconds of the server, the mount and SeaweedFS across a cold read of the large file through MNT,
    from once the mount has looked the file up."""
    mnt.fresh()
    drop_caches()
    mnt.big.stat()  # the mount's first calls (the file looked up, once a mount): not a cost per GiB
    pids = (mnt.server.pid, mnt.proc.pid, weed.proc.pid)
    before = [cpu_seconds(p) for p in pids]
    seconds = read_big(mnt)
    server, mount, weed_cpu = (cpu_seconds(p) - b for p, b in zip(pids, before))
    mnt.unmount()
    requests = mnt.server.stop()
    return CpuRun(mnt.direct, mnt.reads_directly(), seconds, server, mount,
                  weed_cpu if mnt.server.on_s3 else None, requests)


# ---------------------------------------------------------------- printing


def ops(requests: dict[str, int]) -> str:
    return ", ".join(f"{op} {n}" for op, n in sorted(requests.items())) or "none"


def print_ingest(datasets: list[Dataset], results: dict[tuple[str, str], Ingest]) -> None:
    print("\ningest, `pfs put-file -c` (each on a server started for it; CPU seconds across the put-file;")
    print("  stored: local = growth of du -sb of the data dir, s3 = bytes added to the bucket)")
    print(f"  {'data':<9} {'store':<6} {'s':>8} {'MB/s':>8} {'files/s':>8} {'S3÷local':>9}"
          f" {'client CPU s':>12} {'server CPU s':>12} {'weed CPU s':>10} {'stored MB':>10}")
    for data in datasets:
        local = results[data.name, "local"]
        for store in STORES:
            r = results[data.name, store]
            files = f"{data.nfiles / r.seconds:8.0f}" if data.is_tree else f"{'-':>8}"
            ratio = f"{local.seconds / r.seconds:9.2f}" if store == "s3" else f"{'':>9}"
            weed_cpu = "-" if r.weed_cpu is None else f"{r.weed_cpu:.2f}"
            print(f"  {data.name:<9} {store:<6} {r.seconds:8.2f} {data.nbytes / MB / r.seconds:8.1f} {files}"
                  f" {ratio} {r.client_cpu:12.2f} {r.server_cpu:12.2f} {weed_cpu:>10} {r.stored / MB:10.1f}")


def print_requests(datasets: list[Dataset], results: dict[tuple[str, str], Ingest]) -> None:
    print("\nS3 requests of each ingest (the server's own count, retries included); per GiB stored = in the bucket")
    print(f"  {'data':<9} {'MB in':>8} {'stored MB':>10} {'objects':>8} {'requests':>8} {'PUTs':>6}"
          f" {'req/GiB stored':>14} {'PUT/GiB stored':>14} {'MiB per PUT':>11}  by operation")
    for data in datasets:
        r = results[data.name, "s3"]
        total, puts = sum(r.requests.values()), r.requests.get("PutObject", 0)
        per_put = f"{r.stored / MIB / puts:11.2f}" if puts else f"{'-':>11}"
        print(f"  {data.name:<9} {data.nbytes / MB:8.1f} {r.stored / MB:10.1f} {r.objects:8d} {total:8d} {puts:6d}"
              f" {total * GIB / r.stored:14.1f} {puts * GIB / r.stored:14.1f} {per_put}  {ops(r.requests)}")


def print_reads(title: str, data: Dataset, results: dict[str, Reading]) -> None:
    unit = "files/s" if data.is_tree else "MB/s"

    def rate(seconds: float) -> float:
        return data.nfiles / seconds if data.is_tree else data.nbytes / MB / seconds

    native = results["native"].timing
    print(f"\n{title}: {data.nbytes / MB:.1f} MB in {data.nfiles} file(s)")
    print("  ÷native = this time ÷ the native time (above 1: slower than the local disk); S3 requests: the server's")
    print("  (a mount that reads the bucket itself makes its own, not counted here)")
    print(f"  {'source':<7} {'cold s':>8} {'cold ' + unit:>13} {'warm s':>8} {'warm ' + unit:>13}"
          f" {'÷native cold':>12} {'warm':>6} {'mount s':>8}  S3 requests (cold + warm)")
    for name, r in results.items():
        t = r.timing
        mount = "-" if t.mount is None else f"{t.mount:.2f}"
        print(f"  {name:<7} {t.cold:8.3f} {rate(t.cold):13.1f} {t.warm:8.3f} {rate(t.warm):13.1f}"
              f" {t.cold / native.cold:12.2f} {t.warm / native.warm:6.2f} {mount:>8}"
              f"  {ops(r.requests) if name == 's3' else '-'}")


def print_cpu(data: Dataset, results: dict[tuple[str, bool], CpuRun]) -> None:
    gib = data.nbytes / GIB
    print(f"\nCPU per GiB of {data.name} read cold through a new mount (cat > /dev/null), direct reads on and off")
    print("  direct on: the mount reads the store itself where it can (fell back: it cannot, and reads through the")
    print("  server); off: pfs mount --no-direct, every chunk through the server")
    print(f"  {'store':<6} {'direct':<13} {'s':>7} {'MB/s':>7} {'server CPU s/GiB':>16} {'mount CPU s/GiB':>15}"
          f" {'weed CPU s/GiB':>14} {'server÷mount':>12}  the server's S3 requests")
    for store in STORES:
        for direct in (True, False):
            r = results[store, direct]
            mode = "off" if not r.direct else "on" if r.direct_used else "on, fell back"
            weed_cpu = "-" if r.weed is None else f"{r.weed / gib:.2f}"
            print(f"  {store:<6} {mode:<13} {r.seconds:7.2f} {data.nbytes / MB / r.seconds:7.1f}"
                  f" {r.server / gib:16.2f} {r.mount / gib:15.2f} {weed_cpu:>14} {r.server / r.mount:11.1%}"
                  f"  {ops(r.requests) if store == 's3' else '-'}")


def goal(text: str, value: str, met: bool) -> str:
    return f"  {text}: {value}  {'MET' if met else 'NOT MET'}"


def print_goals(datasets: list[Dataset], tree: Dataset, ingests: dict[tuple[str, str], Ingest],
                cpu: dict[tuple[str, bool], CpuRun]) -> None:
    print("\ngoals")
    cores = len(os.sched_getaffinity(0))
    for data in datasets:
        local, s3 = ingests[data.name, "local"], ingests[data.name, "s3"]
        ratio = local.seconds / s3.seconds
        cpu_used = (f"   (CPU s, client + server: local {local.client_cpu + local.server_cpu:.1f}, S3 "
                    f"{s3.client_cpu + s3.server_cpu:.1f} + SeaweedFS {s3.weed_cpu:.1f}; {cores} cores shared)")
        print(goal(f"ingest of {data.name}, S3 speed ÷ local speed (goal >= {GOAL_INGEST})", f"{ratio:.2f}",
                   ratio >= GOAL_INGEST) + cpu_used)
    small = ingests[tree.name, "s3"]
    puts = small.requests.get("PutObject", 0)
    allowed = max(1, math.ceil(small.stored / (GOAL_MIB_PER_PUT * MIB)))  # one PUT at least, however little
    print(goal(f"the {tree.nfiles} small files, PUTs (goal: at most 1 per {GOAL_MIB_PER_PUT} MiB stored, "
               f"here {allowed})", f"{puts} for {small.stored / MIB:.1f} MiB", puts <= allowed))
    r = cpu["s3", True]
    share = r.server / r.mount
    note = "" if r.direct_used else " (the mount fell back to reading through the server: no direct reads of S3 here)"
    print(goal(f"direct reads on S3, the server's CPU ÷ the mount's (goal < {GOAL_SERVER_SHARE:.0%})",
               f"{share:.1%}{note}", share < GOAL_SERVER_SHARE))


# ---------------------------------------------------------------- main


def start_seaweed(work: Path, stack: ExitStack) -> tuple[seaweed.SeaweedFS, str]:
    """A SeaweedFS with a new bucket, its keys in this process's environment (for the servers to inherit)."""
    weed = seaweed.SeaweedFS(work / "seaweed")
    stack.callback(weed.stop)
    start = time.perf_counter()
    weed.start()
    bucket = weed.make_bucket()
    os.environ.update(weed.env)
    print(f"SeaweedFS at {weed.endpoint} up in {time.perf_counter() - start:.1f} s, bucket {bucket}", flush=True)
    return weed, bucket


def bench(work: Path, size: int, files: int, stack: ExitStack) -> None:
    data_dir = work / "data"
    data_dir.mkdir()
    big, tree, names = make_data(data_dir, size, files)
    datasets = [big, tree]
    names_file = work / "files.txt"
    names_file.write_text("".join(f"{n}\n" for n in names))
    weed, bucket = start_seaweed(work, stack)
    s3 = ("--storage", f"s3://{bucket}/{PREFIX}", "--s3-endpoint", weed.endpoint)
    servers = {store: stack.enter_context(StoreServer(work / store, label=store, options=options))
               for store, options in (("local", ()), ("s3", s3))}

    print("ingest (each dataset read once and synced before its timed put-file):", flush=True)
    ingests = {}
    for data in datasets:
        for store, server in servers.items():
            ingests[data.name, store] = r = ingest(server, data, data_dir, weed, bucket)
            print(f"  {data.name:<9} {store:<6} {r.seconds:8.2f} s", flush=True)

    mounts = {store: new_mount(server, work) for store, server in servers.items()}
    for m in mounts.values():
        stack.callback(m.close)
        m.fresh()
    sources: list[Source] = [Source(data_dir), *mounts.values()]
    check_sizes(sources, big)
    print("reads: cold (new mounts, servers restarted without their chunk cache, kernel caches dropped), "
          "then warm at once")
    big_reads = read_all(f"sequential read of {big.name}", sources, read_big)
    tree_reads = read_all(f"read of {files} small files", sources, small_files(READ_BODY, names_file))

    print(f"CPU of a cold read of {big.name}, direct reads on and off:", flush=True)
    cpu = {}
    for store, server in servers.items():
        for direct in (True, False):
            mnt = mounts[store] if direct else new_mount(server, work, direct=False)
            stack.callback(mnt.close)
            cpu[store, direct] = r = cpu_of_read(mnt, weed)
            print(f"  {mnt.name:<15} {r.seconds:7.2f} s, server {r.server:.2f} s CPU, mount {r.mount:.2f} s CPU"
                  f"{'' if r.direct_used == r.direct else ' (not read directly: through the server)'}", flush=True)

    print_ingest(datasets, ingests)
    print_requests(datasets, ingests)
    print_reads(f"sequential read (cat > /dev/null) of {big.name}", big, big_reads)
    print_reads("read of every small file", tree, tree_reads)
    print_cpu(big, cpu)
    print_goals(datasets, tree, ingests, cpu)


def main() -> None:
    args = parse_args(__doc__)
    if not Path(PFS).exists():
        raise SystemExit(f"pfs not found at {PFS}; run `make setup`")
    if not seaweed.WEED.exists():
        raise SystemExit(f"SeaweedFS not found at {seaweed.WEED}; run `make setup` (the dev extra installs it)")
    print_machine([str(seaweed.WEED), "version"], ["cat", "--version"])
    in_scratch("s3", args.keep, lambda work, stack: bench(work, args.size_mib << 20, args.files, stack))
    print(f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

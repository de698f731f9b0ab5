"""Pipeline benchmark: how soon a pipeline's output follows its input, and how a map job scales to 2 workers.

What it measures, in one run against one pfs server with the local runner (workers are `job-shim`
processes on this machine):

1. Latency of a trivial pipeline (`cp -r /pfs/in/. /pfs/out/`, method map, parallelism 1, over
   one tiny file): for K commits one after another (default 10; each rewrites the file, and each
   is made once the previous output is there), the time from `finish-commit` returning to the
   output commit's finish; the median, min and max. Each is split with the server's and the
   worker's own times: pickup (the input commit finished -> the controller made the job), the job
   (made -> finished, from `inspect-job`) and within it, worker start (job made -> the worker took
   its shard: the job-shim process starting), mount (-> its inputs mounted and the command
   started, as the worker reports in its shard: from the second job on, the previous output at
   /pfs/prev too, all by one `pfs mount` process, started with the worker), command + unmount + upload (-> its
   output uploaded, as it reports; the inputs are unmounted before /pfs/out is uploaded), report
   (-> the shard finished: the last log lines sent, the shard reported), output commit (-> the
   output commit); and "seen after", from the output commit until the poll saw it.
2. Speed-up of a CPU-bound map job from 1 to 2 workers on this machine: a file of CSV-like text
   lines (default 128 MiB, cut by the server into line-aligned blocks of ~1 MiB, so ~100 blocks),
   and the command `gzip -9 -c FILE | wc -c` (single-threaded, deterministic, CPU time in
   proportion to the bytes). Two pipelines, with parallelism 1 and 2, each on its own input repo
   holding the same file, each job seeing the whole input (partition BLOCK, incremental NONE);
   each timed from `finish-commit` returning to its output commit, as in 1. Next to them, the
   same command run natively on the whole file, and on the file split in 2 halves at a line end
   (`split -n l/2`) run at once: what 2 cores give without pfs. A map worker sees the blocks whose
   middle lies in its half of the input's bytes, so the 2 shards differ by at most a block; their
   bytes are shown, and the speed-up that split allows (total bytes / the larger shard's). Each
   job's time is split as in 1, and the speed-up of the commands alone (the longest shard's
   command + unmount + upload) is shown too: the part the workers share out, without the
   start-up every job pays once. The four are timed in turn, for R rounds
   (default 3; each round's pipeline runs on a new commit of the same file), and the best of
   each is kept: on these shared machines the same run moves by 10-20%.

How: the data is generated deterministically (seeded) under /tmp. The bytecode of pfs's own
packages is brought up to date first (untimed), as an install has it, so no worker pays for
compiling a module that changed. The client side is a persistent gRPC client (pfs.client.Client)
that starts and finishes each input commit and polls the output repo, every 10 ms in 1 and every
100 ms in 2 (where the poll's own CPU, client and server, would take from the workers; the times
come from the output commit's finish, not from the poll); every second it also looks for a failed
or skipped job, which ends the run. `pfs put-file` writes the data (untimed). `sync` runs,
untimed, before each input commit is finished; before each pipeline run of 2 every file of the
server's data dir is read once too (warm page cache: the workers' mounts read the chunks from
there), and the native commands get the same (their input read once, then `sync`). Times are by
wall clock, this machine's, shared by the server, the workers and this script. The checks: each
job's shards saw every byte of the input between them, each wrote one count, and the
parallelism-1 job's count (the compressed size) is the native one's on the whole file.

Run from the repo root, as root:
    .venv/bin/python bench/pipeline.py [--size-mib 128] [--commits 10] [--rounds 3] [--chunk-kib 1024] [--keep]
"""

import argparse
import compileall
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import BIN, MB, PFS, SEED, Pfs, csv_lines, print_machine, run, scratch, timed, warm  # noqa: E402

from pfs.client import Client  # noqa: E402
from pfs.core.model import CommitInfo, CommitRef, JobInfo, JobState, ShardInfo  # noqa: E402

SHIM = str(BIN / "job-shim")
ROOT = Path(__file__).resolve().parent.parent  # the checkout, where pfs is installed from (editable)
PACKAGES = ("pfs", "shim", "server")  # what the server, its workers and their mounts run
LATENCY_INPUT = "in"
LATENCY_PIPELINE = "copy"
COPY = "cp -r /pfs/in/. /pfs/out/"
TINY_NAME = "tiny.txt"
LINES_NAME = "lines.txt"
CPU_INPUT = "lines-p{}"  # part 2's input repo and pipeline for parallelism {}
CPU_PIPELINE = "gzip-p{}"
LINES_BATCH = 10_000
GZIP = "gzip -9 -c {src} | wc -c > {dst}"
GZIP_OUT = "gzip-bytes"
# map's blocks, but each job sees the whole input (not what changed: a round's commit changes nothing)
WHOLE_BLOCKS = {"partition": "BLOCK", "incremental": "NONE"}
POLL_LATENCY = 0.01
POLL_CPU = 0.1  # the poll's own CPU (client and server) would take from the workers of a CPU-bound job
JOB_CHECK = 1.0  # seconds between looks for a failed or skipped job while polling
OUTPUT_TIMEOUT = 3600.0
GOAL_LATENCY = 0.2  # issue 17's (issue 9's was 1 s)
GOAL_SPEEDUP = 1.85
PARALLELISM = (1, 2)
PHASES = ("worker start", "mount", "command + unmount + upload", "report")


# ---------------------------------------------------------------- data and server


def write_lines(path: Path, size: int) -> int:
    """CSV-like text lines, at most `size` bytes and ending at a line end; returns the size written."""
    rng = random.Random(SEED)
    written = row = 0
    with open(path, "w") as f:
        while written < size:
            text = csv_lines(rng, row, LINES_BATCH)
            if written + len(text) > size:
                text = text[:text.rfind("\n", 0, size - written) + 1]
                if not text:
                    break
            f.write(text)
            written += len(text)
            row += LINES_BATCH
    return written


def compile_bytecode() -> None:
    """Brings the bytecode of pfs's own packages up to date, as an install has it.

    Each worker is new Python processes (job-shim, a `pfs mount` for each input and for the previous
    output); where bytecode is stale and cannot be written (PYTHONDONTWRITEBYTECODE, as set on these
    machines), each of them compiles the changed modules again, about 0.1 s a process.
    """
    for package in PACKAGES:
        if not compileall.compile_dir(ROOT / package, quiet=1):
            raise SystemExit(f"cannot compile {ROOT / package}")


@dataclass
class Server(Pfs):
    """bench/ingest.py's pfs server (without its repo `bench`), cutting new data into chunks of CHUNK_SIZE bytes."""

    chunk_size: int = 1 << 20

    def __enter__(self) -> "Server":
        self.start_server(self.store.with_name(self.store.name + ".log"), "--chunk-size", str(self.chunk_size))
        return self


def create_pipeline(server: Server, work: Path, name: str, repo: str, script: str, parallelism: int,
                    method: str | dict) -> None:
    """Makes input repo REPO and pipeline NAME running SCRIPT (sh -c) over it, with METHOD (as in a manifest)."""
    run([PFS, "create-repo", repo], server.env)
    manifest = work / f"{name}.json"
    manifest.write_text(json.dumps({
        "pipeline": {"name": name},
        "transform": {"cmd": ["sh", "-c", script]},
        "parallelism": parallelism,
        "inputs": [{"repo": {"name": repo}, "method": method}],
    }))
    run([PFS, "create-pipeline", "-f", str(manifest)], server.env)


# ---------------------------------------------------------------- measuring


@dataclass
class Run:
    """One input commit and the job and output commit a pipeline made of it, with their times."""

    finished: float  # the input commit's finish time (the server's)
    returned: float  # when finish-commit returned here
    seen: float      # when the poll saw the output commit
    output: CommitInfo
    job: JobInfo

    @property
    def seconds(self) -> float:
        return self.output.finished - self.returned

    @property
    def pickup(self) -> float:
        return self.job.started - self.finished

    @property
    def job_seconds(self) -> float:
        return self.job.finished - self.job.started

    @property
    def commit(self) -> float:
        """From the last shard's report to the output commit."""
        return self.output.finished - max(s.finished for s in self.job.shards)

    @property
    def seen_after(self) -> float:
        return self.seen - self.output.finished

    @property
    def command_seconds(self) -> float:
        """The longest shard's command + unmount + upload: the part of the job the workers share out."""
        return max(self.phases(s)[2] for s in self.job.shards)

    def phases(self, shard: ShardInfo) -> tuple[float, ...]:
        """The shard's time split as PHASES, by the server's shard times and those its worker reported."""
        return (shard.started - self.job.started, shard.mounted - shard.started, shard.uploaded - shard.mounted,
                shard.finished - shard.uploaded)


def commit_and_wait(server: Server, client: Client, repo: str, pipeline: str, put: list[str], cwd: Path,
                    warm_store: bool, poll: float) -> Run:
    """A commit on REPO holding `pfs put-file` PUT (args after the commit), finished; waits for PIPELINE's output."""
    commit = client.start_commit(repo, "master").id
    run([PFS, "put-file", repo, commit, *put], server.env, cwd)
    if warm_store:
        warm(server.store)
    os.sync()
    finished = client.finish_commit(CommitRef(repo, commit)).finished
    returned = time.time()
    output, seen = wait_output(client, pipeline, CommitRef(repo, commit), poll)
    job = next(j for j in client.list_jobs(pipeline) if j.output_commit == output.id)
    return Run(finished, returned, seen, output, job)


def wait_output(client: Client, pipeline: str, source: CommitRef, poll: float) -> tuple[CommitInfo, float]:
    """Polls PIPELINE's repo every POLL seconds until its newest commit comes from SOURCE; it, and when it was seen."""
    deadline = time.monotonic() + OUTPUT_TIMEOUT
    check = time.monotonic() + JOB_CHECK
    while True:
        newest = client.list_commits(pipeline, limit=1)
        if newest and source in newest[0].provenance:
            return newest[0], time.time()
        if time.monotonic() > check:
            for j in client.list_jobs(pipeline):
                ended = j.state in (JobState.FAILURE, JobState.SKIPPED)
                if ended and any(CommitRef(i.repo, i.commit) == source for i in j.inputs):
                    raise SystemExit(f"pipeline {pipeline}: job {j.id} for {source} ended {j.state}: {j.error or '-'}")
            if time.monotonic() > deadline:
                raise SystemExit(f"pipeline {pipeline}: no output for {source} within {OUTPUT_TIMEOUT:.0f} s")
            check = time.monotonic() + JOB_CHECK
        time.sleep(poll)


def bench_latency(server: Server, client: Client, work: Path, data_dir: Path, commits: int) -> list[Run]:
    create_pipeline(server, work, LATENCY_PIPELINE, LATENCY_INPUT, COPY, 1, "map")
    print(f"latency: {commits} commits of a tiny file into repo {LATENCY_INPUT}, pipeline {LATENCY_PIPELINE} "
          f"({COPY})", flush=True)
    runs = []
    for k in range(1, commits + 1):
        (data_dir / TINY_NAME).write_text(f"commit {k}\n")
        r = commit_and_wait(server, client, LATENCY_INPUT, LATENCY_PIPELINE, [TINY_NAME, "-o", "-f", TINY_NAME],
                            data_dir, warm_store=False, poll=POLL_LATENCY)
        print(f"  commit {k:>3}: {r.seconds:6.3f} s", flush=True)
        runs.append(r)
    return runs


@dataclass
class Cpu:
    """Part 2's times over all rounds: the native commands' and the pipelines' runs."""

    whole: list[float] = field(default_factory=list)   # native, the whole file
    halves: list[float] = field(default_factory=list)  # native, its 2 halves at once
    runs: dict[int, list[Run]] = field(default_factory=lambda: {n: [] for n in PARALLELISM})

    def best(self, parallelism: int) -> Run:
        return min(self.runs[parallelism], key=lambda r: r.seconds)


def bench_cpu(server: Server, client: Client, work: Path, lines: Path, nbytes: int, rounds: int) -> Cpu:
    """ROUNDS rounds of: the command natively on the whole file and on its halves, then each pipeline."""
    out, halves = work / "native-out", work / "native-halves"
    out.mkdir()
    halves.mkdir()
    env = dict(os.environ)
    run(["split", "-n", "l/2", str(lines), str(halves / "part-")], env)
    whole = ["sh", "-c", GZIP.format(src=lines, dst=out / "whole")]
    both = ["sh", "-c", " & ".join(GZIP.format(src=p, dst=out / p.name) for p in sorted(halves.iterdir())) + "; wait"]
    for n in PARALLELISM:
        repo = CPU_INPUT.format(n)
        create_pipeline(server, work, CPU_PIPELINE.format(n), repo,
                        GZIP.format(src=f"/pfs/{repo}/{LINES_NAME}", dst=f"/pfs/out/{GZIP_OUT}"), n, WHOLE_BLOCKS)
    print(f"CPU-bound job `{GZIP.format(src='FILE', dst=GZIP_OUT)}`, {rounds} rounds; each timed run alone, "
          "its input warm, after a sync", flush=True)
    cpu = Cpu()
    for k in range(1, rounds + 1):
        warm(lines)
        cpu.whole.append(timed(whole, env, work))
        compressed = int((out / "whole").read_text())
        warm(halves)
        cpu.halves.append(timed(both, env, work))
        for n in PARALLELISM:
            r = commit_and_wait(server, client, CPU_INPUT.format(n), CPU_PIPELINE.format(n),
                                [LINES_NAME, "-o", "-f", LINES_NAME], lines.parent, warm_store=True, poll=POLL_CPU)
            check_output(client, r, nbytes, compressed)
            cpu.runs[n].append(r)
        print(f"  round {k}: native whole file {cpu.whole[-1]:.2f} s, native 2 halves {cpu.halves[-1]:.2f} s, "
              + ", ".join(f"pipeline parallelism {n} {rs[-1].seconds:.2f} s" for n, rs in cpu.runs.items()),
              flush=True)
    return cpu


def check_output(client: Client, r: Run, nbytes: int, compressed: int) -> None:
    """The shards saw as many bytes as the input has; one positive count a shard, the native one for a single shard."""
    seen = sum(s.bytes_in for s in r.job.shards)
    if seen != nbytes:
        raise SystemExit(f"job {r.job.id}: its shards saw {seen} bytes of {nbytes}")
    counts = [int(x) for x in b"".join(client.read_file(CommitRef(r.output.repo, r.output.id), GZIP_OUT)).split()]
    if len(counts) != len(r.job.shards) or min(counts) <= 0:
        raise SystemExit(f"job {r.job.id}: output {counts}, expected one positive count per shard")
    if len(counts) == 1 and counts[0] != compressed:
        raise SystemExit(f"job {r.job.id}: output {counts[0]}, the native command's {compressed}")


# ---------------------------------------------------------------- printing


def print_latency(runs: list[Run]) -> None:
    print(f"\nlatency of pipeline {LATENCY_PIPELINE} ({COPY}, parallelism 1, over one tiny file), seconds:")
    print("  latency = finish-commit returned -> output commit finished; pickup = input commit finished -> job made;")
    print("  job = job made -> finished, split into its phases; seen after = output commit finished -> the poll saw it")
    heads = ("latency", "pickup", "job", *PHASES, "output commit", "seen after")
    print(f"  {'commit':<7}" + "".join(f" {h:>{max(8, len(h))}}" for h in heads))
    rows = [(r.seconds, r.pickup, r.job_seconds, *r.phases(r.job.shards[0]), r.commit, r.seen_after) for r in runs]
    labelled = [(str(k), row) for k, row in enumerate(rows, 1)]
    labelled += [(name, tuple(f(col) for col in zip(*rows)))
                 for name, f in (("median", statistics.median), ("min", min), ("max", max))]
    for label, row in labelled:
        print(f"  {label:<7}" + "".join(f" {v:>{max(8, len(h))}.3f}" for h, v in zip(heads, row)))


def print_cpu(nbytes: int, blocks: int, cpu: Cpu) -> None:
    one, best = cpu.best(1).seconds, [cpu.best(n) for n in PARALLELISM]
    print(f"\nCPU-bound map job `{GZIP.format(src='FILE', dst=GZIP_OUT)}` over {LINES_NAME}: {nbytes / MB:.1f} MB "
          f"of text lines, {blocks} blocks; best and worst of {len(cpu.whole)} rounds")
    print("  speed-up = the time on one core (native) or with one worker (pipeline) ÷ this time, of the best;")
    print("  ÷native = the pipeline's time ÷ the native time on as many cores (best ÷ best)")
    print(f"  {'run':<30} {'best s':>8} {'worst s':>8} {'MB/s':>7} {'speed-up':>9} {'÷native':>8}")
    print(f"  {'native, whole file':<30} {min(cpu.whole):8.2f} {max(cpu.whole):8.2f}"
          f" {nbytes / MB / min(cpu.whole):7.1f}")
    print(f"  {'native, 2 halves in parallel':<30} {min(cpu.halves):8.2f} {max(cpu.halves):8.2f}"
          f" {nbytes / MB / min(cpu.halves):7.1f} {min(cpu.whole) / min(cpu.halves):9.2f}")
    for n, native in zip(PARALLELISM, (min(cpu.whole), min(cpu.halves))):
        r, worst = cpu.best(n), max(x.seconds for x in cpu.runs[n])
        print(f"  {f'pipeline, parallelism {n}':<30} {r.seconds:8.2f} {worst:8.2f} {nbytes / MB / r.seconds:7.1f}"
              f" {one / r.seconds:9.2f} {r.seconds / native:8.2f}")
    print("\n  where the best pipeline runs' time goes, seconds (pickup, output commit and seen after as in the")
    print("  latency table; the phases per shard, from the job made; the shards run at once)")
    print(f"  {'run':<14} {'pickup':>7} {'shard':>5} {'MB in':>8} {'share':>6}"
          + "".join(f" {h:>{len(h)}}" for h in PHASES) + f" {'output commit':>13} {'seen after':>10}")
    for r in best:
        label, pickup = f"parallelism {r.job.parallelism}", f"{r.pickup:.3f}"
        tail = f" {r.commit:13.3f} {r.seen_after:10.3f}"
        for s in r.job.shards:  # the job's figures on its first shard's line
            print(f"  {label:<14} {pickup:>7} {s.index:>5} {s.bytes_in / MB:8.1f} {s.bytes_in / nbytes:6.1%}"
                  + "".join(f" {v:>{len(h)}.3f}" for h, v in zip(PHASES, r.phases(s))) + tail)
            label = pickup = tail = ""


def print_goals(latency: list[Run], cpu: Cpu, nbytes: int) -> None:
    median = statistics.median(r.seconds for r in latency)
    pickup = statistics.median(r.pickup for r in latency)
    job = statistics.median(r.job_seconds for r in latency)
    one, two = cpu.best(1), cpu.best(2)
    allowed = nbytes / max(s.bytes_in for s in two.job.shards)
    print("\ngoals")
    print(f"  latency finish-commit -> output commit, median of {len(latency)} (goal < {GOAL_LATENCY} s): "
          f"{median:.3f} s  {'MET' if median < GOAL_LATENCY else 'NOT MET'}"
          f"   (of it: pickup {pickup:.3f} s, job {job:.3f} s)")
    speedup = one.seconds / two.seconds
    print(f"  speed-up 1 -> 2 workers (goal {GOAL_SPEEDUP}): {speedup:.2f}  {'MET' if speedup >= GOAL_SPEEDUP else 'NOT MET'}"
          f"   (ideal 2; this block split allows {allowed:.2f}; native on 2 halves: "
          f"{min(cpu.whole) / min(cpu.halves):.2f}; the commands alone: {one.command_seconds / two.command_seconds:.2f})")


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=128, help="size of the text file in MiB (default 128)")
    p.add_argument("--commits", type=int, default=10, help="commits timed for the latency (default 10)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of the CPU-bound runs, each timed once a round; the best is kept (default 3)")
    p.add_argument("--chunk-kib", type=int, default=1024,
                   help="the server's average chunk size in KiB, the size of a map job's blocks (default 1024)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (data, store, server log)")
    return p.parse_args()


def bench(work: Path, args: argparse.Namespace) -> None:
    data_dir = work / "data"
    data_dir.mkdir()
    lines = data_dir / LINES_NAME
    print(f"generating {args.size_mib} MiB of text lines ...", flush=True)
    nbytes = write_lines(lines, args.size_mib << 20)
    print("bringing the bytecode of pfs's own modules up to date (untimed) ...", flush=True)
    compile_bytecode()
    with Server(work / "pfs", chunk_size=args.chunk_kib << 10) as server, \
            server.client() as client:
        latency = bench_latency(server, client, work, data_dir, args.commits)
        cpu = bench_cpu(server, client, work, lines, nbytes, args.rounds)
        blocks = len(client.inspect_file(CommitRef(CPU_INPUT.format(1), "master"), LINES_NAME).chunks)
    print_latency(latency)
    print_cpu(nbytes, blocks, cpu)
    print_goals(latency, cpu, nbytes)


def main() -> None:
    args = parse_args()
    if not Path(SHIM).exists():
        raise SystemExit(f"job-shim not found at {SHIM}; run `make setup`")
    with scratch("pfs-bench-pipeline-", args.keep) as work:
        print_machine(["gzip", "--version"])
        bench(work, args)


if __name__ == "__main__":
    main()

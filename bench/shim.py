"""Worker benchmark: a job run by `job-shim` next to the same command between local directories.

What it measures, in one run on the same machine and the same data (the large
"mixed" file of bench/ingest.py, default 1 GiB, put in repo `in` as big.bin):

1. The copy job of the issue, `cp /pfs/in/* /pfs/out/`: the worker's wall time
   from its start to its exit (mounting the input, reading it through FUSE,
   the command, uploading /pfs/out, committing), next to the same `cp` from one
   local directory to another, and the ratio (the overhead of read + upload).
   Its bytes sent are about 0: the store is content-addressed and
   deduplicated, and a copy's chunks are the input's chunks, which the server
   already has. So a copy measures the read and the chunking, not the upload.
2. So that the upload sends real data, a job whose output is new data of the
   same size: `tr` shifting every byte value by one, except the line end (the
   output has the input's lines, so it is chunked where the input is, but
   none of its chunks), timed the same way next to the same `tr` between
   local directories. Then the identical job runs a second time (into the same
   output repo, so its worker also mounts the previous output at /pfs/prev, as
   every later job's does); its bytes sent, as a share of the first run's, is
   issue 10's goal (under 1%).
3. Issue 17's goals: the tr job within 1.5x of the local tr, the cp job within
   1.3x of the local cp followed by `sync` (the cp timed, then `sync` at once,
   timed, the two added: the job's output is durable when it ends, the local
   copy's only once flushed). And for each, the job's floor on this machine,
   as bench/ingest.py measures a put-file's (Stages): the CPU seconds, on one
   core, of the stages a job cannot do without, measured in this process, spread
   over every core. Those stages: reading the input's stored chunks and unpacking
   them (bench/read.py's unpack_big, the store in the page cache as before a
   job); the command's own work (the local command's CPU seconds); storing the
   output (bench/ingest.py's stages_big on the local command's output file): for
   tr, cut, hash, compress, the server's check, send and store; for cp only cut and hash,
   since its chunks are the input's and the server says it has them all (the
   shim cuts and hashes them to find that out, and compresses and sends none).
   A goal whose time (goal x the local time) is below the floor is out of reach
   here. FUSE's own work is not in the floor, but shown beside it: the CPU
   seconds of as many bytes read through a pyfuse3 file system from memory
   (bench/read.py's deliver_big), added to the floor's. (The local cp copies in
   the kernel, with copy_file_range; the job's cp cannot, its source being a
   FUSE file, and reads and writes every byte: more CPU than the floor counts.)
   Each job's CPU seconds are shown too (the worker's, its mount's and its
   command's, and the server's).

How: each job has one worker (`parallelism` 1, method map), run as
`job-shim --job ID --shard 0 --workspace DIR` (a private mount namespace in
which DIR is /pfs: as root, or in a user namespace of its own), against a pfs server started for the
run (`--port 0`). Before each timed command the source is read once so its
page cache is warm (the local file; for a job, every file in the server's
data dir, where the mount reads the input's chunks from), and `sync` runs,
untimed. Each command is timed alone by wall clock, from process start to exit.
The worker's time is split with the times it reports in its shard (`pfs
inspect-job --raw`: `mounted`, the input mounted and the command started;
`uploaded`, the output uploaded) and the mtime of its output file (the
command's last write): start + mount, command, unmount + upload, commit +
exit. The server flushes uploaded chunks durably before answering; the local
commands' writes are not flushed (but by the sync after the local cp, in a
row of its own). The job's output file is checked to be the local
command's, byte for byte (untimed).

The cp and tr commands, and their jobs, run in rounds (--rounds, default 3),
each round against a new server whose store holds only the input (so each
first tr job sends all of its output): a single run here moves by up to a
third with what the VM's host does with its memory. Each round's rows are
printed; a goal's figure is the median of the rounds' ratios (each a job and
its local command, run moments apart). The identical rerun and the floors are
measured once, in the last round.

Run from the repo root, as root:  .venv/bin/python bench/shim.py [--size-mib 1024] [--rounds 3] [--keep]
"""

import argparse
import filecmp
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import (  # noqa: E402  (bench/ is not a package)
    BIG_NAME, BIN, MB, PFS, Dataset, Pfs, Stages, at_least_one, children_cpu, print_machine, run, scratch, stages_big,
    timed, warm, write_big_file,
)
from read import deliver_big, unpack_big  # noqa: E402

from pfs.core.memory import keep_freed_memory  # noqa: E402

SHIM = str(BIN / "job-shim")
INPUT_REPO = "in"
COPY = "cp {src}/* {dst}/"
# every byte value one up (0xff to 0x00), but 0x0a (the line end) kept: new bytes, the same lines
SHIFT = r"tr '\000-\011\013-\377' '\001-\011\013-\377\000' < {src}/" + BIG_NAME + " > {dst}/" + BIG_NAME
PHASES = ("start + mount", "command", "unmount + upload", "commit + exit")
GOAL_SENT = 0.01
GOAL_TR = 1.5  # tr job time ÷ local tr time
GOAL_CP = 1.3  # cp job time ÷ (local cp, then sync) time


# ---------------------------------------------------------------- measuring


@dataclass
class Row:
    """One timed command: a local one (bytes and phases None), or a job's worker."""

    label: str
    seconds: float
    output: Path  # the file the command wrote
    cpu: float  # CPU seconds: the local command's; for a job, its worker's, mount's, command's and server's
    local: float | None = None  # for a job: the same command between local directories
    bytes_out: int | None = None
    bytes_sent: int | None = None
    phases: tuple[float, ...] | None = None


def time_local(key: str, label: str, script: str, work: Path, data_dir: Path) -> Row:
    """SCRIPT (COPY or SHIFT) from DATA_DIR to a new local directory `local-KEY`, the source warm."""
    dst = work / f"local-{key}"
    dst.mkdir()
    warm(data_dir / BIG_NAME)
    cpu = children_cpu()
    seconds = timed(["sh", "-c", script.format(src=data_dir, dst=dst)], dict(os.environ), work)
    cpu = children_cpu() - cpu
    print(f"  {label:<28} {seconds:8.2f} s", flush=True)
    return Row(label, seconds, dst / BIG_NAME, cpu)


def then_sync(local: Row, label: str) -> Row:
    """`sync` run at once after LOCAL's command, timed: LOCAL followed by sync, its writes flushed to disk."""
    cpu = children_cpu()
    start = time.perf_counter()
    run(["sync"], dict(os.environ))
    seconds = time.perf_counter() - start
    row = Row(label, local.seconds + seconds, local.output, local.cpu + children_cpu() - cpu)
    print(f"  {row.label:<28} {row.seconds:8.2f} s (sync {seconds:.2f} s)", flush=True)
    return row


def run_job(server: Pfs, work: Path, key: str, label: str, script: str, output_repo: str, local: Row) -> Row:
    """Creates a job running SCRIPT over repo `in` and runs its one worker in workspace `ws-KEY`."""
    manifest = work / f"{key}.json"
    manifest.write_text(json.dumps({
        "transform": {"cmd": ["sh", "-c", script.format(src=f"/pfs/{INPUT_REPO}", dst="/pfs/out")]},
        "parallelism": 1,
        "inputs": [{"repo": INPUT_REPO, "commit": "master", "method": "map"}],
        "output_repo": output_repo,
    }))
    job = run([PFS, "create-job", "-f", str(manifest)], server.env).strip()
    workspace = work / f"ws-{key}"
    warm(server.store)
    os.sync()
    cpu = children_cpu() + server.daemon_cpu()  # the shim waits for its mount and command: they count as its
    start = time.time()  # wall clock, to line up with the times the worker reports
    run([SHIM, "--job", job, "--shard", "0", "--workspace", str(workspace)], server.env)
    end = time.time()
    cpu = children_cpu() + server.daemon_cpu() - cpu
    info = json.loads(run([PFS, "inspect-job", job, "--raw"], server.env))
    if info["state"] != "success":
        raise SystemExit(f"job {label} ({job}) ended {info['state']}: {info.get('error', '')}")
    shard = info["shards"][0]
    running, uploaded = shard["mounted"], shard["uploaded"]  # the worker's times: the command started, output up
    output = workspace / "out" / BIG_NAME
    written = output.stat().st_mtime
    check_output(output, local.output)
    row = Row(label, end - start, output, cpu, local.seconds, shard["bytes_out"], shard["bytes_sent"],
              (running - start, written - running, uploaded - written, end - uploaded))
    print(f"  {label:<28} {row.seconds:8.2f} s, {row.bytes_sent:,d} bytes sent, {cpu:.2f} CPU s", flush=True)
    return row


def check_output(job: Path, local: Path) -> None:
    """The job's output must be the local command's, or the two timings compare different work."""
    if not filecmp.cmp(job, local, shallow=False):
        raise SystemExit(f"{job} differs from {local}")


def floors(server: Pfs, local_cp: Row, local_tr: Row) -> tuple[Stages, Stages]:
    """The stages the cp job and the tr job cannot do without (see the module's docstring), in this process."""
    _, unpack = unpack_big(server, warm_store=True, repo=INPUT_REPO)  # as before a job: the store warm
    warm(local_cp.output)
    cp = stages_big(local_cp.output, new=False)
    warm(local_tr.output)
    tr = stages_big(local_tr.output)
    return (Stages({"input": unpack, "cp": local_cp.cpu, **cp.seconds}),
            Stages({"input": unpack, "tr": local_tr.cpu, **tr.seconds}))


# ---------------------------------------------------------------- printing


def print_table(size: int, rounds: list[list[Row]]) -> None:
    """Each round's rows."""
    print(f"\n{BIG_NAME}, {size / MB:.1f} MB: job÷local = job time ÷ the same command's local time "
          "(above 1: the job is slower);")
    print("  overhead = job time - local time: what reading through the mount and uploading add; "
          "the phases split the job's time")
    print("  CPU s: the local command's; a job's worker's, its mount's, its command's and the server's")
    print(f"  {'command':<28} {'seconds':>8} {'CPU s':>6} {'MB/s':>7} {'job÷local':>9} {'overhead s':>10}"
          f" {'out MB':>8} {'sent MB':>9} " + " ".join(f"{p:>16}" for p in PHASES))
    for n, rows in enumerate(rounds, 1):
        print(f"  round {n}")
        print_rows(size, rows)


def print_rows(size: int, rows: list[Row]) -> None:
    for r in rows:
        if r.local is None:
            print(f"  {r.label:<28} {r.seconds:8.2f} {r.cpu:6.2f} {size / MB / r.seconds:7.1f}")
            continue
        phases = " ".join(f"{p:16.2f}" for p in r.phases)
        print(f"  {r.label:<28} {r.seconds:8.2f} {r.cpu:6.2f} {size / MB / r.seconds:7.1f} {r.seconds / r.local:9.2f}"
              f" {r.seconds - r.local:10.2f} {r.bytes_out / MB:8.1f} {r.bytes_sent / MB:9.3f} {phases}")


@dataclass
class Goal:
    """Issue 17's goal for one job: the median of the rounds' job time ÷ BASELINE time at most TARGET (JOBS and
    BASELINES, a row of each round); STAGES, those of its floor; FUSE, the CPU seconds FUSE's own work takes to
    deliver the input (not in the floor)."""

    text: str
    jobs: list[Row]
    baselines: list[Row]
    target: float
    stages: Stages
    fuse: float


def print_goals(size: int, copy: Row, first: Row, second: Row, goals: list[Goal]) -> None:
    print(f"\n  the cp job sent {copy.bytes_sent:,d} bytes: its output's chunks are the input's, which the server "
          "already has (content-addressed, deduplicated), so it measures the read and the chunking, not the upload")
    print(f"  the first tr job sent {first.bytes_sent:,d} bytes ({first.bytes_sent / size:.1%} of its output: "
          f"new chunks, zstd-compressed); the identical rerun sent {second.bytes_sent:,d}")
    share = second.bytes_sent / first.bytes_sent
    cores = len(os.sched_getaffinity(0))
    print(f"\ngoals; floor: the CPU seconds, on one core, of the stages a job cannot do without, spread over {cores}"
          " cores")
    print(f"  bytes sent by the second run ÷ first run (goal < {GOAL_SENT:.0%}): {share:.3%}"
          f"  {'MET' if share < GOAL_SENT else 'NOT MET'}")
    print("  (input: its stored chunks read and unpacked; cp, tr: the local command's CPU seconds; cut, hash, compress,"
          " check: storing the output)")
    for g in goals:
        ratios = [job.seconds / baseline.seconds for job, baseline in zip(g.jobs, g.baselines)]
        ratio = statistics.median(ratios)
        print(f"  {g.text} (goal <= {g.target}): {ratio:.2f}  {'MET' if ratio <= g.target else 'NOT MET'}"
              f"   (median of the rounds' {', '.join(f'{x:.2f}' for x in ratios)})")
        median = ratios.index(statistics.median_low(ratios))
        job, baseline = g.jobs[median], g.baselines[median]
        print(f"    round {median + 1}: {job.label} {job.seconds:.2f} s using {job.cpu:.2f} CPU s; {baseline.label}"
              f" {baseline.seconds:.2f} s using {baseline.cpu:.2f}")
        floor, allowed = g.stages.floor, g.target * baseline.seconds
        print(f"    floor: ({g.stages}) ÷ {cores} = {floor:.3f} s; the goal's time {g.target} × "
              f"{baseline.seconds:.3f} = {allowed:.3f} s"
              + (" is below it, so the goal is out of reach here" if allowed < floor else " is above it"))
        with_fuse = (sum(g.stages.seconds.values()) + g.fuse) / cores
        print(f"    with FUSE's own work too ({g.fuse:.2f} CPU s for as many bytes read through a pyfuse3 file system"
              f" from memory): {with_fuse:.3f} s" + (", above the goal's time" if allowed < with_fuse else ""))
        print(f"    not in the floor: the worker reads and hashes its whole output again once the command ended"
              f" (shim/output.py, Output._intact), about another {g.stages.seconds['hash']:.2f} CPU s")


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=1024, help="size of the input file in MiB (default 1024)")
    p.add_argument("--rounds", type=at_least_one, default=3, help="rounds of the commands and their jobs (default 3)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (data, store, workspaces)")
    return p.parse_args()


def bench(work: Path, size: int, rounds: int) -> None:
    data_dir = work / "data"
    data_dir.mkdir()
    print(f"generating {size / MB:.1f} MB mixed file ...", flush=True)
    write_big_file(data_dir / BIG_NAME, size)
    print("each timed command runs alone, its source read once before (warm page cache), after a sync", flush=True)
    table: list[list[Row]] = []
    copies, synced_cps, local_trs, firsts = [], [], [], []  # each round's
    for n in range(1, rounds + 1):
        here = work / f"round-{n}"
        here.mkdir()
        with Pfs(here / "pfs") as server:  # (it also makes a repo `bench`, unused here)
            run([PFS, "create-repo", INPUT_REPO], server.env)
            start = time.perf_counter()
            run([PFS, "put-file", INPUT_REPO, "master", BIG_NAME, "-c", "-f", BIG_NAME], server.env, data_dir)
            print(f"round {n} of {rounds}: pfs put-file into repo {INPUT_REPO} (untimed setup):"
                  f" {time.perf_counter() - start:.1f} s", flush=True)
            local_cp = time_local("cp", "cp, local directories", COPY, here, data_dir)
            synced = then_sync(local_cp, "cp, local, then sync")
            copy = run_job(server, here, "cp", "cp job", COPY, "copied", local_cp)
            local_tr = time_local("tr", "tr, local directories", SHIFT, here, data_dir)
            first = run_job(server, here, "tr-1", "tr job, first run", SHIFT, "shifted", local_tr)
            table.append([local_cp, synced, copy, local_tr, first])
            copies.append(copy)
            synced_cps.append(synced)
            local_trs.append(local_tr)
            firsts.append(first)
            if n == rounds:
                second = run_job(server, here, "tr-2", "tr job, identical rerun", SHIFT, "shifted", local_tr)
                table[-1].append(second)
                print("measuring the floors' stages (CPU seconds in this process) ...", flush=True)
                cp_stages, tr_stages = floors(server, local_cp, local_tr)
                _, fuse = deliver_big(work, Dataset(BIG_NAME, size, 1))
        if n < rounds:
            shutil.rmtree(here)  # its outputs and store: the disk and page cache the next round needs
    print_table(size, table)
    print_goals(size, copy, first, second, [
        Goal("tr job time ÷ local tr time", firsts, local_trs, GOAL_TR, tr_stages, fuse),
        Goal("cp job time ÷ (local cp, then sync) time", copies, synced_cps, GOAL_CP, cp_stages, fuse),
    ])


def main() -> None:
    args = parse_args()
    if not Path(SHIM).exists():
        raise SystemExit(f"job-shim not found at {SHIM}; run `make setup`")
    if os.geteuid() != 0:
        raise SystemExit("run as root: the floors are measured with the page cache dropped first")
    keep_freed_memory()  # as the shim does: the floor's stages measured here are its
    with scratch("pfs-bench-shim-", args.keep) as work:
        print_machine(["cp", "--version"], ["tr", "--version"])
        bench(work, args.size_mib << 20, args.rounds)


if __name__ == "__main__":
    main()

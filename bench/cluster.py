"""Cluster benchmark: the metadata store's throughput, on SQLite and on PostgreSQL, in one run.

1. Commits per second: CLIENTS clients at once (threads of this process, each with a client of its own, so the
   figure is the server's and not Python's start-up), each putting COMMITS small files, each file a commit of its
   own (start-commit, put-file, finish-commit: what `put-file -c` does), on a branch of its own.
2. ListFile of a commit of FILES files: the time to list them all (recursive), the best of three.
On SQLite (the embedded default: `pfs server` alone) and on PostgreSQL (`pfs server --meta postgresql://...`, a
PostgreSQL 15 started here by tests/postgres.py), with chunks in the data dir either way.
3. Failover: two servers over that PostgreSQL and one bucket of a SeaweedFS started here (tests/seaweed.py), a
   pipeline copying its input; the server running its controller is killed (kill -9) and a commit is made
   through the other at once: the time from the kill to the pipeline's next job starting (the job's record, made
   by the other server), and to its output. ROUNDS rounds, the killed server started again between them.

Goals (issue 14): PostgreSQL within 2x of SQLite on 1 and 2; failover under 15 s.

Run from the repo root:  .venv/bin/python bench/cluster.py [--clients 8] [--commits 50] [--files 10000]
                         [--rounds 3] [--keep]
"""

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))  # tests/postgres.py: no pytest in it
import postgres  # noqa: E402
import seaweed  # noqa: E402
from ingest import PFS, Pfs, print_machine, scratch  # noqa: E402

from pfs.client.upload import into_commit  # noqa: E402
from pfs.core.model import CommitRef  # noqa: E402

REPO = "bench"
LIST_RUNS = 3


@dataclass
class Figures:
    commits_per_s: float
    list_s: float


def commits(server: Pfs, clients: int, each: int) -> float:
    """Commits per second, CLIENTS clients at once, each making EACH commits of one small file on its branch."""
    errors: list[BaseException] = []

    def client_work(i: int) -> None:
        try:
            with server.client() as client:
                for n in range(each):
                    ref = CommitRef(REPO, client.start_commit(REPO, f"c{i}", wait=60).id)
                    with into_commit(client, ref) as up:
                        up.put(f"f{n}", io.BytesIO(b"client %d commit %d\n" % (i, n)))
                    client.finish_commit(ref)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=client_work, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise SystemExit(f"a client failed: {errors[0]}")
    return clients * each / seconds


def list_files(server: Pfs, files: int) -> float:
    """The best of LIST_RUNS times to list, recursively, a commit of FILES small files (put in one commit)."""
    with server.client() as client:
        ref = CommitRef(REPO, client.start_commit(REPO, "wide").id)
        with into_commit(client, ref) as up:
            for n in range(files):
                up.put(f"d{n % 100}/f{n}", io.BytesIO(b"%d\n" % n))
        client.finish_commit(ref)
        best = float("inf")
        for _ in range(LIST_RUNS):
            start = time.perf_counter()
            listed = sum(1 for f in client.list_files(CommitRef(REPO, "wide"), recursive=True) if not f.is_dir)
            best = min(best, time.perf_counter() - start)
        if listed != files:
            raise SystemExit(f"listed {listed} files of {files}")
    return best


def measure(name: str, store: Path, options: tuple[str, ...], args: argparse.Namespace) -> Figures:
    server = Pfs(store)
    server.start_server(store.with_name(f"{store.name}.log"), *options)
    try:
        with server.client() as client:
            client.create_repo(REPO)
        figures = Figures(commits(server, args.clients, args.commits), list_files(server, args.files))
    finally:
        server.__exit__()
    print(f"  {name:<10} {figures.commits_per_s:8.1f} commits/s   list of {args.files} files {figures.list_s:6.3f} s",
          flush=True)
    return figures


PIPELINE = {"pipeline": {"name": "copy"}, "transform": {"cmd": ["sh", "-c", "cp -r /pfs/data/. /pfs/out/"]},
            "inputs": [{"repo": {"name": "data"}, "method": "global"}]}


def failover(work: Path, url: str, rounds: int) -> list[tuple[float, float]]:
    """Seconds from killing the controller's server to the next job starting on the other, and to its output,
    for each of ROUNDS rounds."""
    weed = seaweed.SeaweedFS(work / "seaweed")
    weed.start()
    servers: list[Pfs] = []
    try:
        bucket = weed.make_bucket()
        os.environ.update(weed.env)  # the servers' keys, inherited
        options = ("--meta", url, "--storage", f"s3://{bucket}/pfs", "--s3-endpoint", weed.endpoint)
        servers = [Pfs(work / name) for name in ("a", "b")]
        for s in servers:
            s.start_server(s.store.with_name(f"{s.store.name}.log"), *options)
        manifest = work / "copy.json"
        manifest.write_text(json.dumps(PIPELINE))
        pfs(servers[0], "create-repo", "data")
        pfs(servers[0], "create-pipeline", "-f", str(manifest))
        times = []
        for n in range(rounds + 1):
            pfs(servers[0], "put-file", "data", "master", f"f{n}", "-c", "-f", "-", input=b"%d\n" % n)
            pfs(servers[0], "flush-commit", "data/master")
            if n == rounds:
                break
            held = json.loads(pfs(servers[0], "inspect-pipeline", "copy", "--raw"))["controller"]
            doomed = next(s for s in servers if (s.store / "server-id").read_text().strip() == held)
            survivor = next(s for s in servers if s is not doomed)
            doomed.server.kill()
            killed = time.time()
            doomed.server.wait()
            pfs(survivor, "put-file", "data", "master", f"g{n}", "-c", "-f", "-", input=b"after %d\n" % n)
            with survivor.client() as client:
                before = len(client.list_jobs("copy"))
                while len(jobs := client.list_jobs("copy")) == before:
                    time.sleep(0.05)
            pfs(survivor, "flush-commit", "data/master")
            times.append((jobs[0].started - killed, time.time() - killed))
            print(f"  round {n + 1}: next job started {times[-1][0]:5.1f} s after the kill, its output "
                  f"{times[-1][1]:5.1f} s", flush=True)
            doomed.start_server(doomed.store.with_name(f"{doomed.store.name}.log"), *options)
            servers = [survivor, doomed]  # the survivor first: clients of the cluster reach it
        return times
    finally:
        for s in servers:
            s.__exit__()
        weed.stop()


def pfs(server: Pfs, *args: str, input: bytes | None = None) -> bytes:
    return subprocess.run([PFS, *args], env=server.env, input=input, capture_output=True, check=True).stdout


def postgres_url() -> tuple[str, object]:
    """A database on a PostgreSQL started here, in a dir of its own its user can reach, and the launcher, to close."""
    pg = postgres.PostgreSQL()
    pg.start()
    return pg.make_database(), pg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8, help="clients making commits at once (default 8)")
    p.add_argument("--commits", type=int, default=50, help="commits each client makes (default 50)")
    p.add_argument("--files", type=int, default=10_000, help="files of the listed commit (default 10000)")
    p.add_argument("--rounds", type=int, default=3, help="controllers killed in the failover run (default 3)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (stores, logs)")
    args = p.parse_args()
    if not Path(PFS).exists():
        raise SystemExit(f"pfs not found at {PFS}; run `make setup`")
    print_machine()
    with scratch("pfs-bench-cluster-", args.keep) as work:
        results = {"sqlite": measure("sqlite", work / "sqlite", (), args)}
        url, pg = postgres_url()
        try:
            results["postgresql"] = measure("postgresql", work / "postgresql", ("--meta", url), args)
            print("failover: two servers, one PostgreSQL, one SeaweedFS; the controller's server killed", flush=True)
            failovers = failover(work / "failover", pg.make_database(), args.rounds)
        finally:
            pg.close()
    print("\ngoals")
    lite, pg = results["sqlite"], results["postgresql"]
    for what, ratio in (("commits/s", lite.commits_per_s / pg.commits_per_s), ("ListFile", pg.list_s / lite.list_s)):
        print(f"  {what}, PostgreSQL within 2x of SQLite: {ratio:.2f}x  {'MET' if ratio <= 2 else 'NOT MET'}")
    worst = max(t for t, _ in failovers)
    print(f"  failover of a controller under 15 s: {min(t for t, _ in failovers):.1f}-{worst:.1f} s to the next job "
          f"({args.rounds} rounds)  {'MET' if worst < 15 else 'NOT MET'}")


if __name__ == "__main__":
    main()

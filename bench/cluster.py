"""Cluster benchmark: the metadata store's throughput, on SQLite and on PostgreSQL, in one run.

1. Commits per second: CLIENTS clients at once (threads of this process, each with a client of its own, so the
   figure is the server's and not Python's start-up), each putting COMMITS small files, each file a commit of its
   own (start-commit, put-file, finish-commit: what `put-file -c` does), on a branch of its own.
2. ListFile of a commit of FILES files: the time to list them all (recursive), the best of three.
On SQLite (the embedded default: `pfs server` alone) and on PostgreSQL (`pfs server --meta postgresql://...`, a
PostgreSQL 15 started here by tests/postgres.py), with chunks in the data dir either way.

Goal (issue 14): PostgreSQL within 2x of SQLite on both. The time from a controller's server being killed to its
pipeline's next job starting on another server is not measured: controllers do not fail over yet.

Run from the repo root:  .venv/bin/python bench/cluster.py [--clients 8] [--commits 50] [--files 10000] [--keep]
"""

import argparse
import io
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))  # tests/postgres.py: no pytest in it
import postgres  # noqa: E402
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
        finally:
            pg.close()
    print("\ngoals")
    lite, pg = results["sqlite"], results["postgresql"]
    for what, ratio in (("commits/s", lite.commits_per_s / pg.commits_per_s), ("ListFile", pg.list_s / lite.list_s)):
        print(f"  {what}, PostgreSQL within 2x of SQLite: {ratio:.2f}x  {'MET' if ratio <= 2 else 'NOT MET'}")
    print("  failover of a controller under 15 s: not measured (controllers do not fail over yet)")


if __name__ == "__main__":
    main()

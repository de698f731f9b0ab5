"""Makes a small real store with the code it runs in, as a fixture for tests/test_migration.py: a newer server
must open it. Run it from a checkout of the commit whose stores are to be opened, then check the archive in:

    .venv/bin/python tests/make_old_store.py sqlite tests/data/store-sqlite.tar.gz
    .venv/bin/python tests/make_old_store.py postgres tests/data/store-postgres.tar.gz

(as root with /dev/fuse: the pipeline's jobs run on the local runner). The store holds repos, commits with files
(small ones, kept in chunks.db, and one past the small-chunk limit, kept as a chunk file), a second branch, an open
commit, and a pipeline with two finished jobs and their logs. The archive has the server's data dir without its
lock, token and workers (sqlite: meta.db and the chunks; postgres: the chunks, and the database as pg_dump's SQL in
dump.sql) and manifest.json: what a server must show of it, each file by its SHA-256.
"""

import hashlib
import json
import pathlib
import random
import subprocess
import sys
import tarfile
import tempfile
from contextlib import nullcontext

from conftest import Server
from pfs.core.model import CommitRef
from postgres import BIN, PostgreSQL

LEFT_OUT = ("LOCK", "token", "workers")  # the data dir's, not the store's
PIPELINE = {"pipeline": {"name": "big"}, "parallelism": 2, "inputs": [{"repo": {"name": "sales"}, "method": "map"}],
            "transform": {"cmd": ["sh", "-c", "echo working on $(ls /pfs/sales | wc -l) files; "
                                  "for f in /pfs/sales/*; do awk -F, '$2 >= 5' \"$f\" >> /pfs/out/big.csv; done"]}}


def fill(server: Server, tmp: pathlib.Path) -> None:
    """What the store holds: everything through the CLI, as a user makes it."""
    r = random.Random(14)

    def put(repo: str, ref: str, path: str, data: bytes, *flags: str) -> None:
        server.pfs("put-file", repo, ref, path, *flags, "-f", "-", input=data)

    server.pfs("create-repo", "images", "-d", "made by tests/make_old_store.py")
    put("images", "master", "a.txt", b"first line\n", "-c")
    put("images", "master", "raw/big.bin", r.randbytes(200_000), "-c")  # a chunk file of its own
    server.pfs("set-branch", "images", "master", "dev")
    put("images", "master", "a.txt", b"second line\n", "-c")  # appended
    put("images", "master", "raw/small.bin", r.randbytes(30_000), "-c")
    put("images", "dev", "dev-only.txt", b"on dev\n", "-c")
    wip = server.pfs("start-commit", "images", "wip").text.strip()  # left open
    put("images", wip, "draft.txt", b"not finished\n")
    server.pfs("create-repo", "sales")
    put("sales", "master", "monday.csv", b"apple,3\npear,12\nfig,1\nplum,30\n", "-c")
    (tmp / "big.json").write_text(json.dumps(PIPELINE))
    server.pfs("create-pipeline", "-f", str(tmp / "big.json"))
    server.pfs("flush-commit", "sales/master")
    put("sales", "master", "tuesday.csv", b"apple,7\nkiwi,2\npear,15\n", "-c")
    server.pfs("flush-commit", "sales/master")


def manifest(server: Server) -> dict:
    """What a server shows of the store: branches, commits, every file of every commit, pipelines, jobs, logs."""
    with server.client() as c:
        repos = {}
        for repo in c.list_repos():
            commits = []
            for info in reversed(c.list_commits(repo.name)):
                ref = CommitRef(repo.name, info.id)
                files = {f.path: hashlib.sha256(b"".join(c.read_file(ref, f.path))).hexdigest()
                         for f in c.list_files(ref, recursive=True) if not f.is_dir}
                commits.append({"id": info.id, "parent": info.parent, "branch": info.branch,
                                "finished": info.is_finished, "files": files})
            repos[repo.name] = {"description": repo.description, "commits": commits,
                                "branches": {b.name: b.head for b in c.list_branches(repo.name)}}
        jobs = [{"id": j.id, "pipeline": j.pipeline, "state": j.state, "output_commit": j.output_commit,
                 "logs": [line.text for line in c.get_logs(job_id=j.id)]}
                for j in reversed(c.list_jobs())]
        assert len(jobs) == 2 and all(j["state"] == "success" and j["logs"] for j in jobs), jobs
        return {"made_by": commit_of_checkout(), "repos": repos,
                "pipelines": [p.name for p in c.list_pipelines()], "jobs": jobs}


def commit_of_checkout() -> str:
    here = pathlib.Path(__file__).parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "../server", "../pfs"], cwd=here,
                           capture_output=True, text=True, check=True).stdout
    return head.stdout.strip() + (" (with local changes)" if dirty else "")


def main(backend: str, out: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir, (PostgreSQL() if backend == "postgres" else nullcontext()) as pg:
        tmp = pathlib.Path(tmp_dir)
        data = tmp / "data"
        url = pg.make_database() if pg else None
        server = Server(data, args=("--meta", url) if url else ())
        server.start()
        try:
            fill(server, tmp)
            found = manifest(server)
        finally:
            server.stop()
        with tarfile.open(out, "w:gz") as tar:
            for path in sorted(data.iterdir()):
                if path.name not in LEFT_OUT:
                    tar.add(path, f"data/{path.name}")
            if url:
                subprocess.run([BIN / "pg_dump", "--no-owner", "--no-privileges", "-f", tmp / "dump.sql", url],
                               check=True)
                tar.add(tmp / "dump.sql", "dump.sql")
            (tmp / "manifest.json").write_text(json.dumps(found, indent=1) + "\n")
            tar.add(tmp / "manifest.json", "manifest.json")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("sqlite", "postgres"):
        sys.exit(f"usage: {sys.argv[0]} sqlite|postgres OUT.tar.gz")
    main(sys.argv[1], pathlib.Path(sys.argv[2]))

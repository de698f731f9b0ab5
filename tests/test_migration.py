"""A newer server opens a store an older one made (issue 14, item 1): the stores in tests/data, made by
tests/make_old_store.py at schema version 1, one in SQLite and one in PostgreSQL (restored from pg_dump's SQL into
a fresh database). A server started on a copy upgrades the schema by its steps, shows every repo, branch, commit and
file byte for byte, and the pipeline with its jobs and logs; then new commits and a new job work on it."""

import hashlib
import json
import pathlib
import sqlite3
import subprocess
import tarfile

import psycopg
import pytest

from conftest import Server, needs, run_pfs
from pfs.core.model import CommitRef, JobState
from postgres import BIN
from server.meta.sql import STEPS

DATA = pathlib.Path(__file__).parent / "data"
OLD_VERSION = 1  # of the stores in tests/data


class OldStore:
    """A copy of a store in tests/data, and a server (not started) on it."""

    def __init__(self, request: pytest.FixtureRequest, backend: str, tmp: pathlib.Path) -> None:
        with tarfile.open(DATA / f"store-{backend}.tar.gz") as tar:
            tar.extractall(tmp)  # our own archive
        self.manifest = json.loads((tmp / "manifest.json").read_text())
        self.url = None
        if backend == "postgres":
            self.url = request.getfixturevalue("postgres").make_database()
            restore = [BIN / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", tmp / "dump.sql", self.url]
            subprocess.run(list(map(str, restore)), check=True, capture_output=True)
        self.server = Server(tmp / "data", args=("--meta", self.url) if self.url else ())
        self._meta_db = tmp / "data" / "meta.db"

    def set_version(self, version: int) -> None:
        if self.url is None:
            with sqlite3.connect(self._meta_db) as db:
                db.execute(f"PRAGMA user_version = {version}")
            return
        with psycopg.connect(self.url) as db:
            db.execute("UPDATE schema_version SET version = %s", (version,))

    def version(self) -> int:
        """The schema version the store is at."""
        if self.url is None:
            db = sqlite3.connect(self._meta_db)
            try:
                return db.execute("PRAGMA user_version").fetchone()[0]
            finally:
                db.close()
        with psycopg.connect(self.url) as db:
            return db.execute("SELECT version FROM schema_version").fetchone()[0]


@pytest.fixture(params=["sqlite", "postgres"])
def old(request, tmp_path):
    store = OldStore(request, request.param, tmp_path)
    assert store.version() == OLD_VERSION < len(STEPS), "the fixture is not older than this code"
    store.server.start()
    try:
        yield store
    finally:
        store.server.stop()


def test_a_newer_server_shows_everything_an_older_one_stored(old):
    assert old.version() == len(STEPS)  # upgraded at start
    with old.server.client() as c:
        assert sorted(r.name for r in c.list_repos()) == sorted(old.manifest["repos"])
        for name, repo in old.manifest["repos"].items():
            assert c.inspect_repo(name).description == repo["description"]
            assert {b.name: b.head for b in c.list_branches(name)} == repo["branches"]
            assert [i.id for i in reversed(c.list_commits(name))] == [x["id"] for x in repo["commits"]]
            for commit in repo["commits"]:
                ref = CommitRef(name, commit["id"])
                info = c.inspect_commit(ref)
                assert (info.parent, info.branch, info.is_finished) == \
                    (commit["parent"], commit["branch"], commit["finished"])
                files = {f.path: hashlib.sha256(b"".join(c.read_file(ref, f.path))).hexdigest()
                         for f in c.list_files(ref, recursive=True) if not f.is_dir}
                assert files == commit["files"]
        assert [p.name for p in c.list_pipelines()] == old.manifest["pipelines"]
        jobs = [{"id": j.id, "pipeline": j.pipeline, "state": j.state, "output_commit": j.output_commit,
                 "logs": [line.text for line in c.get_logs(job_id=j.id)]} for j in reversed(c.list_jobs())]
        assert jobs == old.manifest["jobs"]


@pytest.mark.slow  # the local runner's workers
@needs("fusermount3", "setpriv", root=True, fuse=True)
def test_new_commits_and_jobs_on_an_older_store(old):
    images = old.manifest["repos"]["images"]
    wip = images["branches"]["wip"]
    old.server.pfs("put-file", "images", wip, "draft.txt", "-f", "-", input=b"finished by the new server\n")
    old.server.pfs("finish-commit", "images", wip)
    assert old.server.pfs("get-file", "images", "wip", "draft.txt").stdout == \
        b"not finished\nfinished by the new server\n"
    old.server.pfs("put-file", "images", "master", "a.txt", "-c", "-f", "-", input=b"third line\n")
    assert old.server.pfs("get-file", "images", "master", "a.txt").stdout == b"first line\nsecond line\nthird line\n"

    old.server.pfs("put-file", "sales", "master", "wednesday.csv", "-c", "-f", "-", input=b"apple,100\nfig,2\n")
    old.server.pfs("flush-commit", "sales/master")
    with old.server.client() as c:
        jobs = c.list_jobs("big")
        # one new job, for the new commit: the old ones' inputs are not run again
        assert [j.id for j in jobs[1:]] == [j["id"] for j in reversed(old.manifest["jobs"])]
        assert jobs[0].state == JobState.SUCCESS
        assert jobs[0].inputs[0].commit == c.inspect_commit(CommitRef("sales", "master")).id
    assert sorted(old.server.pfs("get-file", "big", "master", "big.csv").stdout.splitlines()) == \
        sorted(b"pear,12\nplum,30\napple,7\npear,15\napple,100\n".splitlines())


def test_an_older_store_checks_clean_and_collects_its_garbage(old):
    """What an older store holds was never touched (0): still, all its commits reach is kept."""
    before = old.server.pfs("check", "--read-data").text
    assert before.rstrip().endswith("no problems")
    commits = old.manifest["repos"]["images"]["branches"]
    with old.server.client() as c:
        c.delete_commit(CommitRef("images", commits["dev"]))  # garbage: dev-only.txt
        freed = list(c.garbage_collect(grace=0.0))[-1]
    assert freed.objects > 0 and freed.chunks > 0
    assert old.server.pfs("check", "--read-data").text.rstrip().endswith("no problems")
    assert old.server.pfs("get-file", "images", "master", "a.txt").stdout == b"first line\nsecond line\n"


def test_a_store_a_newer_pfs_wrote_is_refused_in_one_line(old):
    """Its trees may be stored in a way this pfs cannot read (as paged directories were to the pfs before them)."""
    old.server.stop()
    old.set_version(len(STEPS) + 1)
    refused = run_pfs("server", "--data-dir", str(old.server.data_dir), "--port", "0", *old.server.args, check=False)
    assert refused.returncode != 0 and refused.stderr.strip().splitlines() == [
        f"pfs server: the metadata store is at version {len(STEPS) + 1}, written by a newer pfs (this one knows "
        f"{len(STEPS)}): run that pfs, or a later one"]
    assert old.version() == len(STEPS) + 1  # left as it was

"""The controller's reconcile loop in this process, over a real store (PostgreSQL) and real workers: a try running under
another live server is left to it; once that server is gone, the try is lost and tried again here."""

import pytest

from conftest import needs, wait_for
from pfs.core.model import CommitRef, InputSpec, PipelineInfo, PipelineSpec, ShardState, Transform
from server.meta.postgres import PostgresMetaStore
from server.pps.controller import IDLE_WAIT, Controller
from server.pps.jobs import Jobs
from server.pps.leases import Leases
from server.pps.runners import LocalRunner
from server.storage.local import LocalChunkStore
from server.store import Store

pytestmark = [pytest.mark.slow, needs("setpriv", root=True)]  # real workers

NOWHERE = "127.0.0.1:1"  # no server: this test's workers fail, which is all it needs of them


@pytest.fixture
def store(tmp_path, postgres):
    """A store of a cluster: on PostgreSQL (a server alone on SQLite knows no other server lives)."""
    meta = PostgresMetaStore(postgres.make_database())
    s = Store(LocalChunkStore(tmp_path), meta, 1 << 20)
    yield s
    meta.close()


def test_a_try_under_another_live_server_is_never_taken_for_lost(store, tmp_path):
    store.create_repo("data")
    commit = store.start_commit("data")
    store.finish_commit(CommitRef("data", commit.id))
    inputs = (InputSpec("data", "master", "global"),)
    spec = PipelineSpec("p", Transform(("true",)), inputs)
    with store.meta.transaction() as tx:  # the job for the commit is made already
        tx.put_pipeline(PipelineInfo(spec, 0.0, processed=(("data", commit.id),)))
        tx.beat("other", NOWHERE, 3600)
    jobs = Jobs(store, lambda: 1)
    job = jobs.make_job("j" * 32, spec.transform, [(i, "") for i in inputs], 1, "p", "p", max_attempts=3)
    jobs.launch_shard(job.id, 0, "other", lambda tx: None)  # its worker runs under server "other"
    controller = Controller(store, jobs, LocalRunner(NOWHERE, tmp_path / "workers"), Leases(store.meta, "me", NOWHERE))
    controller.start()
    try:
        wait_for(lambda: controller.leases.held() == ["p"], 10)
        store.notify_finished()
        controller.store.wait_finished(3 * IDLE_WAIT)  # turns go by
        shard = jobs.inspect_job(job.id).shards[0]
        assert (shard.state, shard.attempts, shard.server) == (ShardState.RUNNING, 1, "other")
        with store.meta.transaction() as tx:
            tx.drop_server("other")  # it stopped
        store.notify_finished()
        shard = wait_for(lambda: (s := jobs.inspect_job(job.id).shards[0]).attempts > 1 and s, 10)
        assert shard.server == "me"  # tried again here
    finally:
        controller.close()


def test_a_worker_that_dies_before_reporting_leaves_its_last_lines_in_the_jobs_logs(store, tmp_path, monkeypatch):
    """Its try fails saying how it ended, and get-logs shows what it printed: it sent none of it."""
    monkeypatch.setenv("PFS_SERVER_WAIT", "0")  # its workers' (the runner passes them its environment): no waiting
    store.create_repo("data")
    commit = store.start_commit("data")
    store.finish_commit(CommitRef("data", commit.id))
    spec = PipelineSpec("p", Transform(("true",)), (InputSpec("data", "master", "global"),))
    with store.meta.transaction() as tx:
        tx.put_pipeline(PipelineInfo(spec, 0.0))
    jobs = Jobs(store, lambda: 1)
    # its workers report to NOWHERE: each prints why it cannot, and exits 2 (job-shim could not do its part)
    controller = Controller(store, jobs, LocalRunner(NOWHERE, tmp_path / "workers"), Leases(store.meta, "me", NOWHERE))
    controller.start()
    try:
        job = wait_for(lambda: (js := jobs.list_jobs("p")) and js[0].is_done and js[0], 60)
    finally:
        controller.close()
    shard = job.shards[0]
    assert shard.attempts == 3
    assert shard.error.startswith("its worker exited with status 2 without reporting: job-shim: "), shard.error
    lines = [x.text for page in jobs.logs(job.id) for x in page if x.stream == "shim"]
    said = "job-shim: its worker exited with status 2 without reporting; the last lines it printed:"
    assert lines.count(said) == 3  # once a try
    assert lines[lines.index(said) + 1].startswith("job-shim: ") and NOWHERE in "\n".join(lines)

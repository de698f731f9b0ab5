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

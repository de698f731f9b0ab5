"""Several servers as one cluster: two `pfs server`s over one PostgreSQL database and one S3 bucket answer any call,
and each pipeline's controller runs on exactly one of them, moving to the other when its server dies (kill -9) or
is paused past its lease (SIGSTOP). Real PostgreSQL, real SeaweedFS, real workers."""

import json
import signal

import pytest
import xxhash

from conftest import Server, needs, run_pfs, s3_server, wait_for
from test_pipelines import jobs_of, pipeline, put, repo_input

pytestmark = [pytest.mark.slow, needs("fusermount3", "setpriv", root=True, fuse=True)]  # real workers


@pytest.fixture
def cluster(tmp_path, seaweed, postgres):
    """Two servers, a and b, on one database and one bucket."""
    url, bucket = postgres.make_database(), seaweed.make_bucket()
    servers = [s3_server(seaweed, tmp_path / name, args=("--meta", url), bucket=bucket) for name in ("a", "b")]
    for s in servers:
        s.start()
    try:
        yield servers
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGCONT)  # a test that failed with a server paused
            s.stop()


def server_id(server: Server) -> str:
    return (server.data_dir / "server-id").read_text().strip()


def controller(server: Server, name: str) -> str:
    """The id of the server running pipeline NAME's controller, as SERVER tells it ('' : none now)."""
    return json.loads(server.pfs("inspect-pipeline", name, "--raw").text)["controller"]


def other(servers: list[Server], one: Server) -> Server:
    return next(s for s in servers if s is not one)


def output_commits(server: Server, repo: str) -> list[str]:
    with server.client() as client:
        return [c.id for c in client.list_commits(repo)]


def test_two_servers_are_one_store_with_one_controller_per_pipeline(cluster, tmp_path):
    a, b = cluster
    for one, other_one in ((a, b), (b, a)):  # each server's token is a root token of the cluster: it calls either
        wait_for(lambda: run_pfs("auth", "whoami", check=False,
                                 env={"PFS_ADDRESS": other_one.address, "PFS_TOKEN": one.token}).text == "root\n", 10)
    put(a, "data", {"x": b"1\n"})
    assert b.pfs("get-file", "data", "master", "x").stdout == b"1\n"
    pipeline(b, tmp_path, "p", ["sh", "-c", "cp /pfs/data/x /pfs/out/x"], [repo_input("data", "global")])
    a.pfs("flush-commit", "data/master")
    assert b.pfs("get-file", "p", "master", "x").stdout == b"1\n"
    ids = {server_id(a), server_id(b)}
    held = wait_for(lambda: controller(a, "p"), 30)
    assert held in ids and controller(b, "p") == held
    assert f"Controller: {held}\n" in a.pfs("inspect-pipeline", "p").text


def reduce_names() -> tuple[str, str]:
    """Two top-level names that a reduce over 2 workers gives to different shards: (slow, fast)."""
    def shard(name: str) -> int:
        return xxhash.xxh3_64_intdigest(name.encode()) % 2
    fast = next(n for n in (f"fast{i}" for i in range(100)) if shard(n) != shard("slow"))
    return "slow", fast


def test_a_killed_controller_s_job_is_finished_by_the_other_server_keeping_its_finished_shards(cluster, tmp_path,
                                                                                            host_dir):
    slow, fast = reduce_names()
    marker = host_dir / "slept"
    # the worker that sees SLOW sleeps on its first try only; every worker copies what it sees
    cmd = ["sh", "-c", f"cp -r /pfs/data/. /pfs/out/; if [ -e /pfs/data/{slow} ] && [ ! -e {marker} ]; "
                       f"then touch {marker}; sleep 1000; fi"]
    a, b = cluster
    put(a, "data", {slow: b"s\n", fast: b"f\n"})
    pipeline(a, tmp_path, "p", cmd, [repo_input("data", "reduce")], parallelism=2)
    wait_for(marker.exists, 60)
    with a.client() as client:
        [job] = client.list_jobs("p")
        wait_for(lambda: any(s.state == "success" for s in client.inspect_job(job.id).shards), 60)
    held = wait_for(lambda: controller(a, "p"), 30)
    doomed = next(s for s in cluster if server_id(s) == held)
    survivor = other(cluster, doomed)
    doomed.kill()
    survivor.pfs("flush-commit", "data/master")
    assert survivor.pfs("get-file", "p", "master", slow).stdout == b"s\n"
    assert survivor.pfs("get-file", "p", "master", fast).stdout == b"f\n"
    with survivor.client() as client:
        [job] = client.list_jobs("p")  # the same job, resumed: not a second one
        assert job.state == "success"
        tries = sorted(s.attempts for s in job.shards)
        assert tries == [1, 2], job.shards  # the finished shard kept, the lost one tried again
        lost = next(s for s in job.shards if s.attempts == 2)
        assert lost.server == server_id(survivor)
    assert len(output_commits(survivor, "p")) == 1  # the output made once
    assert controller(survivor, "p") == server_id(survivor)
    put(survivor, "data", {"more": b"m\n"}, create=False)  # and the pipeline goes on there
    survivor.pfs("flush-commit", "data/master")
    assert survivor.pfs("get-file", "p", "master", "more").stdout == b"m\n"


def test_a_server_paused_past_its_lease_never_runs_the_pipeline_beside_the_one_that_took_it(cluster, tmp_path):
    a, b = cluster
    put(a, "data", {"1": b"1\n"})
    pipeline(a, tmp_path, "p", ["sh", "-c", "cp -r /pfs/data/. /pfs/out/"], [repo_input("data", "global")])
    a.pfs("flush-commit", "data/master")
    held = wait_for(lambda: controller(a, "p"), 30)
    paused = next(s for s in cluster if server_id(s) == held)
    taker = other(cluster, paused)
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: controller(taker, "p") == server_id(taker), 60)
        put(taker, "data", {"2": b"2\n"}, create=False)
        taker.pfs("flush-commit", "data/master")
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    put(paused, "data", {"3": b"3\n"}, create=False)  # the paused server serves again, as one of two
    paused.pfs("flush-commit", "data/master")
    put(taker, "data", {"4": b"4\n"}, create=False)
    taker.pfs("flush-commit", "data/master")
    for name in "1234":
        assert taker.pfs("get-file", "p", "master", name).stdout == f"{name}\n".encode()
    jobs = jobs_of(taker, "p")
    seen = [tuple(i.commit for i in j["inputs"]) for j in jobs]
    assert len(seen) == len(set(seen)) == 4, seen  # one job per input commit: never two controllers at once
    assert all(j["state"] == "success" for j in jobs)
    assert len(output_commits(taker, "p")) == 4
    assert controller(paused, "p") == server_id(taker)  # the lease stayed where it went
    said = paused.log.read_text()
    assert "pipeline p: this server no longer holds its lease; its controller stops here" in said, said[-3000:]


def test_a_server_that_comes_back_gets_its_share_of_the_pipelines_again(cluster, tmp_path):
    """With one server stopped, the other runs every pipeline's controller; once it is back, the one holding more
    than its share gives the rest up, and the two run half each."""
    a, b = cluster
    put(a, "data", {"x": b"1\n"})
    names = [f"p{i}" for i in range(4)]
    for name in names:
        pipeline(a, tmp_path, name, ["sh", "-c", "cp /pfs/data/x /pfs/out/x"], [repo_input("data", "global")])
    b.stop()  # its leases go with it (and would expire if it had been killed)
    wait_for(lambda: all(controller(a, n) == server_id(a) for n in names), 30)
    b.start()
    wait_for(lambda: sorted(controller(a, n) for n in names) == sorted([server_id(a), server_id(b)] * 2), 60)
    put(b, "data", {"x": b"2\n"}, create=False)
    a.pfs("flush-commit", "data/master")
    assert [a.pfs("get-file", n, "master", "x").stdout for n in names] == [b"1\n2\n"] * 4  # put-file appends


def test_a_server_that_would_not_be_one_with_its_cluster_stops_in_one_line(cluster, tmp_path, seaweed):
    """Each of these lost data or failed jobs without a word: another --storage than the cluster's (its puts
    unreadable through the others), another --gc-grace (a collection by the shorter one freed the others'
    uploads), a copy of a live server's data dir (two controllers under one id), another cluster's chunks (its
    collection freed them)."""
    from test_s3_errors import refused

    a, _ = cluster
    url = a.args[a.args.index("--meta") + 1]
    storage = a.args[a.args.index("--storage") + 1]
    bucket = storage.removeprefix("s3://").partition("/")[0]
    elsewhere = s3_server(seaweed, tmp_path / "c", args=("--meta", url))
    assert f"this cluster's chunks are in {storage}, as its database says" in refused(elsewhere)
    shorter = s3_server(seaweed, tmp_path / "d", args=("--meta", url, "--gc-grace", "60"), bucket=bucket)
    assert "collect garbage with --gc-grace 3600.0, not 60" in refused(shorter)
    copy = tmp_path / "e"
    copy.mkdir()
    (copy / "server-id").write_text(server_id(a))
    clone = s3_server(seaweed, copy, args=("--meta", url), bucket=bucket)
    assert f"server id {server_id(a)!r} (the data dir's server-id) is a live server's" in refused(clone)
    other_cluster = s3_server(seaweed, tmp_path / "f", bucket=bucket)  # a database of its own
    assert f"{storage} holds the chunks of another pfs cluster" in refused(other_cluster)
    put(a, "data", {"x": b"1\n"})  # the cluster is as it was
    assert a.pfs("get-file", "data", "master", "x").stdout == b"1\n"

"""Pipelines on a real server with the local runner: real job-shim workers, each in its own /pfs."""

import itertools
import json
import os
import random
import signal
import subprocess
import time

import pytest

from conftest import PFS, assert_one_line_error, documents, needs, processes, stop_process, wait_for
from pfs.core.model import CommitRef, FileWrite, JobState
from server.pps.runners import WORKERS_PER_CORE

pytestmark = [pytest.mark.slow,  # the local runner's workers, as for test_shim
              needs("fusermount3", "setpriv", root=True, fuse=True)]


def put(server, repo: str, files: dict[str, bytes], create: bool = True) -> str:
    """A finished commit on REPO's master holding FILES; its id."""
    if create:
        server.pfs("create-repo", repo, check=False)
    commit = server.pfs("start-commit", repo).text.strip()
    for path, data in files.items():
        server.pfs("put-file", repo, commit, path, "-f", "-", input=data)
    server.pfs("finish-commit", repo, commit)
    return commit


def pipeline(server, tmp_path, name: str, cmd, inputs, parallelism=1, check=True, **extra):
    """Creates pipeline NAME; PARALLELISM None: none given (say, a parallelism_spec in EXTRA)."""
    manifest = {"pipeline": {"name": name}, "transform": {"cmd": cmd}, "inputs": inputs, **extra,
                **({} if parallelism is None else {"parallelism": parallelism})}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(manifest))
    return server.pfs("create-pipeline", "-f", str(path), check=check)


def repo_input(name: str, method="map", **extra):
    return {"repo": {"name": name}, "method": method, **extra}


def flush(server, *refs: str, check=True):
    return server.pfs("flush-commit", *refs, check=check)


def get(server, repo: str, path: str, ref="master") -> bytes:
    return server.pfs("get-file", repo, ref, path).stdout


def jobs_of(server, name: str) -> list[dict]:
    with server.client() as c:
        return [{"id": j.id, "state": j.state, "inputs": j.inputs, "error": j.error} for j in c.list_jobs(name)]


SALES = {
    "monday.csv": b"apple,3\npear,12\nfig,1\nplum,30\n",
    "tuesday.csv": b"apple,7\nkiwi,2\npear,15\n",
}
FILTER = ["sh", "-c", "for f in /pfs/sales/*; do awk -F, '$2 >= 5' \"$f\" >> /pfs/out/big.csv; done"]
SUM = ["sh", "-c", "awk -F, '{s += $2} END {print s}' /pfs/big/big.csv > /pfs/out/total"]


def test_filter_then_sum_over_sales_runs_on_every_commit(server, tmp_path):
    put(server, "sales", SALES)
    pipeline(server, tmp_path, "big", FILTER, [repo_input("sales")])
    pipeline(server, tmp_path, "total", SUM, [repo_input("big", "global")])
    table = flush(server, "sales/master").text
    assert "big" in table and "total" in table and "success" in table
    assert get(server, "total", "total") == b"64\n"  # 12 + 30 + 7 + 15

    put(server, "sales", {"wednesday.csv": b"apple,100\nfig,2\n"}, create=False)
    flush(server, "sales/master")
    assert get(server, "total", "total") == b"164\n"
    assert sorted(get(server, "big", "big.csv").splitlines()) == sorted(
        b"pear,12\nplum,30\napple,7\npear,15\napple,100\n".splitlines())
    with server.client() as c:  # provenance runs back through the chain
        total = c.inspect_commit(CommitRef("total", "master"))
        head = c.inspect_commit(CommitRef("sales", "master"))
        assert CommitRef("sales", head.id) in total.provenance
        assert len(c.list_commits("total")) == 2


def test_word_count_over_many_files(server, tmp_path):
    rng = random.Random(3)
    words = ["pfs", "pipeline", "commit", "repo", "chunk", "shard"]
    files = {f"doc{i:02d}.txt": " ".join(rng.choice(words) for _ in range(rng.randrange(50, 400))).encode() + b"\n"
             for i in range(40)}
    put(server, "docs", files)
    count = ["sh", "-c", "cat /pfs/docs/* | tr -s ' ' '\\n' | grep -v '^$' | sort | uniq -c "
                         "| awk '{print $2, $1}' > /pfs/out/counts"]
    add = ["sh", "-c", "awk '{n[$1] += $2} END {for (w in n) print w, n[w]}' /pfs/wc/counts | sort > /pfs/out/total"]
    pipeline(server, tmp_path, "wc", count, [repo_input("docs", "reduce")], parallelism=3)
    pipeline(server, tmp_path, "wc-total", add, [repo_input("wc", "global")])
    flush(server, "docs/master")
    expected = {}
    for text in files.values():
        for w in text.split():
            expected[w.decode()] = expected.get(w.decode(), 0) + 1
    got = dict(line.split() for line in get(server, "wc-total", "total").decode().splitlines())
    assert {w: int(n) for w, n in got.items()} == expected


@pytest.mark.parametrize("method, storage", [("map", "local"), ("reduce", "local"), ("global", "local"),
                                             ("map", "s3")])  # and the workers reading chunks from the bucket
def test_each_method_gives_the_same_result_at_parallelism_1_to_4(server, tmp_path, method):
    rng = random.Random(5)
    files = {f"f{i}.txt": b"".join(f"{rng.randrange(10**6)} line {j}\n".encode() for j in range(rng.randrange(1, 900)))
             for i in range(6)}
    put(server, "data", files)
    # per file: its lines upper-cased (map: each worker appends its blocks; the multiset of lines is what counts)
    cmd = ["sh", "-c", "cd /pfs/data && for f in *; do tr a-z A-Z < \"$f\" >> /pfs/out/\"$f\"; done"]
    for n in range(1, 5):
        pipeline(server, tmp_path, f"up{n}", cmd, [repo_input("data", method)], parallelism=n)
    jobs = flush(server, "data/master").text
    assert jobs.count("success") == 4, jobs
    results = []
    for n in range(1, 5):
        results.append({path: sorted(get(server, f"up{n}", path).splitlines()) for path in files})
    assert results[0] == {p: sorted(d.upper().splitlines()) for p, d in files.items()}
    assert all(r == results[0] for r in results[1:])
    with server.client() as c:
        shards = [len(c.list_jobs(f"up{n}")[0].shards) for n in range(1, 5)]
    assert shards == ([1, 1, 1, 1] if method == "global" else [1, 2, 3, 4])


def test_a_coefficient_parallelism_runs_a_worker_per_core(server, tmp_path):
    """COEFFICIENT 1.0 on the local runner: as many workers as this machine has cores (or the input has parts)."""
    cores = os.cpu_count()
    put(server, "docs", {f"doc{i}.txt": b"x\n" for i in range(cores + 1)})
    pipeline(server, tmp_path, "count", ["sh", "-c", "ls /pfs/docs | wc -l > /pfs/out/seen-$PFS_SHARD"],
             [repo_input("docs", "reduce")], parallelism=None,
             parallelism_spec={"strategy": "COEFFICIENT", "coefficient": 1.0})
    put(server, "few", {"a.txt": b"x\n"})
    pipeline(server, tmp_path, "one", ["true"], [repo_input("few", "reduce")], parallelism=None,
             parallelism_spec={"strategy": "COEFFICIENT", "coefficient": 1.0})
    flush(server, "docs/master")
    flush(server, "few/master")
    with server.client() as c:
        job = c.list_jobs("count")[0]
        assert (job.state, job.parallelism, len(job.shards)) == ("success", cores, cores)
        job = c.list_jobs("one")[0]  # one file: one part
        assert (job.state, job.parallelism, len(job.shards)) == ("success", cores, 1)
    assert "Parallelism: coefficient 1 (of the runner's capacity)" in server.pfs("inspect-pipeline", "count").text


def test_a_pipeline_follows_the_branch_its_input_names(server, tmp_path):
    """An input with `branch` dev gets a job for each commit on dev, none for commits on master."""
    put(server, "sales", {"m1.csv": b"1\n"})
    pipeline(server, tmp_path, "dev-copy", ["sh", "-c", "cp /pfs/sales/* /pfs/out/"],
             [repo_input("sales", branch="dev")])
    dev = []
    for name in ("d1", "d2"):
        commit = server.pfs("start-commit", "sales", "dev").text.strip()
        server.pfs("put-file", "sales", commit, f"{name}.csv", "-f", "-", input=b"2\n")
        server.pfs("finish-commit", "sales", commit)
        dev.append(commit)
        put(server, "sales", {f"m-{name}.csv": b"3\n"}, create=False)  # and one on master after each
        assert "success" in flush(server, f"sales@{commit}").text
    assert flush(server, "sales/master").text.count("\n") == 1  # no pipeline reads master: no jobs to wait for
    assert [j["inputs"][0].commit for j in jobs_of(server, "dev-copy")] == dev[::-1]
    assert server.pfs("list-file", "dev-copy", "master").text.count(".csv") == 2
    assert "sales@dev" in server.pfs("inspect-pipeline", "dev-copy").text


def test_incremental_map_sees_only_new_data_and_builds_on_its_output(server, tmp_path):
    seen = ["sh", "-c", "cat /pfs/log/* | wc -l > /pfs/out/seen-$PACH_LOG_COMMIT_ID; cat /pfs/log/* >> /pfs/out/all"]
    put(server, "log", {"a.txt": b"1\n2\n"})
    pipeline(server, tmp_path, "inc", seen, [repo_input("log")])
    flush(server, "log/master")
    second = put(server, "log", {"a.txt": b"3\n", "b.txt": b"4\n5\n6\n"}, create=False)  # appended, and a new file
    flush(server, "log/master")
    third = put(server, "log", {"c.txt": b"7\n"}, create=False)
    flush(server, "log/master")
    assert get(server, "inc", f"seen-{second}") == b"4\n"  # 3, 4, 5, 6: only what the commit added
    assert get(server, "inc", f"seen-{third}") == b"1\n"
    assert sorted(get(server, "inc", "all").split()) == [str(i).encode() for i in range(1, 8)]
    assert [j["state"] for j in jobs_of(server, "inc")] == [JobState.SUCCESS] * 3


def test_a_pipeline_over_two_inputs_joins_the_latest_of_each(server, tmp_path):
    put(server, "orders", {"o.csv": b"1,apple\n2,pear\n3,apple\n"})
    put(server, "prices", {"p.csv": b"apple,3\npear,5\n"})
    join = ["sh", "-c", "awk -F, 'NR == FNR {p[$1] = $2; next} {print $1, p[$2]}' /pfs/prices/p.csv "
                        "/pfs/orders/o.csv | sort > /pfs/out/priced"]
    pipeline(server, tmp_path, "priced", join, [repo_input("orders", "reduce"), repo_input("prices", "global")])
    flush(server, "orders/master")
    assert get(server, "priced", "priced") == b"1 3\n2 5\n3 3\n"
    put(server, "prices", {"p.csv": b"apple,4\npear,5\n"}, create=False)  # overwrites: a new price list
    server.pfs("start-commit", "prices")  # an open commit is never an input
    flush(server, "prices/master^")
    assert get(server, "priced", "priced") == b"1 4\n2 5\n3 4\n"


PAIRS = ["sh", "-c", 'for a in /pfs/va/*; do for b in /pfs/vb/*; do echo "$(cat $a) x $(cat $b)"; done; done '
                    '>> /pfs/out/pairs']


def test_each_commit_of_either_input_is_new_to_exactly_one_job(server, tmp_path):
    """Commits of two inputs, arriving while no job runs, each make a job of their own, in the order they
    finished, each seeing the other input as the job before did (as in 1.x); none is folded into another's job,
    and flush-commit of each returns."""
    a1, b1 = put(server, "va", {"a1": b"a1\n"}), put(server, "vb", {"b1": b"b1\n"})
    pipeline(server, tmp_path, "pairs", PAIRS, [repo_input("va"), repo_input("vb", "global")])
    flush(server, "vb/master")
    server.pfs("stop-pipeline", "pairs")
    b2 = put(server, "vb", {"b2": b"b2\n"}, create=False)
    a2 = put(server, "va", {"a2": b"a2\n"}, create=False)
    b3 = put(server, "vb", {"b3": b"b3\n"}, create=False)
    server.pfs("start-pipeline", "pairs")
    for ref in (f"vb/{b2}", f"va/{a2}", f"vb/{b3}"):
        flush(server, ref)
    seen = [tuple(i.commit for i in j["inputs"]) for j in reversed(jobs_of(server, "pairs"))]
    assert seen == [(a1, b1), (a1, b2), (a2, b2), (a2, b3)]
    assert sorted(get(server, "pairs", "pairs").splitlines()) == [
        f"{a} x {b}".encode() for a in ("a1", "a2") for b in ("b1", "b2", "b3")]


def test_an_input_commit_taken_off_its_branch_leaves_the_output_as_the_input_is(server, tmp_path):
    """A branch set back, or its head deleted: the pipeline runs once more on the input's head, afresh, not every
    commit from the first again (which appended them to an incremental output twice), and then goes on."""
    cat = ["sh", "-c", "cd /pfs/bk && for f in *; do cat $f >> /pfs/out/$f; done"]
    for i in (1, 2, 3):
        put(server, "bk", {"data": f"line {i}\n".encode()}, create=i == 1)
        if i == 1:
            pipeline(server, tmp_path, "bkmap", cat, [repo_input("bk")])
        flush(server, "bk/master")

    def caught_up(jobs: int) -> bytes:
        wait_for(lambda: len(js := jobs_of(server, "bkmap")) == jobs and all(j["state"] is JobState.SUCCESS
                                                                             for j in js), 30)
        assert get(server, "bkmap", "data") == get(server, "bk", "data")
        return get(server, "bk", "data")

    server.pfs("set-branch", "bk", "master~1", "master")
    assert caught_up(4) == b"line 1\nline 2\n"
    put(server, "bk", {"data": b"line 3\n"}, create=False)
    flush(server, "bk/master")
    server.pfs("delete-commit", "bk", "master")
    assert caught_up(6) == b"line 1\nline 2\n"
    put(server, "bk", {"data": b"line 4\n"}, create=False)
    flush(server, "bk/master")
    assert caught_up(7) == b"line 1\nline 2\nline 4\n"


def test_a_pipeline_made_again_in_a_deleted_one_s_name_starts_its_output_afresh(server, tmp_path):
    """The jobs of the deleted pipeline stay, but are not the new one's: it does not add to their output."""
    cat = ["sh", "-c", "cat /pfs/rc/* >> /pfs/out/all"]
    put(server, "rc", {"a": b"1\n"})
    put(server, "rc", {"b": b"2\n"}, create=False)
    for _ in range(2):
        pipeline(server, tmp_path, "again", cat, [repo_input("rc")])
        flush(server, "rc/master")
        assert sorted(get(server, "again", "all").split()) == [b"1", b"2"]
        server.pfs("delete-pipeline", "again")


def test_flush_commit_returns_when_a_pipeline_upstream_skipped_its_job(server, tmp_path):
    """A skipped job makes no output commit, so the pipelines after it get no job for the commit either."""
    put(server, "sk", {"x": b"1\n"})
    pipeline(server, tmp_path, "ska", ["sh", "-c", "cp /pfs/sk/* /pfs/out/"], [repo_input("sk")])
    pipeline(server, tmp_path, "skb", ["sh", "-c", "cp /pfs/ska/* /pfs/out/"], [repo_input("ska", "global")])
    flush(server, "sk/master")
    put(server, "sk", {}, create=False)  # nothing new
    result = server.pfs("flush-commit", "sk/master")
    assert "skipped" in result.text
    assert [j["state"] for j in jobs_of(server, "ska")] == [JobState.SKIPPED, JobState.SUCCESS]


def test_a_pipeline_s_output_master_is_its_jobs_and_its_repo_goes_only_with_it(server, tmp_path):
    """A commit left open there would fail every job after it (its /pfs/prev is open); deleting the repo would
    fail the pipeline's next job and those reading it. Both are refused in one line while the pipeline is."""
    server.pfs("create-repo", "src")
    pipeline(server, tmp_path, "made", ["true"], [repo_input("src")])
    assert_one_line_error(server.pfs("start-commit", "made", check=False),
                          "repo 'made' is the output of pipeline 'made'", "pfs delete-pipeline made")
    assert_one_line_error(server.pfs("delete-repo", "made", check=False), "delete the pipeline first")
    server.pfs("start-commit", "made", "notes")  # another branch is the user's
    assert_one_line_error(server.pfs("delete-branch", "made", "master", check=False),
                          "made@master is where pipeline 'made' commits", "pfs delete-pipeline made")
    server.pfs("start-commit", "src")
    assert_one_line_error(server.pfs("delete-branch", "src", "master", check=False),
                          "src@master is an input of pipeline made", "--force")
    server.pfs("delete-branch", "src", "master", "--force")
    server.pfs("delete-pipeline", "made")
    server.pfs("delete-repo", "made")


def test_flush_commit_of_a_failing_pipeline_names_the_job(server, tmp_path):
    put(server, "data", {"x": b"x\n"})
    pipeline(server, tmp_path, "bad", ["sh", "-c", "echo trying; echo no space left >&2; exit 3"],
             [repo_input("data")])
    pipeline(server, tmp_path, "after", ["true"], [repo_input("bad")])
    result = flush(server, "data/master", check=False)
    [job] = jobs_of(server, "bad")
    assert_one_line_error(result, f"job {job['id']} of pipeline bad failed", "exited with code 3")
    info = json.loads(server.pfs("inspect-job", job["id"], "--raw").text)
    assert info["state"] == "failure" and info["shards"][0]["attempts"] == 3
    assert "no space left" in info["error"]
    assert server.pfs("list-commit", "bad").text.count("\n") <= 1  # no output commit
    assert jobs_of(server, "after") == []
    logs = server.pfs("get-logs", "--pipeline", "bad").text
    assert logs.splitlines().count("trying") == 3 and "no space left" in logs
    assert server.pfs("get-logs", "--pipeline", "bad", "--job", job["id"]).text == logs  # pachctl's both


def test_update_stop_start_and_delete(server, tmp_path):
    put(server, "data", {"x": b"hello\n"})
    pipeline(server, tmp_path, "p", ["sh", "-c", "cp /pfs/data/x /pfs/out/x"], [repo_input("data", "global")])
    flush(server, "data/master")
    upper = {"pipeline": {"name": "p"}, "transform": {"cmd": ["sh", "-c", "tr a-z A-Z < /pfs/data/x > /pfs/out/x"]},
             "inputs": [repo_input("data", "global")]}
    path = tmp_path / "p2.json"
    path.write_text(json.dumps(upper))
    server.pfs("update-pipeline", "-f", str(path), "--reprocess")
    wait_for(lambda: get(server, "p", "x") == b"HELLO\n", 60)
    info = json.loads(server.pfs("inspect-pipeline", "p", "--raw").text)
    assert info["version"] == 2

    server.pfs("stop-pipeline", "p")
    put(server, "data", {"x": b"again\n"}, create=False)
    with server.client() as c:
        count = len(c.list_jobs("p"))
        assert "stopped" in server.pfs("list-pipeline").text
        server.pfs("start-pipeline", "p")
        flush(server, "data/master")
        assert len(c.list_jobs("p")) == count + 1
    assert get(server, "p", "x") == b"HELLO\nAGAIN\n"
    server.pfs("delete-pipeline", "p")
    assert_one_line_error(server.pfs("inspect-pipeline", "p", check=False), "pipeline 'p' not found")
    assert get(server, "p", "x") == b"HELLO\nAGAIN\n"  # the output repo stays
    assert len(server.pfs("list-job", "-p", "p").text.splitlines()) == count + 2  # and its jobs, with a heading


def test_stop_job_kills_its_workers_and_its_pipeline_goes_on(server, tmp_path):
    """pachctl's stop-job: the job fails, saying so, its worker is killed, and the next commit gets its job."""
    put(server, "data", {"x": b"slow\n"})
    slow = [b"sleep", b"3517"]
    pipeline(server, tmp_path, "p", ["sh", "-c", '[ "$(cat /pfs/data/x)" = slow ] && sleep 3517; cp /pfs/data/x '
             '/pfs/out/x'], [repo_input("data", "global")])
    wait_for(lambda: any(cmd[:2] == slow for _, cmd in processes()), 60)
    [job] = jobs_of(server, "p")
    server.pfs("stop", "job", job["id"])  # pachctl 1.9's words
    [stopped] = jobs_of(server, "p")
    assert stopped["state"] == JobState.FAILURE and "stopped by stop-job" in stopped["error"]
    wait_for(lambda: not any(cmd[:2] == slow for _, cmd in processes()), 30)
    assert_one_line_error(server.pfs("stop-job", job["id"], check=False), f"job {job['id']} has already ended "
                          "(failure): there is nothing to stop")
    assert_one_line_error(server.pfs("stop-job", "0" * 32, check=False), "not found")
    put(server, "data", {"x": b"fast\n"}, create=False)  # appended
    flush(server, "data/master")
    assert get(server, "p", "x") == b"slow\nfast\n"


def test_flush_commit_of_several_commits_and_delete_pipeline_all_as_pachctl(server, tmp_path):
    """pachctl's `flush-commit A/master B/master` waits for the jobs downstream of each, and lists each job once;
    `delete-pipeline --all --delete-repo` deletes every pipeline, then their output repos (the inputs stay);
    delete-repo --all deletes every repo it may; delete-all, after a y, every pipeline and repo."""
    put(server, "a", {"x": b"1\n"})
    put(server, "b", {"x": b"2\n"})
    copy = ["sh", "-c", "cat /pfs/*/x > /pfs/out/x"]
    pipeline(server, tmp_path, "pa", copy, [repo_input("a", "global")])
    pipeline(server, tmp_path, "pab", copy, [repo_input("a", "global"), repo_input("b", "global")])
    rows = [row.split() for row in flush(server, "a/master", "b/master").text.splitlines()[1:]]
    assert sorted((r[0], r[2]) for r in rows) == [("pa", "success"), ("pab", "success")], rows
    assert get(server, "pab", "x") == b"1\n2\n"
    assert sorted(p["spec"]["name"] for p in documents(server.pfs("list-pipeline", "--raw").text)) == ["pa", "pab"]
    assert [j["state"] for j in documents(server.pfs("list-job", "-p", "pab", "--raw").text)] == ["success"]
    assert_one_line_error(server.pfs("delete-pipeline", check=False), "give a PIPELINE, or --all")
    server.pfs("delete-pipeline", "--all", "--delete-repo")
    assert server.pfs("list-pipeline").text.count("\n") == 1  # a heading
    assert sorted(row.split()[0] for row in server.pfs("list-repo").text.splitlines()[1:]) == ["a", "b"]
    assert_one_line_error(server.pfs("delete-all", input=b"n\n", check=False), "nothing deleted", "echo y")
    assert server.pfs("list-repo").text.count("\n") == 3
    pipeline(server, tmp_path, "pa", copy, [repo_input("a", "global")])
    server.pfs("create-repo", "c")
    assert_one_line_error(server.pfs("delete-repo", "--all", check=False), "pfs delete-repo a --force",
                          "repo 'pa' is the output of pipeline 'pa'")  # and the others are deleted
    assert sorted(row.split()[0] for row in server.pfs("list-repo").text.splitlines()[1:]) == ["a", "pa"]
    server.pfs("delete-all", input=b"y\n")  # pachctl's: every pipeline, then every repo
    assert server.pfs("list-pipeline").text.count("\n") == server.pfs("list-repo").text.count("\n") == 1


def test_flush_commit_waits_for_a_job_that_saw_both_a_repo_and_the_output_computed_from_it(server, tmp_path):
    """The Beginner Tutorial's shape: montage reads images and edges (computed from images). Two commits in a row,
    then flush-commit of the second: montage's job counts once it saw that commit and edges' output of it, not an
    earlier job that saw the commit beside an older output of edges."""
    put(server, "img", {"a0": b"a0\n"})
    pipeline(server, tmp_path, "up", ["sh", "-c", "for f in /pfs/img/*; do tr a-z A-Z < $f > /pfs/out/${f##*/}; done"],
             [repo_input("img", "reduce")])
    pipeline(server, tmp_path, "mont", ["sh", "-c", "sleep 0.5; cat /pfs/img/* /pfs/up/* > /pfs/out/m"],
             [repo_input("img", "global"), repo_input("up", "global")])
    flush(server, "img/master")
    for r in range(3):
        put(server, "img", {f"a{r + 1}": b"a%d\n" % (r + 1)}, create=False)
        put(server, "img", {f"b{r + 1}": b"b%d\n" % (r + 1)}, create=False)
        flush(server, "img@master")
        names = sorted(f"{x}{i}" for i in range(r + 2) for x in "ab" if (x, i) != ("b", 0))
        assert get(server, "mont", "m") == b"".join(b"%s\n" % n.encode() for n in names) + \
            b"".join(b"%s\n" % n.upper().encode() for n in names)


def test_flush_commit_after_a_reprocess_waits_for_the_jobs_downstream_of_the_new_output(server, tmp_path):
    """update-pipeline --reprocess runs a commit again; flush-commit of it waits for the pipelines reading that
    pipeline's output to see the new output, not their older job, which saw the older one (a stopped one is named)."""
    put(server, "data", {"x": b"hello\n"})
    pipeline(server, tmp_path, "p1", ["sh", "-c", "cp /pfs/data/x /pfs/out/x"], [repo_input("data", "global")])
    pipeline(server, tmp_path, "p2", ["sh", "-c", "cp /pfs/p1/x /pfs/out/x"], [repo_input("p1", "global")])
    flush(server, "data/master")
    assert get(server, "p2", "x") == b"hello\n"
    server.pfs("stop-pipeline", "p2")
    upper = {"pipeline": {"name": "p1"}, "transform": {"cmd": ["sh", "-c", "tr a-z A-Z < /pfs/data/x > /pfs/out/x"]},
             "inputs": [repo_input("data", "global")]}
    (tmp_path / "upper.json").write_text(json.dumps(upper))
    server.pfs("update-pipeline", "-f", str(tmp_path / "upper.json"), "--reprocess")
    assert_one_line_error(flush(server, "data/master", check=False), "pipeline p2 is stopped")
    assert get(server, "p1", "x") == b"HELLO\n"
    server.pfs("start-pipeline", "p2")
    flush(server, "data/master")
    assert get(server, "p2", "x") == b"HELLO\n"


def test_run_empty(server, tmp_path):
    put(server, "data", {"x": b"1\n"})
    pipeline(server, tmp_path, "quiet", ["sh", "-c", "echo ran > /pfs/out/r-$PACH_DATA_COMMIT_ID"],
             [repo_input("data")])
    pipeline(server, tmp_path, "eager", ["sh", "-c", "echo ran > /pfs/out/r-$PACH_DATA_COMMIT_ID"],
             [repo_input("data", run_empty=True)])
    flush(server, "data/master")
    empty = put(server, "data", {}, create=False)  # nothing new
    flush(server, "data/master")
    assert [j["state"] for j in jobs_of(server, "quiet")] == [JobState.SKIPPED, JobState.SUCCESS]
    assert [j["state"] for j in jobs_of(server, "eager")] == [JobState.SUCCESS] * 2
    assert get(server, "eager", f"r-{empty}") == b"ran\n"
    put(server, "data", {"y": b"2\n"}, create=False)
    gone = server.pfs("start-commit", "data").text.strip()  # only a deletion, and an empty directory: no file new
    server.pfs("delete-file", "data", gone, "x")
    with server.client() as c:
        c.put_files(CommitRef("data", gone), [FileWrite("d", (), directory=True)])
    server.pfs("finish-commit", "data", gone)
    flush(server, "data/master")
    assert [j["state"] for j in jobs_of(server, "quiet")] == [JobState.SKIPPED, JobState.SUCCESS, JobState.SKIPPED,
                                                             JobState.SUCCESS]
    assert [j["state"] for j in jobs_of(server, "eager")] == [JobState.SUCCESS] * 4


def test_a_server_restarted_during_a_job_finishes_it_once(server, tmp_path):
    put(server, "data", {"x": b"1\n2\n3\n"})
    slow = ["sh", "-c", "sleep 2; cat /pfs/data/x >> /pfs/out/x"]
    pipeline(server, tmp_path, "slow", slow, [repo_input("data", "global")])
    wait_for(lambda: jobs_of(server, "slow"), 30)
    server.kill()
    server.start()
    flush(server, "data/master")
    [job] = jobs_of(server, "slow")
    assert job["state"] is JobState.SUCCESS
    assert get(server, "slow", "x") == b"1\n2\n3\n"  # once, not twice
    with server.client() as c:
        assert len(c.list_commits("slow")) == 1


@pytest.mark.parametrize("manifest, fragments", [
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "inputs": [{"repo": {"name": "nope"}}]},
     ["inputs[0].repo", "repo 'nope' not found"]),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "inputs": [{"repo": {"name": "data"}}], "egres": 1},
     ["field egres", "unknown field"]),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "inputs": [{"repo": {"name": "data"}}], "egress": 1},
     ["field egress", "a 1.x field pfs does not read", "get-file -r"]),  # told apart from a typo
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "inputs": [{"repo": {"name": "data"}}],
      "job_timeout": "10 minutes"}, ["field job_timeout", 'expected a duration such as "30s"', "got '10 minutes'"]),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "inputs": [{"repo": {"name": "data"}}],
      "datumTimeout": True}, ["field datum_timeout", "expected a duration", "got a boolean"]),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "inputs": [{"repo": {"name": "data"}}],
      "datum_tries": "x"}, ["field datum_tries", "expected a whole number"]),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "inputs": [{"repo": {"name": "data"}, "glob": "/*"}]},
     ["inputs[0].glob", '"method": "reduce"']),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
      "inputs": [{"repo": {"name": "data"}, "method": {"partition": "ROW"}}]}, ["inputs[0].method.partition", "ROW"]),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
      "inputs": [{"repo": {"name": "data"}, "method": {"incremental": None}}]},
     ["inputs[0].method.incremental", "got null"]),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "inputs": [{"repo": {"name": "data"}}],
      "parallelism": "many"}, ["field parallelism", "whole number"]),
    ({"pipeline": {"name": "a b"}, "transform": {"cmd": ["true"]}, "inputs": [{"repo": {"name": "data"}}]},
     ["pipeline.name"]),
    ({"transform": {"cmd": ["true"]}, "inputs": [{"repo": {"name": "data"}}]}, ["field pipeline", "missing"]),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "inputs": []}, ["field inputs", "empty"]),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "inputs": [{"repo": {"name": "p"}}]},
     ["its own output"]),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]}, "input": {"pfs": {"repo": "data", "glob": "/*"}}},
     ["field input", "1.4 and later", '"inputs": [{"repo": {"name": "data"}, "method": "reduce"}]', 'glob "/": global']),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
      "input": {"cross": [{"pfs": {"repo": "data", "glob": "/"}}]}}, ["field input", '{"name": "REPO"}']),
    ({"pipeline": {"name": "p"}, "transform": {"cmd": ["sh"], "stdin": ["echo " + "x" * 1000] * 300},
      "inputs": [{"repo": {"name": "data"}}]}, ["field transform", "301803 bytes", "more than the 262144"]),
])
def test_bad_manifests_are_refused_naming_the_field(server, tmp_path, manifest, fragments):
    server.pfs("create-repo", "data")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(manifest))
    assert_one_line_error(server.pfs("create-pipeline", "-f", str(path), check=False), *fragments)


def test_pipeline_errors(server, tmp_path):
    server.pfs("create-repo", "data")
    pipeline(server, tmp_path, "p", ["true"], [repo_input("data")])
    assert_one_line_error(pipeline(server, tmp_path, "p", ["true"], [repo_input("data")], check=False),
                          "pipeline 'p' already exists")
    assert_one_line_error(pipeline(server, tmp_path, "q", ["true"], [repo_input("p")], check=False, parallelism=0),
                          "parallelism")
    pipeline(server, tmp_path, "q", ["true"], [repo_input("p")])
    cycle = tmp_path / "cycle.json"
    cycle.write_text(json.dumps({"pipeline": {"name": "p"}, "transform": {"cmd": ["true"]},
                                 "inputs": [repo_input("q")]}))
    assert_one_line_error(server.pfs("update-pipeline", "-f", str(cycle), check=False), "cycle")
    missing = tmp_path / "r.json"
    missing.write_text(json.dumps({"pipeline": {"name": "r"}, "transform": {"cmd": ["true"]},
                                   "inputs": [repo_input("data")]}))
    assert_one_line_error(server.pfs("update-pipeline", "-f", str(missing), check=False), "pipeline 'r' not found")
    for verb in ("inspect-pipeline", "delete-pipeline", "stop-pipeline", "start-pipeline"):
        assert_one_line_error(server.pfs(verb, "nope", check=False), "pipeline 'nope' not found")
    assert_one_line_error(flush(server, "data", check=False), "REPO/BRANCH")
    assert_one_line_error(flush(server, "nope/master", check=False), "repo 'nope' not found")
    assert "recorded, not used" in server.pfs("inspect-pipeline", "p").text
    limited = tmp_path / "limited.json"
    limited.write_text(json.dumps({"pipeline": {"name": "limited"}, "transform": {"cmd": ["true"]},
                                   "inputs": [repo_input("data")], "resource_limits": {"memory": "64M", "gpu": 1}}))
    server.pfs("create-pipeline", "-f", str(limited))  # a 1.x user's limits are said not to hold here, not ignored
    assert ("Resources: limits memory 64M, gpu 1 nvidia.com/gpu (recorded, not used: only the kubernetes runner "
            "gives workers resources; this server's runner is local)") in server.pfs("inspect-pipeline", "limited").text


def test_a_full_incremental_input_shows_whole_changed_files(server, tmp_path):
    put(server, "log", {"a.txt": b"1\n2\n", "b.txt": b"b\n"})
    seen = ["sh", "-c", "cd /pfs/log && for f in *; do echo \"$f $(wc -l < $f)\"; done > /pfs/out/seen-$PACH_LOG_COMMIT_ID"]
    pipeline(server, tmp_path, "full", seen, [repo_input("log", {"partition": "FILE", "incremental": "FULL"})])
    first = server.client().inspect_commit(CommitRef("log", "master")).id
    flush(server, "log/master")
    second = put(server, "log", {"a.txt": b"3\n"}, create=False)  # appended to a.txt; b.txt unchanged
    flush(server, "log/master")
    assert get(server, "full", f"seen-{first}") == b"a.txt 2\nb.txt 1\n"
    assert get(server, "full", f"seen-{second}") == b"a.txt 3\n"


def spare_workers(server) -> list[int]:
    """The pids of the spare workers (job-shim --standby) reporting to SERVER."""
    return [pid for pid, args in processes() if b"--standby" in args and server.address.encode() in args
            and not args[0].endswith(b"setpriv")]


def test_a_job_with_a_worker_on_every_core_gets_its_spares_only_once_a_worker_ends(server, tmp_path, host_dir):
    """Spares start while a core is free: started meanwhile, they would take cycles from a job that has every core."""
    cores = os.cpu_count()
    put(server, "data", {f"f{i}": b"x\n" for i in range(cores)})
    # the workers hold on until the test has looked for spares (a file it makes where their user can see it)
    release = host_dir / "looked"
    cmd = ["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.05; done; cp -r /pfs/data/. /pfs/out/"]
    pipeline(server, tmp_path, "wide", cmd, [repo_input("data")], parallelism=cores)
    workers = wait_for(lambda: [pid for pid, args in processes() if b"--job" in args
                                and server.address.encode() in args] or None, 60)
    assert len(workers) >= 1
    time.sleep(1)  # a spare started with the workers would be there by now
    assert not spare_workers(server)
    release.touch()
    flush(server, "data/master")
    assert len(wait_for(lambda: spares if len(spares := spare_workers(server)) == cores else None, 30)) == cores


def test_the_local_runner_gives_the_next_shard_to_a_spare_worker(server, tmp_path):
    put(server, "data", {"a": b"1\n"})
    pipeline(server, tmp_path, "copy", ["sh", "-c", "cp -r /pfs/data/. /pfs/out/; chrt -p $$ > /pfs/out/policy"],
             [repo_input("data")])
    flush(server, "data/master")
    spare = wait_for(lambda: spare_workers(server), 30)  # started once the first job had its worker
    assert len(spare) == 1  # as many as the job had workers
    if os.geteuid() == 0:  # it waits taking no CPU a worker wants
        assert os.sched_getscheduler(spare[0]) == os.SCHED_IDLE
    put(server, "data", {"b": b"2\n"}, create=False)
    flush(server, "data/master")
    assert get(server, "copy", "b") == b"2\n" and get(server, "copy", "a") == b"1\n"
    assert b"SCHED_OTHER" in get(server, "copy", "policy")  # given its shard, it runs as any worker
    assert spare[0] not in wait_for(lambda: spare_workers(server), 30)  # it took the shard; another waits now
    server.stop()
    assert not spare_workers(server)


def test_a_file_of_several_manifests_makes_each_pipeline_as_in_1x(server, tmp_path):
    """create-pipeline -f of manifests one after another (a chain in one file): each made, in order; one bad
    manifest among them makes none, naming which; create-job takes one."""
    put(server, "data", {"x": b"1\n"})
    first = {"pipeline": {"name": "a"}, "transform": {"cmd": ["cp", "/pfs/data/x", "/pfs/out/x"]},
             "inputs": [repo_input("data")]}
    second = {"pipeline": {"name": "b"}, "transform": {"cmd": ["cp", "/pfs/a/x", "/pfs/out/y"]},
              "inputs": [repo_input("a")]}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(first) + "\n" + json.dumps({**second, "parallelism": 0}))
    assert_one_line_error(server.pfs("create-pipeline", "-f", str(bad), check=False), "manifest 2 of 2:",
                          "parallelism")
    assert server.pfs("list-pipeline").text.splitlines()[1:] == []
    chain = tmp_path / "chain.json"
    chain.write_text(json.dumps(first, indent=2) + "\n" + json.dumps(second, indent=2) + "\n")
    server.pfs("create-pipeline", "-f", str(chain))
    flush(server, "data/master")
    assert get(server, "b", "y") == b"1\n"
    assert_one_line_error(server.pfs("create-job", "-f", str(chain), check=False), "holds 2 manifests")


def test_a_machine_runs_at_most_four_workers_a_core_at_once_and_the_rest_after(server, tmp_path, host_dir):
    """A parallelism beyond what the machine's runner has room for (WORKERS_PER_CORE a core): every shard runs,
    never more at once than the room."""
    put(server, "data", {f"f{i}": b"%d\n" % i for i in range(40)})
    room = WORKERS_PER_CORE * (os.cpu_count() or 1)
    log = host_dir / "log"
    cmd = ["sh", "-c", f"echo + >> {log}; sleep 0.3; echo - >> {log}; cp -r /pfs/data/. /pfs/out/"]
    pipeline(server, tmp_path, "wide", cmd, [repo_input("data")], parallelism=room + 4)
    flush(server, "data/master")
    marks = log.read_text().split()
    assert marks.count("+") == room + 4
    at_once = max(itertools.accumulate(1 if m == "+" else -1 for m in marks))
    assert 1 < at_once <= room, at_once
    assert len(server.pfs("list-file", "wide", "master").text.splitlines()) == 41  # and a header


def test_a_command_past_the_datum_timeout_is_killed_and_its_try_fails(server, tmp_path):
    put(server, "data", {"x": b"1\n"})
    pipeline(server, tmp_path, "slow", ["sh", "-c", "echo started; sleep 41.75"], [repo_input("data")],
             datum_timeout="1s", datum_tries=2)
    result = flush(server, "data/master", check=False)
    [job] = jobs_of(server, "slow")
    assert_one_line_error(result, f"job {job['id']} of pipeline slow failed: shard 0 failed (2 tries)",
                          "sh ran longer than the datum_timeout (1s) and was killed")
    info = json.loads(server.pfs("inspect-job", job["id"], "--raw").text)
    assert info["shards"][0]["attempts"] == 2 and info["datum_timeout"] == 1.0
    assert not any(args[:2] == [b"sleep", b"41.75"] for _, args in processes())  # nor what it started
    assert "Limits: 2 tries a shard; job_timeout none; datum_timeout 1s" in server.pfs("inspect-pipeline", "slow").text
    assert "Limits: 2 tries a shard; job_timeout none; datum_timeout 1s" in server.pfs("inspect-job", job["id"]).text


def test_datum_tries_is_how_many_tries_a_shard_gets(server, tmp_path, host_dir):
    """A command that fails its first try and succeeds after: one try fails the job, two make its output."""
    put(server, "data", {"x": b"1\n"})
    script = f"if [ -e {host_dir}/$0 ]; then echo ok > /pfs/out/ok; else touch {host_dir}/$0; exit 3; fi"
    pipeline(server, tmp_path, "once", ["sh", "-c", script, "once"], [repo_input("data")], datum_tries=1)
    pipeline(server, tmp_path, "twice", ["sh", "-c", script, "twice"], [repo_input("data")], datumTries="2")
    flush(server, "data/master", check=False)
    [once], [twice] = jobs_of(server, "once"), jobs_of(server, "twice")
    assert once["state"] is JobState.FAILURE and "exited with code 3" in once["error"]
    assert twice["state"] is JobState.SUCCESS
    assert get(server, "twice", "ok") == b"ok\n"
    shards = {name: json.loads(server.pfs("inspect-job", j["id"], "--raw").text)["shards"][0]["attempts"]
              for name, j in (("once", once), ("twice", twice))}
    assert shards == {"once": 1, "twice": 2}


def test_a_follower_of_a_pipeline_s_logs_ends_once_the_pipeline_and_its_jobs_are_gone(server, tmp_path):
    put(server, "data", {"x": b"1\n"})
    pipeline(server, tmp_path, "p", ["sh", "-c", "echo said-once"], [repo_input("data")])
    flush(server, "data/master")
    follower = subprocess.Popen([PFS, "logs", "-f", "--pipeline", "p"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, **server.env})
    try:
        assert b"said-once\n" in iter(follower.stdout.readline, b"")  # following now
        server.pfs("delete-pipeline", "p", "--delete-repo")  # its jobs and their logs too
        assert follower.wait(30) == 1
        assert b"pipeline 'p' not found" in follower.stderr.read()
    finally:
        stop_process(follower, signal.SIGKILL, 5)
        follower.stdout.close()
        follower.stderr.close()


def test_a_job_past_its_job_timeout_is_stopped_and_the_pipeline_goes_on(server, tmp_path):
    put(server, "data", {"x": b"slow\n"})
    cmd = ["sh", "-c", "[ -e /pfs/data/fast ] || sleep 42.75; cp -r /pfs/data/. /pfs/out/"]
    pipeline(server, tmp_path, "p", cmd, [repo_input("data", "global")], job_timeout="2s")
    result = flush(server, "data/master", check=False)
    [job] = jobs_of(server, "p")
    assert_one_line_error(result, f"job {job['id']} of pipeline p failed", "ran longer than its job_timeout (2s)")
    wait_for(lambda: not any(args[:2] == [b"sleep", b"42.75"] for _, args in processes()), 30)
    put(server, "data", {"fast": b"go\n"}, create=False)
    flush(server, "data/master")
    assert get(server, "p", "fast") == b"go\n"
    assert [j["state"] for j in jobs_of(server, "p")] == [JobState.SUCCESS, JobState.FAILURE]

"""Commits and branches: parents, refs, open versus finished, deletion, subscription."""

import os
import subprocess
import threading

import pytest

from conftest import PFS, assert_one_line_error
from pfs.core.errors import FailedPrecondition, NotFound
from pfs.core.model import CommitRef


def commit_ids(server, repo, *args):
    return [ln.split()[2] for ln in server.pfs("list-commit", repo, *args).text.splitlines()[1:]]


def test_commits_chain_on_a_branch(server):
    server.pfs("create-repo", "r")
    ids = []
    for i in range(3):
        c = server.pfs("start-commit", "r", "master").text.strip()
        server.pfs("put-file", "r", c, f"f{i}", "-f", "-", input=b"x\n")
        server.pfs("finish-commit", "r", c)
        ids.append(c)
    client = server.client()
    infos = [client.inspect_commit(CommitRef("r", c)) for c in ids]
    assert [i.parent for i in infos] == ["", ids[0], ids[1]]
    assert all(i.is_finished and i.finished >= i.started for i in infos)
    assert [i.size_bytes for i in infos] == [2, 4, 6]
    assert commit_ids(server, "r") == ids[::-1]
    assert commit_ids(server, "r", "master", "-n", "2") == ids[:0:-1]
    assert client.inspect_commit(CommitRef("r", "master^")).id == ids[1]
    assert client.inspect_commit(CommitRef("r", "master~2")).id == ids[0]
    assert client.inspect_commit(CommitRef("r", f"{ids[2]}^^")).id == ids[0]
    with pytest.raises(NotFound, match="past the first commit"):
        client.inspect_commit(CommitRef("r", "master~3"))
    # a later commit sees its parent's files
    assert [f.path for f in client.list_files(CommitRef("r", "master"))] == ["f0", "f1", "f2"]


def test_a_writer_that_will_not_wait_is_told_at_once(server):
    server.pfs("create-repo", "r")
    c = server.pfs("start-commit", "r").text.strip()
    assert_one_line_error(server.pfs("put-file", "r", "master", "f", "-c", "--wait", "0", "-f", "-", input=b"x",
                                     check=False), "still open", c)
    assert_one_line_error(server.pfs("put-file", "r", "master", "f", "-c", "--wait", "0.3", "-f", "-",
                                     input=b"x", check=False), "still open", "waited 0.3 s")
    refused = server.pfs("put-file", "r", "master", "f", "-c", "--wait", "soon", "-f", "-", input=b"x", check=False)
    assert refused.returncode == 2 and "argument --wait: 'soon' is not a number of seconds" in refused.stderr


def test_branches(server):
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", input=b"1\n")
    first = server.client().inspect_commit(CommitRef("r", "master")).id
    server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", input=b"2\n")
    server.pfs("set-branch", "r", first, "stable")
    server.pfs("put-file", "r", "stable", "g", "-c", "-f", "-", input=b"3\n")
    listing = dict(ln.split() for ln in server.pfs("list-branch", "r").text.splitlines()[1:])
    assert set(listing) == {"master", "stable"}
    stable = server.client().inspect_commit(CommitRef("r", "stable"))
    assert stable.parent == first and stable.branch == "stable"
    assert server.pfs("get-file", "r", "stable", "f").stdout == b"1\n"
    assert server.pfs("get-file", "r", "master", "f").stdout == b"1\n2\n"
    assert server.pfs("inspect-repo", "r").text.count("master") == 1
    server.pfs("create-branch", "r", "again", "--head", first)  # pachctl 1.7's set-branch
    assert server.client().inspect_commit(CommitRef("r", "again")).id == first
    server.pfs("delete-branch", "r", "again")
    server.pfs("delete-branch", "r", "stable")  # the branch only, as pachctl's delete-branch
    assert [ln.split()[0] for ln in server.pfs("list-branch", "r").text.splitlines()[1:]] == ["master"]
    assert server.pfs("get-file", "r", stable.id, "g").stdout == b"3\n"  # its commits stay, by id
    assert_one_line_error(server.pfs("delete-branch", "r", "stable", check=False), "no branch 'stable' in repo 'r'")
    assert_one_line_error(server.pfs("delete-branch", "nope", "x", check=False), "repo 'nope' not found")


def test_open_commit_rules(server):
    server.pfs("create-repo", "r")
    c = server.pfs("start-commit", "r").text.strip()
    assert_one_line_error(server.pfs("start-commit", "r", "master", check=False), "still open", c)
    server.pfs("finish-commit", "r", c)
    assert_one_line_error(server.pfs("finish-commit", "r", c, check=False), "is finished")
    assert_one_line_error(
        server.pfs("put-file", "r", c, "f", "-f", "-", input=b"x", check=False), "is finished", "pfs put-file r master"
    )
    assert_one_line_error(server.pfs("delete-file", "r", c, "f", check=False), "is finished")
    # parent named explicitly
    c2 = server.pfs("start-commit", "r", "dev", "-p", c).text.strip()
    assert server.client().inspect_commit(CommitRef("r", c2)).parent == c


def test_delete_commit(server):
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", input=b"1\n")
    first = server.client().inspect_commit(CommitRef("r", "master")).id
    open_commit = server.pfs("start-commit", "r").text.strip()
    assert_one_line_error(server.pfs("delete-commit", "r", first, check=False), "child")
    server.pfs("delete-commit", "r", open_commit)
    assert server.client().inspect_commit(CommitRef("r", "master")).id == first
    server.pfs("delete-commit", "r", "master")
    assert server.pfs("list-branch", "r").text.splitlines()[1:] == []
    assert commit_ids(server, "r") == []


def test_provenance_is_recorded(server):
    client = server.client()
    client.create_repo("in")
    client.create_repo("out")
    src = client.start_commit("in")
    client.finish_commit(CommitRef("in", src.id))
    out = client.start_commit("out", provenance=[CommitRef("in", src.id)])
    assert client.inspect_commit(CommitRef("out", out.id)).provenance == (CommitRef("in", src.id),)
    by_branch = client.start_commit("out", "byref", provenance=[CommitRef("in", "master")])
    assert by_branch.provenance == (CommitRef("in", src.id),)  # the commit it names now: a branch moves on
    with pytest.raises(NotFound):
        client.start_commit("out", "other", provenance=[CommitRef("in", "nope")])


def test_subscribe_commit_from_the_first_then_new(server):
    server.pfs("create-repo", "r")
    for i in range(2):
        server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", input=b"x\n")
    old = commit_ids(server, "r")[::-1]
    open_commit = server.pfs("start-commit", "r").text.strip()  # open before either subscription starts
    proc = subprocess.Popen([PFS, "subscribe-commit", "r", "master"], stdout=subprocess.PIPE, text=True,
                            env={**server.env, "PATH": ""})
    try:
        with server.client() as client:
            announced = client.subscribe_commits("r", "master")
            assert [next(announced).id for _ in range(2)] == old
            assert [proc.stdout.readline().strip() for _ in range(2)] == old
            server.pfs("finish-commit", "r", open_commit)
            info = next(announced)
            assert (info.id, info.is_finished) == (open_commit, True)  # announced once finished, not before
            assert proc.stdout.readline().strip() == open_commit
            announced.close()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_subscription_ends_when_its_repo_is_deleted(server):
    """At once, not at the next look the server takes of its own accord (every 30 s)."""
    server.pfs("create-repo", "r")
    server.pfs("put-file", "r", "master", "f", "-c", "-f", "-", input=b"x\n")
    proc = subprocess.Popen([PFS, "subscribe-commit", "r", "master"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **server.env})
    try:
        assert proc.stdout.readline().strip()  # the first commit: subscribed
        server.pfs("delete-repo", "r")
        assert proc.wait(10) == 1
        assert proc.stderr.read().startswith("pfs: repo 'r' not found")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_subscribe_new_only(server):
    client = server.client()
    client.create_repo("r")
    old = client.start_commit("r")
    client.finish_commit(CommitRef("r", old.id))
    got = []
    reader = threading.Thread(target=lambda: got.append(next(client.subscribe_commits("r", "master", True))))
    reader.start()
    new = []
    while reader.is_alive() and len(new) < 50:  # the subscription starts at some point in this loop
        c = client.start_commit("r")
        client.finish_commit(CommitRef("r", c.id))
        new.append(c.id)
        reader.join(0.1)
    assert got and got[0].id in new


def test_finished_commit_refuses_writes_through_the_api(server):
    client = server.client()
    client.create_repo("r")
    c = client.start_commit("r")
    client.finish_commit(CommitRef("r", c.id))
    with pytest.raises(FailedPrecondition):
        client.put_files(CommitRef("r", c.id), [])
